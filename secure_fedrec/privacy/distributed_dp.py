"""Client-side steps and parameter planning for the distributed discrete Gaussian mechanism.

Per participating client, in this order (Kairouz, Liu, Steinke 2021)::

    x  = clip_updates_l2(update, c)                      # ||x||_2 <= c
    xi = conditional_randomized_round(x / gamma, plan.l2_sensitivity)
    y  = xi + sample_discrete_gaussian(plan.share_sigma, d)
    ring element = y mod 2^bits  ->  secure sum  ->  server decodes signed, times gamma

The accountant (built for ``plan.l2_sensitivity``, the guaranteed minimum of shares
and ``d``) is then stepped with ``noise_multiplier=plan.noise_multiplier(min_survivors)``.
No random rotation is applied here, so the per-coordinate signal bound used
for the wrap-around check is the worst case ``max_clients * l2_sensitivity``
(each coordinate of an integer vector is at most its L2 norm); that costs
bits but needs no distributional assumption.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .calibration import calibrate_ddg_total_sigma
from .ddg_accounting import (
    DistributedDiscreteGaussianAccountant,
    conditional_rounding_l2_bound,
)
from .ddg_dominance import SMOOTHING_VARIANCE
from .discrete_gaussian import (
    distributed_noise_share_sigma,
    rotated_wrap_probability,
    wrap_probability,
)
from .rounding import (
    RoundingFailedError,
    conditional_randomized_round,
    randomized_round,
)

__all__ = [
    "DdgPlan",
    "RecordDdgPlan",
    "RoundingFailedError",
    "conditional_randomized_round",
    "plan_distributed_discrete_gaussian",
    "plan_record_discrete_gaussian",
    "randomized_round",
]


_Plan = TypeVar("_Plan", "DdgPlan", "RecordDdgPlan")


@dataclass(frozen=True)
class DdgPlan:
    """Parameters of the distributed discrete Gaussian for one run (lengths in integer units)."""

    gamma: float  # quantization step: integer value 1 stands for gamma in model units
    l2_sensitivity: float  # bound on a client's rounded, scaled update
    total_sigma: float  # noise scale of the sum at min_survivors shares
    share_sigma: float  # each client's discrete Gaussian scale
    wrap_probability: float  # per round, with max_clients shares (union bound over coordinates)
    epsilon: float  # ε after all planned rounds at min_survivors shares
    bits: int

    @property
    def model_unit_noise_std(self) -> float:
        """The std of the summed noise in model units, at min_survivors shares."""
        return self.total_sigma * self.gamma

    def noise_multiplier(self, num_shares: int) -> float:
        """The sum's noise multiplier with ``num_shares`` shares, what the DDG accountant is stepped with."""
        return self.share_sigma * math.sqrt(num_shares) / self.l2_sensitivity


