"""The in-memory rating table every other module works on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["DataError", "RatingData", "Split"]


class DataError(ValueError):
    """Input data that cannot be used, with a message naming the file and line where known."""


@dataclass(frozen=True)
class RatingData:
    """Ratings as parallel arrays over contiguous user and item indices.

    ``users[k]`` rated ``items[k]`` with ``ratings[k]`` (1.0 for implicit
    feedback) at ``timestamps[k]`` (or no timestamps at all). Indices run over
    ``range(n_users)`` and ``range(n_items)``; ``user_ids``/``item_ids`` map an
    index back to the raw id found in the source file.
    """

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    ratings: np.ndarray  # float32
    n_users: int
    n_items: int
    timestamps: np.ndarray | None = None  # int64 or None
    implicit: bool = False
    rating_scale: tuple[float, float] = (1.0, 5.0)
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    name: str = "ratings"
    notes: tuple[str, ...] = field(default=())  # decisions taken while loading (logged too)

    def __post_init__(self) -> None:
        n = len(self.users)
        if len(self.items) != n or len(self.ratings) != n:
            raise DataError("users, items and ratings must have the same length")
        if self.timestamps is not None and len(self.timestamps) != n:
            raise DataError("timestamps must have the same length as the ratings")
        if n and (self.users.min() < 0 or self.users.max() >= self.n_users):
            raise DataError("user index out of range")
        if n and (self.items.min() < 0 or self.items.max() >= self.n_items):
            raise DataError("item index out of range")

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, selector: np.ndarray) -> RatingData:
        """The rows picked by a boolean mask or index array, keeping the same indexing."""
        ts = None if self.timestamps is None else self.timestamps[selector]
        return replace(
            self,
            users=self.users[selector],
            items=self.items[selector],
            ratings=self.ratings[selector],
            timestamps=ts,
        )

    def with_notes(self, *notes: str) -> RatingData:
        """A copy recording further decisions taken about this data."""
        return replace(self, notes=self.notes + tuple(notes))

    def rows_by_user(self) -> list[np.ndarray]:
        """Row indices of each user's ratings, ``result[u]`` for user index ``u``.

        Federated clients hold one user's ratings each; this is the split an
        engine needs, computed with one stable sort instead of a mask per user.
        """
        if self.n_users == 0:
            return []
        order = np.argsort(self.users, kind="stable")
        bounds = np.cumsum(self.ratings_per_user())[:-1]
        return np.split(order, bounds)

    def ratings_per_user(self) -> np.ndarray:
        return np.bincount(self.users, minlength=self.n_users)

    def ratings_per_item(self) -> np.ndarray:
        return np.bincount(self.items, minlength=self.n_items)

    def stats(self) -> dict[str, float | int | str | bool]:
        per_user = self.ratings_per_user()
        return {
            "name": self.name,
            "n_ratings": len(self),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "implicit": self.implicit,
            "density": len(self) / max(1, self.n_users * self.n_items),
            "min_ratings_per_user": int(per_user.min()) if len(per_user) else 0,
            "median_ratings_per_user": float(np.median(per_user)) if len(per_user) else 0.0,
            "max_ratings_per_user": int(per_user.max()) if len(per_user) else 0,
        }


@dataclass(frozen=True)
class Split:
    """A train/test split over the same user and item indexing."""

    train: RatingData
    test: RatingData
    protocol: str  # "holdout" or "leave-last-out"
    seed: int

    def __post_init__(self) -> None:
        if (self.train.n_users, self.train.n_items) != (self.test.n_users, self.test.n_items):
            raise DataError("train and test must share the same user and item indexing")
