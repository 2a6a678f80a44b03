"""Loaders: every supported format, detection, implicit feedback, and bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from secure_fedrec.data import (
    DataError,
    detect_format,
    load_ratings,
    resolve_ratings_path,
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def rows_as_raw(data) -> set[tuple]:
    """(raw user, raw item, rating, timestamp) of every row, independent of indexing."""
    ts = data.timestamps if data.timestamps is not None else [None] * len(data)
    return {
        (data.user_ids[u].item(), data.item_ids[i].item(), float(r), None if t is None else int(t))
        for u, i, r, t in zip(data.users, data.items, data.ratings, ts, strict=True)
    }


ML100K = ("196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
          "22\t377\t1\t878887116\n196\t377\t5\t881251000\n")
ML1M = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
ML_LATEST = ("userId,movieId,rating,timestamp\n"
             "1,31,2.5,1260759144\n1,1029,3.0,1260759179\n2,31,4.5,1260759200\n")
ATOMIC = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
          "u1\ti9\t4.0\t100.0\nu2\ti9\t2.0\t101.0\nu1\ti3\t5.0\t102.0\n")


@pytest.mark.parametrize(
    ("filename", "text", "fmt", "expected"),
    [
        ("u.data", ML100K, "ml-100k", {(196, 242, 3.0, 881250949), (186, 302, 3.0, 891717742),
                                        (22, 377, 1.0, 878887116), (196, 377, 5.0, 881251000)}),
        ("ratings.dat", ML1M, "ml-1m", {(1, 1193, 5.0, 978300760), (1, 661, 3.0, 978302109),
                                         (2, 1193, 4.0, 978298413)}),
        ("ratings.csv", ML_LATEST, "ml-latest", {(1, 31, 2.5, 1260759144),
                                                  (1, 1029, 3.0, 1260759179),
                                                  (2, 31, 4.5, 1260759200)}),
        ("x.inter", ATOMIC, "atomic", {("u1", "i9", 4.0, 100), ("u2", "i9", 2.0, 101),
                                       ("u1", "i3", 5.0, 102)}),
    ],
)
def test_each_format_loads_detected_or_named(tmp_path, filename, text, fmt, expected):
    path = write(tmp_path / filename, text)
    assert detect_format(path) == fmt
    for chosen in ("auto", fmt):
        data = load_ratings(path, format=chosen)
        assert rows_as_raw(data) == expected
        assert data.n_users == len({row[0] for row in expected})
        assert data.n_items == len({row[1] for row in expected})
        assert data.ratings.dtype == np.float32 and data.users.dtype == np.int64
        assert not data.implicit


def test_grouplens_scales(tmp_path):
    assert load_ratings(write(tmp_path / "a" / "u.data", ML100K)).rating_scale == (1.0, 5.0)
    assert load_ratings(write(tmp_path / "b" / "ratings.dat", ML1M)).rating_scale == (1.0, 5.0)
    ml10m = write(tmp_path / "c" / "ratings.dat",
                  "1::122::4.5::838985046\n1::185::0.5::838983525\n")
    assert load_ratings(ml10m).rating_scale == (0.5, 5.0)
    assert load_ratings(write(tmp_path / "d" / "ratings.csv", ML_LATEST)).rating_scale == (0.5, 5.0)


def test_rows_are_reindexed_contiguously_in_raw_id_order(tmp_path):
    data = load_ratings(write(tmp_path / "u.data", ML100K))
    assert list(data.user_ids) == [22, 186, 196]
    assert list(data.item_ids) == [242, 302, 377]
    assert set(data.users) == {0, 1, 2} and set(data.items) == {0, 1, 2}
    # sorted by (user, timestamp)
    assert list(data.users) == sorted(data.users)
    assert data.name == tmp_path.name  # a standard file name: named after its directory


def test_directory_resolves_to_the_ratings_file_inside(tmp_path):
    write(tmp_path / "ml" / "ratings.csv", ML_LATEST)
    write(tmp_path / "ml" / "movies.csv", "movieId,title\n31,x\n")
    assert resolve_ratings_path(tmp_path / "ml") == tmp_path / "ml" / "ratings.csv"
    data = load_ratings(tmp_path / "ml")
    assert len(data) == 3 and data.name == "ml"
    write(tmp_path / "rb" / "ds.inter", ATOMIC)
    assert load_ratings(tmp_path / "rb").n_users == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no ratings file"):
        load_ratings(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file"):
        load_ratings(tmp_path / "missing.csv")


def test_generic_csv_with_guessed_and_named_columns(tmp_path):
    expected = {("a", "x", 4.0, 5), ("b", "x", 2.0, 6), ("a", "y", 5.0, 7)}
    guessable = write(tmp_path / "g.csv",
                      "TS,Stars,Customer_ID,Product_ID\n5,4,a,x\n6,2,b,x\n7,5,a,y\n")
    assert rows_as_raw(load_ratings(guessable)) == expected
    path = write(tmp_path / "r.csv", "ts,stars,customer,product\n5,4,a,x\n6,2,b,x\n7,5,a,y\n")
    named = load_ratings(path, user_col="customer", item_col="product", rating_col="stars",
                         timestamp_col="ts")
    assert rows_as_raw(named) == expected
    assert named.rating_scale == (2.0, 5.0)
    assert any("rating scale taken from the data" in note for note in named.notes)
    assert load_ratings(path, user_col="customer", item_col="product",
                        rating_scale=(1, 5)).rating_scale == (1.0, 5.0)


@pytest.mark.parametrize("sep", ["\t", ";", "|", ","])
def test_generic_separators_are_guessed(tmp_path, sep):
    text = sep.join(["user", "item", "rating"]) + "\n" + sep.join(["1", "10", "3"]) + "\n"
    data = load_ratings(write(tmp_path / "r.txt", text))
    assert rows_as_raw(data) == {(1, 10, 3.0, None)}
    assert data.timestamps is None


def test_iso_dates_become_unix_seconds(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,rating,date\n1,2,3,1970-01-02T00:00:00Z\n")
    assert load_ratings(path).timestamps.tolist() == [86400]


def test_leading_zero_ids_stay_text(tmp_path):
    data = load_ratings(write(tmp_path / "r.csv", "user,item,rating\n007,1,3\n7,1,4\n"))
    assert data.n_users == 2 and set(data.user_ids) == {"007", "7"}


def test_atomic_without_rating_is_implicit(tmp_path):
    path = write(tmp_path / "x.inter", "user_id:token\titem_id:token\nu1\ti1\nu1\ti2\nu2\ti1\n")
    data = load_ratings(path)
    assert data.implicit and data.rating_scale == (0.0, 1.0)
    assert np.all(data.ratings == 1.0) and len(data) == 3
    assert any("implicit" in note for note in data.notes)


def test_atomic_named_fields_and_bad_header(tmp_path):
    path = write(tmp_path / "x.inter", "uid:token\tiid:token\tlabel:float\n1\t2\t1\n")
    data = load_ratings(path, user_col="uid", item_col="iid", rating_col="label", implicit=True)
    assert len(data) == 1
    with pytest.raises(DataError, match=r"line 1: missing column 'user_id'"):
        load_ratings(path)
    bad = write(tmp_path / "y.inter", "user_id\titem_id:token\n1\t2\n")
    with pytest.raises(DataError, match=r"y\.inter, line 1: .*'name:type'"):
        load_ratings(bad)


def test_weight_column_loads_as_implicit(tmp_path):
    path = write(tmp_path / "plays.tsv", "user\tartist\tplays\nu1\ta\t10\nu1\tb\t0\nu2\ta\t3\n")
    data = load_ratings(path, item_col="artist")
    assert data.implicit and np.all(data.ratings == 1.0)
    assert len(data) == 2  # the zero-count row is not an interaction
    assert any("weights or counts" in note for note in data.notes)
    assert any("<= 0 dropped" in note for note in data.notes)


def test_binarize_drops_or_keeps_negatives(tmp_path):
    path = write(tmp_path / "ratings.csv", ML_LATEST)
    dropped = load_ratings(path, binarize_threshold=3.0)
    assert dropped.implicit and len(dropped) == 2 and np.all(dropped.ratings == 1.0)
    kept = load_ratings(path, binarize_threshold=3.0, keep_negatives=True)
    assert len(kept) == 3 and sorted(kept.ratings.tolist()) == [0.0, 1.0, 1.0]
    assert any("kept as negatives" in note for note in kept.notes)
    with pytest.raises(DataError, match="keep_negatives needs"):
        load_ratings(path, keep_negatives=True)


def test_implicit_flag_ignores_rating_values(tmp_path):
    data = load_ratings(write(tmp_path / "u.data", ML100K), implicit=True)
    assert data.implicit and len(data) == 4 and np.all(data.ratings == 1.0)


def test_duplicates_keep_the_latest_rating_and_are_logged(tmp_path, caplog):
    text = "user,item,rating,timestamp\n1,5,2,300\n1,5,4,100\n1,5,3,200\n2,5,1,1\n"
    with caplog.at_level(logging.WARNING, logger="secure_fedrec.data"):
        data = load_ratings(write(tmp_path / "r.csv", text))
    assert rows_as_raw(data) == {(1, 5, 2.0, 300), (2, 5, 1.0, 1)}
    assert any("2 duplicated" in note for note in data.notes)
    assert any("2 duplicated" in record.getMessage() for record in caplog.records)


def test_duplicates_without_timestamps_keep_the_last_row(tmp_path):
    data = load_ratings(write(tmp_path / "r.csv", "user,item,rating\n1,5,2\n1,5,4\n1,6,1\n"))
    assert rows_as_raw(data) == {(1, 5, 4.0, None), (1, 6, 1.0, None)}


def test_filtering_iterates_to_a_fixed_point(tmp_path):
    # Item 30 has one rating; dropping it leaves user 3 with one rating, which then
    # leaves item 20 with one rating: three rounds until nothing changes.
    rows = [(1, 10), (1, 20), (2, 10), (2, 20), (3, 20), (3, 30), (4, 10), (4, 40), (5, 40),
            (5, 10)]
    text = "user,item,rating\n" + "".join(f"{u},{i},3\n" for u, i in rows)
    path = write(tmp_path / "r.csv", text)
    data = load_ratings(path, min_user_ratings=2, min_item_ratings=2)
    per_user, per_item = data.ratings_per_user(), data.ratings_per_item()
    assert per_user.min() >= 2 and per_item.min() >= 2
    assert 3 not in set(data.user_ids) and 30 not in set(data.item_ids)
    assert any("filtering" in note for note in data.notes)
    assert len(load_ratings(path)) == len(rows)
    with pytest.raises(DataError, match="no ratings left after filtering"):
        load_ratings(path, min_user_ratings=50)


# --- bad input: every problem is a DataError naming the file and, where there is one, the line


@pytest.mark.parametrize(
    ("filename", "text", "message"),
    [
        ("u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n", r"u\.data, line 2: expected 4 fields"),
        ("u.data", "1\t2\t3\t4\n\n\n1\t2\t3\n", r"u\.data, line 4: expected 4 fields"),
        ("u.data", "1\t2\t3\t4\n1\t2\t6\t5\n", r"line 2: rating 6 is outside the rating scale"),
        ("u.data", "1\t2\t3\t4\n1\t2\tnan\t5\n", r"line 2: rating 'nan' is not a finite"),
        ("u.data", "1\t2\t3\t4\nx\t2\t3\t5\n", r"line 2: user id 'x' is not an integer"),
        ("u.data", "1\t2\t3\t4\n1\t2\t3\t4.5\n", r"line 2: timestamp '4.5' is not an integer"),
        ("u.data", "1,2,3,4\n", r"u\.data, line 1: expected 4 fields separated by '\\t', found 1"),
        ("ratings.dat", "1::2::3::4\n1::2::3::4::5\n", r"ratings\.dat, line 2: expected 4 fields"),
        ("ratings.dat", "1::2::3::4\n1::2::3\n", r"ratings\.dat, line 2: expected 4 fields"),
        ("ratings.dat", "1::2::3::4\n1:2::3::4\n", r"ratings\.dat, line 2: expected 4 fields"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,,4\n",
         r"ratings\.csv, line 3: empty rating"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,0.1,4\n",
         r"line 3: rating 0.1 is outside the rating scale \[0.5, 5\]"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,inf,4\n",
         r"line 2: rating 'inf' is not a finite number"),
        ("r.csv", "user,item,rating\na,b,3\na,b,x\n",
         r"r\.csv, line 3: rating 'x' is not a number"),
        ("r.csv", "user,item,rating\na,b,3\na\n", r"r\.csv, line 3: expected 3 fields"),
        ("r.csv", "user,item,rating\na,,3\n", r"r\.csv, line 2: empty item id"),
        ("r.csv", "user,item,rating,time\na,b,3,yesterday\n",
         r"line 2: timestamp 'yesterday' is neither a number nor an ISO 8601 date"),
        ("x.inter", "user_id:token\titem_id:token\trating:float\nu\ti\tNaN\n",
         r"x\.inter, line 2: rating 'NaN' is not a finite number"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, filename, text, message):
    path = write(tmp_path / filename, text)
    with pytest.raises(DataError, match=message) as raised:
        load_ratings(path)
    assert str(path) in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_out_of_scale_against_a_given_scale(tmp_path):
    path = write(tmp_path / "r.csv", "user,item,rating\na,b,3\na,c,11\n")
    assert load_ratings(path).rating_scale == (3.0, 11.0)
    with pytest.raises(DataError, match=r"line 3: rating 11 is outside the rating scale \[1, 10\]"):
        load_ratings(path, rating_scale=(1, 10))


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"user,item,rating\na,b,3\n\xff\xfe,b,3\n")
    with pytest.raises(DataError, match=r"r\.csv, line 3: not valid UTF-8"):
        load_ratings(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(DataError, match=r"u\.data: empty file"):
        load_ratings(write(tmp_path / "u.data", text))


def test_header_only(tmp_path):
    with pytest.raises(DataError, match=r"ratings\.csv: no ratings"):
        load_ratings(write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"))


def test_missing_and_unguessable_columns(tmp_path):
    path = write(tmp_path / "r.csv", "person,thing,rating\n1,2,3\n")
    with pytest.raises(DataError, match=r"r\.csv, line 1: no user column found"):
        load_ratings(path)
    with pytest.raises(DataError, match=r"line 1: missing column 'who'"):
        load_ratings(path, user_col="who", item_col="thing")
    wrong_sep = write(tmp_path / "s.csv", "user;item;rating\n1;2;3\n")
    with pytest.raises(DataError, match=r"no user column .*separator ','"):
        load_ratings(wrong_sep, sep=",")


def test_wrong_header_for_a_named_format(tmp_path):
    path = write(tmp_path / "ratings.csv", "user\tmovie\trating\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"line 1: expected a header starting with userId,movieId"):
        load_ratings(path, format="ml-latest")
    assert len(load_ratings(path)) == 1  # detected as a generic TSV instead


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "netflix"}, "unknown format 'netflix'"),
        ({"min_user_ratings": 0}, "min_user_ratings must be a positive integer"),
        ({"rating_scale": (5, 1)}, "rating_scale must be finite"),
        ({"binarize_threshold": float("nan")}, "binarize_threshold must be finite"),
        ({"user_col": "user"}, "have no header"),
        ({"sep": ","}, "separated by"),
    ],
)
def test_bad_options(tmp_path, kwargs, message):
    path = write(tmp_path / "u.data", ML100K)
    with pytest.raises(DataError, match=message):
        load_ratings(path, **kwargs)


def test_byte_order_mark_is_ignored(tmp_path):
    path = write(tmp_path / "ratings.csv", ML_LATEST, encoding="utf-8-sig")
    assert detect_format(path) == "ml-latest" and len(load_ratings(path)) == 3
