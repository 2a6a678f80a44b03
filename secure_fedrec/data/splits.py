"""Deterministic train/test splits that keep the user and item indexing.

Both splits are per user and seeded: the same data and seed give the same
split, on any machine (numpy's ``Generator`` with PCG64 is stable across
platforms). No user is ever left without training data: a user with too few
ratings keeps them all in train and has no test ratings.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from .dataset import DataError, RatingData, Split
from .preprocess import logger

__all__ = ["holdout_split", "leave_last_out", "require_test_ratings"]


def holdout_split(
    data: RatingData,
    test_fraction: float = 0.2,
    seed: int = 0,
    min_train_per_user: int = 1,
) -> Split:
    """Per-user random holdout.

    Each user with ``n`` ratings puts ``round(test_fraction * n)`` of them
    (rounding halves up) chosen uniformly at random into test, but never more
    than ``n - min_train_per_user``: every user keeps at least
    ``min_train_per_user`` training ratings, and users with
    ``n <= min_train_per_user`` ratings have no test ratings.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    _check_min_train(min_train_per_user)
    rng = np.random.default_rng(seed)
    per_user = data.ratings_per_user()
    n_test = np.minimum(
        np.floor(per_user * test_fraction + 0.5).astype(np.int64),
        np.maximum(per_user - min_train_per_user, 0),
    )
    order = np.lexsort((rng.random(len(data)), data.users))
    is_test = np.zeros(len(data), dtype=bool)
    is_test[order] = _rank_within_user(data.users[order], per_user) < n_test[data.users[order]]
    note = (f"holdout split: test_fraction={test_fraction:g}, seed={seed}, "
            f"min_train_per_user={min_train_per_user}")
    return _make_split(data, is_test, "holdout", seed, note)


def leave_last_out(
    data: RatingData,
    seed: int = 0,
    *,
    min_train_per_user: int = 1,
    without_timestamps: Literal["error", "random"] = "error",
) -> Split:
    """Each user's latest rating goes to test; ties in time are broken at random by ``seed``.

    Users with ``min_train_per_user`` ratings or fewer have no test rating.
    Data without timestamps raises a DataError, unless ``without_timestamps``
    is ``"random"``: then one rating per user chosen at random by ``seed`` is
    held out, and the split's notes say so.
    """
    if without_timestamps not in ("error", "random"):
        raise DataError(f"without_timestamps must be 'error' or 'random', "
                        f"got {without_timestamps!r}")
    _check_min_train(min_train_per_user)
    note = f"leave-last-out split: seed={seed}, min_train_per_user={min_train_per_user}"
    timestamps = data.timestamps
    if timestamps is None:
        if without_timestamps == "error":
            raise DataError(f"leave_last_out needs timestamps and {data.name!r} has none; "
                            "set data.without_timestamps = \"random\" (without_timestamps="
                            "'random' in Python) to hold out a random rating per user instead, "
                            "or data.split = \"holdout\"")
        note += "; no timestamps: one random rating per user held out instead of the latest"
        logger.log(logging.WARNING, "%s: %s", data.name, note)
        timestamps = np.zeros(len(data), dtype=np.int64)
    rng = np.random.default_rng(seed)
    per_user = data.ratings_per_user()
    # Sorted by user, then time, then a random key: a user's last row is the latest
    # rating, and among equally late ones the random key decides.
    order = np.lexsort((rng.random(len(data)), timestamps, data.users))
    last_rows = order[np.cumsum(per_user)[per_user > min_train_per_user] - 1]
    is_test = np.zeros(len(data), dtype=bool)
    is_test[last_rows] = True
    return _make_split(data, is_test, "leave-last-out", seed, note)


def require_test_ratings(split: Split) -> Split:
    """The split itself, or a DataError when it holds no test rating at all.

    A run on such a split would train and then report a metric over nothing
    (an RMSE of NaN); this says why instead, before any training.
    """
    if len(split.test) == 0:
        train = split.train
        most = int(train.ratings_per_user().max()) if train.n_users else 0
        raise DataError(
            f"{train.name}: no test ratings after the {split.protocol} split ({len(train)} ratings "
            f"of {train.n_users} users, at most {most} per user): every user keeps all of its "
            "ratings for training. Use a file with more ratings per user"
            + (", or a larger data.test_fraction" if split.protocol == "holdout" else "")
        )
    return split


def _check_min_train(min_train_per_user: int) -> None:
    if int(min_train_per_user) != min_train_per_user or min_train_per_user < 1:
        raise DataError(f"min_train_per_user must be a positive integer, "
                        f"got {min_train_per_user!r}")


def _rank_within_user(sorted_users: np.ndarray, per_user: np.ndarray) -> np.ndarray:
    """Position of each row within its user's block, for rows sorted by user."""
    block_start = np.cumsum(per_user) - per_user
    return np.arange(len(sorted_users)) - block_start[sorted_users]


def _make_split(data: RatingData, is_test: np.ndarray, protocol: str, seed: int,
                note: str) -> Split:
    users_without_test = int(np.count_nonzero(
        np.bincount(data.users[is_test], minlength=data.n_users) == 0
    ))
    if users_without_test:
        note += f"; {users_without_test} users with too few ratings have no test ratings"
    logger.info("%s: %s", data.name, note)
    return Split(
        train=data.subset(~is_test).with_notes(note),
        test=data.subset(is_test).with_notes(note),
        protocol=protocol,
        seed=seed,
    )
