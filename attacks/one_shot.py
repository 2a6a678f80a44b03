"""One-shot ε *estimates* from canary statistics (Andrew et al., ICLR 2024).

An ESTIMATE, not a lower bound. The one-run bounds of :mod:`.audit` and
:mod:`.fdp` hold with stated confidence whatever the mechanism; these numbers
assume the canary statistics are Gaussian and say which ε a Gaussian mechanism
with the fitted separation would have. They can land above the true ε (sampling
error of the fit, a non-Gaussian statistic), so they never decide a violation.

Two estimates, both Andrew et al.'s recipe (fit Gaussians, take the ε of the
Gaussian mechanism they describe at the run's δ):

* :func:`one_shot_estimate` — fit N(μ₁, σ₁²) to the members' statistic and
  N(μ₀, σ₀²) to the non-members'; the estimate is the ε of the Gaussian mechanism
  with μ = (μ₁ − μ₀)/σ₀ at the run's δ (and, as their library also does, the ε
  of telling the two fitted Gaussians apart, :func:`epsilon_two_gaussians`). Fed
  the per-canary *sum over rounds* of the normalised projections, this is the
  composition of the rounds a canary took part in: for a canary in every round the sum of T unit-variance Gaussian
  statistics is exactly the T-fold composition, μ√T.
* :func:`participation_mu` — the separation of one participation, from the
  rounds each canary was (auditor's knowledge) or was not sampled in: the μ of
  the per-round Gaussian mechanism. Composing it over the run's rounds at its
  sampling rate is the accountant's job; the caller passes the result through its
  own accountant (a callable), which keeps this package free of one.

Andrew et al. fit the non-member side to fresh never-inserted canaries (or the
closed-form null N(0, 1/d) of a random cosine); here the excluded half of the
one-run canaries plays that role — they are never inserted, so they are exactly
such canaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

from .fdp import gaussian_epsilon

__all__ = ["OneShotEstimate", "epsilon_two_gaussians", "one_shot_estimate", "participation_mu"]

_norm_logsf = stats.norm.logsf
_MAX_MU = 1000.0


def _log_delta_one_way(m1: float, s1: float, m0: float, s0: float, epsilon: float) -> float:
    """log of P[L > ε] − e^ε Q[L > ε] for P = N(m1, s1²), Q = N(m0, s0²), L = log dP/dQ.

    Hand-written: dp-accounting (and :func:`.fdp.gaussian_epsilon`) cover two Gaussians of
    equal variance only; with unequal variances L is quadratic in the outcome, so the
    region L > ε is an interval or its complement, whose masses are exact normal tails.
    """
    # L(y) = a y² + b y + c
    a = 0.5 * (1.0 / s0**2 - 1.0 / s1**2)
    b = m1 / s1**2 - m0 / s0**2
    c = 0.5 * (m0**2 / s0**2 - m1**2 / s1**2) + math.log(s0 / s1)
    if abs(a) < 1e-12 * max(abs(b), 1e-300):
        if b == 0:
            return -math.inf
        t = (epsilon - c) / b  # L > ε  <=>  y > t (b > 0) or y < t (b < 0)
        if b > 0:
            log_p, log_q = _norm_logsf((t - m1) / s1), _norm_logsf((t - m0) / s0)
        else:
            log_p, log_q = _norm_logsf((m1 - t) / s1), _norm_logsf((m0 - t) / s0)
    else:
        disc = b * b - 4 * a * (c - epsilon)
        if disc <= 0:  # L > ε everywhere (P − e^ε Q = 1 − e^ε <= 0) or nowhere: no δ
            return -math.inf
        r1, r2 = sorted(((-b - math.sqrt(disc)) / (2 * a), (-b + math.sqrt(disc)) / (2 * a)))

        def outside(m: float, s: float) -> float:
            return float(np.logaddexp(stats.norm.logcdf((r1 - m) / s), _norm_logsf((r2 - m) / s)))

        def inside(m: float, s: float) -> float:
            hi, lo = stats.norm.logcdf((r2 - m) / s), stats.norm.logcdf((r1 - m) / s)
            share = math.exp(min(0.0, lo - hi))
            return float(hi + math.log1p(-share)) if share < 1.0 else -math.inf

        region = outside if a > 0 else inside
        log_p, log_q = region(m1, s1), region(m0, s0)
    gap = epsilon + log_q - log_p
    if gap >= 0 or not math.isfinite(log_p):
        return -math.inf
    return log_p + math.log1p(-math.exp(gap))


def _solve_epsilon(delta_of: Callable[[float], float], delta: float) -> float:
    if not 0 < delta < 1:
        raise ValueError("delta must be in (0, 1)")
    if delta_of(0.0) <= delta:
        return 0.0
    high = 1.0
    while delta_of(high) > delta:
        high *= 2
        if high > 1e4:
            return math.inf
    return float(optimize.brentq(lambda e: delta_of(e) - delta, 0.0, high, xtol=1e-10))


def epsilon_two_gaussians(mu0: float, std0: float, mu1: float, std1: float, delta: float) -> float:
    """ε at ``delta`` of the pair N(mu0, std0²), N(mu1, std1²), both directions (the larger).

    With equal standard deviations it is :func:`.fdp.gaussian_epsilon` of |mu1 − mu0|/std.
    """
    if not (std0 > 0 and std1 > 0) or not all(map(math.isfinite, (mu0, std0, mu1, std1))):
        raise ValueError("means must be finite and standard deviations positive")

    def delta_of(e: float) -> float:
        return math.exp(max(_log_delta_one_way(mu1, std1, mu0, std0, e),
                            _log_delta_one_way(mu0, std0, mu1, std1, e)))

    return _solve_epsilon(delta_of, delta)


@dataclass(frozen=True)
class OneShotEstimate:
    """Gaussians fitted to the members' and non-members' statistic, and the ε they imply.

    ``epsilon`` is the Gaussian mechanism's ε at ``delta`` for ``mu`` (the fitted separation
    in units of the non-members' std); ``epsilon_two_gaussians`` keeps the two fitted
    standard deviations apart (Andrew et al.'s library form): a wider member distribution
    (canaries sampled in a random number of rounds) makes it larger, as unequal variances
    give an unbounded privacy loss.
    """

    epsilon: float
    epsilon_two_gaussians: float
    delta: float
    mu: float  # (member mean − non-member mean) / non-member std: the separation in noise units
    member_mean: float
    member_std: float
    nonmember_mean: float
    nonmember_std: float
    num_members: int
    num_nonmembers: int
    kind: str = "estimate"  # never a bound

    def as_dict(self) -> dict:
        return asdict(self)


def one_shot_estimate(statistics: np.ndarray, membership: np.ndarray, *, delta: float) -> OneShotEstimate:
    """Andrew et al.'s estimate from one statistic per canary (higher = more likely a member).

    >>> rng = np.random.default_rng(0)
    >>> member = rng.random(20000) < 0.5
    >>> est = one_shot_estimate(rng.standard_normal(20000) + 2.0 * member, member, delta=1e-5)
    >>> abs(est.epsilon - gaussian_epsilon(2.0, 1e-5)) < 0.35
    True
    """
    s = np.asarray(statistics, dtype=np.float64)
    member = np.asarray(membership).astype(bool)
    if s.shape != member.shape or s.ndim != 1:
        raise ValueError("statistics and membership must be 1-d arrays of the same length")
    if not np.all(np.isfinite(s)):
        raise ValueError("statistics contain NaN or infinite values")
    if member.sum() < 2 or (~member).sum() < 2:
        raise ValueError("need at least two members and two non-members")
    m1, s1 = float(s[member].mean()), float(s[member].std(ddof=1))
    m0, s0 = float(s[~member].mean()), float(s[~member].std(ddof=1))
    floor = 1e-12 * max(1.0, abs(m0), abs(m1))
    s0, s1 = max(s0, floor), max(s1, floor)  # a constant statistic (a run without noise) separates perfectly
    mu = (m1 - m0) / s0
    # beyond ~1000 noise stds (a run without noise) ε is astronomically large: report ∞
    return OneShotEstimate(epsilon=gaussian_epsilon(mu, delta) if mu <= _MAX_MU else math.inf,
                           epsilon_two_gaussians=epsilon_two_gaussians(m0, s0, m1, s1, delta), delta=delta, mu=mu, member_mean=m1, member_std=s1,
                           nonmember_mean=m0, nonmember_std=s0, num_members=int(member.sum()),
                           num_nonmembers=int((~member).sum()))


def participation_mu(z: np.ndarray, took_part: np.ndarray) -> float:
    """The shift one participation adds to a normalised projection, in units of the rest's std.

    ``z`` (rounds × canaries) are per-round projections divided by the round's noise
    scale; ``took_part`` says which canary was in which round (the auditor inserted
    them, so it knows). Pooled over rounds: (mean of z where a canary took part −
    mean where it did not) / std where it did not.

    >>> rng = np.random.default_rng(1)
    >>> part = rng.random((30, 2000)) < 0.1
    >>> round(participation_mu(rng.standard_normal((30, 2000)) + 0.8 * part, part), 1)
    0.8
    """
    z = np.asarray(z, dtype=np.float64)
    part = np.asarray(took_part).astype(bool)
    if z.shape != part.shape or z.ndim != 2:
        raise ValueError("z and took_part must have the same (rounds, canaries) shape")
    if part.sum() < 2 or (~part).sum() < 2:
        raise ValueError("need at least two participations and two non-participations")
    rest = z[~part]
    std = float(rest.std(ddof=1))
    if std <= 0:
        return math.inf
    return float((z[part].mean() - rest.mean()) / std)

