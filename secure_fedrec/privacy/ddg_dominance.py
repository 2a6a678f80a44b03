"""A continuous Gaussian mechanism that dominates the distributed discrete Gaussian sum.

Why: the DDG accountant (:mod:`.ddg_accounting`) bounds the sum of ``n`` discrete Gaussian
shares by its Rényi divergences (KLS 2021) and converts RDP to (ε, δ), which costs 15–25 % of ε
against the exact privacy profile. When the observer's two worlds differ by a pure shift of the
sum (every round whose participation is revealed, or a round every user takes part in), the
exact profile of the *continuous* Gaussian is available in closed form, and the sum of shares is,
up to a factor ``exp(±η)`` with ``η`` far below double precision at the scales this package uses,
a post-processing of a continuous Gaussian with slightly less variance. No library states this
for a sum of discrete Gaussians, hence this module. The argument, per coordinate (``ρ_v(x) =
exp(-x²/2v)``, ``θ_v(c) = Σ_{x∈ℤ} ρ_v(x - c)``; Poisson summation gives ``θ_v(c) ∈
sqrt(2πv)·[1 - e(v), 1 + e(v)]`` with ``e(v) = 2 Σ_{l≥1} exp(-2π² v l²)``, uniformly in ``c``):

1. *Sum of shares.* For independent ``X ~ N_ℤ(0, s²)``, ``X' ~ N_ℤ(0, s'²)``, completing the
   square gives ``P[X + X' = z] = N_ℤ(0, s² + s'²)(z) · A · θ_v(z s²/(s² + s'²))`` with
   ``v = s² s'²/(s² + s'²)`` and ``A`` independent of ``z``; two probability laws cannot differ
   by a factor that is everywhere above (or below) 1, so the ratio lies in ``[(1-e)/(1+e),
   (1+e)/(1-e)]``. By induction the sum of ``n`` shares ``N_ℤ(0, σ²)`` is within
   ``exp(±a_n)`` of ``N_ℤ(0, nσ²)``, pointwise, with ``a_n = Σ_{k=1}^{n-1} log((1+e_k)/(1-e_k))``,
   ``e_k = e(σ² k/(k+1))`` (the same terms as KLS's ``τ``).
2. *Smoothing.* Let ``K_b`` map ``x ∈ ℝ`` to ``N_ℤ(x, b)`` (the discrete Gaussian on ℤ centred
   at ``x``). Then ``K_b(N(0, s² - b))`` is within ``exp(±c_b)`` of ``N_ℤ(0, s²)``, pointwise,
   ``c_b = log((1+e(b))/(1-e(b)))`` (the normaliser of ``N_ℤ(x, b)`` is ``θ_b(x)``; integrate).
   ``K_b`` commutes with integer shifts: ``K_b(x + Δ) = Δ + K_b(x)`` in law.
3. *Domination.* Over ``d`` coordinates, the released noise is within ``exp(±η)``,
   ``η = d (a_n + c_b)``, of ``K_b^d(N(0, (nσ² - b) I))``; so for an integer shift ``Δ`` the pair
   (sum with ``Δ``, sum without) is, up to that factor, the post-processing by ``K_b^d`` of the
   Gaussian pair with ``μ = ‖Δ‖₂ / sqrt(nσ² - b)``. Hence, per round, ``δ(ε) ≤ e^η ·
   δ_Gauss(ε - 2η; μ)``; over rounds (adaptively: each round's conditional law is within the
   same factor) ``e^{Rη}`` and ``2Rη``. More shares than ``n`` add independent noise
   (post-processing); the Gaussian profile is increasing in ``μ``, so ``‖Δ‖₂ ≤ D2`` suffices.

The pairs this covers are the shift pairs: a round whose participation the observer is told
(revealed, zero-out) and a round every user takes part in. A hidden Poisson sample whose
sampled users add their own share is *not* a shift pair (docs/privacy.md, "The share count"),
and the hidden-sample symmetric mode is left to RDP here (its subsampled-Gaussian PLD would be
the next step). With the observer told which rounds the user took part in, the exact profile of
the mixture is ``Σ_S P(S) δ_Gauss(ε; μ_S)``, ``μ_S² = Σ_{r∈S} μ_r²`` (the revealed coins have the
same law in both worlds, so the hockey-stick divergence averages over them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "MAX_TOTAL_SLACK",
    "SMOOTHING_VARIANCE",
    "GaussianDomination",
    "dominating_gaussian",
    "gaussian_delta",
    "gaussian_log_delta",
    "revealed_mixture_delta",
    "revealed_mixture_epsilon",
    "shift_profile_delta",
    "shift_profile_epsilon",
    "smoothing_log_ratio",
    "sum_of_shares_log_ratio",
    "theta_deviation",
]

#: ``b``: the variance the smoothing kernel takes from the sum (e(8) ≈ 2e-69)
SMOOTHING_VARIANCE = 8.0
#: above this total log-slack the domination is not used (the RDP bound remains)
MAX_TOTAL_SLACK = 1e-9
#: the most participation patterns (products of per-group counts) enumerated exactly
MAX_PATTERNS = 200_000


def theta_deviation(variance: float | np.ndarray) -> np.ndarray:
    """``e(v) = 2 Σ_{l≥1} exp(-2π² v l²)``: how far ``θ_v(c) / sqrt(2πv)`` can be from 1."""
    v = np.asarray(variance, dtype=np.float64)
    if np.any(~np.isfinite(v)) or np.any(v <= 0):
        raise ValueError("variance must be positive and finite")
    # the terms fall at least geometrically (ratio exp(-6π²v) from l = 1 to 2); 40 terms are exact
    # in double precision for v >= 1e-3, and below that e(v) >= 1 anyway
    ls = np.arange(1, 41, dtype=np.float64)
    return 2.0 * np.exp(-2.0 * math.pi**2 * np.multiply.outer(v, ls**2)).sum(axis=-1)


def _log_ratio(deviation: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(deviation < 1, np.log1p(deviation) - np.log1p(-deviation), np.inf)


def sum_of_shares_log_ratio(share_sigma: float, num_shares: int) -> float:
    """``a_n``: the sum of ``n`` shares ``N_ℤ(0, σ²)`` is within ``exp(±a_n)`` of ``N_ℤ(0, nσ²)``,
    pointwise, per coordinate (step 1 of the module docstring)."""
    k = np.arange(1, num_shares, dtype=np.float64)
    if not k.size:
        return 0.0
    return float(np.sum(_log_ratio(theta_deviation(share_sigma**2 * k / (k + 1.0)))))


def smoothing_log_ratio(smoothing: float) -> float:
    """``c_b``: ``K_b(N(0, s² - b))`` is within ``exp(±c_b)`` of ``N_ℤ(0, s²)``, pointwise, per
    coordinate, for every ``s² > b`` (step 2 of the module docstring)."""
    return float(_log_ratio(theta_deviation(smoothing)))


@dataclass(frozen=True)
class GaussianDomination:
    """The continuous Gaussian that dominates one DDG round, up to ``exp(±log_slack)``.

    ``noise_multiplier``: the dominating Gaussian's standard deviation over the integer-domain
    L2 sensitivity, ``sqrt(nσ² - b) / D2``; ``log_slack``: ``η`` of the module docstring (all
    coordinates, one round).
    """

    noise_multiplier: float
    log_slack: float


def dominating_gaussian(*, share_sigma: float, num_shares: int, l2_sensitivity: float, dim: int,
                        smoothing: float = SMOOTHING_VARIANCE) -> GaussianDomination | None:
    """The dominating Gaussian of one round of ``num_shares`` shares ``N_ℤ(0, share_sigma²)^dim``
    and an integer shift of L2 norm at most ``l2_sensitivity``; None when the slack is not
    negligible (shares too coarse for the argument to say anything useful)."""
    if not (math.isfinite(share_sigma) and share_sigma > 0 and math.isfinite(l2_sensitivity)
            and l2_sensitivity > 0 and num_shares >= 1 and dim >= 1 and smoothing > 0):
        raise ValueError("share_sigma, l2_sensitivity, num_shares, dim and smoothing must be positive")
    total_variance = num_shares * share_sigma**2
    if total_variance <= 2.0 * smoothing:
        return None
    log_slack = dim * (sum_of_shares_log_ratio(share_sigma, num_shares) + smoothing_log_ratio(smoothing))
    if not math.isfinite(log_slack):
        return None
    return GaussianDomination(math.sqrt(total_variance - smoothing) / l2_sensitivity, log_slack)


def gaussian_log_delta(epsilon: float, mu: np.ndarray) -> np.ndarray:
    """``log δ(ε)`` of the Gaussian pair ``N(μ, 1)`` / ``N(0, 1)`` per ``μ`` (``-inf`` at ``μ = 0``)."""
    mu = np.asarray(mu, dtype=np.float64)
    out = np.full(mu.shape, -np.inf)
    positive = mu > 0
    m = mu[positive]
    upper = special.log_ndtr(-epsilon / m + m / 2.0)
    lower = special.log_ndtr(-epsilon / m - m / 2.0) + epsilon
    with np.errstate(divide="ignore", invalid="ignore"):
        out[positive] = np.where(lower < upper, upper + np.log1p(-np.exp(lower - upper)), -np.inf)
    return out


def gaussian_delta(epsilon: float, mu: float) -> float:
    """δ(ε) of the Gaussian mechanism with ``μ`` = sensitivity / noise standard deviation."""
    return float(np.exp(gaussian_log_delta(epsilon, np.asarray([mu]))[0]))


def _patterns(rounds: Sequence[tuple[float, float, int]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Log-probabilities and ``μ_S`` of every participation count pattern (per group of equal rounds)."""
    groups = [(mu, q, steps) for mu, q, steps in rounds if q > 0 and steps > 0]
    if not groups:
        return np.zeros(1), np.zeros(1)
    if math.prod(steps + 1 for _, q, steps in groups) > MAX_PATTERNS:
        return None
    axes = []
    for mu, q, steps in groups:
        counts = np.arange(steps + 1)
        log_pmf = stats.binom.logpmf(counts, steps, q)
        axes.append((log_pmf, counts * mu**2))
    log_p = np.zeros(1)
    mu_sq = np.zeros(1)
    for log_pmf, mu_sq_axis in axes:
        log_p = np.add.outer(log_p, log_pmf).ravel()
        mu_sq = np.add.outer(mu_sq, mu_sq_axis).ravel()
    return log_p, np.sqrt(mu_sq)


