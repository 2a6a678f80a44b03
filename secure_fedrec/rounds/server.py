"""The server's side of a round, the same for every engine.

::

    plan_round     sample clients (and, in simulation, who drops out and who straggles);
                   record level: clients over their own budget abstain
    broadcast      round index, encoder range, layer states (with the shared parameters)
    session        the secure-sum session's parameters for the clients that upload
    finish_round   protocol result -> pipeline server halves -> server optimizer -> accountant

Between ``session`` and ``finish_round`` an engine runs the sum: in this process
(:mod:`secure_fedrec.aggregation.sums`) or over Flower's network
(:mod:`secure_fedrec.engines.flower.coordinator`); it never re-derives the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols import BelowThreshold

from ..aggregation import (
    Aggregate,
    AggregationPipeline,
    ServerContext,
    SessionParameters,
    SumOutcome,
    protocol_stages,
    session_parameters,
)
from ..aggregation.key_sessions import KeySession
from ..config import RunConfig
from ..plans import Population, PrivacyPlan, build_privacy_plan
from .client import ClientPlan, RoundBroadcast, RoundReports
from .metrics import RoundMetrics
from .optimizers import ServerOptimizer, build_server_optimizer
from .sampling import expected_clients, sample_clients

__all__ = ["RoundPlan", "RoundServer"]

_ROUND_STREAM = 0
#: a simulated client's dropout coin, per (seed, round, client)
_DROPOUT_STREAM = 1
#: the model travels as float32, what a client's model holds (engines/flower/codec.py: model_bytes)
MODEL_BYTES_PER_PARAMETER = 4


@dataclass
class RoundPlan:
    """Who takes part in a round, decided by the server before it starts."""

    round_index: int
    sampled: np.ndarray  # sorted client ids
    dropouts: dict[int, str]  # simulation: client -> the protocol stage it vanishes before
    stragglers: np.ndarray  # simulation: bool per sampled client (one local epoch only)
    #: the sampled clients that train, with their straggler flag (record level: within budget)
    trainers: tuple[tuple[int, bool], ...] = ()
    #: an audit's canary clients: they upload a crafted update instead of training (rounds.auditor)
    canaries: tuple[int, ...] = ()

    @property
    def n_asked(self) -> int:
        """Clients asked for an update (trainers and canaries): the fixed-point encoder's range."""
        return len(self.trainers) + len(self.canaries)