def plan_distributed_discrete_gaussian(
    *,
    target_epsilon: float,
    delta: float,
    l2_clip: float,
    dim: int,
    bits: int,
    min_survivors: int,
    max_clients: int,
    sample_rate: float,
    rounds: int,
    beta: float = math.exp(-0.5),
    max_wrap_probability: float = 1e-9,
    max_share_sigma: float = 2e4,
    rotated: bool = False,
    subsampling: str = "general",
) -> DdgPlan:
    """Finest quantization ``gamma`` whose noisy sum stays inside ``2^bits`` with the target noise.

    For a candidate ``gamma`` the integer-domain sensitivity is
    :func:`conditional_rounding_l2_bound` and the total noise is calibrated
    for ``target_epsilon`` with every round charged at ``min_survivors``
    shares; finer ``gamma`` means less rounding inflation but larger
    integers. ``gamma`` is bisected on a log scale down to the finest value
    whose wrap probability (signal ``max_clients * l2_sensitivity`` per
    coordinate, ``max_clients`` noise shares) is at most
    ``max_wrap_probability`` and whose share scale is at most
    ``max_share_sigma`` (the fast sampler's table grows with it: 2e4 means a
    ~0.7 s, ~4 MiB table; by then the rounding inflation of the sensitivity
    is already negligible, e.g. 1.00003x for d = 5e4). Raises ``ValueError``
    if even the coarsest sensible ``gamma`` fails.

    ``rotated``: the clients rotate their vectors (random signs, orthonormal DCT;
    :class:`secure_fedrec.aggregation.compact.CompactRotatedEncoding`), so the wrap
    bound is :func:`rotated_wrap_probability` (signal ``max_clients * l2_clip / gamma``
    spread over the ``dim`` coordinates) instead of the worst case per coordinate;
    that is what lets a 16-bit ring hold the sum.

    ``subsampling``: the accountant's bound for the Poisson participation: ``"general"`` (Zhu–Wang),
    ``"symmetric"`` (every share is in the sum whether or not the user is sampled, so neighbouring
    outputs differ by a pure shift; docs/privacy.md §4.4) or ``"revealed"`` (no amplification;
    docs/privacy.md, "The share count").
    """
    if not (min_survivors >= 1 and max_clients >= min_survivors):
        raise ValueError("need 1 <= min_survivors <= max_clients")

    def evaluate(gamma: float) -> DdgPlan:
        sensitivity = conditional_rounding_l2_bound(l2_clip, gamma, dim, beta)
        total = calibrate_ddg_total_sigma(
            target_epsilon,
            delta,
            l2_sensitivity=sensitivity,
            min_survivors=min_survivors,
            dim=dim,
            sample_rate=sample_rate,
            steps=rounds,
            subsampling=subsampling,
        )
        share = distributed_noise_share_sigma(total, min_survivors)
        if rotated:
            wrap = rotated_wrap_probability(bits=bits, dim=dim, sum_l2_bound=max_clients * l2_clip / gamma,
                                            share_sigma=share, max_shares=max_clients, beta=beta)
        else:
            wrap = wrap_probability(
                bits=bits,
                dim=dim,
                signal_bound=max_clients * sensitivity,
                share_sigma=share,
                max_shares=max_clients,
            )
        accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=sensitivity,
                                                           num_shares=min_survivors, dim=dim,
                                                           subsampling=subsampling)
        accountant.step(noise_multiplier=share * math.sqrt(min_survivors) / sensitivity,
                        sample_rate=sample_rate, steps=rounds)
        return DdgPlan(gamma, sensitivity, total, share, wrap, accountant.get_epsilon(delta), bits)

    # Coarse end: the clip norm spans ~sqrt(d) levels in total, so rounding dominates the signal.
    coarse = l2_clip / max(1.0, math.sqrt(dim))
    return _finest_gamma(
        evaluate, coarse, max_wrap_probability=max_wrap_probability, max_share_sigma=max_share_sigma,
        log_tolerance=0.05, too_coarse=(f"{bits} bits / share sigma {max_share_sigma:g} are too few for "
                                        f"{max_clients} clients of dimension {dim} even at gamma={coarse:g}; "
                                        "raise bits or lower max_clients"))


def _finest_gamma(evaluate: Callable[[float], _Plan], coarse: float, *, max_wrap_probability: float,
                  max_share_sigma: float, log_tolerance: float, too_coarse: str) -> _Plan:
    """Bisect ``log gamma`` below ``coarse`` for the finest value whose plan keeps the wrap
    probability and the share scale within bounds (both grow as ``gamma`` shrinks)."""

    def acceptable(plan: _Plan) -> bool:
        return plan.wrap_probability <= max_wrap_probability and plan.share_sigma <= max_share_sigma

    best = evaluate(coarse)
    if not acceptable(best):
        raise ValueError(too_coarse)
    low, high = math.log(coarse) - 60.0, math.log(coarse)  # log(gamma) search interval
    while high - low >= log_tolerance:
        middle = (low + high) / 2
        candidate = evaluate(math.exp(middle))
        if acceptable(candidate):
            best, high = candidate, middle
        else:
            low = middle
    return best


@dataclass(frozen=True)
class RecordDdgPlan:
    """The distributed discrete Gaussian of record-level DP-SGD for one run (docs/privacy.md §4.4).

    ``l2_sensitivity`` bounds one example's rounded *joint* gradient (shared part in integer
    units, private part in units of ``gamma``); ``noise_multiplier`` is what the accountant is
    stepped with every round, ``sqrt(min_survivors) * share_sigma / l2_sensitivity``; the
    private rows get Gaussian noise of ``model_unit_noise_std``, the shared sum's own std at
    the guaranteed minimum of shares.
    """

    gamma: float
    l2_sensitivity: float
    share_sigma: float
    noise_multiplier: float
    min_survivors: int
    wrap_probability: float  # per round, every example sampled and every client's share in the sum
    epsilon: float  # after the planned steps
    bits: int
    beta: float
    example_dim: int

    @property
    def model_unit_noise_std(self) -> float:
        return self.gamma * math.sqrt(self.min_survivors) * self.share_sigma

    @property
    def max_level(self) -> float:
        """The largest coordinate one example's rounded gradient can have (its L2 bound)."""
        return self.l2_sensitivity


