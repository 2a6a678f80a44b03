"""The in-process engine: every client of a round trained in this process, one after another.

A real deployment runs each client on its own device; here the private user
rows of all clients live in one model object, but the engine only ever moves
the shared-parameter delta a client returns through aggregation — never a
private row — so the data flow is the one a deployment has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import sparse

from ..config import RunConfig
from ..data.dataset import Split
from ..evaluation import evaluate
from ..models import FederatedModel, build_model
from .aggregators import Mean
from .client import ClientData, LocalTraining, train_client
from .protocols import build_pipeline
from .server import ServerOptimizer, build_server_optimizer, expected_clients, sample_clients
from .updates import ClientUpdates, RoundContext

__all__ = ["FederatedTrainer", "RoundMetrics", "build_model_for"]


def build_model_for(config: RunConfig, split: Split) -> FederatedModel:
    train = split.train
    kwargs: dict[str, Any] = {"init_std": config.model.init_std, "seed": config.seed}
    if config.model_name == "mf":
        kwargs["global_mean"] = float(train.ratings.mean()) if len(train) else 0.0
    else:
        kwargs["hidden"] = config.model.hidden
    return build_model(
        config.model_name, n_users=train.n_users, n_items=train.n_items, dim=config.model.dim, **kwargs
    )


@dataclass
class RoundMetrics:
    round: int
    sampled: int
    contributors: int
    train_loss: float
    seconds: float
    measurements: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round, "sampled": self.sampled, "contributors": self.contributors,
            "train_loss": self.train_loss, "seconds": self.seconds,
            **self.measurements, **self.evaluation,
        }


class FederatedTrainer:
    """Runs federated rounds on a split: sample, train locally, aggregate, step the server."""

    def __init__(
        self, config: RunConfig, split: Split, *, pipeline: Mean | None = None,
        server_optimizer: ServerOptimizer | None = None,
    ) -> None:
        self.config = config
        self.split = split
        self.model = build_model_for(config, split)
        self.layout = self.model.layout()
        self.params = self.layout.flatten(self.model.shared_state())
        self.rng = np.random.default_rng(config.seed)
        t = config.training
        self.local = LocalTraining(
            epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr, optimizer=t.optimizer,
            reg=t.reg, negatives=t.negatives,
        )
        train = split.train
        self.population = np.flatnonzero(train.ratings_per_user() > 0)
        self.expected_clients = expected_clients(len(self.population), t.clients_per_round)
        self.pipeline = pipeline or build_pipeline(config, self.expected_clients)
        self.server_optimizer = server_optimizer or build_server_optimizer(t.server_optimizer, t.server_lr)
        order = np.argsort(train.users, kind="stable")
        bounds = np.searchsorted(train.users[order], np.arange(train.n_users + 1))
        self._client_rows = [order[bounds[u]:bounds[u + 1]] for u in range(train.n_users)]
        self.round_index = 0
        self.history: list[RoundMetrics] = []

    # -- one round ----------------------------------------------------------------------
    def client_data(self, user: int) -> ClientData:
        rows = self._client_rows[user]
        return ClientData(user=user, items=self.split.train.items[rows], ratings=self.split.train.ratings[rows])

    def _dropouts(self, sampled: np.ndarray) -> dict[int, str]:
        rate = self.config.training.dropout_rate
        if rate <= 0:
            return {}
        stages = getattr(getattr(self.pipeline.inner, "protocol", None), "stages", ("upload",))
        drops = sampled[self.rng.random(len(sampled)) < rate]
        return {int(c): str(stages[self.rng.integers(len(stages))]) for c in drops}

    def run_round(self) -> RoundMetrics:
        started = time.perf_counter()
        t = self.config.training
        sampled = sample_clients(self.population, t.clients_per_round, t.sampling, self.rng)
        ctx = RoundContext(
            round_index=self.round_index, expected_clients=self.expected_clients,
            dropouts=self._dropouts(sampled),
        )
        stragglers = self.rng.random(len(sampled)) < t.straggler_rate
        indptr, indices, values, weights, losses = [0], [], [], [], []
        for cid, slow in zip(sampled.tolist(), stragglers.tolist()):
            result = train_client(self.model, self.client_data(cid), self.local, self.rng,
                                  epochs=1 if slow else None)
            idx = self.layout.indices_for_items(result.items)
            indices.append(idx)
            values.append(result.delta)
            indptr.append(indptr[-1] + len(idx))
            weights.append(self._weight(result.num_examples))
            losses.append(result.loss)
        matrix = sparse.csr_array(
            (np.concatenate(values) if values else np.zeros(0),
             np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
             np.asarray(indptr)),
            shape=(len(sampled), self.layout.size),
        )
        updates = ClientUpdates(client_ids=sampled.astype(np.int64), matrix=matrix,
                                weights=np.asarray(weights, dtype=np.float64))
        out = self.pipeline.aggregate(updates, ctx)
        if out.contributors:
            self.params = self.server_optimizer.step(self.params, out.update)
            self.model.load_shared_state(self.layout.unflatten(self.params))
        metrics = RoundMetrics(
            round=self.round_index + 1, sampled=len(sampled), contributors=len(out.contributors),
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            seconds=0.0, measurements=out.measurements,
        )
        self.round_index += 1
        cfg = self.config.evaluation
        if self.round_index % cfg.every == 0 or self.round_index == t.rounds:
            metrics.evaluation = self.evaluate()
        metrics.seconds = time.perf_counter() - started
        self.history.append(metrics)
        return metrics

    def _weight(self, num_examples: int) -> float:
        agg = self.config.aggregation
        if agg.weighting == "uniform":
            return 1.0
        return min(num_examples, agg.weight_cap) / agg.weight_cap

    def evaluate(self) -> dict[str, float | str]:
        cfg = self.config.evaluation
        return evaluate(self.model, self.split, k=cfg.k, ranking=cfg.ranking,
                        sampled_negatives=cfg.sampled_negatives, seed=self.config.seed)

    def run(self, *, on_round: Callable[[RoundMetrics], None] | None = None) -> list[RoundMetrics]:
        torch.manual_seed(self.config.seed)
        while self.round_index < self.config.training.rounds:
            metrics = self.run_round()
            if on_round is not None:
                on_round(metrics)
        return self.history
