"""Training objectives beyond pointwise regression: BPR's pairwise ranking loss.

BPR (Rendle et al., UAI 2009) trains a score to rank an item the user
interacted with above one it did not: ``−log σ(s(u, i) − s(u, j))`` for a
positive ``i`` and a sampled negative ``j``. It optimizes the ranking the
evaluation measures, where a pointwise logistic loss on 0/1 targets spends its
capacity calibrating probabilities; with a per-item bias in the score, BPR
starts from popularity and learns what lifts a user's items above it.

Negatives are drawn uniformly, with replacement, from the items **not among the
client's own training interactions**: a client knows only its own data. (Its
held-out test items are not known to it either; excluding them would leak the
test set into training. Uniform draws hit a given test item with probability
about negatives × positives / unrated items per round.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

from .base import FederatedModel

__all__ = ["PairExamples", "bpr_loss", "pair_examples"]


@dataclass(frozen=True)
class PairExamples:
    """One client's BPR pairs over a local item indexing.

    ``items`` are the sorted global item indices the client's view holds
    (positives and the negatives drawn this round); ``positive[k]`` and
    ``negative[k]`` index into them.
    """

    items: np.ndarray
    positive: np.ndarray
    negative: np.ndarray

    def __len__(self) -> int:
        return len(self.positive)


def pair_examples(rated: np.ndarray, n_items: int, negatives: int,
                  rng: np.random.Generator) -> PairExamples:
    """``negatives`` pairs per positive, negatives uniform over the client's unrated items."""
    positives = np.unique(np.asarray(rated, dtype=np.int64))
    unrated = n_items - len(positives)
    if unrated == 0 or len(positives) == 0:  # nothing to rank against
        return PairExamples(positives, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    # Uniform over the complement without materializing it: draw a rank among the unrated
    # items and shift it past every rated item at or below it.
    draws = rng.integers(0, unrated, size=negatives * len(positives))
    negative_items = draws + np.searchsorted(positives - np.arange(len(positives)), draws, side="right")
    positive_items = np.repeat(positives, negatives)
    items = np.union1d(positives, negative_items)
    return PairExamples(items, np.searchsorted(items, positive_items),
                        np.searchsorted(items, negative_items))


def bpr_loss(model: FederatedModel, users: torch.Tensor, positive: torch.Tensor,
             negative: torch.Tensor, reg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pair BPR loss, per-pair loss plus the L2 penalty of the rows the pair touches)."""
    margin = model(users, positive) - model(users, negative)
    data_loss = -functional.logsigmoid(margin)
    penalty = model.penalty(users, positive) + model.penalty(users, negative)
    return data_loss, data_loss + reg * penalty
