"""Threshold attacks on per-rating losses: global (Yeom et al. 2018) and
difficulty-calibrated per item/user (in the spirit of Watson et al. 2022).

Input is whatever per-sample loss the caller computes with the target model
(squared error of a rating, BPR loss of a (user, item) pair, ...). A low loss
suggests membership, so the membership score is a negated (calibrated) loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import check_binary_labels, check_scores
from ..metrics import roc_curve

__all__ = ["CalibratedLossAttack", "LossThresholdAttack"]

_THRESHOLD_RULES = ("mean_member_loss", "max_advantage")
_LOG_FLOOR = 1e-12  # a zero loss must not become -inf


class LossThresholdAttack:
    """Predict "member" when the loss is at most ``threshold_`` (Yeom et al. 2018).

    Parameters
    ----------
    threshold:
        A number, ``"mean_member_loss"`` (Yeom's rule: the average training
        loss, which the attacker is assumed to know), or ``"max_advantage"``
        (the threshold maximising TPR − FPR on labelled reference losses, as in
        TF-Privacy's threshold attack).

    ``score`` is the negated loss, so ROC metrics do not depend on the threshold.
    """

    def __init__(self, threshold: float | str = "mean_member_loss"):
        self.threshold = threshold

    def fit(self, losses: np.ndarray, membership: np.ndarray | None = None) -> LossThresholdAttack:
        """Fit on reference losses; ``membership`` None means all are training losses."""
        loss = check_scores(losses, name="losses")
        member = (
            np.ones(loss.size, bool)
            if membership is None
            else check_binary_labels(membership, "membership")
        )
        if member.shape != loss.shape:
            raise ValueError("losses and membership must have the same length")
        if isinstance(self.threshold, str):
            if self.threshold not in _THRESHOLD_RULES:
                raise ValueError(f"threshold must be a number or one of {_THRESHOLD_RULES}")
            if self.threshold == "mean_member_loss":
                if not member.any():
                    raise ValueError("need at least one member loss")
                self.threshold_ = float(loss[member].mean())
            else:
                if membership is None:
                    raise ValueError("threshold='max_advantage' needs membership labels")
                curve = roc_curve(member, -loss)
                best = int(np.argmax(curve.tpr - curve.fpr))
                self.threshold_ = float(-curve.thresholds[best])
        else:
            self.threshold_ = float(self.threshold)
        return self

    def score(self, losses: np.ndarray) -> np.ndarray:
        return -check_scores(losses, name="losses")

    def predict(self, losses: np.ndarray) -> np.ndarray:
        return check_scores(losses, name="losses") <= self.threshold_


def _as_groupings(groups: np.ndarray | Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    if isinstance(groups, np.ndarray) and groups.ndim == 1:
        groups = [groups]
    out = []
    for g in groups:
        arr = np.asarray(g)
        if (
            arr.shape != (n,)
            or not np.issubdtype(arr.dtype, np.integer)
            or (arr.size and arr.min() < 0)
        ):
            raise ValueError(
                f"each grouping must be a length-{n} array of non-negative integer ids"
            )
        out.append(arr.astype(np.int64))
    if not out:
        raise ValueError("need at least one grouping")
    return out


class CalibratedLossAttack:
    """Loss threshold calibrated per group (item, user, or both).

    Some items are hard to predict for everyone; a global threshold flags the
    easy ones as members. This attack learns each group's typical loss on
    reference (non-member) data and scores ``baseline(groups) − loss``.

    With several groupings (e.g. ``(user_ids, item_ids)``) the baseline is
    additive, ``global + Σ effect_k[group_k]``, fitted by backfitting. Each
    effect is shrunk toward zero like ``sum / (count + prior_strength)`` so that
    groups seen a few times fall back to the global level.

    ``fit`` takes losses of reference samples known to be non-members (for
    example the target model's loss on held-out ratings, or shadow models'
    loss on their OUT ratings); ``predict`` flags scores at least ``threshold``.

    ``log_scale`` (default True) calibrates ``log(loss)``: a squared error is
    heavy-tailed and an item's difficulty scales it rather than shifting it, so
    an additive baseline on the raw loss is dominated by a few huge errors (it
    cost 0.05–0.15 AUC on squared errors); on the log scale the difficulty is
    additive and the per-group means are stable. ``log_scale=False`` keeps the
    raw scale (for losses that are already log-likelihoods).
    """

    def __init__(self, prior_strength: float = 5.0, n_iter: int = 10, threshold: float = 0.0,
                 log_scale: bool = True):
        self.prior_strength = prior_strength
        self.n_iter = n_iter
        self.threshold = threshold
        self.log_scale = log_scale

    def _scale(self, losses: np.ndarray) -> np.ndarray:
        loss = check_scores(losses, name="losses")
        if not self.log_scale:
            return loss
        if np.any(loss < 0):
            raise ValueError("log_scale needs non-negative losses; pass log_scale=False")
        return np.log(loss + _LOG_FLOOR)

    def fit(
        self, losses: np.ndarray, groups: np.ndarray | Sequence[np.ndarray]
    ) -> CalibratedLossAttack:
        loss = self._scale(losses)
        groupings = _as_groupings(groups, loss.size)
        if self.prior_strength < 0 or self.n_iter < 1:
            raise ValueError("prior_strength must be >= 0 and n_iter >= 1")
        self.global_loss_ = float(loss.mean())
        effects = [np.zeros(int(g.max()) + 1 if g.size else 0) for g in groupings]
        residual = loss - self.global_loss_
        for _ in range(self.n_iter if len(groupings) > 1 else 1):
            for k, g in enumerate(groupings):
                residual += effects[k][g]  # take this grouping's effect back out
                sums = np.bincount(g, weights=residual, minlength=effects[k].size)
                counts = np.bincount(g, minlength=effects[k].size)
                effects[k] = sums / (counts + self.prior_strength + 1e-12)
                residual -= effects[k][g]
        self.group_effects_ = effects
        return self

    def baseline(self, groups: np.ndarray | Sequence[np.ndarray], n: int) -> np.ndarray:
        """Expected non-member loss (log-loss with ``log_scale``) per sample; unseen group ids get effect 0."""
        groupings = _as_groupings(groups, n)
        if len(groupings) != len(self.group_effects_):
            raise ValueError(f"expected {len(self.group_effects_)} groupings, got {len(groupings)}")
        base = np.full(n, self.global_loss_)
        for effect, g in zip(self.group_effects_, groupings):
            known = g < effect.size
            base[known] += effect[g[known]]
        return base

    def score(self, losses: np.ndarray, groups: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        loss = self._scale(losses)
        return self.baseline(groups, loss.size) - loss

    def predict(self, losses: np.ndarray, groups: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        return self.score(losses, groups) >= self.threshold
