"""The in-process engine: every client of a round trained in this process, one after another.

A real deployment runs each client on its own device; here the private user
rows of all clients live in one model object, but the engine only ever moves
the shared-parameter delta a client returns through aggregation — never a
private row — so the data flow is the one a deployment has.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import sparse

from protocols import BelowThreshold

from ..config import RunConfig
from ..data.dataset import Split
from ..evaluation import evaluate
from ..models import FederatedModel
from ..privacy.dpsgd import dpsgd_local_training, train_client_dpsgd
from ..privacy.session import PrivacySession
from .aggregators import Mean
from .client import ClientData, LocalTraining, examples_per_user, train_client
from .protocols import build_pipeline
from .server import (
    ServerOptimizer,
    build_server_optimizer,
    expected_clients,
    sample_clients,
)
from .updates import ClientUpdates, RoundContext

__all__ = ["FederatedTrainer", "RoundMetrics", "build_model_for"]

_ROUND_STREAM, _CLIENT_STREAM = 0, 1


def build_model_for(config: RunConfig, split: Split) -> FederatedModel:
    from ..models.factory import build_model_for as build

    return build(config, split)


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
            # null when no client reported one (private runs; rounds without contributors)
            "train_loss": self.train_loss if math.isfinite(self.train_loss) else None, "seconds": self.seconds,
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
        t = config.training
        self.local = LocalTraining(
            epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr, optimizer=t.optimizer,
            reg=t.reg, negatives=t.negatives,
        )
        p = config.privacy
        self.dpsgd_local = dpsgd_local_training(self.local, p.record_optimizer, p.record_lr)
        train = split.train
        self.population = np.flatnonzero(train.ratings_per_user() > 0)
        self.expected_clients = expected_clients(len(self.population), t.clients_per_round)
        order = np.argsort(train.users, kind="stable")
        bounds = np.searchsorted(train.users[order], np.arange(train.n_users + 1))
        self._client_rows = [order[bounds[u]:bounds[u + 1]] for u in range(train.n_users)]
        # each user's local training examples (implicit feedback: with its sampled negatives)
        self._examples = examples_per_user(self.model, train.users, train.items, train.n_users,
                                           self.model.n_items, t.negatives)  # type: ignore[arg-type]
        self.privacy = PrivacySession(
            config, n_users=len(self.population), expected_clients=self.expected_clients,
            dim=self.layout.size, client_examples=self._examples[self.population], n_records=len(train.users),
        )
        self.pipeline = pipeline or build_pipeline(config, self.expected_clients, self.privacy)
        self.server_optimizer = server_optimizer or build_server_optimizer(t.server_optimizer, t.server_lr)
        self.round_index = 0
        self.history: list[RoundMetrics] = []

    # -- one round ----------------------------------------------------------------------
    def client_data(self, user: int) -> ClientData:
        rows = self._client_rows[user]
        return ClientData(user=user, items=self.split.train.items[rows], ratings=self.split.train.ratings[rows])

    def num_examples(self, user: int) -> int:
        """The user's local training examples, what its DP-SGD samples from."""
        return int(self._examples[user])

    def population_examples(self) -> np.ndarray:
        return self._examples[self.population]

    # Randomness is derived per (seed, round[, client]) rather than drawn from one
    # running stream: any engine (in-process, Flower) and a resumed run reproduce
    # the same choices without sharing generator state.
    def round_rng(self, round_index: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, round_index, _ROUND_STREAM])

    def client_rng(self, round_index: int, client: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, round_index, _CLIENT_STREAM, client])

    def protocol_stages(self) -> tuple[str, ...]:
        """Stage names of the secure-sum protocol inside the pipeline (privacy layers wrap it)."""
        layer = self.pipeline.inner
        while layer is not None:
            protocol = getattr(layer, "protocol", None)
            if protocol is not None:
                return tuple(protocol.stages)
            layer = getattr(layer, "inner", None)
        return ("upload",)  # the plaintext float sum: a client can only fail to upload

    def plan_round(self, round_index: int) -> tuple[np.ndarray, dict[int, str], np.ndarray]:
        """Who is sampled, who drops out (at which protocol stage), who straggles."""
        t = self.config.training
        rng = self.round_rng(round_index)
        sampled = sample_clients(self.population, t.clients_per_round, t.sampling, rng)
        dropouts: dict[int, str] = {}
        if t.dropout_rate > 0:
            stages = self.protocol_stages()
            drops = sampled[rng.random(len(sampled)) < t.dropout_rate]
            dropouts = {int(c): str(stages[rng.integers(len(stages))]) for c in drops}
        stragglers = rng.random(len(sampled)) < t.straggler_rate
        return sampled, dropouts, stragglers

    def run_round(self) -> RoundMetrics:
        started = time.perf_counter()
        t = self.config.training
        sampled, dropouts, stragglers = self.plan_round(self.round_index)
        ctx = RoundContext(
            round_index=self.round_index, expected_clients=self.expected_clients, dropouts=dropouts,
        )
        indptr, indices, values, weights, losses, trained = [0], [], [], [], [], []
        nonfinite = 0
        p = self.config.privacy
        for cid, slow in zip(sampled.tolist(), stragglers.tolist()):
            data = self.client_data(cid)
            rng = self.client_rng(self.round_index, cid)
            epochs = 1 if slow else None
            if self.privacy.unit == "record":
                if not self.privacy.client_can_train(cid, self.num_examples(cid)):
                    continue  # this client's own budget is spent: it abstains
                result, step = train_client_dpsgd(
                    self.model, data, self.dpsgd_local, rng, noise_multiplier=self.privacy.noise_multiplier,
                    max_grad_norm=p.clip_norm, batch_size=p.record_batch_size,
                    grad_sample_mode=p.grad_sample_mode, epochs=epochs,
                )
                self.privacy.record_client_step(cid, step)
            else:
                result = train_client(self.model, data, self.local, rng, epochs=epochs)
            if not np.all(np.isfinite(result.delta)):
                # A diverged client (NaN/inf update) does not upload: it is a dropout, so the
                # other clients' sum stays exact (encoding it would abort everyone's round).
                nonfinite += 1
                continue
            trained.append(cid)
            idx = self.layout.indices_for_items(result.items)
            indices.append(idx)
            values.append(result.delta)
            indptr.append(indptr[-1] + len(idx))
            weights.append(self._weight(result.num_examples))
            if not self.privacy.enabled:
                # A client's training loss is a function of its data that no DP mechanism
                # covers: private clients do not report it (train_loss is then null).
                losses.append(result.loss)
        matrix = sparse.csr_array(
            (np.concatenate(values) if values else np.zeros(0),
             np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
             np.asarray(indptr)),
            shape=(len(trained), self.layout.size),
        )
        updates = ClientUpdates(client_ids=np.asarray(trained, dtype=np.int64), matrix=matrix,
                                weights=np.asarray(weights, dtype=np.float64))
        trained_set = set(trained)
        ctx.dropouts = {c: s for c, s in ctx.dropouts.items() if c in trained_set}
        contributors: tuple[int, ...] = ()
        measurements: dict[str, float] = {}
        if len(trained):
            try:
                out = self.pipeline.aggregate(updates, ctx)
            except BelowThreshold as exc:
                # The protocol aborted and released nothing: the round changes no shared parameter.
                measurements["aborted"] = 1.0
                measurements["abort_survivors"] = float(exc.survivors)
            else:
                contributors, measurements = out.contributors, out.measurements
                if contributors:
                    self.params = self.server_optimizer.step(self.params, out.update)
                    self.model.load_shared_state(self.layout.unflatten(self.params))
        measurements.update(self.privacy.after_round())
        if nonfinite:
            measurements["nonfinite_updates_dropped"] = float(nonfinite)
        metrics = RoundMetrics(
            round=self.round_index + 1, sampled=len(sampled), contributors=len(contributors),
            train_loss=float(np.mean(losses)) if losses else float("nan"),
            seconds=0.0, measurements=measurements,
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
        if agg.weighting == "uniform" or self.privacy.unit == "user":
            return 1.0
        return min(num_examples, agg.weight_cap) / agg.weight_cap

    def evaluate(self) -> dict[str, float | str]:
        cfg = self.config.evaluation
        return evaluate(self.model, self.split, k=cfg.k, ranking=cfg.ranking,
                        sampled_negatives=cfg.sampled_negatives, seed=self.config.seed, recall_k=cfg.recall_k)

    def run(self, *, on_round: Callable[[RoundMetrics], None] | None = None) -> list[RoundMetrics]:
        if self.round_index == 0:
            torch.manual_seed(self.config.seed)  # a resumed run restores torch's state instead
        while self.round_index < self.config.training.rounds:
            if not self.privacy.can_run_round():
                break  # the next round would exceed the privacy budget: stop with the model as is
            metrics = self.run_round()
            if on_round is not None:
                on_round(metrics)
        return self.history
