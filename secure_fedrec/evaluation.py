"""Accuracy metrics shared by the federated engine, the centralized twin and the baselines.

Ranking is evaluated **per user**: each user with at least one test item is
scored once (users in batches, one score row per user, one top-k per row), and
every metric is a mean over those users. Two protocols, computed from the same scores and
reported side by side under their own names:

* **full** (``hr@10``, ``ndcg@10``, ``recall@20``): a test item is ranked
  against every item the user has no training interaction with (other test
  items included, as RecBole does). ``hr@k`` is 1 when any test item is in
  the top k, ``recall@k`` the share of test items in the top k, ``ndcg@k``
  the DCG of the test items in the top k over the ideal DCG.
* **sampled** (``sampled_hr@10``, ``sampled_ndcg@10``, ``sampled_recall@20``):
  each test item is ranked against the same 99 negatives (He et al., WWW 2017),
  drawn per user from the items the user interacted with **neither in
  training nor in test** — negatives drawn from the test items would rank a
  test item against another one the user did choose. Per-item hits and
  gains are averaged within the user, then over users. The negatives depend
  only on (seed, user), so every model evaluated on a split with the same
  seed meets the same negatives.

Ties count against the test item (its rank is the number of other candidates
scoring at least as high): a model that scores every item alike gets HR 0,
not 1. Leave-last-out has one test item per user, where every definition
above reduces to the usual one.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .data.dataset import RatingData, Split
from .models import FederatedModel

if TYPE_CHECKING:
    from scipy import sparse

__all__ = [
    "MetricSums",
    "RankingTask",
    "combine_metric_sums",
    "evaluate",
    "evaluate_sums",
    "rank_metrics",
    "ranking_metric_sums_of",
    "ranking_metrics",
    "ranking_metrics_of",
    "rating_metric_sums_of",
    "rating_metrics",
    "rating_metrics_of",
]

#: scores of every item for a batch of users (rows), as a float array (users × items)
UserScorer = Callable[[np.ndarray], np.ndarray]
#: upper bound of users × items scored at once (a NeuMF batch holds ~2 × dim floats per cell)
_SCORES_PER_BATCH = 1 << 20
PROTOCOL_NAMES = {
    "full": "full ranking over every item without a training interaction",
    "sampled": "sampled: each test item against {n} negatives the user never interacted with",
}


@dataclass(frozen=True)
class MetricSums:
    """Every metric in additive form: the sum of its per-unit values and the number of units.

    The unit is a test rating for ``rmse`` (whose sum is of *squared* errors) and
    ``mae``, and an evaluated user for every ranking metric. Sums over disjoint sets of
    users add up, so a federation whose nodes each score their own users recombines
    the exact means of one evaluation of everyone (:meth:`means`), whatever the
    split and however users are spread over nodes — a mean of the nodes' means
    weighted by their test rows would not be, since ranking metrics are means over
    users.
    """

    sums: dict[str, float]
    counts: dict[str, float]
    labels: dict[str, str]

    def __add__(self, other: MetricSums) -> MetricSums:
        sums, counts = dict(self.sums), dict(self.counts)
        for name, value in other.sums.items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0.0) + other.counts[name]
        return MetricSums(sums, counts, {**self.labels, **other.labels})

    def means(self) -> dict[str, float | str]:
        """The metrics (``rmse`` the root of its mean), the protocol labels, and
        ``evaluated_users`` when there are ranking metrics."""
        out: dict[str, float | str] = {}
        for name, total in self.sums.items():
            count = self.counts[name]
            mean = total / count if count else float("nan")
            out[name] = math.sqrt(mean) if name == "rmse" else mean
        out.update(self.labels)
        ranked = [self.counts[n] for n in self.sums if n not in _RATING_METRICS]
        if ranked:
            out["evaluated_users"] = float(ranked[0])
        return out

    def to_json(self) -> dict[str, list]:
        names = list(self.sums)
        return {"names": names, "sums": [self.sums[n] for n in names], "counts": [self.counts[n] for n in names],
                "labels": list(self.labels), "label_values": list(self.labels.values())}

    @classmethod
    def from_json(cls, payload: object) -> MetricSums:
        """Parse what :meth:`to_json` wrote (a node's reply); anything else is a ValueError."""
        if not isinstance(payload, dict):
            raise ValueError("metric sums must be a JSON object")  # noqa: TRY004 (a malformed reply: callers catch ValueError)
        names, sums, counts = payload.get("names"), payload.get("sums"), payload.get("counts")
        labels, values = payload.get("labels", []), payload.get("label_values", [])
        if not all(isinstance(x, list) for x in (names, sums, counts, labels, values)):
            raise ValueError("metric sums: names, sums, counts, labels and label_values must be lists")
        if len(names) != len(sums) or len(names) != len(counts) or len(labels) != len(values) \
                or len(names) > 64 or len(labels) > 16:
            raise ValueError("metric sums: mismatched or oversized lists")
        if not all(isinstance(n, str) and len(n) <= 64 for n in [*names, *labels]) or len(set(names)) != len(names):
            raise ValueError("metric sums: names must be distinct short strings")
        if not all(isinstance(v, str) and len(v) <= 1000 for v in values):
            raise ValueError("metric sums: labels must be short strings")
        numbers = [*sums, *counts]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
            raise ValueError("metric sums: sums and counts must be finite numbers")
        if any(c < 0 for c in counts) or any(s < 0 for s in sums):
            raise ValueError("metric sums: sums and counts cannot be negative")
        return cls(dict(zip(names, map(float, sums))), dict(zip(names, map(float, counts))),
                   dict(zip(labels, values)))


#: metrics whose unit is a test rating (every other one is a mean over users)
_RATING_METRICS = frozenset({"rmse", "mae"})


def combine_metric_sums(parts: list[MetricSums]) -> dict[str, float | str]:
    """The exact metrics of the union of disjoint parts (each a set of users)."""
    total = MetricSums({}, {}, {})
    for part in parts:
        total = total + part
    return total.means()


@torch.no_grad()
def rating_metrics(model: FederatedModel, test: RatingData) -> dict[str, float]:
    return _rating_metric_sums(model, test).means()  # type: ignore[return-value]


def _rating_metric_sums(model: FederatedModel, test: RatingData) -> MetricSums:
    users = torch.as_tensor(test.users, dtype=torch.long)
    items = torch.as_tensor(test.items, dtype=torch.long)
    return rating_metric_sums_of(model(users, items).numpy(), test)


def rating_metric_sums_of(predictions: np.ndarray, test: RatingData) -> MetricSums:
    """Squared and absolute errors of predictions clipped to the rating scale, summed."""
    low, high = test.rating_scale
    pred = np.clip(np.nan_to_num(np.asarray(predictions, dtype=np.float64), nan=(low + high) / 2),
                   low, high)
    err = pred - test.ratings.astype(np.float64)
    n = float(len(err))
    return MetricSums({"rmse": float(np.sum(err ** 2)), "mae": float(np.sum(np.abs(err)))},
                      {"rmse": n, "mae": n}, {})


def rating_metrics_of(predictions: np.ndarray, test: RatingData) -> dict[str, float]:
    """RMSE and MAE of predictions clipped to the rating scale."""
    return rating_metric_sums_of(predictions, test).means()  # type: ignore[return-value]


@dataclass(frozen=True)
class RankingTask:
    """What a split's ranking evaluation needs, computed once per (split, seed, negatives)."""

    users: np.ndarray  # users with at least one test item, ascending
    train: sparse.csr_array  # users × items, 1 where the user has a training interaction
    test: sparse.csr_array  # users × items, 1 where the user has a test interaction
    negatives: np.ndarray | None  # (len(users), n) sampled negatives, or None

    @classmethod
    def build(cls, split: Split, *, sampled_negatives: int | None, seed: int) -> RankingTask:
        train, test = split.train, split.test
        shape = (train.n_users, train.n_items)
        train_m = _indicator(train.users, train.items, shape)
        test_m = _indicator(test.users, test.items, shape)
        users = np.flatnonzero(np.diff(test_m.indptr) > 0)
        negatives = None
        if sampled_negatives:
            negatives = _sample_negatives(users, train_m, test_m, sampled_negatives, seed)
        return cls(users=users, train=train_m, test=test_m, negatives=negatives)


def _indicator(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sparse.csr_array:
    # imported here: a Flower node that only trains imports this module but never ranks
    from scipy import sparse

    m = sparse.csr_array((np.ones(len(users), dtype=np.float32), (users, items)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _sample_negatives(users: np.ndarray, train: sparse.csr_array, test: sparse.csr_array,
                      n: int, seed: int) -> np.ndarray:
    """``n`` distinct items per user outside its training and test items (fewer exist: all of them,
    padded with -1). Random keys per (seed, user): independent of batching and partitioning."""
    n_items = train.shape[1]
    out = np.full((len(users), n), -1, dtype=np.int64)
    for row, user in enumerate(users.tolist()):
        keys = np.random.default_rng([seed, user, 0x5A4D]).random(n_items)
        keys[train.indices[train.indptr[user]:train.indptr[user + 1]]] = np.inf
        keys[test.indices[test.indptr[user]:test.indptr[user + 1]]] = np.inf
        free = n_items - int(np.isinf(keys).sum())
        take = min(n, free)
        if take:
            out[row, :take] = np.argpartition(keys, take - 1)[:take]
    return out


_TASKS: dict[tuple[int, int | None, int], tuple[weakref.ref, RankingTask]] = {}


def _task_for(split: Split, sampled_negatives: int | None, seed: int) -> RankingTask:
    """The split's task, cached while the split object lives (evaluation runs every round)."""
    key = (id(split), sampled_negatives, seed)
    cached = _TASKS.get(key)
    if cached is not None and cached[0]() is split:
        return cached[1]
    task = RankingTask.build(split, sampled_negatives=sampled_negatives, seed=seed)
    _TASKS[key] = (weakref.ref(split, lambda _ref, key=key: _TASKS.pop(key, None)), task)
    return task


def rank_metrics(ranks: np.ndarray, valid: np.ndarray, *, k: int, recall_k: int,
                 sampled: bool) -> dict[str, np.ndarray]:
    """Per-user HR@k, NDCG@k and Recall@recall_k from the ranks of each user's test items.

    ``ranks``: (users, max test items) 0-based ranks; ``valid`` marks the real
    entries of the padded rows. Full ranking: hit if any item is in the top k;
    sampled: per-item hits and gains averaged within the user.
    """
    n_test = valid.sum(axis=1)
    in_k = valid & (ranks < k)
    in_recall = valid & (ranks < recall_k)
    gain = np.where(in_k, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
    if sampled:
        return {"hr": in_k.sum(1) / n_test, "ndcg": gain.sum(1) / n_test,
                "recall": in_recall.sum(1) / n_test}
    ideal = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))[np.minimum(n_test, k) - 1]
    return {"hr": in_k.any(1).astype(np.float64), "ndcg": gain.sum(1) / ideal,
            "recall": in_recall.sum(1) / n_test}


def _full_ranks(scores: torch.Tensor, targets: torch.Tensor, cutoff: int) -> torch.Tensor:
    """For each target, how many other candidates score at least as high — exact below
    ``cutoff``, and ``cutoff`` for every rank at or beyond it (no metric looks further).

    One top-k per row (linear in the items), then each target against those k values.
    """
    keep = min(cutoff + 1, scores.shape[1])
    top = torch.topk(scores, keep, dim=1).values
    at_least = (top[:, None, :] >= targets[:, :, None]).sum(dim=2)
    return torch.clamp(at_least - 1, max=cutoff)


def ranking_metrics_of(
    score_users: UserScorer, split: Split, *, k: int = 10, recall_k: int = 20,
    protocols: tuple[str, ...] = ("full", "sampled"), sampled_negatives: int = 99, seed: int = 0,
) -> dict[str, float | str]:
    """Ranking metrics of any scorer (a model, or a baseline) under the named protocols."""
    return ranking_metric_sums_of(score_users, split, k=k, recall_k=recall_k, protocols=protocols,
                                  sampled_negatives=sampled_negatives, seed=seed).means()


def ranking_metric_sums_of(
    score_users: UserScorer, split: Split, *, k: int = 10, recall_k: int = 20,
    protocols: tuple[str, ...] = ("full", "sampled"), sampled_negatives: int = 99, seed: int = 0,
) -> MetricSums:
    """:func:`ranking_metrics_of` in additive form (sums over the evaluated users)."""
    for protocol in protocols:
        if protocol not in PROTOCOL_NAMES:
            raise ValueError(f"unknown ranking protocol {protocol!r}")
    task = _task_for(split, sampled_negatives if "sampled" in protocols else None, seed)
    n_items = split.train.n_items
    batch = max(1, min(4096, _SCORES_PER_BATCH // max(1, n_items)))
    per_user: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(task.users), batch):
        users = task.users[start:start + batch]
        scores = torch.from_numpy(np.array(score_users(users), dtype=np.float32))  # a writable copy
        scores = torch.nan_to_num(scores, nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        test_rows = task.test[users]
        counts = np.diff(test_rows.indptr)
        width = int(counts.max())
        valid = np.arange(width)[None, :] < counts[:, None]
        padded = np.zeros((len(users), width), dtype=np.int64)
        padded[valid] = test_rows.indices
        target_scores = torch.gather(scores, 1, torch.as_tensor(padded))
        if "full" in protocols:
            masked = scores.clone()
            train_rows = task.train[users].tocoo()
            masked[torch.as_tensor(train_rows.row, dtype=torch.long),
                   torch.as_tensor(train_rows.col, dtype=torch.long)] = -math.inf
            ranks = _full_ranks(masked, target_scores, max(k, recall_k)).numpy()
            for name, values in rank_metrics(ranks, valid, k=k, recall_k=recall_k, sampled=False).items():
                per_user.setdefault(name, []).append(values)
        if "sampled" in protocols:
            assert task.negatives is not None
            negatives = task.negatives[start:start + batch]
            neg_scores = torch.gather(scores, 1, torch.as_tensor(np.maximum(negatives, 0)))
            neg_scores[torch.as_tensor(negatives < 0)] = -math.inf  # padding: fewer free items
            ordered, _ = torch.sort(neg_scores, dim=1)
            ranks = (negatives.shape[1]
                     - torch.searchsorted(ordered.contiguous(), target_scores.contiguous(), side="left")).numpy()
            for name, values in rank_metrics(ranks, valid, k=k, recall_k=recall_k, sampled=True).items():
                per_user.setdefault("sampled_" + name, []).append(values)
    sums: dict[str, float] = {}
    for prefix in [p for p in ("full", "sampled") if p in protocols]:
        tag = "" if prefix == "full" else "sampled_"
        for name, cutoff in (("hr", k), ("ndcg", k), ("recall", recall_k)):
            values = per_user.get(tag + name)
            sums[f"{tag}{name}@{cutoff}"] = float(np.concatenate(values).sum()) if values else 0.0
    label = "; ".join(PROTOCOL_NAMES[p].format(n=sampled_negatives) for p in protocols)
    return MetricSums(sums, dict.fromkeys(sums, float(len(task.users))), {"ranking_protocol": label})


@torch.no_grad()
def ranking_metrics(
    model: FederatedModel, split: Split, *, k: int = 10, protocol: str = "both",
    sampled_negatives: int = 99, seed: int = 0, recall_k: int = 20,
) -> dict[str, float | str]:
    """HR@k, NDCG@k and Recall@recall_k of a model (``protocol``: full, sampled or both)."""
    return _ranking_metric_sums(model, split, k=k, protocol=protocol, sampled_negatives=sampled_negatives,
                                seed=seed, recall_k=recall_k).means()


def _ranking_metric_sums(model: FederatedModel, split: Split, *, k: int, protocol: str,
                         sampled_negatives: int, seed: int, recall_k: int) -> MetricSums:
    protocols = ("full", "sampled") if protocol == "both" else (protocol,)

    def score_users(users: np.ndarray) -> np.ndarray:
        return model.score_all_items(torch.as_tensor(users, dtype=torch.long)).numpy()

    return ranking_metric_sums_of(score_users, split, k=k, recall_k=recall_k, protocols=protocols,
                                  sampled_negatives=sampled_negatives, seed=seed)


def evaluate(
    model: FederatedModel, split: Split, *, k: int = 10, ranking: str = "both",
    sampled_negatives: int = 99, seed: int = 0, recall_k: int = 20,
) -> dict[str, float | str]:
    """RMSE/MAE for explicit models; ranking metrics for implicit ones (and leave-last-out splits)."""
    return evaluate_sums(model, split, k=k, ranking=ranking, sampled_negatives=sampled_negatives,
                         seed=seed, recall_k=recall_k).means()


@torch.no_grad()
def evaluate_sums(
    model: FederatedModel, split: Split, *, k: int = 10, ranking: str = "both",
    sampled_negatives: int = 99, seed: int = 0, recall_k: int = 20,
) -> MetricSums:
    """:func:`evaluate` in additive form: what a Flower node returns for its users."""
    model.eval()
    model.prepare_for_evaluation(split.train)
    out = MetricSums({}, {}, {})
    if model.task == "explicit":
        out = out + _rating_metric_sums(model, split.test)
    if model.task != "explicit" or split.protocol == "leave-last-out":
        out = out + _ranking_metric_sums(model, split, k=k, protocol=ranking, sampled_negatives=sampled_negatives,
                                         seed=seed, recall_k=recall_k)
    model.train()
    return out
