"""Item rankers for implicit feedback: popularity and item-based k nearest neighbours."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..data.dataset import RatingData

__all__ = ["ItemKNN", "MostPopular"]


def _interactions(train: RatingData) -> sparse.csr_array:
    m = sparse.csr_array((np.ones(len(train), dtype=np.float32), (train.users, train.items)),
                         shape=(train.n_users, train.n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


class MostPopular:
    """Every user gets the items with the most training interactions."""

    def fit(self, train: RatingData) -> MostPopular:
        self.counts_ = np.bincount(train.items, minlength=train.n_items).astype(np.float32)
        return self

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts_, (len(users), len(self.counts_)))


class ItemKNN:
    """Item-based collaborative filtering (Sarwar et al. 2001; Deshpande & Karypis 2004).

    Item similarity is the cosine of the items' user columns with a shrinkage
    term, ``|U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink)``; each item keeps its
    ``neighbours`` most similar items, and a user's score of an item is the
    sum of its similarities to the items the user interacted with. A small
    popularity term breaks the ties among the many items no neighbour reaches.
    """

    def __init__(self, neighbours: int = 100, shrink: float = 10.0) -> None:
        self.neighbours, self.shrink = neighbours, shrink

    def fit(self, train: RatingData) -> ItemKNN:
        self.interactions_ = _interactions(train)
        by_item = self.interactions_.T.tocsr()
        co = (by_item @ by_item.T).tocsr().astype(np.float32)  # items × items co-occurrence
        norms = np.sqrt(np.asarray(by_item.sum(axis=1)).ravel())
        co = co.tocoo()
        keep = co.row != co.col
        rows, cols, values = co.row[keep], co.col[keep], co.data[keep]
        values = values / (norms[rows] * norms[cols] + self.shrink)
        self.similarity_ = _top_per_row(rows, cols, values, train.n_items, self.neighbours)
        counts = np.bincount(train.items, minlength=train.n_items).astype(np.float32)
        self.tiebreak_ = 1e-6 * counts / max(1.0, float(counts.max()))
        return self

    def score_users(self, users: np.ndarray) -> np.ndarray:
        history = self.interactions_[users]
        return np.asarray((history @ self.similarity_).todense()) + self.tiebreak_


def _top_per_row(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int,
                 keep: int) -> sparse.csr_array:
    """The ``keep`` largest entries of each row of a sparse matrix given as triplets."""
    order = np.lexsort((-values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.searchsorted(rows, np.arange(n))
    rank = np.arange(len(rows)) - starts[rows]
    top = rank < keep
    return sparse.csr_array((values[top], (rows[top], cols[top])), shape=(n, n))