def plan_record_discrete_gaussian(
    *,
    target_epsilon: float | None,
    delta: float,
    clip_norm: float,
    dim: int,
    example_dim: int,
    bits: int,
    min_survivors: int,
    max_clients: int,
    max_examples: int,
    sample_rate: float,
    steps: int,
    noise_multiplier: float | None = None,
    beta: float = math.exp(-0.5),
    max_wrap_probability: float = 1e-9,
    max_share_sigma: float = 200.0,
) -> RecordDdgPlan:
    """The finest lattice step ``gamma`` for ``steps`` DP-SGD steps at rate ``sample_rate``.

    The noise is calibrated once, as the multiplier ``z`` over the integer-domain
    sensitivity (the accountant is the DDG's with the symmetric subsampling bound,
    :class:`~.ddg_accounting.DistributedDiscreteGaussianAccountant`); with the
    sensitivity ``D(gamma)`` of :func:`conditional_rounding_l2_bound` at ``example_dim``
    coordinates, each candidate ``gamma`` then has total noise ``z D(gamma)`` and its
    share per client. ``gamma`` is bisected on a log scale down to the finest value whose
    wrap probability (per coordinate at most ``max_examples`` rounded examples of norm
    ``D``, plus ``max_clients`` shares) is at most ``max_wrap_probability`` and whose
    share scale is at most ``max_share_sigma`` (a bigger one only grows the sampler's
    table, and the sampler slows down once it leaves the cache; at 200 the rounding
    inflates the sensitivity by about 0.1 % at ε = 1 on ml-latest-small, the
    ``rounding_inflation`` of the run's summary). A fixed
    ``noise_multiplier`` (noise std over ``clip_norm``, as for central DP-SGD) replaces
    the calibration; ε is then what the accountant reports for it.
    """
    if not (2 <= min_survivors <= max_clients):
        raise ValueError("need 2 <= min_survivors <= max_clients")
    if target_epsilon is None and noise_multiplier is None:
        raise ValueError("give target_epsilon or noise_multiplier")

    def accountant(sensitivity: float) -> DistributedDiscreteGaussianAccountant:
        return DistributedDiscreteGaussianAccountant(l2_sensitivity=sensitivity, num_shares=min_survivors,
                                                     dim=dim, subsampling="symmetric")

    def epsilon(sensitivity: float, share: float) -> float:
        trial = accountant(sensitivity)
        trial.step(noise_multiplier=share * math.sqrt(min_survivors) / sensitivity, sample_rate=sample_rate,
                   steps=steps)
        return trial.get_epsilon(delta)

    if noise_multiplier is None:
        # At the scales used here tau is negligible (checked below), so z does not depend on gamma.
        reference = 1e6  # a sensitivity at which every share is large: tau = 0
        total = calibrate_ddg_total_sigma(target_epsilon, delta, l2_sensitivity=reference,
                                          min_survivors=min_survivors, dim=dim, sample_rate=sample_rate,
                                          steps=steps, subsampling="symmetric")
        z = total / reference

    def evaluate(gamma: float) -> RecordDdgPlan:
        sensitivity = conditional_rounding_l2_bound(clip_norm, gamma, example_dim, beta)
        # + b: the Gaussian that dominates the shares (ddg_dominance) keeps the calibrated multiplier
        total = (math.sqrt((z * sensitivity) ** 2 + SMOOTHING_VARIANCE) if noise_multiplier is None
                 else noise_multiplier * clip_norm / gamma)
        share = distributed_noise_share_sigma(total, min_survivors)
        wrap = wrap_probability(bits=bits, dim=dim, signal_bound=max_examples * sensitivity, share_sigma=share,
                                max_shares=max_clients)
        return RecordDdgPlan(gamma, sensitivity, share, share * math.sqrt(min_survivors) / sensitivity,
                             min_survivors, wrap, math.nan, bits, beta, example_dim)

    coarse = clip_norm / max(1.0, math.sqrt(example_dim))
    best = _finest_gamma(
        evaluate, coarse, max_wrap_probability=max_wrap_probability, max_share_sigma=max_share_sigma,
        log_tolerance=0.01, too_coarse=(f"{bits} bits are too few for {max_examples} examples and "
                                        f"{max_clients} clients even at gamma={coarse:g}; raise aggregation.bits"))
    spent = epsilon(best.l2_sensitivity, best.share_sigma)
    if target_epsilon is not None and noise_multiplier is None and spent > target_epsilon * (1 + 1e-9):
        raise ValueError(f"the discrete Gaussian's tau term is not negligible at gamma={best.gamma:g} "
                         f"(ε {spent:.4g} > {target_epsilon:g}); raise aggregation.bits")
    return RecordDdgPlan(best.gamma, best.l2_sensitivity, best.share_sigma, best.noise_multiplier,
                         min_survivors, best.wrap_probability, spent, bits, beta, example_dim)
