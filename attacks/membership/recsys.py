"""User-level membership inference against a recommender from its recommended
lists (Zhang et al., CCS 2021, "Membership Inference Attacks Against
Recommender Systems").

A recommender trained on a user tends to recommend items close to what that
user interacted with; a non-member typically gets generic (e.g. popular) items.
The attacker represents items as vectors (their paper factorises a shadow
user–item matrix; any item embedding or feature matrix works), describes each
user by the gap between the centroid of their interacted items and the centroid
of their recommended items, and trains a classifier on a shadow recommender
whose members it knows. The classifier then scores users of the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import check_binary_labels
from ._logistic import LogisticRegression

__all__ = ["RecommenderMembershipAttack", "user_membership_features"]


def _centroids(item_lists: Sequence[np.ndarray], item_vectors: np.ndarray, name: str) -> np.ndarray:
    n_items = item_vectors.shape[0]
    rows = []
    for u, items in enumerate(item_lists):
        ids = np.asarray(items, dtype=np.int64).ravel()
        if ids.size == 0:
            raise ValueError(f"{name}[{u}] is empty")
        if ids.min() < 0 or ids.max() >= n_items:
            raise ValueError(f"{name}[{u}] has item ids outside [0, {n_items})")
        rows.append(item_vectors[ids].mean(axis=0))
    return np.vstack(rows)


def user_membership_features(
    interacted: Sequence[np.ndarray],
    recommended: Sequence[np.ndarray],
    item_vectors: np.ndarray,
) -> np.ndarray:
    """Per-user attack features: the centroid difference vector (Zhang et al.),
    its Euclidean norm and the cosine similarity of the two centroids.

    >>> vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> user_membership_features([np.array([0])], [np.array([0, 2])], vecs).round(3).tolist()
    [[0.0, -0.5, 0.5, 0.894]]
    """
    vectors = np.asarray(item_vectors, dtype=float)
    if vectors.ndim != 2 or not np.all(np.isfinite(vectors)):
        raise ValueError("item_vectors must be a finite (n_items, d) array")
    if len(interacted) != len(recommended):
        raise ValueError("interacted and recommended must have one entry per user")
    inter = _centroids(interacted, vectors, "interacted")
    rec = _centroids(recommended, vectors, "recommended")
    diff = inter - rec
    norms = np.linalg.norm(inter, axis=1) * np.linalg.norm(rec, axis=1)
    cosine = np.divide(
        np.sum(inter * rec, axis=1), norms, out=np.zeros(len(norms)), where=norms > 0
    )
    return np.column_stack([diff, np.linalg.norm(diff, axis=1), cosine])


class RecommenderMembershipAttack:
    """Zhang et al. (2021) attack: a classifier on :func:`user_membership_features`.

    ``fit`` uses users of a shadow recommender the attacker trained itself (so
    their membership is known); ``score`` returns the membership probability of
    users of the target recommender. Item vectors may differ between the two
    calls (e.g. each recommender's own embeddings) as long as they have the
    same dimension.

    Learned attributes: ``classifier_`` (a fitted logistic regression).
    """

    def __init__(self, l2: float = 1e-2):
        self.l2 = l2

    def fit(
        self,
        interacted: Sequence[np.ndarray],
        recommended: Sequence[np.ndarray],
        item_vectors: np.ndarray,
        membership: np.ndarray,
    ) -> RecommenderMembershipAttack:
        labels = check_binary_labels(membership, "membership")
        features = user_membership_features(interacted, recommended, item_vectors)
        if labels.size != features.shape[0]:
            raise ValueError("membership must have one label per user")
        if labels.all() or not labels.any():
            raise ValueError("shadow users must include members and non-members")
        self.classifier_ = LogisticRegression(l2=self.l2).fit(features, labels)
        self.n_features_ = features.shape[1]
        return self

    def score(
        self,
        interacted: Sequence[np.ndarray],
        recommended: Sequence[np.ndarray],
        item_vectors: np.ndarray,
    ) -> np.ndarray:
        features = user_membership_features(interacted, recommended, item_vectors)
        if features.shape[1] != self.n_features_:
            raise ValueError(
                f"item vectors give {features.shape[1]} features, fitted on {self.n_features_}"
            )
        return self.classifier_.predict_proba(features)