class RoundServer:
    """The server of a run: shared parameters, privacy plan, server optimizer, round counter.

    ``population`` are the ids of the clients that can be sampled, ``examples`` every
    user's number of local training examples (record level: what DP-SGD samples from).
    """

    def __init__(self, config: RunConfig, *, population: np.ndarray, examples: np.ndarray, dim: int,
                 initial_params: np.ndarray, n_records: int | None = None, example_dim: int | None = None,
                 server_optimizer: ServerOptimizer | None = None) -> None:
        t = config.training
        self.config = config
        self.population = population
        self.examples = examples
        self.privacy: PrivacyPlan = build_privacy_plan(config, Population(
            n_users=len(population), expected_clients=expected_clients(len(population), t.clients_per_round),
            dim=dim, client_examples=examples[population], n_records=n_records, example_dim=example_dim))
        # the plan's own count: every client, when the mechanism takes all of them each round
        self.expected_clients = self.privacy.expected_clients
        self.session_policy = self.privacy.session_policy()
        self.client_plan = ClientPlan(training=self.privacy.training, pipeline=self.privacy.pipeline,
                                      report_loss=self.privacy.reports_loss,
                                      private_sampling_rate=self.privacy.private_sampling_rate)
        self.params = initial_params
        spec = self.privacy.server_optimizer_spec()
        self.server_optimizer = server_optimizer or (
            build_server_optimizer(spec[0], spec[1], weight_decay=spec[2]) if spec is not None
            else build_server_optimizer(t.server_optimizer, t.server_lr))
        self.round_index = 0
        #: the last released aggregate (the mean update the server applied): a curious server's view
        self.last_aggregate: Aggregate | None = None

    @property
    def pipeline(self) -> AggregationPipeline:
        return self.privacy.pipeline

    # -- before the round ----------------------------------------------------------------------
    def round_rng(self, round_index: int) -> np.random.Generator:
        # Derived per (seed, round) rather than drawn from one running stream: any engine and
        # a resumed run make the same choices.
        return np.random.default_rng([self.config.seed, round_index, _ROUND_STREAM])

    @property
    def key_rounds(self) -> int:
        """Rounds that share one masking key setup (1: a fresh session every round)."""
        agg = self.config.aggregation
        return agg.key_rounds if agg.protocol in ("secagg", "secagg+") else 1

    def protocol_stages(self) -> tuple[str, ...]:
        return protocol_stages(self.config.aggregation.protocol, key_rounds=self.key_rounds)

    def _sample(self, rng: np.random.Generator) -> np.ndarray:
        if self.privacy.every_client:  # record-level distributed noise: every client, every round
            return np.sort(self.population)
        t = self.config.training
        return sample_clients(self.population, t.clients_per_round, t.sampling, rng)

    def privacy_summary(self) -> dict[str, Any]:
        """The privacy plan's summary, with what it means for an observer who knows who took part
        in each round run so far (recomputed from the seeded sample: nothing to checkpoint)."""
        summary = self.privacy.summary()
        if self.privacy.every_client:  # everyone uploads every round: nothing to count
            return {**summary, **self.privacy.known_participation(np.zeros(0, dtype=np.int64))}
        counts = np.zeros(int(self.population.max()) + 1 if len(self.population) else 0, dtype=np.int64)
        for round_index in range(self.round_index):
            np.add.at(counts, self.sampled_clients(round_index), 1)
        return {**summary, **self.privacy.known_participation(counts[self.population])}

    def sampled_clients(self, round_index: int) -> np.ndarray:
        """The clients round ``round_index`` samples: the first draw of its own generator, so
        known before the round starts (what a key session's members are planned from)."""
        return self._sample(self.round_rng(round_index))

    def key_session(self, round_index: int) -> KeySession:
        """The multi-round masking session that starts at ``round_index``.

        It serves up to ``aggregation.key_rounds`` rounds (never past the last one);
        its members are every client sampled in any of them (see
        :mod:`secure_fedrec.aggregation.key_sessions`), and its parameters are sized
        for the members. Raises :class:`BelowThreshold` when they are too few.
        """
        last = min(round_index + self.key_rounds, self.config.training.rounds)
        rounds = max(1, last - round_index)
        samples = [self.sampled_clients(q) for q in range(round_index, round_index + rounds)]
        members = tuple(int(c) for c in np.unique(np.concatenate(samples)))
        return KeySession(first_round=round_index, rounds=rounds, members=members,
                          parameters=self.session(len(members)))

    def plan_round(self, round_index: int) -> RoundPlan:
        """Who is sampled, who drops out (at which protocol stage), who straggles, who trains."""
        plan = self.draw(round_index)
        plan.trainers = self.trainers(plan)
        return plan

    def draw(self, round_index: int) -> RoundPlan:
        """Who is sampled, who drops out, who straggles (no trainers yet): a function of the
        seed and the round alone, so a resume's cross-check can redraw any past round."""
        t = self.config.training
        rng = self.round_rng(round_index)
        sampled = self._sample(rng)
        dropouts: dict[int, str] = {}
        if t.dropout_rate > 0:
            # Each client's own coin: whether one client drops out does not depend on who else was
            # sampled, as for real clients (the charge at the released shares assumes it;
            # docs/privacy.md, "The shares a release carried").
            stages = self.protocol_stages()
            for client in sampled:
                coins = np.random.default_rng([self.config.seed, round_index, _DROPOUT_STREAM, int(client)])
                if coins.random() < t.dropout_rate:
                    dropouts[int(client)] = str(stages[coins.integers(len(stages))])
        stragglers = rng.random(len(sampled)) < t.straggler_rate
        return RoundPlan(round_index, sampled, dropouts, stragglers)

    def trainers(self, plan: RoundPlan) -> tuple[tuple[int, bool], ...]:
        """The sampled clients that train (record level: a client over its own budget abstains)."""
        return tuple((int(c), bool(slow)) for c, slow in zip(plan.sampled.tolist(), plan.stragglers.tolist())
                     if self.privacy.client_may_train(int(c), int(self.examples[c])))

    def broadcast(self, plan: RoundPlan) -> RoundBroadcast:
        return RoundBroadcast(round_index=plan.round_index, n_clients=plan.n_asked,
                              expected_clients=self.expected_clients, layer_states=self.privacy.layer_states)

    def session(self, uploaders: int) -> SessionParameters:
        """The session for ``uploaders`` clients; :class:`BelowThreshold` if too few to release a sum."""
        return session_parameters(self.session_policy, uploaders, bits=self.pipeline.bits,
                                  vector_length=self.pipeline.payload_length(len(self.params)))

    def can_run_round(self) -> bool:
        return self.privacy.can_run_round()

    # -- after the sum ----------------------------------------------------------------------------
    def transfer_totals(self, measurements: dict[str, Any]) -> dict[str, float]:
        """Bytes per client of the round, both ways: ``bytes_up_per_client`` is the protocol's
        upload (every frame the client sent); ``bytes_down_per_client`` is the model sent to
        it (``model_bytes_per_client``: the shared parameters as float32, as the Flower engine
        sends them) plus the protocol's frames from the server."""
        model_bytes = float(MODEL_BYTES_PER_PARAMETER * len(self.params))
        return {"bytes_up_per_client": float(measurements.get("bytes_sent_per_client", 0.0)),
                "model_bytes_per_client": model_bytes,
                "bytes_down_per_client": model_bytes + float(measurements.get("bytes_received_per_client", 0.0))}

    def finish_round(self, plan: RoundPlan, reports: RoundReports, outcome: SumOutcome | BelowThreshold | None,
                     *, extra: dict[str, float] | None = None) -> RoundMetrics:
        """The server halves, the optimizer step and the accounting of one round.

        ``outcome`` is what the sum released, a :class:`BelowThreshold` when it released
        nothing (the round changes no shared parameter, and is still charged as the
        accountant requires), or ``None`` when no client uploaded. ``extra`` are the
        engine's own measurements (transport bytes, node failures).
        """
        for client, spent in reports.spent:
            self.privacy.charge_client(client, spent)
        measurements: dict[str, Any] = {}
        contributors: tuple[int, ...] = ()
        self.last_aggregate = None
        if isinstance(outcome, BelowThreshold):
            measurements = {"aborted": 1.0, "abort_survivors": float(outcome.survivors)}
        elif outcome is not None:
            ctx = ServerContext(round_index=plan.round_index, n_clients=plan.n_asked,
                                expected_clients=self.expected_clients, reporting_clients=reports.reporting,
                                client_totals=reports.totals, client_diagnostics=reports.diagnostics)
            aggregate, states, measurements = self.pipeline.server(outcome, self.privacy.layer_states, ctx)
            self.privacy.layer_states = states
            contributors = aggregate.contributors
            if contributors:
                stepped = self.server_optimizer.step(self.params, aggregate.total)
                if np.all(np.isfinite(stepped)):
                    self.params = stepped
                    self.last_aggregate = aggregate
                else:  # keep the last finite parameters; the engine stops the run
                    measurements["diverged"] = 1.0
        if reports.diverged and not reports.reporting:
            measurements["diverged"] = 1.0  # every trainer's update was NaN/inf: training has diverged
        measurements.update(extra or {})
        measurements.update(self.transfer_totals(measurements))
        # the audit's canary clients may withhold their noise share: only the others are counted
        canaries = set(plan.canaries)
        self.privacy.record_release(sum(1 for client in contributors if client not in canaries))
        measurements.update(self.privacy.after_round())
        if reports.diverged:
            measurements["nonfinite_updates_dropped"] = float(reports.diverged)
        self.round_index = plan.round_index + 1
        return RoundMetrics(
            round=plan.round_index + 1, sampled=len(plan.sampled), contributors=len(contributors),
            train_loss=float(np.mean(reports.losses)) if reports.losses else float("nan"),
            seconds=0.0, measurements=measurements)
