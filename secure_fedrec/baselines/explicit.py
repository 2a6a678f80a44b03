"""Rating predictors from means and biases (no factors)."""

from __future__ import annotations

import numpy as np

from ..data.dataset import RatingData

__all__ = ["BiasBaseline", "GlobalMean", "ItemMean", "UserMean"]


class GlobalMean:
    """Every rating predicted as the training mean."""

    def fit(self, train: RatingData) -> GlobalMean:
        self.mean_ = float(train.ratings.mean())
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.full(len(users), self.mean_)


class ItemMean:
    """The item's mean training rating, shrunk toward the global mean by ``shrinkage``
    pseudo-ratings ((sum + k·μ) / (count + k)); an unrated item gets μ."""

    def __init__(self, shrinkage: float = 0.0) -> None:
        self.shrinkage = shrinkage

    def fit(self, train: RatingData) -> ItemMean:
        mean = float(train.ratings.mean())
        sums = np.bincount(train.items, weights=train.ratings, minlength=train.n_items)
        counts = np.bincount(train.items, minlength=train.n_items)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.means_ = np.where(counts + self.shrinkage > 0,
                                   (sums + self.shrinkage * mean) / (counts + self.shrinkage), mean)
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.means_[items]


class UserMean:
    """The user's own mean training rating (what a client can compute with no server at all)."""

    def fit(self, train: RatingData) -> UserMean:
        mean = float(train.ratings.mean())
        sums = np.bincount(train.users, weights=train.ratings, minlength=train.n_users)
        counts = np.bincount(train.users, minlength=train.n_users)
        self.means_ = np.where(counts > 0, sums / np.maximum(counts, 1), mean)
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.means_[users]


class BiasBaseline:
    """μ + b_u + b_i by alternating least squares with damping, as Surprise's ``BaselineOnly``
    (Koren 2010, §2.1; Surprise's defaults: 10 sweeps, reg_i = 10, reg_u = 15)."""

    def __init__(self, epochs: int = 10, reg_items: float = 10.0, reg_users: float = 15.0) -> None:
        self.epochs, self.reg_items, self.reg_users = epochs, reg_items, reg_users

    def fit(self, train: RatingData) -> BiasBaseline:
        self.mean_ = float(train.ratings.mean())
        r = train.ratings.astype(np.float64) - self.mean_
        item_count = np.bincount(train.items, minlength=train.n_items)
        user_count = np.bincount(train.users, minlength=train.n_users)
        self.user_bias_ = np.zeros(train.n_users)
        self.item_bias_ = np.zeros(train.n_items)
        for _ in range(self.epochs):
            residual = r - self.user_bias_[train.users]
            self.item_bias_ = (np.bincount(train.items, weights=residual, minlength=train.n_items)
                               / (item_count + self.reg_items))
            residual = r - self.item_bias_[train.items]
            self.user_bias_ = (np.bincount(train.users, weights=residual, minlength=train.n_users)
                               / (user_count + self.reg_users))
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mean_ + self.user_bias_[users] + self.item_bias_[items]
