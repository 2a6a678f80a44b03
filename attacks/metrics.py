"""Membership-inference metrics: ROC, AUC, attacker advantage, TPR at low FPR.

Convention everywhere in :mod:`attacks`: ``labels`` are 1 for members (the
positive class) and a higher ``score`` means "more likely a member".

The low-FPR numbers follow LiRA (Carlini et al. 2022) and ML Privacy Meter:
an attack that is confidently right on a few examples matters more than its
average-case AUC, so report TPR at 1 %, 0.1 % and 0 % FPR and look at the ROC
on log-log axes. Every number comes with a stratified bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ._validation import (
    RandomState,
    check_binary_labels,
    check_both_classes,
    check_random_state,
    check_scores,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ConfidenceInterval",
    "MembershipMetrics",
    "RocCurve",
    "attacker_advantage",
    "bootstrap_interval",
    "evaluate_membership",
    "plot_roc",
    "roc_auc",
    "roc_curve",
    "tpr_at_fpr",
]

DEFAULT_FPR_LEVELS: tuple[float, ...] = (0.01, 0.001, 0.0)


@dataclass(frozen=True)
class RocCurve:
    """ROC points, one per distinct score threshold, starting at (0, 0).

    ``thresholds[i]`` is the smallest score predicted "member" at point ``i``
    (``+inf`` for the first point, where nothing is predicted member).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def __post_init__(self) -> None:
        if not (self.fpr.shape == self.tpr.shape == self.thresholds.shape) or self.fpr.ndim != 1:
            raise ValueError("fpr, tpr and thresholds must be 1-D arrays of equal length")

    @property
    def auc(self) -> float:
        return float(np.trapezoid(self.tpr, self.fpr))

    @property
    def advantage(self) -> float:
        return float(np.max(np.abs(self.tpr - self.fpr)))

    def tpr_at(self, fpr_level: float) -> float:
        """Best TPR among the thresholds whose FPR is at most ``fpr_level``."""
        if not 0.0 <= fpr_level <= 1.0:
            raise ValueError(f"fpr_level must be in [0, 1], got {fpr_level}")
        return float(np.max(self.tpr[self.fpr <= fpr_level]))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> RocCurve:
    """ROC curve of ``scores`` for the binary ``labels``; ties share one point.

    >>> c = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> c.fpr.tolist(), c.tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    >>> c.auc
    0.75
    """
    y = check_binary_labels(labels)
    s = check_scores(scores, len(y))
    check_both_classes(y)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # The last index of each run of equal scores: one ROC point per distinct threshold.
    last_of_run = np.flatnonzero(np.diff(s_sorted)) if s_sorted.size > 1 else np.array([], int)
    last_of_run = np.r_[last_of_run, s_sorted.size - 1]
    true_pos = np.cumsum(y_sorted)[last_of_run]
    false_pos = (last_of_run + 1) - true_pos
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    return RocCurve(
        fpr=np.r_[0.0, false_pos / n_neg],
        tpr=np.r_[0.0, true_pos / n_pos],
        thresholds=np.r_[np.inf, s_sorted[last_of_run]],
    )


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half).

    >>> roc_auc([0, 1, 0, 1], [1.0, 1.0, 0.0, 2.0])
    0.875
    """
    return roc_curve(labels, scores).auc


def attacker_advantage(labels: np.ndarray, scores: np.ndarray) -> float:
    """``max |TPR - FPR|`` over thresholds (Yeom et al. 2018; TF-Privacy).

    >>> attacker_advantage([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    1.0
    """
    return roc_curve(labels, scores).advantage


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_level: float) -> float:
    """TPR at the best threshold whose FPR does not exceed ``fpr_level``.

    ``fpr_level=0`` asks how many members are found before the first
    non-member is flagged.

    >>> tpr_at_fpr([0, 1, 1, 0, 1], [0.2, 0.9, 0.8, 0.5, 0.1], 0.0)
    0.6666666666666666
    """
    return roc_curve(labels, scores).tpr_at(fpr_level)


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with a two-sided percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.estimate:.4f} [{self.low:.4f}, {self.high:.4f}]"


def _stratified_resample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Members and non-members are resampled separately (hand-written rather than
    # scipy.stats.bootstrap) so every resample keeps both classes and the ROC
    # stays defined, and the class balance of the experiment is preserved.
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    return np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]


def _cluster_resample(labels: np.ndarray, clusters: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    # Samples that share a cluster (one user's ratings) are not independent: resample whole
    # clusters, and draw again in the rare case a resample lacks a class (the ROC needs both).
    for _ in range(100):
        idx = np.concatenate([clusters[c] for c in rng.integers(0, len(clusters), len(clusters))])
        if labels[idx].any() and not labels[idx].all():
            return idx
    raise ValueError("cluster resamples keep missing a class: too few clusters with members and non-members")


def _clusters(groups: np.ndarray | None, n: int) -> list[np.ndarray] | None:
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have one id per sample ({n}), got shape {g.shape}")
    _, inverse = np.unique(g, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)


def bootstrap_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state: RandomState = None,
    groups: np.ndarray | None = None,
) -> ConfidenceInterval:
    """Percentile-bootstrap interval of ``statistic(labels, scores)``.

    Stratified by class by default; with ``groups`` (e.g. the user of each
    rating) whole groups are resampled instead, because samples of one group
    are correlated and resampling them one by one makes the interval too narrow.
    """
    y = check_binary_labels(labels)
    s = check_scores(scores, len(y))
    check_both_classes(y)
    rng = check_random_state(random_state)
    clusters = _clusters(groups, len(y))
    values = np.empty(n_resamples)
    for i in range(n_resamples):
        idx = _stratified_resample(y, rng) if clusters is None else _cluster_resample(y, clusters, rng)
        values[i] = statistic(y[idx], s[idx])
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return ConfidenceInterval(float(statistic(y, s)), float(low), float(high), confidence)


@dataclass(frozen=True)
class MembershipMetrics:
    """Everything :func:`evaluate_membership` measures, with bootstrap intervals."""

    auc: ConfidenceInterval
    advantage: ConfidenceInterval
    tpr_at_fpr: Mapping[float, ConfidenceInterval]
    n_members: int
    n_nonmembers: int
    roc: RocCurve = field(repr=False)

    def as_dict(self) -> dict[str, float | int]:
        """Flat dict for tables and JSON (``tpr@0.1%_low`` etc.)."""
        out: dict[str, float | int] = {
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
        }
        named = {"auc": self.auc, "advantage": self.advantage}
        named.update({f"tpr@{level * 100:g}%": ci for level, ci in self.tpr_at_fpr.items()})
        for name, ci in named.items():
            out[name], out[f"{name}_low"], out[f"{name}_high"] = ci.estimate, ci.low, ci.high
        return out

    def summary(self) -> str:
        lines = [
            f"members={self.n_members} non-members={self.n_nonmembers}",
            f"AUC        {self.auc}",
            f"advantage  {self.advantage}",
        ]
        lines += [f"TPR@{level * 100:g}%FPR {ci}" for level, ci in self.tpr_at_fpr.items()]
        return "\n".join(lines)


def evaluate_membership(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    fpr_levels: Sequence[float] = DEFAULT_FPR_LEVELS,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    random_state: RandomState = None,
    groups: np.ndarray | None = None,
) -> MembershipMetrics:
    """AUC, advantage and TPR at each of ``fpr_levels``, each with a bootstrap interval.

    One ROC curve is computed per resample and all statistics are read off it.
    ``groups`` (one id per sample, e.g. its user) resamples whole groups: see
    :func:`bootstrap_interval`.
    """
    y = check_binary_labels(labels)
    s = check_scores(scores, len(y))
    check_both_classes(y)
    if n_bootstrap < 1:
        raise ValueError("n_bootstrap must be at least 1")
    rng = check_random_state(random_state)
    clusters = _clusters(groups, len(y))

    def read(curve: RocCurve) -> np.ndarray:
        return np.array([curve.auc, curve.advantage, *(curve.tpr_at(f) for f in fpr_levels)])

    full = roc_curve(y, s)
    point = read(full)
    resampled = np.empty((n_bootstrap, point.size))
    for i in range(n_bootstrap):
        idx = _stratified_resample(y, rng) if clusters is None else _cluster_resample(y, clusters, rng)
        resampled[i] = read(roc_curve(y[idx], s[idx]))
    tail = (1.0 - confidence) / 2 * 100
    lows, highs = np.percentile(resampled, [tail, 100 - tail], axis=0)
    cis = [
        ConfidenceInterval(float(p), float(lo), float(hi), confidence)
        for p, lo, hi in zip(point, lows, highs)
    ]
    return MembershipMetrics(
        auc=cis[0],
        advantage=cis[1],
        tpr_at_fpr={float(f): ci for f, ci in zip(fpr_levels, cis[2:])},
        n_members=int(y.sum()),
        n_nonmembers=int((~y).sum()),
        roc=full,
    )


def plot_roc(
    curves: Mapping[str, RocCurve],
    *,
    log_scale: bool = True,
    title: str | None = None,
) -> Figure:
    """Plot ROC curves (log-log by default, as in LiRA) and return the Figure.

    Builds a bare ``matplotlib.figure.Figure`` (Agg canvas) without pyplot, so it
    never opens a window or touches global state; save it with ``fig.savefig``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    smallest = 1.0
    for name, curve in curves.items():
        ax.plot(curve.fpr, curve.tpr, label=f"{name} (AUC {curve.auc:.3f})")
        positive = curve.fpr[curve.fpr > 0]
        if positive.size:
            smallest = min(smallest, float(positive.min()))
    if log_scale:
        ax.set_xscale("log", nonpositive="clip")
        ax.set_yscale("log", nonpositive="clip")
        lower = smallest / 2 if smallest < 1 else 1e-3
        ax.set_xlim(lower, 1.0)
        ax.set_ylim(lower, 1.0)
        grid = np.geomspace(lower, 1.0, 50)
        ax.plot(grid, grid, "k--", linewidth=0.8, label="chance")
    else:
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return fig