def revealed_mixture_delta(epsilons: Sequence[float] | np.ndarray, rounds: Sequence[tuple[float, float, int]],
                           total_slack: float = 0.0) -> np.ndarray | None:
    """δ(ε) per ε for rounds ``(μ, q, steps)`` of the Gaussian pair, each taken part in with
    probability ``q``, participation revealed; with the slack ``e^L δ(ε - 2L)``. None when there
    are too many patterns to enumerate."""
    patterns = _patterns(rounds)
    if patterns is None:
        return None
    log_p, mu = patterns
    out = []
    for epsilon in np.asarray(epsilons, dtype=np.float64):
        shifted = float(epsilon) - 2.0 * total_slack
        if shifted < 0:
            out.append(1.0)
            continue
        log_delta = special.logsumexp(log_p + gaussian_log_delta(shifted, mu))
        out.append(min(1.0, float(np.exp(log_delta + total_slack))))
    return np.asarray(out)


def revealed_mixture_epsilon(delta: float, rounds: Sequence[tuple[float, float, int]],
                             total_slack: float = 0.0) -> float | None:
    """The smallest ε with :func:`revealed_mixture_delta` ≤ ``delta`` (None: too many patterns)."""
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    patterns = _patterns(rounds)
    if patterns is None:
        return None
    log_p, mu = patterns
    target = math.log(delta) - total_slack

    def excess(epsilon: float) -> float:
        return float(special.logsumexp(log_p + gaussian_log_delta(epsilon, mu))) - target

    if excess(0.0) <= 0:
        return 2.0 * total_slack
    upper = 1.0
    while excess(upper) > 0:
        upper *= 2.0
        if upper > 1e6:
            return math.inf
    return float(optimize.brentq(excess, 0.0, upper, xtol=1e-10, rtol=1e-10)) + 2.0 * total_slack


