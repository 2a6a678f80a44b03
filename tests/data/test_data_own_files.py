"""Your own data from the CLI: content-based detection, column keys, files without timestamps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from secure_fedrec.cli import main
from secure_fedrec.config import ConfigError, load_config
from secure_fedrec.data import DataError, detect_format, load_ratings
from secure_fedrec.runner import load_data, make_split


def lastfm_like(path: Path, n_users: int = 12, per_user: int = 6) -> Path:
    """A Last.fm-2K ``user_artists.dat``: tab separated, header userID/artistID/weight."""
    rng = np.random.default_rng(0)
    lines = ["userID\tartistID\tweight"]
    for user in range(2, 2 + n_users):
        for artist in rng.choice(np.arange(50, 90), size=per_user, replace=False):
            lines.append(f"{user}\t{artist}\t{int(rng.integers(1, 5000))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_lastfm_dat_is_read_by_content_not_as_ml_1m(tmp_path):
    path = lastfm_like(tmp_path / "user_artists.dat")
    assert detect_format(path) == "csv"
    data = load_ratings(path)
    assert data.implicit  # a weight column is implicit feedback
    assert data.n_users == 12 and len(data) == 72
    assert data.timestamps is None
    assert set(data.ratings.tolist()) == {1.0}
    assert detect_format(tmp_path) == "csv"  # a folder holding user_artists.dat


def test_lastfm_loads_and_splits_from_the_config_alone(tmp_path):
    path = lastfm_like(tmp_path / "user_artists.dat")
    config = load_config(None, {"data.source": str(path), "data.implicit": True})
    split = make_split(config, load_data(config))
    assert split.protocol == "leave-last-out"
    assert np.all(split.test.ratings_per_user() == 1)
    assert any("no timestamps" in note for note in split.test.notes)
    strict = load_config(None, {"data.source": str(path), "data.implicit": True,
                                "data.without_timestamps": "error"})
    with pytest.raises(DataError, match=r"data\.without_timestamps"):
        make_split(strict, load_data(strict))


def test_column_keys_name_the_columns(tmp_path):
    path = tmp_path / "plays.tsv"
    path.write_text("listener\tsong\tstars\twhen\nA\tx\t4\t10\nA\ty\t2\t11\nB\tx\t5\t12\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.user_col"):
        load_ratings(path)
    config = load_config(None, {"data.source": str(path), "data.user_col": "listener",
                                "data.item_col": "song", "data.rating_col": "stars",
                                "data.timestamp_col": "when", "privacy.unit": "none"})
    data = load_data(config)
    assert not data.implicit and data.rating_scale == (2.0, 5.0)  # read from the ratings: no DP here
    assert data.timestamps.tolist() == [10, 11, 12]
    wrong = load_config(None, {"data.source": str(path), "data.user_col": "who",
                               "data.item_col": "song"})
    with pytest.raises(DataError, match=r"missing column 'who' \(data\.user_col\)"):
        load_data(wrong)


@pytest.mark.parametrize(
    ("name", "text", "sep"),
    [
        ("r.csv", 'user;item;rating\n1;"a;b";4\n2;c;3\n', ";"),
        ("r.csv", 'user,title,item,rating\n1,"Heat, 1995",7,4\n2,"Up",8,3\n', ","),
        ("r.txt", "user|item|rating\n1|a|4\n2|b|3\n", "|"),
        ("r.dat", "user\titem\trating\n1\ta,b\t4\n2\tc\t3\n", "\t"),
    ],
)
def test_delimiter_is_the_one_that_splits_every_line_alike(tmp_path, name, text, sep):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    data = load_ratings(path)
    assert len(data) == 2 and data.n_users == 2
    assert any(f"separated by {sep!r}" in note for note in data.notes)


def test_file_without_header_has_positional_columns(tmp_path):
    path = tmp_path / "ratings.txt"
    path.write_text("1,10,4,100\n1,11,3,101\n2,10,5,102\n", encoding="utf-8")
    data = load_ratings(path)
    assert len(data) == 3 and data.timestamps.tolist() == [100, 101, 102]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("1\t10\n2\t10\n2\t11\n", encoding="utf-8")
    implicit = load_ratings(pairs)
    assert implicit.implicit and len(implicit) == 3
    with pytest.raises(DataError, match="cannot be named"):
        load_ratings(path, user_col="user")


def test_atomic_header_is_recognised_without_the_suffix(tmp_path):
    path = tmp_path / "ml-100k.txt"
    path.write_text("user_id:token\titem_id:token\trating:float\tnote:token\n1\t2\t3\tx\n",
                    encoding="utf-8")
    assert detect_format(path) == "atomic"


def test_no_test_ratings_is_a_clear_error_before_training(tmp_path, capsys):
    path = tmp_path / "three.csv"
    path.write_text("user,item,rating\n1,1,4\n2,1,3\n3,2,5\n", encoding="utf-8")
    config = load_config(None, {"data.source": str(path), "privacy.unit": "none"})
    with pytest.raises(DataError, match="no test ratings after the holdout split"):
        make_split(config, load_data(config))
    assert main(["run", "--data", str(path), "--quiet", "--set", "privacy.unit=none"]) == 2
    assert "no test ratings" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "value"),
    [("data.min_user_ratings", 0), ("data.min_user_ratings", 10**7),
     ("data.binarize_threshold", float("inf")), ("data.user_col", ""),
     ("data.without_timestamps", "drop")],
)
def test_data_keys_have_finite_ranges(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, {key: value})


def test_lastfm_file_runs_end_to_end_from_the_cli(tmp_path, capsys):
    path = lastfm_like(tmp_path / "user_artists.dat", n_users=40, per_user=8)
    out = tmp_path / "run"
    code = main(["run", "--data", str(path), "--set", "data.implicit=true", "--quiet", "--out", str(out),
                 "--set", "privacy.unit=none", "--set", "training.rounds=2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "HR@10, full ranking" in printed and "HR@10, sampled 1+99" in printed
    assert "preset" in printed and "ials" in printed
    written = (out / "config.toml").read_text(encoding="utf-8")
    assert 'preset = "implicit"' in written and "rounds = 2" in written


def _ratings_csv(path: Path) -> Path:
    rng = np.random.default_rng(1)
    lines = ["user,item,stars"]
    for user in range(30):
        for item in rng.choice(40, size=8, replace=False):
            lines.append(f"{user},{item},{rng.integers(2, 5)}")  # 2-4 stars: min/max are not the scale
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_private_run_needs_a_declared_rating_scale_and_mf_starts_at_its_midpoint(tmp_path):
    """MF's global bias starts at the scale's midpoint, never at the training ratings' mean
    (which no DP mechanism covers); a private run refuses a scale read from the ratings."""
    from secure_fedrec.inputs import build_model_for

    path = _ratings_csv(tmp_path / "ratings.csv")
    private = load_config(None, {"data.source": str(path), "data.rating_col": "stars"})
    with pytest.raises(DataError, match=r"data\.rating_min and data\.rating_max"):
        load_data(private)
    declared = load_config(None, {"data.source": str(path), "data.rating_col": "stars",
                                  "data.rating_min": 1.0, "data.rating_max": 5.0})
    split = make_split(declared, load_data(declared))
    assert split.train.rating_scale == (1.0, 5.0)
    model = build_model_for(declared, split)
    assert model.global_bias.weight.item() == 3.0 != pytest.approx(float(split.train.ratings.mean()))
    open_run = load_config(None, {"data.source": str(path), "data.rating_col": "stars", "privacy.unit": "none"})
    assert load_data(open_run).rating_scale == (2.0, 4.0)  # without DP the data's range is allowed
    for bad in ({"data.rating_min": 1.0}, {"data.rating_min": 5.0, "data.rating_max": 1.0},
                {"data.rating_min": float("nan"), "data.rating_max": 5.0}):
        with pytest.raises(ConfigError, match="data.rating_min"):
            load_config(None, bad)
