"""Empirical lower bounds on epsilon from the outcome of an attack.

An accountant gives an *upper* bound: "this training run is (ε, δ)-DP". An
audit runs an attack and turns its success into a *lower* bound ε̂ that holds
with the stated confidence. If ε̂ > ε, the implementation leaks more than the
accountant claims: a privacy bug (or a broken accountant), never noise.

Two bounds are provided, both as pure functions with a thin result object:

* Clopper–Pearson (Jagielski, Ullman, Oprea 2020). Any (ε, δ)-DP mechanism
  satisfies ``FPR + e^ε·FNR ≥ 1 − δ`` and ``FNR + e^ε·FPR ≥ 1 − δ`` for every
  membership test. Upper-bound FPR and FNR with exact binomial intervals and
  solve for ε.
* One run (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with One (1)
  Training Run"). m canaries are each included independently with probability
  ½; the auditor guesses "in" or "out" for r of them and abstains on the rest.
  Under ε-DP the number of correct guesses is stochastically dominated by
  Binomial(r, e^ε / (1 + e^ε)) (their Theorem 3.1); with δ > 0 a correction
  term is added (their Theorem 5.2 and the p-value algorithm in their
  appendix). ε̂ is the largest ε whose p-value is below 1 − confidence.

Seedable randomness (canary inclusion) lives here because it belongs to the
experiment; it is never used for protocol secrets.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

from ._validation import (
    RandomState,
    check_binary_labels,
    check_random_state,
    check_scores,
)

__all__ = [
    "AuditResult",
    "CanaryRatings",
    "CanaryUsers",
    "PrivacyViolationWarning",
    "audit_clopper_pearson",
    "audit_clopper_pearson_heldout",
    "audit_delta",
    "audit_one_run",
    "clopper_pearson_interval",
    "count_correct_guesses",
    "draw_canary_inclusion",
    "epsilon_lower_bound_clopper_pearson",
    "guesses_from_scores",
    "make_canary_ratings",
    "make_canary_users",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
]

_EPSILON_SEARCH_CAP = 1e3  # no finite audit with < 1e300 trials certifies more than this


class PrivacyViolationWarning(UserWarning):
    """The audited lower bound ε̂ exceeds the accountant's ε: a privacy bug."""


# ---------------------------------------------------------------- Clopper–Pearson


