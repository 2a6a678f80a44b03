"""f-DP trade-off curves and the one-run f-DP audit (Mahloujifar, Melis, Chaudhuri 2024).

The one-run bound of :mod:`attacks.audit` tests one (ε, δ) pair. For Gaussian
mechanisms that test is loose whatever the attack: with 1000 canaries an
ideal attacker on a Gaussian mechanism certifies about a third of ε (the
numbers are in docs/attacks.md). An accountant claims more than one pair,
though: it claims a whole privacy profile δ(ε), equivalently a trade-off
function f (Dong, Roth, Su 2019, Prop. 2.12)::

    f(α) = sup_ε max(0, 1 − δ(ε) − e^ε·α, e^−ε·(1 − δ(ε) − α))

"any test of canary-in against canary-out with false-positive rate α misses
at least f(α)". Mahloujifar et al. bound the number of correct guesses of the
one-run game under any f-DP mechanism; testing the accountant's own f uses all
of the claim and is much tighter.

*Soundness of the pieces here.* A profile given at finitely many points yields
the sup over those points only: a pointwise *smaller* f, i.e. a weaker claim,
so rejecting it still rejects the accountant. ε̂ is reported through a
:class:`MechanismFamily`: the accounted mechanism with its noise scaled by
``s`` (``s = 1`` is the run's own claim, larger ``s`` more noise). More noise
means a pointwise larger f, and the rejection test is monotone in f, so the
claims rejected form an up-set ``{s ≥ s*}``; a correct implementation rejects
``s = 1`` (hence any ``s < 1``) with probability at most the test level. ε̂ is
the accounted ε at the smallest rejected grid scale (the grid only rounds ε̂
down), so ``P[ε̂ > ε] ≤ 1 − confidence`` for a correct implementation.

The recursion in :func:`fdp_one_run_rejects` is the paper's "audit with cap"
for a two-letter alphabet (membership); the two published implementations
(the paper's authors' ``privacy_guard`` and ``jax_privacy.auditing``) agree on
it. No numpy/scipy library offers it for an arbitrary f, hence these lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy import optimize, stats

from ._validation import check_binary_labels, check_scores

if TYPE_CHECKING:
    from .audit import AuditResult

__all__ = [
    "GaussianTradeoff",
    "MechanismFamily",
    "ProfileTradeoff",
    "TradeoffCurve",
    "audit_one_run_fdp",
    "fdp_epsilon_lower_bound",
    "fdp_one_run_rejects",
    "gaussian_epsilon",
    "gaussian_mu",
    "smallest_rejected_scale",
]

#: relative precision of the rejected scale once refined between grid points
REFINE_TOLERANCE = 1e-3


class TradeoffCurve(Protocol):
    """A symmetric trade-off function: the least type-II error at type-I error ``alpha``."""

    def __call__(self, alpha: np.ndarray | float) -> np.ndarray: ...


@dataclass(frozen=True)
class ProfileTradeoff:
    """The trade-off function of "(ε_i, δ_i)-DP for every i" (sup of the (ε_i, δ_i) curves).

    Symmetric by construction (each (ε, δ) curve is), so the inverse blow-up
    function the audit needs is ``x ↦ f(1 − x)``.

    >>> f = ProfileTradeoff(np.array([0.0, 1.0]), np.array([0.5, 0.0]))
    >>> [round(float(v), 4) for v in f(np.array([0.0, 0.1, 0.5]))]
    [1.0, 0.7282, 0.1839]
    """

    epsilons: np.ndarray
    deltas: np.ndarray
    _exp: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        eps = np.asarray(self.epsilons, dtype=np.float64).reshape(-1)
        dlt = np.asarray(self.deltas, dtype=np.float64).reshape(-1)
        if eps.size == 0 or eps.shape != dlt.shape:
            raise ValueError("epsilons and deltas must be non-empty and of equal length")
        if not (np.all(np.isfinite(eps)) and np.all(eps >= 0)):
            raise ValueError("epsilons must be finite and >= 0")
        if not (np.all(np.isfinite(dlt)) and np.all((dlt >= 0) & (dlt <= 1))):
            raise ValueError("deltas must lie in [0, 1]")
        object.__setattr__(self, "epsilons", eps)
        object.__setattr__(self, "deltas", dlt)
        object.__setattr__(self, "_exp", np.exp(eps))

    def __call__(self, alpha: np.ndarray | float) -> np.ndarray:
        a = np.atleast_1d(np.asarray(alpha, dtype=np.float64))[:, None]
        upper = 1.0 - self.deltas - self._exp * a
        lower = (1.0 - self.deltas - a) / self._exp
        return np.clip(np.maximum(upper, lower).max(axis=1), 0.0, 1.0)


@dataclass(frozen=True)
class GaussianTradeoff:
    """μ-GDP: ``f(α) = Φ(Φ⁻¹(1 − α) − μ)`` (Dong, Roth, Su 2019), exact.

    >>> round(float(GaussianTradeoff(1.0)(0.05)[0]), 4)
    0.7405
    """

    mu: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise ValueError(f"mu must be finite and >= 0, got {self.mu}")

    def __call__(self, alpha: np.ndarray | float) -> np.ndarray:
        a = np.atleast_1d(np.asarray(alpha, dtype=np.float64))
        return stats.norm.cdf(stats.norm.ppf(1.0 - a) - self.mu)


def gaussian_epsilon(mu: float, delta: float) -> float:
    """ε of μ-GDP at ``delta`` (Dong, Roth, Su 2019, Cor. 2.13), in the log domain.

    >>> round(gaussian_epsilon(1.0, 1e-5), 3)  # the Gaussian mechanism with σ = 1
    4.377
    """
    if not 0.0 < delta < 1.0:
        raise ValueError("delta must be in (0, 1)")
    if mu <= 0:
        return 0.0

    def gap(eps: float) -> float:
        head = stats.norm.logcdf(-eps / mu + mu / 2)
        tail = eps + stats.norm.logcdf(-eps / mu - mu / 2)
        return head + math.log1p(-math.exp(min(0.0, tail - head))) - math.log(delta)

    if gap(0.0) <= 0:
        return 0.0
    high = 1.0
    while gap(high) > 0:
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-12))


def gaussian_mu(epsilon: float, delta: float) -> float:
    """The μ whose μ-GDP has exactly ``epsilon`` at ``delta`` (inverse of :func:`gaussian_epsilon`).

    >>> round(gaussian_mu(gaussian_epsilon(0.7, 1e-6), 1e-6), 6)
    0.7
    """
    if epsilon <= 0:
        return 0.0
    high = 1.0
    while gaussian_epsilon(high, delta) < epsilon:
        high *= 2
    return float(optimize.brentq(lambda mu: gaussian_epsilon(mu, delta) - epsilon, 1e-12, high, xtol=1e-12))


def fdp_one_run_rejects(
    tradeoff: TradeoffCurve, num_canaries: int, num_guesses: int, num_correct: int, significance: float
) -> bool:
    """Whether ``num_correct`` of ``num_guesses`` guesses on ``num_canaries`` canaries rule out
    an f-DP mechanism at level ``significance`` (Mahloujifar et al. 2024, audit with cap).

    Under f-DP, a guess's chance of being right and of being wrong are tied by
    the inverse blow-up ``x ↦ f(1 − x)`` (the least probability, in the other
    world, of an event with probability x). Starting from the mass the
    observed outcome would need (``significance`` spread over the correct and
    the wrong guesses) and going down one correct guess at a time, the
    recursion accumulates the mass that f forces; if it exceeds the guesses'
    share ``num_guesses / num_canaries``, the outcome has probability below
    ``significance`` under every f-DP mechanism.

    >>> f = GaussianTradeoff(0.5)
    >>> fdp_one_run_rejects(f, 1000, 100, 100, 0.05), fdp_one_run_rejects(f, 1000, 100, 60, 0.05)
    (True, False)
    """
    m, r, c = num_canaries, num_guesses, num_correct
    if not (0 <= c <= r <= m and m >= 1):
        raise ValueError(f"need 0 <= num_correct <= num_guesses <= num_canaries, got {c}, {r}, {m}")
    if not 0.0 < significance < 1.0:
        raise ValueError("significance must be in (0, 1)")
    if r == 0:
        return False
    right = significance * c / m
    wrong = significance * (r - c) / m
    for i in range(c - 1, -1, -1):
        forced = max(wrong, float(tradeoff(1.0 - right)[0]))
        if forced == wrong:
            break  # neither quantity can change any more
        right = min(right + i / (r - i) * (forced - wrong), 1.0)
        wrong = forced
    return right + wrong > r / m


@dataclass(frozen=True)
class MechanismFamily:
    """Claims of one mechanism with its noise scaled by ``s`` (``s = 1``: the run's own claim).

    ``tradeoff(s)`` and ``epsilon(s)`` (the ε the accountant would report at
    the audit's δ) must describe the same mechanism; larger ``s`` must be more
    private. ``scales`` is the grid searched, ascending; ε̂ is reported at a
    grid point, so a coarse grid only rounds ε̂ down. Results are cached.
    """

    tradeoff: Callable[[float], TradeoffCurve]
    epsilon: Callable[[float], float]
    scales: tuple[float, ...]
    _curves: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _epsilons: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        s = tuple(float(v) for v in self.scales)
        if not s or any(v <= 0 or not math.isfinite(v) for v in s) or list(s) != sorted(set(s)):
            raise ValueError("scales must be positive, finite, distinct and ascending")
        object.__setattr__(self, "scales", s)

    def curve(self, scale: float) -> TradeoffCurve:
        if scale not in self._curves:
            self._curves[scale] = self.tradeoff(scale)
        return self._curves[scale]

    def epsilon_at(self, scale: float) -> float:
        if scale not in self._epsilons:
            self._epsilons[scale] = float(self.epsilon(scale))
        return self._epsilons[scale]


def fdp_epsilon_lower_bound(
    family: MechanismFamily, num_canaries: int, num_guesses: int, num_correct: int, *,
    confidence: float = 0.95,
) -> tuple[float, float | None]:
    """``(ε̂, s*)``: the accounted ε at the smallest scale ``s*`` whose claim is rejected.

    ``(0.0, None)`` when no claim on the grid is rejected. Binary search: the
    rejected scales form an up-set; ``s*`` is refined between grid points
    (:func:`smallest_rejected_scale`).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    alpha = 1.0 - confidence
    return smallest_rejected_scale(
        family, lambda curve: fdp_one_run_rejects(curve, num_canaries, num_guesses, num_correct, alpha),
        refine=True)


def smallest_rejected_scale(family: MechanismFamily, rejects: Callable[[TradeoffCurve], bool], *,
                            refine: bool = False) -> tuple[float, float | None]:
    """``(ε̂, s*)``: the accounted ε at the smallest scale ``s*`` that ``rejects`` refuses.

    ``(0.0, None)`` when no claim on the grid is rejected. Binary search: the rejected
    scales form an up-set (more noise, a pointwise larger f, an easier claim to refute).
    Without ``refine``, ``s*`` is a grid point; with it, the interval between the last
    accepted and the first rejected grid point is bisected on a log scale down to
    ``REFINE_TOLERANCE`` (relative). That does not change what the bound means: any
    rejected scale ``s* < 1`` implies the run's own claim (``s = 1``, in the up-set) is
    rejected, which a correct implementation suffers with probability at most
    ``1 - confidence``; the grid only rounded ε̂ down (at ε = 8 one 6.6 % grid step is
    up to 20 % of ε).
    """
    scales = family.scales

    def rejected(k: int) -> bool:
        return rejects(family.curve(scales[k]))

    if not rejected(len(scales) - 1):
        return 0.0, None
    low, high = -1, len(scales) - 1  # invariant: scales[high] rejected, scales[low] not (or low = -1)
    while high - low > 1:
        middle = (low + high) // 2
        if rejected(middle):
            high = middle
        else:
            low = middle
    found = scales[high]
    if refine and low >= 0:
        accepted_log, rejected_log = math.log(scales[low]), math.log(found)
        while rejected_log - accepted_log > REFINE_TOLERANCE:
            middle_log = (accepted_log + rejected_log) / 2
            if rejects(family.curve(math.exp(middle_log))):
                rejected_log = middle_log
            else:
                accepted_log = middle_log
        found = math.exp(rejected_log)
    return family.epsilon_at(found), found


def audit_one_run_fdp(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    num_positive: int | Sequence[int],
    num_negative: int | Sequence[int] = 0,
    family: MechanismFamily,
    epsilon_claimed: float | None = None,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> AuditResult:
    """One-run f-DP audit of canary scores against ``family`` (Bonferroni over guess pairs).

    Same guessing rule as :func:`attacks.audit_one_run` ("in" for the top
    ``num_positive`` scores, "out" for the bottom ``num_negative``); returns an
    :class:`attacks.AuditResult` with method ``"one_run_fdp"``. ``delta`` is the
    δ at which ``family.epsilon`` reports ε (for the summary only: the test
    uses the whole trade-off curve).
    """
    from .audit import AuditResult, _finish, count_correct_guesses, guesses_from_scores

    s = check_scores(scores)
    inc = check_binary_labels(included, "included")
    if inc.shape != s.shape:
        raise ValueError("scores and included must have the same length")
    positives = [num_positive] if isinstance(num_positive, (int, np.integer)) else list(num_positive)
    negatives = [num_negative] if isinstance(num_negative, (int, np.integer)) else list(num_negative)
    pairs = [(p, n) for p in positives for n in negatives if 0 < p + n <= s.size]
    if not pairs:
        raise ValueError("no valid (num_positive, num_negative) pair")
    per_test_confidence = 1.0 - (1.0 - confidence) / len(pairs)
    best: tuple[float, float | None, int, int, int, int] = (-1.0, None, 0, 0, 0, 0)
    for p, n in pairs:
        r, v = count_correct_guesses(guesses_from_scores(s, p, n), inc)
        eps, scale = fdp_epsilon_lower_bound(family, s.size, r, v, confidence=per_test_confidence)
        if eps > best[0]:
            best = (eps, scale, p, n, r, v)
    eps, scale, p, n, r, v = best
    details = {"num_canaries": int(s.size), "num_positive": p, "num_negative": n, "num_guesses": r,
               "num_correct": v, "num_tests": len(pairs), "rejected_noise_scale": scale}
    return _finish(AuditResult("one_run_fdp", eps, confidence, delta, epsilon_claimed, details))
