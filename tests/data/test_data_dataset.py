"""RatingData helpers added for the engines."""

from __future__ import annotations

import numpy as np

from secure_fedrec.data import RatingData, synthetic_ratings


def test_rows_by_user_groups_every_row_once():
    data = synthetic_ratings(n_users=30, n_items=50, mean_ratings_per_user=8, seed=1)
    groups = data.rows_by_user()
    assert len(groups) == data.n_users
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(data)))
    for user, rows in enumerate(groups):
        assert np.all(data.users[rows] == user)


def test_rows_by_user_keeps_users_without_ratings():
    data = RatingData(users=np.array([2, 0]), items=np.array([0, 0]),
                      ratings=np.ones(2, dtype=np.float32), n_users=4, n_items=1)
    assert [rows.tolist() for rows in data.rows_by_user()] == [[1], [], [0], []]


def test_with_notes_appends():
    data = RatingData(users=np.array([0]), items=np.array([0]), ratings=np.ones(1, np.float32),
                      n_users=1, n_items=1, notes=("a",))
    assert data.with_notes("b", "c").notes == ("a", "b", "c")
    assert data.notes == ("a",)
