"""An f-DP audit of *independent* canaries with a held-out threshold (Nasr et al. 2023's test).

The one-run bounds (:func:`attacks.audit_one_run`, :func:`attacks.audit_one_run_fdp`)
hold however the canaries depend on each other, and pay for it: on a Gaussian
mechanism they certify at most about half of ε whatever the number of
canaries. When the canaries are *independent trials* of the mechanism — each
one alone on coordinates nothing else touches, so that its score is a
function of its own inclusion bit, its own sampling coins and the noise on
its own coordinates — the canaries are as good as separate training runs, and
the multi-run test of Nasr et al. ("Tight Auditing of Differentially Private
Machine Learning", USENIX Security 2023) applies:

1. a random half of the canaries picks the threshold (score ≥ t: guess "in");
2. on the other half, two-sided Clopper–Pearson intervals at ``confidence``
   bound FPR and FNR above (both hold together with probability ≥
   ``confidence``);
3. the claim "the mechanism is f-DP" is rejected when ``FNR_high <
   f(FPR_high)`` (or, f being symmetric, ``FPR_high < f(FNR_high)``): any test
   of an f-DP mechanism with false-positive rate α misses at least f(α), f is
   non-increasing, and the true rates lie below the bounds.

Claims come from a :class:`attacks.MechanismFamily` — the accounted mechanism
with its noise scaled by ``s``; rejected claims form an up-set in ``s`` (more
noise, a pointwise larger f), and ε̂ is the accounted ε at the smallest
rejected scale, so ``P[ε̂ > ε] ≤ 1 − confidence`` for a correct
implementation *whose canaries are independent*. That precondition is the
caller's: this function cannot check it from scores, and the result says
which design it was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._validation import RandomState
from .fdp import MechanismFamily, TradeoffCurve, smallest_rejected_scale

if TYPE_CHECKING:
    from .audit import AuditResult

__all__ = ["audit_heldout_fdp", "fdp_counts_reject"]


def fdp_counts_reject(curve: TradeoffCurve, false_positives: int, negatives: int, false_negatives: int,
                      positives: int, confidence: float) -> bool:
    """Whether error counts of a test on independent trials reject "f-DP" at ``confidence``.

    >>> from attacks import GaussianTradeoff
    >>> fdp_counts_reject(GaussianTradeoff(1.0), 100, 1000, 100, 1000, 0.95)  # 10 % / 10 %: μ ≈ 2.6
    True
    >>> fdp_counts_reject(GaussianTradeoff(3.0), 100, 1000, 100, 1000, 0.95)
    False
    """
    from .audit import clopper_pearson_interval

    fpr_high = clopper_pearson_interval(false_positives, negatives, confidence)[1]
    fnr_high = clopper_pearson_interval(false_negatives, positives, confidence)[1]
    return bool(fnr_high < float(curve(fpr_high)[0]) or fpr_high < float(curve(fnr_high)[0]))


def _epsilon_hat(family: MechanismFamily, counts: tuple[int, int, int, int], confidence: float, *,
                 refine: bool = False) -> tuple[float, float | None]:
    return smallest_rejected_scale(family, lambda curve: fdp_counts_reject(curve, *counts, confidence),
                                   refine=refine)


def _counts(scores: np.ndarray, included: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    guess = scores >= threshold
    return (int(np.sum(guess & ~included)), int(np.sum(~included)),
            int(np.sum(~guess & included)), int(np.sum(included)))


def audit_heldout_fdp(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    family: MechanismFamily,
    design: str,
    epsilon_claimed: float | None = None,
    delta: float = 0.0,
    confidence: float = 0.95,
    threshold_fraction: float = 0.5,
    candidates: int = 64,
    random_state: RandomState = None,
) -> AuditResult:
    """Held-out f-DP audit of independent canaries against ``family`` (see the module docstring).

    ``design`` names why the canaries are independent trials (written into the
    result; the bound is only as good as that statement). ``candidates``
    thresholds, at evenly spaced quantiles of the threshold half's scores, are
    tried there; the best one is judged once on the other half.
    """
    from .audit import AuditResult, _finish, heldout_halves

    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if not 1 <= candidates <= 10_000:
        raise ValueError("candidates must be in [1, 10000]")
    if not design:
        raise ValueError("design must say why the canaries are independent trials")
    s, inc, pick, judge = heldout_halves(scores, included, threshold_fraction, random_state)
    cut = pick.size
    thresholds = np.unique(np.quantile(s[pick], np.linspace(0.0, 1.0, candidates + 2)[1:-1]))
    best_eps, threshold = -1.0, float(thresholds[0])
    for t in thresholds:
        eps, _ = _epsilon_hat(family, _counts(s[pick], inc[pick], float(t)), confidence)
        if eps > best_eps:
            best_eps, threshold = eps, float(t)
    counts = _counts(s[judge], inc[judge], threshold)
    eps, scale = _epsilon_hat(family, counts, confidence, refine=True)  # the grid only picks the threshold
    fp, negatives, fn, positives = counts
    details = {"design": design, "threshold": threshold, "threshold_canaries": int(cut),
               "judged_canaries": int(judge.size), "false_positives": fp, "negatives": negatives,
               "false_negatives": fn, "positives": positives, "rejected_noise_scale": scale,
               # chosen as the best of many thresholds on that half: selection-biased, not a bound
               "threshold_half_epsilon_hat_biased": max(best_eps, 0.0)}
    return _finish(AuditResult("heldout_fdp", eps, confidence, delta, epsilon_claimed, details))
