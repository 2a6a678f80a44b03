"""Duplicates, re-indexing and row order, checked against a pandas reference on random files."""

from __future__ import annotations

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedrec.data import load_ratings

rows_strategy = st.lists(
    st.tuples(
        st.integers(0, 6),  # user
        st.sampled_from([3, 17, 170, 2_000_000, 5]),  # item: sparse, unsorted ids
        st.integers(1, 5),  # rating
        st.one_of(st.integers(0, 5), st.integers(-(2**62), 2**62)),  # timestamp, ties likely
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy)
def test_loading_matches_a_pandas_reference(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("ref") / "r.csv"
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    frame.to_csv(path, index=False)
    data = load_ratings(path)

    # Reference: the latest timestamp per (user, item), the later row on ties.
    reference = (
        frame.reset_index()
        .sort_values(["timestamp", "index"], kind="stable")
        .drop_duplicates(["user", "item"], keep="last")
    )
    loaded = pd.DataFrame({
        "user": data.user_ids[data.users],
        "item": data.item_ids[data.items],
        "rating": data.ratings.astype(int),
        "timestamp": data.timestamps,
    })
    expected = reference[["user", "item", "rating", "timestamp"]].sort_values(
        ["user", "timestamp", "item"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(loaded, expected, check_dtype=False)
    assert list(data.user_ids) == sorted(set(frame["user"]))
    assert list(data.item_ids) == sorted(set(reference["item"]))
    assert len(data) == len(reference)
