"""User-level membership inference against a recommender from its recommended
lists (Zhang et al., CCS 2021, "Membership Inference Attacks Against
Recommender Systems").

The setting of the paper: the target recommends to its *members* (users it was
trained on) the top-k items it scores highest among those they have not
interacted with yet; a *non-member* is unknown to it and gets generic
recommendations — in their experiments the most popular items it has not
interacted with. The attacker

1. represents items as vectors by factorising the user–item interaction
   matrix of its own (shadow) data (:func:`interaction_item_vectors`);
2. describes each user by the difference between the centroid of the user's
   interacted items and the centroid of the items recommended to it
   (:func:`user_membership_features`);
3. trains a classifier on a shadow recommender it built itself, whose members
   it therefore knows, mimicking how the target treats members and non-members;
4. applies the classifier to the target's users (whose histories it holds: the
   question is whether *this* data was used for training).

How well this works depends on how differently the target treats the two
groups. With popularity lists for non-members the gap is large; when a
non-member's recommendations are personalised too (in a federated recommender
a new client fits its own private row to its history against the shared model)
only the members' over-fitting is left to detect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg

from .._validation import RandomState, check_binary_labels, check_random_state
from ._logistic import LogisticRegression

__all__ = [
    "RecommenderMembershipAttack",
    "interaction_item_vectors",
    "popular_item_lists",
    "top_k_excluding",
    "user_membership_features",
]


class BinaryClassifier(Protocol):
    """What the attack needs of a classifier (scikit-learn's ``fit``/``predict_proba`` fit)."""

    def fit(self, features: np.ndarray, labels: np.ndarray) -> Any: ...

    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


def interaction_item_vectors(
    users: np.ndarray, items: np.ndarray, *, n_users: int, n_items: int, dim: int = 20,
    random_state: RandomState = None,
) -> np.ndarray:
    """Item vectors from a rank-``dim`` factorisation of the binary user–item matrix.

    Zhang et al. obtain item features by matrix factorisation of the
    attacker's interaction matrix; a truncated SVD ``M ≈ U S Vᵀ`` gives them
    in closed form, and each item is the row of ``V S^½``. Items the data
    never mentions get the zero vector (the attacker knows nothing of them).

    >>> vecs = interaction_item_vectors(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]),
    ...                                 n_users=3, n_items=4, dim=2, random_state=0)
    >>> vecs.shape, bool(np.all(vecs[3] == 0))
    ((4, 2), True)
    """
    u = np.asarray(users, dtype=np.int64).ravel()
    i = np.asarray(items, dtype=np.int64).ravel()
    if u.shape != i.shape or u.size == 0:
        raise ValueError("users and items must be non-empty and of equal length")
    if u.min() < 0 or u.max() >= n_users or i.min() < 0 or i.max() >= n_items:
        raise ValueError("user or item ids out of range")
    if not 1 <= dim < min(n_users, n_items):
        raise ValueError(f"dim must be in [1, {min(n_users, n_items) - 1}], got {dim}")
    matrix = sparse.coo_matrix((np.ones(u.size), (u, i)), shape=(n_users, n_items)).tocsr()
    matrix.data[:] = 1.0  # repeated (user, item) pairs still mean one interaction
    # ARPACK's start vector fixes the result up to sign; sign-fix each component too,
    # so equal data always gives equal vectors.
    start = check_random_state(random_state).uniform(-1.0, 1.0, size=min(matrix.shape))
    _, singular, vt = sparse_linalg.svds(matrix, k=dim, v0=start)
    order = np.argsort(-singular)
    singular, vt = singular[order], vt[order]
    signs = np.sign(vt[np.arange(dim), np.argmax(np.abs(vt), axis=1)])
    return (vt * signs[:, None]).T * np.sqrt(singular)


def top_k_excluding(scores: np.ndarray, exclude: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    """Per row of ``scores`` (users × items), the ``k`` best items not in ``exclude[row]``,
    best first — what a recommender shows: nothing the user already interacted with.

    >>> [r.tolist() for r in top_k_excluding(np.array([[0.9, 0.5, 0.7]]), [np.array([0])], 2)]
    [[2, 1]]
    """
    s = np.array(scores, dtype=float, copy=True)
    if s.ndim != 2 or len(exclude) != s.shape[0]:
        raise ValueError("scores must be (n_users, n_items) with one exclude list per row")
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"k must be in [1, {s.shape[1]}]")
    for row, items in enumerate(exclude):
        s[row, np.asarray(items, dtype=np.int64)] = -np.inf
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    ranked = np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable"), axis=1)
    return list(ranked)


def popular_item_lists(popularity: np.ndarray, exclude: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    """The recommendations a user unknown to the recommender gets in Zhang et al.'s
    setting: the ``k`` most popular items (``popularity[i]``, e.g. interaction
    counts in the recommender's training data) it has not interacted with."""
    pop = np.asarray(popularity, dtype=float)
    if pop.ndim != 1:
        raise ValueError("popularity must be 1-D (one value per item)")
    return top_k_excluding(np.broadcast_to(pop, (len(exclude), pop.size)), exclude, k)


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
    users of the target recommender. Use the *same* item vectors in both calls
    (Zhang et al.: :func:`interaction_item_vectors` of the attacker's data) —
    the classifier learns directions in that space.

    ``classifier`` is any object with ``fit(X, y)`` and ``predict_proba(X)``
    (e.g. scikit-learn's ``MLPClassifier``, the paper's choice); by default an
    L2-regularised logistic regression.

    Learned attributes: ``classifier_``, ``n_features_``.
    """

    def __init__(self, l2: float = 1e-2, classifier: BinaryClassifier | None = None):
        self.l2 = l2
        self.classifier = classifier

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
        classifier = self.classifier if self.classifier is not None else LogisticRegression(l2=self.l2)
        self.classifier_ = classifier.fit(features, labels) or classifier
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
        proba = np.asarray(self.classifier_.predict_proba(features), dtype=float)
        # scikit-learn returns one column per class; the member class is the last.
        return proba[:, -1] if proba.ndim == 2 else proba
