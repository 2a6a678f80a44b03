"""The real MovieLens ml-latest-small, when the shared data directory is present."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from secure_fedrec.data import holdout_split, leave_last_out, load_ratings

ML_LATEST_SMALL = Path(__file__).resolve().parents[2].parent / "shared/data/ml-latest-small"

pytestmark = pytest.mark.movielens


@pytest.fixture(scope="module")
def movielens():
    if not (ML_LATEST_SMALL / "ratings.csv").is_file():
        pytest.skip(f"MovieLens ml-latest-small not found at {ML_LATEST_SMALL}")
    return load_ratings(ML_LATEST_SMALL)


def test_ml_latest_small_loads_completely(movielens):
    assert len(movielens) == 100_004
    assert movielens.n_users == 671
    assert movielens.n_items == 9066
    assert movielens.rating_scale == (0.5, 5.0)
    assert movielens.ratings.min() == 0.5 and movielens.ratings.max() == 5.0
    assert movielens.timestamps is not None and not movielens.implicit
    assert movielens.user_ids[0] == 1 and movielens.user_ids[-1] == 671


def test_ml_latest_small_loads_fast(movielens):
    start = time.perf_counter()
    load_ratings(ML_LATEST_SMALL / "ratings.csv")
    assert time.perf_counter() - start < 1.0


def test_ml_latest_small_splits(movielens):
    holdout = holdout_split(movielens, seed=0)
    assert abs(len(holdout.test) / len(movielens) - 0.2) < 0.01
    assert np.all(holdout.train.ratings_per_user() > 0)
    last = leave_last_out(movielens, seed=0)
    assert len(last.test) == 671
