"""The in-process engine: every client of a round trained in this process, one after another.

A real deployment runs each client on its own device; here the private user
rows of all clients live in one model object, but the engine only ever moves
the payload a client's step returns through the sum — never a private row —
so the data flow is the one a deployment has. One round::

    RoundServer.plan_round / broadcast        (rounds.server)
    client_step for each sampled client       (rounds.client: training, then client halves)
    the sum of the payloads                   (aggregation.sums: float sum or protocols.SecureSum)
    RoundServer.finish_round                  (server halves, optimizer, accountant)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from protocols import BelowThreshold

from ..aggregation import ClientUpdate, SumOutcome
from ..aggregation.key_sessions import InProcessKeySessions
from ..aggregation.sums import InProcessSum, float_sum, ring_sum
from ..config import RunConfig
from ..data.dataset import Split
from ..evaluation import evaluate
from ..inputs import build_model_for
from ..models import FederatedModel
from ..plans.base import PrivacyPlan, local_training
from ..rounds.auditor import (
    RoundAuditor,
    add_canaries,
    check_release,
    encode_canaries,
    observe_release,
)
from ..rounds.client import (
    ClientReport,
    RoundBroadcast,
    RoundReports,
    client_rng,
    client_step,
)
from ..rounds.metrics import RoundMetrics
from ..rounds.optimizers import ServerOptimizer
from ..rounds.server import RoundPlan, RoundServer
from ..training.canaries import CanaryGradients
from ..training.dpsgd_shares import example_dim
from ..training.local import ClientData, LocalTraining, examples_per_user

__all__ = ["FederatedTrainer", "RoundMetrics", "TrainingDiverged", "build_model_for", "server_for"]


class TrainingDiverged(RuntimeError):
    """Training produced NaN/inf: every update of a round, or the server's next parameters."""


def server_for(config: RunConfig, split: Split, model: FederatedModel, *,
               server_optimizer: ServerOptimizer | None = None) -> RoundServer:
    """The run's server, from the split and the model (every engine builds it the same way)."""
    train = split.train
    layout = model.layout()
    # each user's local training examples (implicit feedback: with its sampled negatives)
    examples = examples_per_user(model, train.users, train.items, train.n_users, model.n_items,  # type: ignore[arg-type]
                                 config.training.negatives)
    return RoundServer(config, population=np.flatnonzero(train.ratings_per_user() > 0), examples=examples,
                       dim=layout.size, initial_params=layout.flatten(model.shared_state()),
                       n_records=len(train.users), example_dim=example_dim(layout),
                       server_optimizer=server_optimizer)


