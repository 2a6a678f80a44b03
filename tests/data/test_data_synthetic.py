"""The synthetic generator: shape, statistics, determinism and a learnable rank structure."""

from __future__ import annotations

import numpy as np
import pytest

from secure_fedrec.data import (
    DataError,
    RatingData,
    holdout_split,
    leave_last_out,
    synthetic_ratings,
    synthetic_ratings_with_truth,
)


@pytest.fixture(scope="module")
def default() -> RatingData:
    return synthetic_ratings()


def test_default_shape_and_scale(default):
    assert (default.n_users, default.n_items) == (300, 400)
    assert not default.implicit and default.rating_scale == (1.0, 5.0)
    assert set(np.unique(default.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 30 <= np.median(default.ratings_per_user()) <= 50
    assert default.ratings_per_user().min() >= 5
    assert 3.0 < default.ratings.mean() < 4.0
    assert np.array_equal(default.user_ids, np.arange(300))


def test_each_pair_rated_once_and_time_increases_per_user(default):
    pairs = default.users * default.n_items + default.items
    assert len(np.unique(pairs)) == len(default)
    order = np.lexsort((default.timestamps, default.users))
    same_user = np.diff(default.users[order]) == 0
    assert np.all(np.diff(default.timestamps[order])[same_user] > 0)


def test_popularity_and_activity_are_skewed(default):
    per_item = np.sort(default.ratings_per_item())[::-1]
    top_tenth_share = per_item[: len(per_item) // 10].sum() / per_item.sum()
    assert top_tenth_share > 0.25  # uniform popularity would give 0.10
    per_user = default.ratings_per_user()
    assert np.percentile(per_user, 90) / np.percentile(per_user, 10) > 2
    flat = synthetic_ratings(popularity_exponent=0.0, activity_skew=0.0)
    assert np.all(flat.ratings_per_user() == 45)
    flat_items = np.sort(flat.ratings_per_item())[::-1]
    assert flat_items[:40].sum() / flat_items.sum() < 0.15


def test_same_seed_same_data_other_seed_other_data(default):
    again = synthetic_ratings(seed=0)
    for name in ("users", "items", "ratings", "timestamps"):
        assert np.array_equal(getattr(default, name), getattr(again, name))
    other = synthetic_ratings(seed=1)
    assert len(other) != len(default) or not np.array_equal(other.items, default.items)


def test_half_stars_and_other_scales():
    half = synthetic_ratings(n_users=50, half_stars=True, seed=2)
    assert np.any(half.ratings % 1 == 0.5) and np.all(half.ratings * 2 % 1 == 0)
    ten = synthetic_ratings(n_users=50, rating_scale=(1, 10), seed=2)
    assert ten.rating_scale == (1.0, 10.0)
    assert ten.ratings.min() >= 1 and ten.ratings.max() <= 10 and ten.ratings.max() > 5


def test_implicit_interactions():
    data = synthetic_ratings(implicit=True, seed=4)
    assert data.implicit and data.rating_scale == (0.0, 1.0)
    assert np.all(data.ratings == 1.0)


def test_implicit_interactions_follow_the_latent_preferences():
    data, truth = synthetic_ratings_with_truth(implicit=True, seed=5)
    test = leave_last_out(data, seed=0).test
    affinity = truth.user_factors @ truth.item_factors.T  # (users, items)
    # Held-out items rank high in their user's true affinity: a learnable signal.
    percentile = np.mean(affinity[test.users] < affinity[test.users, test.items][:, None], axis=1)
    assert percentile.mean() > 0.65  # 0.5 if interactions ignored preferences


def biased_als(train: RatingData, rank: int = 5, reg: float = 2.0, iterations: int = 10):
    """A textbook biased ALS, independent of the package's models, as a learnability probe."""
    rng = np.random.default_rng(0)
    mean = float(train.ratings.mean())
    user_factors = rng.normal(0, 0.1, (train.n_users, rank + 1))
    item_factors = rng.normal(0, 0.1, (train.n_items, rank + 1))
    user_bias, item_bias = np.zeros(train.n_users), np.zeros(train.n_items)
    users, items, ratings = train.users, train.items, train.ratings.astype(float)
    rows_of_user = train.rows_by_user()
    item_order = np.argsort(items, kind="stable")
    rows_of_item = np.split(item_order, np.cumsum(train.ratings_per_item())[:-1])

    def solve(rows, other_factors, other_index, residual):
        design = np.hstack([other_factors[other_index[rows], :rank], np.ones((len(rows), 1))])
        gram = design.T @ design + reg * np.eye(rank + 1)
        return np.linalg.solve(gram, design.T @ residual)

    for _ in range(iterations):
        for user, rows in enumerate(rows_of_user):
            if len(rows):
                residual = ratings[rows] - mean - item_bias[items[rows]]
                solution = solve(rows, item_factors, items, residual)
                user_factors[user, :rank], user_bias[user] = solution[:rank], solution[rank]
        for item, rows in enumerate(rows_of_item):
            if len(rows):
                residual = ratings[rows] - mean - user_bias[users[rows]]
                solution = solve(rows, user_factors, users, residual)
                item_factors[item, :rank], item_bias[item] = solution[:rank], solution[rank]

    def predict(u, i):
        score = mean + user_bias[u] + item_bias[i] + np.einsum(
            "ij,ij->i", user_factors[u, :rank], item_factors[i, :rank])
        return np.clip(score, *train.rating_scale)

    return predict


def test_default_rank_structure_is_learnable():
    data, truth = synthetic_ratings_with_truth(seed=0)
    split = holdout_split(data, seed=0)
    test = split.test

    def rmse(prediction):
        return float(np.sqrt(np.mean((prediction - test.ratings) ** 2)))

    global_mean = rmse(np.full(len(test), split.train.ratings.mean()))
    oracle = rmse(truth.expected_ratings(test.users, test.items))
    fitted = rmse(biased_als(split.train)(test.users, test.items))
    assert oracle < 0.7 * global_mean
    assert fitted < 0.8 * global_mean  # measured: global ~1.00, ALS ~0.70, oracle ~0.57
    assert oracle < fitted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_users": 0}, "n_users"),
        ({"rank": 1.5}, "rank"),
        ({"mean_ratings_per_user": 500}, "mean_ratings_per_user"),
        ({"noise_std": -1}, "noise_std"),
        ({"rating_scale": (5, 5)}, "rating_scale"),
        ({"activity_skew": float("nan")}, "activity_skew"),
        ({"signal_std": 0}, "signal_std"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(DataError, match=message):
        synthetic_ratings(**kwargs)
