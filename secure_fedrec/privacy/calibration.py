"""Calibrating the noise to a privacy budget, and the default δ.

:func:`calibrate_noise_multiplier` finds the smallest noise multiplier (to a
relative tolerance) whose ε, computed by the same accountant the run reports
with, does not exceed the target for the planned number of steps at the
planned sampling rate. The search brackets the root by doubling and then
bisects, always keeping an upper end that satisfies the budget, so the
returned value is never under-noised (up to the accountant's own numerics).
The library's ``dp_accounting.calibrate_dp_mechanism`` (Brent's method) would
return a point within ``tol`` of the root on *either* side; we need the safe
side, hence the hand-written bisection.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable

from .accounting import INTEGER_RDP_ORDERS, create_accountant, validate_delta
from .ddg_accounting import DistributedDiscreteGaussianAccountant
from .ddg_dominance import MAX_TOTAL_SLACK, SMOOTHING_VARIANCE, shift_profile_epsilon
from .record_sampling import client_sample_rate

__all__ = [
    "CalibrationError",
    "calibrate",
    "calibrate_ddg_total_sigma",
    "calibrate_noise_multiplier",
    "calibrate_record_noise_multiplier",
    "default_delta",
]


class CalibrationError(ValueError):
    """No parameter in the searched range meets the target."""


def default_delta(num_users: int) -> float:
    """δ = min(1/(10·N), N^-1.1) for N privacy units (users; training ratings at record level).

    An (ε, δ)-DP mechanism may publish each unit's data outright with
    probability δ (Dwork & Roth 2014, §2.3), so N·δ bounds the expected number
    of units it could expose that way. The earlier default N^-1.1 left
    N·δ = N^-0.1, i.e. 0.52 at N = 671 users; 1/(10·N) caps it at 0.1 for every
    N, as "δ ≪ 1/N" asks (Ponomareva et al., "How to DP-fy ML", JAIR 2023), and
    N^-1.1 takes over above N = 10^10, so that δ still falls faster than 1/N.
    docs/privacy.md §5 gives the argument and what the change costs.

    >>> default_delta(671) == 1 / 6710
    True
    """
    if isinstance(num_users, bool) or not isinstance(num_users, int) or num_users < 2:
        raise ValueError(f"num_users must be an integer >= 2, got {num_users!r}")
    return min(1.0 / (10 * num_users), float(num_users) ** -1.1)


def calibrate(
    epsilon_of: Callable[[float], float],
    target_epsilon: float,
    *,
    lower: float = 0.5,
    upper: float = 1.0,
    max_upper: float = 1e4,
    rtol: float = 1e-3,
) -> float:
    """Smallest ``x`` (within ``rtol``) with ``epsilon_of(x) <= target_epsilon``, for decreasing ``epsilon_of``."""
    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise ValueError("target_epsilon must be positive and finite")
    if not 0 < rtol < 1:
        raise ValueError("rtol must be in (0, 1)")
    while epsilon_of(upper) > target_epsilon:
        lower, upper = upper, upper * 2
        if upper > max_upper:
            raise CalibrationError(f"no noise up to {max_upper} meets ε={target_epsilon}")
    if epsilon_of(lower) <= target_epsilon:
        while lower > 1e-6 and epsilon_of(lower) <= target_epsilon:
            upper, lower = lower, lower / 2
        if epsilon_of(lower) <= target_epsilon:
            return lower
    while upper / lower - 1 > rtol:
        middle = math.sqrt(lower * upper)
        if epsilon_of(middle) <= target_epsilon:
            upper = middle
        else:
            lower = middle
    return upper


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    *,
    sample_rate: float,
    steps: int,
    accountant: str = "pld",
    rtol: float = 1e-3,
) -> float:
    """Noise multiplier ``z`` such that ``steps`` Poisson-subsampled Gaussian steps give ε <= target.

    Record level: ``sample_rate = batch / client_records``, ``steps`` = local
    steps over all rounds the client is planned to join. User level:
    ``sample_rate = clients_per_round / num_users``, ``steps`` = rounds.
    """
    delta = validate_delta(delta)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError("steps must be a positive integer")
    if not 0 < sample_rate <= 1:
        raise ValueError("sample_rate must be in (0, 1]")
    create_accountant(accountant)  # reject unknown names before searching

    def epsilon_of(mechanism: str) -> Callable[[float], float]:
        def compute(z: float) -> float:
            trial = create_accountant(mechanism)
            trial.step(noise_multiplier=z, sample_rate=sample_rate, steps=steps)
            return trial.get_epsilon(delta)

        return compute

    rdp_z = calibrate(epsilon_of("rdp"), target_epsilon, rtol=rtol)
    if accountant == "rdp":
        return rdp_z
    # PLD is tighter than RDP, so its answer lies below the RDP one: bracket there
    # (PLD evaluations at tiny noise multipliers are slow).
    return calibrate(epsilon_of(accountant), target_epsilon, lower=0.7 * rdp_z, upper=rdp_z, rtol=rtol)


def calibrate_record_noise_multiplier(
    target_epsilon: float,
    delta: float,
    *,
    client_examples: Iterable[int],
    batch_size: int,
    epochs: int,
    rounds: int,
    rtol: float = 1e-3,
) -> float:
    """DP-SGD's noise multiplier such that *every* client stays within the target if it trains
    in every planned round, by the accountant each client is charged with (RDP, integer orders).

    A client's loader samples at ``q = 1/⌈n/B⌉`` and runs ``int(1/q)`` steps per epoch
    (:mod:`secure_fedrec.privacy.record_sampling`), so clients fall into groups of equal ``⌈n/B⌉``, each with one
    ``(q, steps)``. ε grows with ``q`` and with the steps, so the client with the fewest examples
    is not always the worst: at small noise a bigger client's extra steps can outweigh its lower
    sampling rate. The answer is the largest noise any group needs (ε falls as noise grows).
    """
    delta = validate_delta(delta)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("batch_size must be a positive integer")
    groups = {client_sample_rate(int(n), batch_size) for n in client_examples}
    if not groups:
        raise ValueError("client_examples is empty")

    def epsilon_of(sample_rate: float, steps: int) -> Callable[[float], float]:
        def compute(z: float) -> float:
            trial = create_accountant("rdp", orders=list(INTEGER_RDP_ORDERS))
            trial.step(noise_multiplier=z, sample_rate=sample_rate, steps=steps)
            return trial.get_epsilon(delta)

        return compute

    z = 0.0
    for q in sorted(groups, reverse=True):
        candidate = epsilon_of(q, rounds * epochs * int(1.0 / q))
        if z > 0 and candidate(z) <= target_epsilon:
            continue  # the noise some other group needs already covers this one
        z = calibrate(candidate, target_epsilon, lower=max(z, 0.25), upper=max(2 * z, 1.0), rtol=rtol)
    return z


def calibrate_ddg_total_sigma(
    target_epsilon: float,
    delta: float,
    *,
    l2_sensitivity: float,
    min_survivors: int,
    dim: int,
    sample_rate: float,
    steps: int,
    rtol: float = 1e-3,
    subsampling: str = "general",
) -> float:
    """Total integer-domain noise scale ``sigma_total`` for the distributed discrete Gaussian.

    Each of the (at least) ``min_survivors`` shares gets scale
    ``sigma_total / sqrt(min_survivors)`` (see
    :func:`~secure_fedrec.privacy.discrete_gaussian.distributed_noise_share_sigma`);
    the search accounts every round at exactly ``min_survivors`` shares, the
    worst case the protocol allows. ``subsampling`` is the accountant's bound for the
    Poisson participation (:data:`~secure_fedrec.privacy.ddg_accounting.SUBSAMPLING_BOUNDS`).
    """
    delta = validate_delta(delta)

    def accountant(total_sigma: float, *, exact: bool) -> DistributedDiscreteGaussianAccountant:
        trial = DistributedDiscreteGaussianAccountant(l2_sensitivity=l2_sensitivity, num_shares=min_survivors,
                                                      dim=dim, subsampling=subsampling, use_shift_profile=exact)
        trial.step(noise_multiplier=total_sigma / l2_sensitivity, sample_rate=sample_rate, steps=steps)
        return trial

    scale = max(l2_sensitivity, 1.0)
    # The bisection steps with the RDP bound alone (fast); the dominating Gaussian's profile, where
    # it applies, is calibrated once per budget (cached) and taken if it needs less noise.
    by_rdp = calibrate(lambda total: accountant(total, exact=False).get_epsilon(delta), target_epsilon,
                       lower=0.05 * scale, upper=scale, max_upper=1e6 * scale, rtol=rtol)
    multiplier = _shift_profile_multiplier(target_epsilon, delta, sample_rate, steps, subsampling, rtol)
    if multiplier is None:
        return by_rdp
    # nσ² - b = (z·D2)²: the dominating Gaussian then has exactly the calibrated multiplier
    by_profile = math.sqrt((multiplier * l2_sensitivity) ** 2 + SMOOTHING_VARIANCE)
    if by_profile < by_rdp and accountant(by_profile, exact=True).get_epsilon(delta) <= target_epsilon:
        return by_profile
    return by_rdp


@functools.lru_cache(maxsize=256)
def _shift_profile_multiplier(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                              subsampling: str, rtol: float) -> float | None:
    """The smallest multiplier of the continuous Gaussian that dominates the DDG (ddg_dominance)
    meeting the budget, with room for the largest slack the accountant accepts; None where the
    domination does not apply (a hidden server sample)."""
    if sample_rate < 1 and subsampling == "general":
        return None
    hidden = sample_rate < 1 and subsampling == "symmetric"

    def epsilon_of(z: float) -> float:
        epsilon = shift_profile_epsilon(delta, [(z, sample_rate, steps)], hidden=hidden, total_slack=MAX_TOTAL_SLACK)
        return math.inf if epsilon is None else epsilon

    if epsilon_of(0.3) <= target_epsilon:
        return None  # budgets this large: RDP's calibration alone (the PLD slows down below z ≈ 0.3)
    try:
        return calibrate(epsilon_of, target_epsilon, lower=0.3, upper=1.0, max_upper=1e6, rtol=rtol)
    except CalibrationError:
        return None