class FederatedTrainer:
    """Runs federated rounds on a split: sample, train locally, aggregate, step the server."""

    def __init__(self, config: RunConfig, split: Split, *,
                 server_optimizer: ServerOptimizer | None = None, auditor: RoundAuditor | None = None) -> None:
        self.config = config
        #: an audit's canary clients and observer (``rounds.auditor``); None for an ordinary run
        self.auditor = auditor
        self.split = split
        self.model = build_model_for(config, split)
        self.layout = self.model.layout()
        self.server = server_for(config, split, self.model, server_optimizer=server_optimizer)
        agg = config.aggregation
        self.secure_sum = InProcessSum(agg.protocol, paillier_key_bits=agg.paillier_key_bits,
                                       paillier_min_clients=self.server.session_policy.paillier_min_clients)
        #: aggregation.key_rounds > 1: one masking key setup serves several rounds
        self.key_sessions = InProcessKeySessions(self.server.key_session)
        train = split.train
        order = np.argsort(train.users, kind="stable")
        bounds = np.searchsorted(train.users[order], np.arange(train.n_users + 1))
        self._client_rows = [order[bounds[u]:bounds[u + 1]] for u in range(train.n_users)]
        #: each client's own state between rounds (the stand-in for its device, like its private rows)
        self.client_states: dict[int, dict[str, Any]] = {}
        #: an audit's gradient canaries (record-level DP-SGD with distributed noise), or None
        self.canary_gradients: CanaryGradients | None = None
        self.history: list[RoundMetrics] = []

    # -- the server's state, as the rest of the package reads it --------------------------------
    @property
    def privacy(self) -> PrivacyPlan:
        return self.server.privacy

    @property
    def params(self) -> np.ndarray:
        return self.server.params

    @params.setter
    def params(self, value: np.ndarray) -> None:
        self.server.params = value

    @property
    def round_index(self) -> int:
        return self.server.round_index

    @round_index.setter
    def round_index(self, value: int) -> None:
        self.server.round_index = value

    @property
    def server_optimizer(self) -> ServerOptimizer:
        return self.server.server_optimizer

    @property
    def population(self) -> np.ndarray:
        return self.server.population

    @property
    def expected_clients(self) -> float:
        return self.server.expected_clients

    @property
    def local(self) -> LocalTraining:
        """Plain local training's settings (``training.*``)."""
        return local_training(self.config)

    @property
    def dpsgd_local(self) -> LocalTraining:
        """DP-SGD's local settings (``privacy.record_optimizer`` / ``privacy.record_lr``)."""
        p = self.config.privacy
        return replace(self.local, optimizer=p.record_optimizer, lr=p.record_lr)

    # -- clients ------------------------------------------------------------------------------------
    def client_data(self, user: int) -> ClientData:
        rows = self._client_rows[user]
        return ClientData(user=user, items=self.split.train.items[rows], ratings=self.split.train.ratings[rows])

    def num_examples(self, user: int) -> int:
        """The user's local training examples, what its DP-SGD samples from."""
        return int(self.server.examples[user])

    def population_examples(self) -> np.ndarray:
        return self.server.examples[self.population]

    def round_rng(self, round_index: int) -> np.random.Generator:
        return self.server.round_rng(round_index)

    def client_rng(self, round_index: int, client: int) -> np.random.Generator:
        return client_rng(self.config.seed, round_index, client)

    def protocol_stages(self) -> tuple[str, ...]:
        return self.server.protocol_stages()

    def plan_round(self, round_index: int) -> RoundPlan:
        """Who is sampled, who drops out (at which stage), who straggles, who trains."""
        return self.server.plan_round(round_index)

    # -- one round -----------------------------------------------------------------------------------
    def client_reports(self, plan: RoundPlan, broadcast: RoundBroadcast | None = None) -> list[ClientReport]:
        """Every trainer's :func:`client_step`, in client order."""
        broadcast = broadcast or self.server.broadcast(plan)
        return [client_step(self.model, self.layout, self.client_data(cid), self.server.client_plan, broadcast,
                            self.client_rng(plan.round_index, cid), slow=slow,
                            state=self.client_states.setdefault(cid, {}), canaries=self.canary_gradients)
                for cid, slow in plan.trainers]

    def run_round(self) -> RoundMetrics:
        started = time.perf_counter()
        plan = self.plan_round(self.round_index)
        canaries = add_canaries(self.auditor, self.server, plan)
        broadcast = self.server.broadcast(plan)
        reports = self.client_reports(plan, broadcast) + encode_canaries(canaries, self.server, broadcast, self.auditor)
        payloads = {r.client: r.payload for r in reports if r.payload is not None}
        outcome: SumOutcome | BelowThreshold | None = None
        if payloads:
            try:
                outcome = self._sum(payloads, plan.dropouts, plan.round_index)
                check_release(self.auditor, self.server, plan, outcome)
            except BelowThreshold as exc:
                outcome = exc  # the protocol aborted and released nothing
        else:
            self.key_sessions.close()  # a round without a sum: a key session cannot skip it
        metrics = self.server.finish_round(plan, RoundReports.collect(reports), outcome)
        observe_release(self.auditor, self.server, plan,
                        payloads if self.config.aggregation.protocol == "plaintext" else {})
        if metrics.contributors:
            self.model.load_shared_state(self.layout.unflatten(self.params))
        cfg = self.config.evaluation
        if self.round_index % cfg.every == 0 or self.round_index == self.config.training.rounds:
            metrics.evaluation = self.evaluate()
        metrics.seconds = time.perf_counter() - started
        self.history.append(metrics)
        return metrics

    def _sum(self, payloads: dict[int, Any], dropouts: dict[int, str], round_index: int) -> SumOutcome:
        """The round's sum; ``dropouts`` may name any client (a key session's members that do
        not train can vanish too), a single session only sees its uploaders'."""
        try:
            session = self.server.session(len(payloads))
        except BelowThreshold:
            self.key_sessions.close()
            raise
        if self.server.key_rounds > 1:
            return self.key_sessions.run(payloads, session, round_index=round_index, dropouts=dropouts)
        dropouts = {c: s for c, s in dropouts.items() if c in payloads}
        if session.protocol == "plaintext" and session.bits is not None:  # a labelled simulation
            return ring_sum(payloads, dropouts, bits=session.bits, min_survivors=session.min_survivors)
        if session.protocol == "plaintext":
            updates: dict[int, ClientUpdate] = payloads
            return float_sum(updates, dropouts)
        return self.secure_sum.run(payloads, session, round_index=round_index, dropouts=dropouts)

    def evaluate(self) -> dict[str, float | str]:
        cfg = self.config.evaluation
        return evaluate(self.model, self.split, k=cfg.k, ranking=cfg.ranking,
                        sampled_negatives=cfg.sampled_negatives, seed=self.config.seed, recall_k=cfg.recall_k)

    def run(self, *, on_round: Callable[[RoundMetrics], None] | None = None) -> list[RoundMetrics]:
        if self.round_index == 0:
            torch.manual_seed(self.config.seed)  # a resumed run restores torch's state instead
        while self.round_index < self.config.training.rounds:
            if not self.server.can_run_round():
                break  # the next round would exceed the privacy budget: stop with the model as is
            metrics = self.run_round()
            if on_round is not None:
                on_round(metrics)
            what = _diverged(metrics)
            if what:
                raise TrainingDiverged(
                    f"training diverged in round {metrics.round}: {what} not finite (NaN/inf); the run "
                    "stops; lower training.lr, model.init_std or training.server_lr")
        return self.history


def _diverged(metrics: RoundMetrics) -> str | None:
    """What in a round's metrics says training has diverged, if anything."""
    if metrics.measurements.get("diverged"):
        return "every update of the round, or the server's next parameters, are"
    bad = sorted(k for k, v in metrics.evaluation.items() if isinstance(v, float) and not np.isfinite(v))
    if bad:
        return f"the evaluation ({', '.join(bad)}) is"
    return None
