"""Shared pieces of the membership attacks: the training-callable contract and
the shadow-model experiment that LiRA and RMIA both consume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .._validation import RandomState, check_random_state

__all__ = ["ShadowStatistics", "TrainAndScore", "logit_confidence", "train_shadow_models"]

TrainAndScore = Callable[[np.ndarray, int], np.ndarray]
"""``train_and_score(in_training, seed) -> statistics``.

Train one model on the population samples where the boolean mask
``in_training`` is True (seeding any randomness with ``seed``), then return its
per-sample statistic on *every* population sample, shape ``(n_samples,)``.
Higher must mean "the model fits this sample better": a negative loss, a
log-likelihood, or :func:`logit_confidence` of the true label. The callable
may use torch internally; this package only sees numpy arrays.
"""


def logit_confidence(probabilities: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``log(p / (1 - p))`` of the probability given to the true label.

    LiRA's recommended statistic: it makes per-sample shadow distributions
    close to Gaussian.

    >>> logit_confidence(np.array([0.5, 0.9])).round(4).tolist()
    [0.0, 2.1972]
    """
    p = np.clip(np.asarray(probabilities, dtype=float), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ShadowStatistics:
    """Per-sample statistics of shadow models and which samples each was trained on."""

    statistics: np.ndarray  # (n_models, n_samples) float
    membership: np.ndarray  # (n_models, n_samples) bool

    def __post_init__(self) -> None:
        if self.statistics.ndim != 2 or self.statistics.shape != self.membership.shape:
            raise ValueError("statistics and membership must be 2-D arrays of the same shape")
        if self.membership.dtype != bool:
            raise ValueError("membership must be boolean")
        if not np.all(np.isfinite(self.statistics)):
            raise ValueError("shadow statistics contain NaN or infinite values")

    @property
    def n_models(self) -> int:
        return self.statistics.shape[0]

    @property
    def n_samples(self) -> int:
        return self.statistics.shape[1]


def train_shadow_models(
    train_and_score: TrainAndScore,
    n_samples: int,
    n_models: int,
    *,
    inclusion_probability: float = 0.5,
    random_state: RandomState = None,
) -> ShadowStatistics:
    """Train ``n_models`` shadow models, each on an independent random subset.

    Each sample enters each shadow training set independently with
    ``inclusion_probability`` (½ makes every sample IN for about half the
    models, which the online attacks need).
    """
    if n_samples < 1 or n_models < 1:
        raise ValueError("n_samples and n_models must be positive")
    if not 0.0 < inclusion_probability < 1.0:
        raise ValueError("inclusion_probability must be in (0, 1)")
    rng = check_random_state(random_state)
    membership = rng.random((n_models, n_samples)) < inclusion_probability
    seeds = rng.integers(0, 2**31 - 1, size=n_models)
    rows = []
    for mask, seed in zip(membership, seeds):
        stat = np.asarray(train_and_score(mask.copy(), int(seed)), dtype=float)
        if stat.shape != (n_samples,):
            raise ValueError(
                f"train_and_score returned shape {stat.shape}, expected ({n_samples},)"
            )
        rows.append(stat)
    return ShadowStatistics(np.vstack(rows), membership)