def _hidden_sample_pld(rounds: Sequence[tuple[float, float, int]]):
    """dp-accounting's PLD of the Poisson-subsampled Gaussian rounds ``(z, q, steps)`` (add or
    remove: both directions), pessimistically discretised."""
    from dp_accounting.pld import pld_privacy_accountant

    from .accounting import Accountant

    library = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    library.compose(Accountant._to_dp_event(list(rounds)))
    return library


def shift_profile_epsilon(delta: float, rounds: Sequence[tuple[float, float, int]], *, hidden: bool,
                          total_slack: float = 0.0) -> float | None:
    """ε at ``delta`` of the dominating Gaussian rounds ``(z, q, steps)`` (``z`` its noise multiplier),
    the slack charged: participation revealed (the mixture; None when it has too many patterns) or
    ``hidden`` (a Poisson sample no one sees: dp-accounting's PLD of the subsampled Gaussian, the
    accountant of central DP-SGD)."""
    if hidden:
        from .accounting import PldAccountant

        accountant = PldAccountant()
        accountant.extend(rounds)
        return accountant.get_epsilon(delta * math.exp(-total_slack)) + 2.0 * total_slack
    return revealed_mixture_epsilon(delta, [(1.0 / z, q, steps) for z, q, steps in rounds], total_slack)


def shift_profile_delta(epsilons: Sequence[float] | np.ndarray, rounds: Sequence[tuple[float, float, int]], *,
                        hidden: bool, total_slack: float = 0.0) -> np.ndarray | None:
    """δ(ε) per ε of the same (see :func:`shift_profile_epsilon`)."""
    epsilons = np.asarray(epsilons, dtype=np.float64)
    if hidden:
        shifted = epsilons - 2.0 * total_slack
        library = _hidden_sample_pld(rounds)
        deltas = np.asarray(library._pld.get_delta_for_epsilon(np.maximum(shifted, 0.0)), dtype=np.float64)
        return np.where(shifted < 0, 1.0, np.minimum(1.0, deltas * math.exp(total_slack)))
    return revealed_mixture_delta(epsilons, [(1.0 / z, q, steps) for z, q, steps in rounds], total_slack)
