"""Splits: determinism, every test user keeps training data, leave-last-out picks the latest."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedrec.data import (
    DataError,
    RatingData,
    Split,
    holdout_split,
    leave_last_out,
    synthetic_ratings,
)


@pytest.fixture(scope="module")
def data() -> RatingData:
    return synthetic_ratings(n_users=120, n_items=150, mean_ratings_per_user=20, seed=3)


def row_keys(part: RatingData) -> set[tuple[int, int]]:
    return set(zip(part.users.tolist(), part.items.tolist(), strict=True))


def assert_partition(data: RatingData, split: Split) -> None:
    assert len(split.train) + len(split.test) == len(data)
    assert row_keys(split.train) | row_keys(split.test) == row_keys(data)
    assert not row_keys(split.train) & row_keys(split.test)
    for part in (split.train, split.test):
        assert (part.n_users, part.n_items) == (data.n_users, data.n_items)
        assert part.user_ids is data.user_ids and part.item_ids is data.item_ids


def test_holdout_is_a_partition_with_the_requested_fraction(data):
    split = holdout_split(data, test_fraction=0.2, seed=0)
    assert_partition(data, split)
    assert split.protocol == "holdout" and split.seed == 0
    assert abs(len(split.test) / len(data) - 0.2) < 0.02
    per_user = data.ratings_per_user()
    expected = np.minimum(np.floor(per_user * 0.2 + 0.5), per_user - 1)
    assert np.array_equal(split.test.ratings_per_user(), expected)


def test_holdout_same_seed_same_split_other_seed_other_split(data):
    first, again = holdout_split(data, seed=7), holdout_split(data, seed=7)
    assert np.array_equal(first.test.users, again.test.users)
    assert np.array_equal(first.test.items, again.test.items)
    other = holdout_split(data, seed=8)
    assert row_keys(first.test) != row_keys(other.test)


@pytest.mark.parametrize("min_train", [1, 3])
def test_every_user_keeps_training_ratings(data, min_train):
    split = holdout_split(data, test_fraction=0.9, seed=1, min_train_per_user=min_train)
    train_counts = split.train.ratings_per_user()
    assert np.all(train_counts >= np.minimum(min_train, data.ratings_per_user()))
    assert np.all(train_counts[split.test.ratings_per_user() > 0] >= min_train)


def test_users_with_a_single_rating_have_no_test_rating():
    tiny = RatingData(users=np.array([0, 1, 1, 1]), items=np.array([0, 0, 1, 2]),
                      ratings=np.ones(4, dtype=np.float32), n_users=2, n_items=3,
                      timestamps=np.array([5, 1, 2, 3]))
    for split in (holdout_split(tiny, test_fraction=0.5), leave_last_out(tiny)):
        assert 0 not in split.test.users.tolist()
        assert split.train.ratings_per_user()[0] == 1
        assert any("no test ratings" in note for note in split.test.notes)


def test_leave_last_out_picks_each_users_latest_rating(data):
    split = leave_last_out(data, seed=0)
    assert_partition(data, split)
    assert split.protocol == "leave-last-out"
    assert np.all(split.test.ratings_per_user() == 1)
    latest = np.full(data.n_users, np.iinfo(np.int64).min)
    np.maximum.at(latest, data.users, data.timestamps)
    assert np.array_equal(split.test.timestamps, latest[split.test.users])


def test_leave_last_out_breaks_ties_by_seed():
    n_users = 40
    users = np.repeat(np.arange(n_users), 3)
    items = np.tile([0, 1, 2], n_users)
    timestamps = np.tile([10, 20, 20], n_users)  # items 1 and 2 tie for the latest
    tied = RatingData(users=users, items=items, ratings=np.ones(len(users), dtype=np.float32),
                      n_users=n_users, n_items=3, timestamps=timestamps)
    picks = {seed: leave_last_out(tied, seed=seed).test for seed in range(3)}
    for test in picks.values():
        assert set(test.items.tolist()) <= {1, 2}  # never the earlier item 0
        assert len(set(test.items.tolist())) == 2  # both tied items get picked across users
    assert np.array_equal(picks[0].items, leave_last_out(tied, seed=0).test.items)
    assert not np.array_equal(picks[0].items, picks[1].items)


def test_leave_last_out_without_timestamps(data):
    untimed = RatingData(users=data.users, items=data.items, ratings=data.ratings,
                         n_users=data.n_users, n_items=data.n_items, name="untimed")
    with pytest.raises(DataError, match="'untimed' has none"):
        leave_last_out(untimed)
    split = leave_last_out(untimed, seed=2, without_timestamps="random")
    assert_partition(untimed, split)
    assert np.all(split.test.ratings_per_user() == 1)
    assert any("random rating" in note for note in split.test.notes)
    other = leave_last_out(untimed, seed=3, without_timestamps="random")
    assert not np.array_equal(split.test.items, other.test.items)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: holdout_split(d, test_fraction=0.0), "test_fraction"),
        (lambda d: holdout_split(d, test_fraction=1.0), "test_fraction"),
        (lambda d: holdout_split(d, min_train_per_user=0), "min_train_per_user"),
        (lambda d: leave_last_out(d, min_train_per_user=0), "min_train_per_user"),
        (lambda d: leave_last_out(d, without_timestamps="drop"), "without_timestamps"),
    ],
)
def test_bad_split_options(data, call, message):
    with pytest.raises(DataError, match=message):
        call(data)


def test_split_rejects_mismatched_indexing(data):
    other = synthetic_ratings(n_users=10, n_items=20, mean_ratings_per_user=5)
    with pytest.raises(DataError, match="same user and item indexing"):
        Split(train=data, test=other, protocol="holdout", seed=0)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=1, max_size=15),
    fraction=st.floats(0.05, 0.95),
    min_train=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_holdout_invariants_hold_for_any_activity(counts, fraction, min_train, seed):
    users = np.repeat(np.arange(len(counts)), counts)
    items = np.concatenate([np.arange(c) for c in counts])
    ratings = RatingData(users=users, items=items, ratings=np.ones(len(users), dtype=np.float32),
                         n_users=len(counts), n_items=max(counts))
    split = holdout_split(ratings, test_fraction=fraction, seed=seed, min_train_per_user=min_train)
    assert_partition(ratings, split)
    train = split.train.ratings_per_user()
    assert np.all(train >= np.minimum(min_train, counts))