def clopper_pearson_interval(
    successes: int, trials: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Exact two-sided binomial interval for a proportion (Clopper–Pearson 1934).

    >>> lo, hi = clopper_pearson_interval(0, 10, 0.95)
    >>> lo, round(hi, 4)
    (0.0, 0.3085)
    """
    _check_count(successes, trials)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2
    low = 0.0 if successes == 0 else float(stats.beta.ppf(tail, successes, trials - successes + 1))
    high = (
        1.0
        if successes == trials
        else float(stats.beta.ppf(1 - tail, successes + 1, trials - successes))
    )
    return low, high


def epsilon_lower_bound_clopper_pearson(
    false_positives: int,
    negatives: int,
    false_negatives: int,
    positives: int,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> float:
    """ε lower bound from a membership test's error counts (Jagielski et al. 2020).

    FPR and FNR are each bounded above by the upper end of a two-sided
    Clopper–Pearson interval at ``confidence``, so both one-sided bounds hold
    together with probability at least ``confidence`` (union bound), matching
    the original paper's use of 95 % two-sided intervals. Returns 0 when the
    bounds certify nothing.

    A perfect attack on 1000 + 1000 trials, δ = 0: FPR, FNR ≤ 0.00368, so

    >>> round(epsilon_lower_bound_clopper_pearson(0, 1000, 0, 1000), 3)
    5.601
    """
    _check_count(false_positives, negatives)
    _check_count(false_negatives, positives)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    fpr_high = clopper_pearson_interval(false_positives, negatives, confidence)[1]
    fnr_high = clopper_pearson_interval(false_negatives, positives, confidence)[1]
    candidates = [0.0]
    for a, b in ((fpr_high, fnr_high), (fnr_high, fpr_high)):
        if b > 0 and 1.0 - delta - a > 0:
            candidates.append(math.log((1.0 - delta - a) / b))
    return max(candidates)


# ---------------------------------------------------------------- one-run audit


def one_run_p_value(
    num_canaries: int, num_guesses: int, num_correct: int, epsilon: float, delta: float = 0.0
) -> float:
    """P[≥ ``num_correct`` correct of ``num_guesses``] under (ε, δ)-DP, as an upper bound.

    Steinke, Nasr, Jagielski 2023. With δ = 0 this is the tail of
    Binomial(r, q), q = e^ε / (1 + e^ε). With δ > 0 it adds
    ``2·m·δ·max_i P[v − i ≤ Binomial(r, q) < v] / i``.

    >>> one_run_p_value(10, 10, 10, 0.0)  # ten fair coin flips all right
    0.0009765625
    """
    m, r, v = num_canaries, num_guesses, num_correct
    if not (0 <= v <= r <= m):
        raise ValueError(f"need 0 <= num_correct <= num_guesses <= num_canaries, got {v}, {r}, {m}")
    if epsilon < 0 or not 0.0 <= delta <= 1.0:
        raise ValueError("need epsilon >= 0 and 0 <= delta <= 1")
    q = 1.0 / (1.0 + math.exp(-epsilon))  # accuracy of ε-DP randomized response
    tail = float(stats.binom.sf(v - 1, r, q))
    if delta == 0.0 or v == 0:
        return min(tail, 1.0)
    # P[v - i <= B < v] for i = 1..v is a running sum of pmf(v-1), pmf(v-2), ..., pmf(0).
    window = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q))
    correction = float(np.max(window / np.arange(1, v + 1)))
    return min(tail + 2.0 * m * delta * correction, 1.0)


def audit_delta(num_canaries: int, confidence: float = 0.95, *, share: float = 0.1) -> float:
    """The δ to train and audit with when a one-run audit uses ``num_canaries`` canaries.

    The one-run p-value (:func:`one_run_p_value`) adds ``2·m·δ·c`` with
    ``c ≤ 1`` to the ε-DP tail, so with m·δ near the test level
    ``α = 1 − confidence`` no attack can certify anything. Choosing
    ``δ = share · α / (2·m)`` keeps that term below ``share`` of the test level
    whatever the attack does: the audit then measures ε, not δ. At 95 %
    confidence and the default share this is δ = 1/(400·m), well under 1/m
    (the scale at which "(ε, δ)-DP" allows one canary to leak outright).

    >>> f"{audit_delta(1000):.3g}"
    '2.5e-06'
    """
    if num_canaries < 1:
        raise ValueError("num_canaries must be positive")
    if not 0.0 < confidence < 1.0 or not 0.0 < share <= 1.0:
        raise ValueError("need 0 < confidence < 1 and 0 < share <= 1")
    return share * (1.0 - confidence) / (2.0 * num_canaries)


def one_run_epsilon_lower_bound(
    num_canaries: int,
    num_guesses: int,
    num_correct: int,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> float:
    """Largest ε that the observed guesses reject at ``confidence`` (0 if none).

    Perfect guessing on 1000 canaries at δ = 0 and 95 % confidence: ε̂ solves
    q^1000 = 0.05, i.e. ε̂ = logit(0.05^(1/1000)):

    >>> round(one_run_epsilon_lower_bound(1000, 1000, 1000), 3)
    5.809
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1.0 - confidence

    def excess(eps: float) -> float:
        return one_run_p_value(num_canaries, num_guesses, num_correct, eps, delta) - alpha

    if excess(0.0) >= 0.0:
        return 0.0
    high = 1.0
    while excess(high) < 0.0:
        high *= 2.0
        if high > _EPSILON_SEARCH_CAP:
            return math.inf
    # The p-value grows with ε; brentq finds the crossing within the bracket.
    return float(optimize.brentq(excess, 0.0, high, xtol=1e-10))


def guesses_from_scores(scores: np.ndarray, num_positive: int, num_negative: int = 0) -> np.ndarray:
    """Guess "in" (+1) for the ``num_positive`` highest scores, "out" (−1) for the
    ``num_negative`` lowest, abstain (0) on the rest. Ties broken by position.

    >>> guesses_from_scores(np.array([0.1, 0.9, 0.5, 0.7]), 1, 1).tolist()
    [-1, 1, 0, 0]
    """
    s = check_scores(scores)
    if num_positive < 0 or num_negative < 0 or num_positive + num_negative > s.size:
        raise ValueError("need 0 <= num_positive + num_negative <= len(scores)")
    order = np.argsort(-s, kind="stable")
    guesses = np.zeros(s.size, dtype=np.int8)
    guesses[order[:num_positive]] = 1
    if num_negative:
        guesses[order[-num_negative:]] = -1
    return guesses


def count_correct_guesses(guesses: np.ndarray, included: np.ndarray) -> tuple[int, int]:
    """Return (number of guesses, number correct) for ±1/0 guesses."""
    g = np.asarray(guesses)
    inc = check_binary_labels(included, "included")
    if g.shape != inc.shape or not np.all(np.isin(g, (-1, 0, 1))):
        raise ValueError("guesses must be -1/0/+1 and the same shape as included")
    truth = np.where(inc, 1, -1)
    return int(np.count_nonzero(g)), int(np.count_nonzero(g == truth))


# ---------------------------------------------------------------- canaries


def draw_canary_inclusion(num_canaries: int, random_state: RandomState = None) -> np.ndarray:
    """Independent fair coins: which canaries go into training (the one-run design).

    >>> a, b = draw_canary_inclusion(6, random_state=0), draw_canary_inclusion(6, random_state=0)
    >>> bool((a == b).all())
    True
    """
    if num_canaries < 1:
        raise ValueError("num_canaries must be positive")
    return check_random_state(random_state).random(num_canaries) < 0.5


@dataclass(frozen=True)
class CanaryRatings:
    """Canary (user, item, rating) triples and which ones were inserted."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    included: np.ndarray

    def __post_init__(self) -> None:
        n = self.users.shape[0]
        if any(a.shape != (n,) for a in (self.items, self.ratings, self.included)):
            raise ValueError("users, items, ratings and included must be 1-D of equal length")
        if self.included.dtype != bool:
            raise ValueError("included must be boolean")

    def inserted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (users, items, ratings) to add to the training data."""
        k = self.included
        return self.users[k], self.items[k], self.ratings[k]


def make_canary_ratings(
    num_canaries: int,
    num_users: int,
    num_items: int,
    *,
    existing: tuple[np.ndarray, np.ndarray] | None = None,
    rating: float | Sequence[float] = 5.0,
    random_state: RandomState = None,
) -> CanaryRatings:
    """Draw ``num_canaries`` distinct (user, item) pairs absent from ``existing``,
    give them ``rating`` (a value or choices drawn uniformly), and include each
    with probability ½."""
    rng = check_random_state(random_state)
    taken = set()
    if existing is not None:
        taken = set(zip(np.asarray(existing[0]).tolist(), np.asarray(existing[1]).tolist()))
    if num_canaries > num_users * num_items - len(taken):
        raise ValueError("not enough free (user, item) pairs for the requested canaries")
    chosen: list[tuple[int, int]] = []
    seen = set(taken)
    while len(chosen) < num_canaries:
        u, i = int(rng.integers(num_users)), int(rng.integers(num_items))
        if (u, i) not in seen:
            seen.add((u, i))
            chosen.append((u, i))
    pairs = np.array(chosen, dtype=np.int64).reshape(-1, 2)
    values = np.atleast_1d(np.asarray(rating, dtype=float))
    ratings = (
        values[rng.integers(values.size, size=num_canaries)]
        if values.size > 1
        else np.full(num_canaries, values[0])
    )
    return CanaryRatings(
        pairs[:, 0], pairs[:, 1], ratings, draw_canary_inclusion(num_canaries, rng)
    )


@dataclass(frozen=True)
class CanaryUsers:
    """Synthetic canary users (each rates random items) and which ones take part.

    Federated DP protects whole users, so canary *users* are the natural unit for
    auditing a user-level guarantee; random items make them atypical and hence
    the easiest users to detect, which is what an audit wants.
    """

    items: tuple[np.ndarray, ...]
    ratings: tuple[np.ndarray, ...]
    included: np.ndarray

    def __post_init__(self) -> None:
        if len(self.items) != len(self.ratings) or self.included.shape != (len(self.items),):
            raise ValueError("items, ratings and included must describe the same canaries")
        if any(i.shape != r.shape for i, r in zip(self.items, self.ratings)):
            raise ValueError("each canary needs one rating per item")
        if self.included.dtype != bool:
            raise ValueError("included must be boolean")


def make_canary_users(
    num_canaries: int,
    num_items: int,
    *,
    items_per_user: int = 20,
    rating: float | Sequence[float] = 5.0,
    random_state: RandomState = None,
) -> CanaryUsers:
    """Draw ``num_canaries`` users who each rate ``items_per_user`` distinct random
    items, and include each user with probability ½."""
    if not 0 < items_per_user <= num_items:
        raise ValueError("need 0 < items_per_user <= num_items")
    rng = check_random_state(random_state)
    values = np.atleast_1d(np.asarray(rating, dtype=float))
    items = tuple(
        np.sort(rng.choice(num_items, items_per_user, replace=False)) for _ in range(num_canaries)
    )
    ratings = tuple(
        values[rng.integers(values.size, size=items_per_user)] for _ in range(num_canaries)
    )
    return CanaryUsers(items, ratings, draw_canary_inclusion(num_canaries, rng))


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class AuditResult:
    """An audited ε̂ next to the accountant's claim.

    ``violation`` is True when ε̂ exceeds ``epsilon_claimed``: with probability at
    least ``confidence`` the implementation is not (ε_claimed, δ)-DP.
    """

    method: str
    epsilon_lower_bound: float
    confidence: float
    delta: float
    epsilon_claimed: float | None
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("confidence must be in (0, 1)")
        if self.epsilon_lower_bound < 0:
            raise ValueError("epsilon_lower_bound must be non-negative")

    @property
    def violation(self) -> bool:
        return self.epsilon_claimed is not None and self.epsilon_lower_bound > self.epsilon_claimed

    def summary(self) -> str:
        claimed = "n/a" if self.epsilon_claimed is None else f"{self.epsilon_claimed:.3f}"
        flag = (
            "  <-- PRIVACY VIOLATION: audited epsilon exceeds the accountant's"
            if self.violation
            else ""
        )
        return (
            f"{self.method}: eps_hat >= {self.epsilon_lower_bound:.3f} "
            f"({self.confidence:.0%} confidence, delta={self.delta:g}); "
            f"accountant eps = {claimed}{flag}"
        )


def _finish(result: AuditResult) -> AuditResult:
    if result.violation:
        warnings.warn(
            f"PRIVACY VIOLATION: audited epsilon lower bound {result.epsilon_lower_bound:.3f} "
            f"exceeds the accountant's epsilon {result.epsilon_claimed:.3f} "
            f"({result.method}, {result.confidence:.0%} confidence, delta={result.delta:g}). "
            "The implementation leaks more than claimed.",
            PrivacyViolationWarning,
            stacklevel=3,
        )
    return result


def audit_clopper_pearson(
    membership: np.ndarray,
    predictions: np.ndarray,
    *,
    epsilon_claimed: float | None = None,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> AuditResult:
    """Audit from binary membership predictions on known members/non-members.

    Warns with :class:`PrivacyViolationWarning` when ε̂ exceeds ``epsilon_claimed``.
    """
    truth = check_binary_labels(membership, "membership")
    guess = check_binary_labels(predictions, "predictions")
    if guess.shape != truth.shape:
        raise ValueError("membership and predictions must have the same length")
    fp, fn = int(np.sum(guess & ~truth)), int(np.sum(~guess & truth))
    negatives, positives = int(np.sum(~truth)), int(np.sum(truth))
    eps = epsilon_lower_bound_clopper_pearson(
        fp, negatives, fn, positives, delta=delta, confidence=confidence
    )
    details = {
        "false_positives": fp,
        "negatives": negatives,
        "false_negatives": fn,
        "positives": positives,
    }
    return _finish(AuditResult("clopper_pearson", eps, confidence, delta, epsilon_claimed, details))


def heldout_halves(scores: np.ndarray, included: np.ndarray, threshold_fraction: float,
                   random_state: RandomState) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(scores, included, pick, judge)``: validated arrays and a random split of the canaries
    into the half that picks a threshold and the half it is judged on (each with both labels)."""
    s = check_scores(scores)
    inc = check_binary_labels(included, "included")
    if inc.shape != s.shape:
        raise ValueError("scores and included must have the same length")
    if not 0.0 < threshold_fraction < 1.0:
        raise ValueError("threshold_fraction must be in (0, 1)")
    order = check_random_state(random_state).permutation(s.size)
    cut = round(threshold_fraction * s.size)
    pick, judge = order[:cut], order[cut:]
    if not (inc[pick].any() and (~inc[pick]).any() and inc[judge].any() and (~inc[judge]).any()):
        raise ValueError("both halves need included and excluded canaries")
    return s, inc, pick, judge


def audit_clopper_pearson_heldout(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    threshold_fraction: float = 0.5,
    epsilon_claimed: float | None = None,
    delta: float = 0.0,
    confidence: float = 0.95,
    random_state: RandomState = None,
) -> AuditResult:
    """Clopper–Pearson audit whose threshold is chosen on held-out canaries.

    A random ``threshold_fraction`` of the canaries picks the score threshold
    with the largest Clopper–Pearson bound among their own scores; only the
    other canaries are then counted (:func:`audit_clopper_pearson`), so the
    threshold never sees the data it is judged on. Jagielski et al.'s bound
    treats canaries as independent trials; in one training run they share the
    run, so this is the literature's number to compare with, while the
    one-run bounds are the ones that hold for dependent canaries.
    """
    s, inc, pick, judge = heldout_halves(scores, included, threshold_fraction, random_state)
    cut = pick.size
    best_eps, threshold = -1.0, math.inf
    for t in np.unique(s[pick]):
        guess = s[pick] >= t
        fp, fn = int(np.sum(guess & ~inc[pick])), int(np.sum(~guess & inc[pick]))
        eps = epsilon_lower_bound_clopper_pearson(fp, int(np.sum(~inc[pick])), fn, int(np.sum(inc[pick])),
                                                  delta=delta, confidence=confidence)
        if eps > best_eps:
            best_eps, threshold = eps, float(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyViolationWarning)  # re-raised once by _finish below
        held_out = audit_clopper_pearson(inc[judge], s[judge] >= threshold, epsilon_claimed=epsilon_claimed,
                                         delta=delta, confidence=confidence)
    details = {**held_out.details, "threshold": threshold, "threshold_canaries": int(cut),
               "judged_canaries": int(judge.size)}
    return _finish(AuditResult("clopper_pearson_heldout", held_out.epsilon_lower_bound, confidence, delta,
                               epsilon_claimed, details))


def audit_one_run(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    num_positive: int | Sequence[int],
    num_negative: int | Sequence[int] = 0,
    epsilon_claimed: float | None = None,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> AuditResult:
    """One-run audit from canary scores (Steinke, Nasr, Jagielski 2023).

    ``scores[j]`` is the attack's membership score of canary ``j`` and
    ``included[j]`` whether it was really inserted (drawn with
    :func:`draw_canary_inclusion`). The auditor guesses "in" for the
    ``num_positive`` top scores and "out" for the ``num_negative`` bottom ones.

    When several (num_positive, num_negative) pairs are given, every pair is
    tested at the Bonferroni-corrected level ``1 − (1 − confidence)/n_pairs``
    and the largest bound is reported, so picking the best pair after the fact
    keeps the stated confidence.
    """
    s = check_scores(scores)
    inc = check_binary_labels(included, "included")
    if inc.shape != s.shape:
        raise ValueError("scores and included must have the same length")
    positives = (
        [num_positive] if isinstance(num_positive, (int, np.integer)) else list(num_positive)
    )
    negatives = (
        [num_negative] if isinstance(num_negative, (int, np.integer)) else list(num_negative)
    )
    pairs = [(p, n) for p in positives for n in negatives if 0 < p + n <= s.size]
    if not pairs:
        raise ValueError("no valid (num_positive, num_negative) pair")
    per_test_confidence = 1.0 - (1.0 - confidence) / len(pairs)
    best = (-1.0, 0, 0, 0, 0)
    for p, n in pairs:
        r, v = count_correct_guesses(guesses_from_scores(s, p, n), inc)
        eps = one_run_epsilon_lower_bound(s.size, r, v, delta=delta, confidence=per_test_confidence)
        if eps > best[0]:
            best = (eps, p, n, r, v)
    eps, p, n, r, v = best
    details = {
        "num_canaries": int(s.size),
        "num_positive": p,
        "num_negative": n,
        "num_guesses": r,
        "num_correct": v,
        "num_tests": len(pairs),
    }
    return _finish(AuditResult("one_run", eps, confidence, delta, epsilon_claimed, details))


def _check_count(successes: int, trials: int) -> None:
    if not (isinstance(successes, (int, np.integer)) and isinstance(trials, (int, np.integer))):
        raise TypeError("counts must be integers")
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(
            f"need 0 <= successes <= trials and trials >= 1, got {successes}, {trials}"
        )
