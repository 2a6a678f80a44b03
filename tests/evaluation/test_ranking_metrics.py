"""Ranking evaluation: per-user vectorized metrics equal a plain per-user loop, both protocols."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secure_fedrec.data import (
    RatingData,
    holdout_split,
    leave_last_out,
    synthetic_ratings,
)
from secure_fedrec.evaluation import RankingTask, ranking_metrics_of


def implicit_data(seed: int = 0) -> RatingData:
    return synthetic_ratings(n_users=60, n_items=80, mean_ratings_per_user=12, seed=seed, implicit=True)


def reference(scores: np.ndarray, split, task: RankingTask, k: int, recall_k: int) -> dict[str, float]:
    """One user at a time, straight from the definitions in secure_fedrec.evaluation."""
    train = {(u, i) for u, i in zip(split.train.users.tolist(), split.train.items.tolist())}
    out: dict[str, list[float]] = {}
    for row, user in enumerate(task.users.tolist()):
        s = scores[user]
        tests = sorted(set(split.test.items[split.test.users == user].tolist()))
        candidates = [i for i in range(len(s)) if (user, i) not in train]
        ranks = [sum(1 for j in candidates if j != t and s[j] >= s[t]) for t in tests]
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(tests), k)))
        out.setdefault("hr", []).append(float(min(ranks) < k))
        out.setdefault("ndcg", []).append(sum(1 / math.log2(r + 2) for r in ranks if r < k) / ideal)
        out.setdefault("recall", []).append(sum(r < recall_k for r in ranks) / len(tests))
        negatives = [j for j in task.negatives[row].tolist() if j >= 0]  # -1 pads a short list
        sampled = [sum(1 for j in negatives if s[j] >= s[t]) for t in tests]
        out.setdefault("sampled_hr", []).append(np.mean([r < k for r in sampled]))
        out.setdefault("sampled_ndcg", []).append(
            np.mean([1 / math.log2(r + 2) if r < k else 0.0 for r in sampled]))
        out.setdefault("sampled_recall", []).append(np.mean([r < recall_k for r in sampled]))
    return {name: float(np.mean(values)) for name, values in out.items()}


@pytest.mark.parametrize("protocol", ["holdout", "holdout-wide", "leave-last-out"])
def test_vectorized_metrics_equal_the_per_user_loop(protocol):
    data = implicit_data()
    if protocol == "holdout-wide":  # more test items per user than the top-k the ranks look at
        data = synthetic_ratings(n_users=30, n_items=80, mean_ratings_per_user=40, seed=2, implicit=True)
    split = leave_last_out(data, seed=1) if protocol == "leave-last-out" else \
        holdout_split(data, 0.3 if protocol == "holdout" else 0.6, seed=1)
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=(data.n_users, data.n_items)), 1)  # rounding makes ties
    got = ranking_metrics_of(lambda users: scores[users], split, k=5, recall_k=7,
                             sampled_negatives=20, seed=4)
    task = RankingTask.build(split, sampled_negatives=20, seed=4)
    want = reference(scores, split, task, k=5, recall_k=7)
    for name, value in want.items():
        cutoff = 7 if name.endswith("recall") else 5
        assert got[f"{name}@{cutoff}"] == pytest.approx(value, abs=1e-9), name
    assert got["evaluated_users"] == len(np.unique(split.test.users))
    assert "full ranking" in got["ranking_protocol"] and "20 negatives" in got["ranking_protocol"]


def test_each_user_is_scored_once():
    split = holdout_split(implicit_data(), 0.4, seed=0)
    seen: list[int] = []

    def scorer(users: np.ndarray) -> np.ndarray:
        seen.extend(users.tolist())
        return np.zeros((len(users), split.train.n_items))

    ranking_metrics_of(scorer, split)
    assert sorted(seen) == sorted(set(split.test.users.tolist()))


def test_sampled_negatives_are_never_training_or_test_items_and_fixed_by_seed():
    split = holdout_split(implicit_data(), 0.3, seed=0)
    task = RankingTask.build(split, sampled_negatives=30, seed=5)
    for row, user in enumerate(task.users.tolist()):
        negatives = set(task.negatives[row].tolist())
        assert len(negatives) == 30
        interacted = set(split.train.items[split.train.users == user].tolist())
        interacted |= set(split.test.items[split.test.users == user].tolist())
        assert not negatives & interacted
    again = RankingTask.build(split, sampled_negatives=30, seed=5)
    assert np.array_equal(task.negatives, again.negatives)
    assert not np.array_equal(task.negatives, RankingTask.build(split, sampled_negatives=30, seed=6).negatives)


def test_ties_count_against_the_test_item():
    split = leave_last_out(implicit_data(), seed=0)
    flat = ranking_metrics_of(lambda users: np.ones((len(users), split.train.n_items)), split)
    assert flat["hr@10"] == 0.0 and flat["sampled_hr@10"] == 0.0


def test_an_oracle_is_perfect_under_both_protocols():
    split = leave_last_out(implicit_data(), seed=0)
    oracle = np.zeros((split.train.n_users, split.train.n_items))
    oracle[split.test.users, split.test.items] = 1.0
    got = ranking_metrics_of(lambda users: oracle[users], split)
    for name in ("hr@10", "ndcg@10", "recall@20", "sampled_hr@10", "sampled_ndcg@10"):
        assert got[name] == pytest.approx(1.0)


def test_nan_scores_do_not_crash_and_count_as_misses():
    split = leave_last_out(implicit_data(), seed=0)
    got = ranking_metrics_of(lambda users: np.full((len(users), split.train.n_items), np.nan), split)
    assert got["hr@10"] == 0.0


def test_metric_sums_of_any_partition_of_users_combine_to_one_evaluation():
    """What a Flower node returns (sums and counts) adds up exactly, for ratings (RMSE through
    its squares) and for ranking (means over users with different numbers of test items)."""
    from secure_fedrec.data import holdout_split, synthetic_ratings
    from secure_fedrec.data.dataset import Split
    from secure_fedrec.evaluation import combine_metric_sums, evaluate, evaluate_sums
    from secure_fedrec.models import BiasedMF

    for implicit in (False, True):
        data = synthetic_ratings(n_users=40, n_items=30, mean_ratings_per_user=12, seed=3, implicit=implicit)
        split = holdout_split(data, test_fraction=0.3, seed=3)
        model = BiasedMF(n_users=40, n_items=30, dim=4, task="implicit" if implicit else "explicit",
                         global_mean=0.0 if implicit else 3.0)
        whole = evaluate(model, split, recall_k=7)
        parts = np.random.default_rng(0).integers(0, 3, size=40)
        sums = [evaluate_sums(model, Split(train=split.train, test=split.test.subset(parts[split.test.users] == p),
                                           protocol=split.protocol, seed=split.seed), recall_k=7)
                for p in range(3)]
        combined = combine_metric_sums(sums)
        assert set(combined) == set(whole)
        for name, value in whole.items():
            assert combined[name] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value)
