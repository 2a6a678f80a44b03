"""Baselines by name, fitted on a split's training data and scored like any model."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..data.dataset import Split
from ..evaluation import ranking_metrics_of, rating_metrics_of
from .explicit import BiasBaseline, GlobalMean, ItemMean, UserMean
from .implicit import ItemKNN, MostPopular
from .surprise_models import SURPRISE_MODELS, SurpriseModel

__all__ = ["BASELINES", "baseline_names", "evaluate_baseline"]

#: name -> (feedback it serves, factory taking the seed)
BASELINES: dict[str, tuple[str, Callable[[int], Any]]] = {
    "global-mean": ("explicit", lambda seed: GlobalMean()),
    "item-mean": ("explicit", lambda seed: ItemMean()),
    "item-mean-shrunk": ("explicit", lambda seed: ItemMean(shrinkage=5.0)),
    "user-mean": ("explicit", lambda seed: UserMean()),
    "user-item-bias": ("explicit", lambda seed: BiasBaseline()),
    "most-popular": ("implicit", lambda seed: MostPopular()),
    "item-knn": ("implicit", lambda seed: ItemKNN()),
    **{name: ("explicit", lambda seed, name=name: SurpriseModel(name, seed)) for name in SURPRISE_MODELS},
}
_DEFAULTS = {
    "explicit": ("global-mean", "item-mean", "user-mean", "user-item-bias"),
    "implicit": ("most-popular", "item-knn"),
}


def baseline_names(implicit: bool) -> tuple[str, ...]:
    """The baselines run by default for this kind of feedback (Surprise's only on request)."""
    return _DEFAULTS["implicit" if implicit else "explicit"]


def evaluate_baseline(
    name: str, split: Split, *, k: int = 10, recall_k: int = 20, ranking: str = "both",
    sampled_negatives: int = 99, seed: int = 0,
) -> dict[str, float | str]:
    """Fit baseline ``name`` on the split's training data; its metrics and fit/evaluation time."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    feedback, factory = BASELINES[name]
    implicit = split.train.implicit
    if (feedback == "implicit") != implicit:
        raise ValueError(f"baseline {name!r} is for {feedback} feedback; this split is "
                         f"{'implicit' if implicit else 'explicit'}")
    started = time.perf_counter()
    model = factory(seed).fit(split.train)
    fitted = time.perf_counter()
    if implicit:
        protocols = ("full", "sampled") if ranking == "both" else (ranking,)
        metrics = ranking_metrics_of(model.score_users, split, k=k, recall_k=recall_k, protocols=protocols,
                                     sampled_negatives=sampled_negatives, seed=seed)
    else:
        metrics = rating_metrics_of(model.predict(split.test.users, split.test.items), split.test)
    metrics["fit_seconds"] = fitted - started
    metrics["evaluation_seconds"] = time.perf_counter() - fitted
    return metrics
