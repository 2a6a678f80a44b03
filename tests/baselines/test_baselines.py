"""Reference recommenders: exact on toy data, Surprise's BaselineOnly reproduced, CLI output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from secure_fedrec.baselines import (
    BiasBaseline,
    ItemKNN,
    ItemMean,
    MostPopular,
    evaluate_baseline,
)
from secure_fedrec.cli import main
from secure_fedrec.data import (
    RatingData,
    holdout_split,
    leave_last_out,
    synthetic_ratings,
)


def toy(implicit: bool = False) -> RatingData:
    users = np.array([0, 0, 1, 1, 2, 2, 2])
    items = np.array([0, 1, 0, 1, 0, 2, 3])
    ratings = np.array([5, 4, 4, 3, 1, 2, 5], dtype=np.float32)
    return RatingData(users=users, items=items, ratings=np.ones(7, np.float32) if implicit else ratings,
                      n_users=3, n_items=5, implicit=implicit)


def test_item_mean_plain_and_shrunk():
    data = toy()
    plain = ItemMean().fit(data)
    assert plain.predict(np.array([0, 0]), np.array([0, 4])).tolist() == pytest.approx(
        [10 / 3, data.ratings.mean()])  # an unrated item gets the global mean
    shrunk = ItemMean(shrinkage=2.0).fit(data)
    assert shrunk.means_[0] == pytest.approx((10 + 2 * data.ratings.mean()) / 5)


def test_bias_baseline_matches_surprise_baseline_only():
    pytest.importorskip("surprise", reason="scikit-surprise (the benchmarks extra) is not installed")
    split = holdout_split(synthetic_ratings(n_users=80, n_items=60, mean_ratings_per_user=15, seed=1), 0.2)
    ours = evaluate_baseline("user-item-bias", split)
    theirs = evaluate_baseline("baseline-only", split)
    assert ours["rmse"] == pytest.approx(theirs["rmse"], abs=1e-6)


def test_bias_baseline_beats_the_means_it_combines():
    split = holdout_split(synthetic_ratings(n_users=200, n_items=80, mean_ratings_per_user=20, seed=2), 0.2)
    rmse = {name: evaluate_baseline(name, split)["rmse"]
            for name in ("global-mean", "item-mean", "user-mean", "user-item-bias")}
    assert rmse["user-item-bias"] < min(rmse["item-mean"], rmse["user-mean"]) < rmse["global-mean"]
    assert BiasBaseline().fit(split.train).predict(np.array([0]), np.array([0])).shape == (1,)


def test_most_popular_and_item_knn_rank_as_defined():
    data = toy(implicit=True)
    pop = MostPopular().fit(data).score_users(np.array([0]))
    assert int(np.argmax(pop[0])) == 0  # item 0 has three interactions
    knn = ItemKNN(neighbours=10, shrink=0.0).fit(data)
    scores = knn.score_users(np.array([2]))[0]
    # user 2 has items 0, 2, 3; item 1 co-occurs with item 0 (users 0 and 1): cos = 2 / sqrt(3 * 2)
    assert scores[1] == pytest.approx(2 / np.sqrt(6), abs=1e-5)
    assert scores[4] == pytest.approx(0.0, abs=1e-5)  # never co-occurs with anything


def test_implicit_baselines_beat_chance_under_both_protocols():
    split = leave_last_out(synthetic_ratings(n_users=300, n_items=120, mean_ratings_per_user=15, seed=0,
                                             implicit=True), seed=0)
    pop = evaluate_baseline("most-popular", split)
    knn = evaluate_baseline("item-knn", split)
    for metrics in (pop, knn):
        assert metrics["hr@10"] > 10 / 120 and metrics["sampled_hr@10"] > 10 / 100
        assert "full ranking" in metrics["ranking_protocol"] and "99 negatives" in metrics["ranking_protocol"]
    with pytest.raises(ValueError, match="explicit feedback"):
        evaluate_baseline("item-mean", split)


def test_baseline_command_writes_what_run_writes(tmp_path, capsys):
    out = tmp_path / "base"
    code = main(["baseline", "--quiet", "--out", str(out), "--epochs", "2",
                 "--set", "data.synthetic.n_users=40", "--set", "data.synthetic.n_items=30",
                 "--set", "data.synthetic.mean_ratings_per_user=10"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "config.toml").exists()
    for key in ("config", "dataset", "seed", "split", "wall_time_seconds", "environment", "models"):
        assert key in metrics, key
    assert set(metrics["models"]) == {"twin", "global-mean", "item-mean", "user-mean", "user-item-bias"}
    assert metrics["split"] == "holdout" and metrics["dataset"]["n_users"] == 40
    printed = capsys.readouterr().out
    assert "RMSE" in printed and "user-item-bias" in printed


def test_baseline_command_implicit_names_the_protocols(tmp_path, capsys):
    code = main(["baseline", "--quiet", "--epochs", "1", "--models", "twin,most-popular",
                 "--set", "data.implicit=true", "--set", "data.synthetic.n_users=40",
                 "--set", "data.synthetic.n_items=30", "--set", "data.synthetic.mean_ratings_per_user=10"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "HR@10, full ranking" in printed and "HR@10, sampled 1+99" in printed


def test_baseline_command_rejects_what_means_nothing_to_it(capsys):
    assert main(["baseline", "--quiet", "--models", "item-knn"]) == 2  # implicit baseline, explicit data
    assert "implicit feedback" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["baseline", "--engine", "flower"])
    with pytest.raises(SystemExit):
        main(["baseline", "--epochs", "0"])
