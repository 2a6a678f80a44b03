"""The server side of a Flower job: the round's server step, with the sum carried over a transport.

The coordinator owns a :class:`~secure_fedrec.rounds.server.RoundServer`, the same
server the in-process engine uses: it samples the clients (same seed, same
choices), broadcasts the round, sizes the session, and finishes the round with the
pipeline's server halves, the server optimizer and the accountant. What it adds is
only transport: the ``train`` request carries the shared parameters, the run's
client plan (:mod:`secure_fedrec.rounds.wire`) and the round's broadcast to the
nodes, which run :func:`~secure_fedrec.rounds.client.client_step` for their users
(:mod:`.node`); then it moves protocol frames between its sans-IO protocol server
and the nodes' parties, stage by stage:

* plaintext: the nodes' float payloads are added with the in-process float sum;
* SecAgg / SecAgg+: :mod:`.masking_rounds` — a session per round (the first
  stage's frames ride with ``train``), or one key setup for ``aggregation.key_rounds``
  rounds (then a steady round is two exchanges);
* packed threshold Paillier: :mod:`.paillier_round` (clients and key holders on the nodes).

The evaluation a round is due rides with the next round's ``train`` request (each
node scores the model it receives before it trains, i.e. the previous round's
model, with its users' rows as that round left them); only the last one is an
exchange of its own.

A node that fails (error reply, or no reply before the deadline of
:mod:`.deadlines`) is a dropout of all its users from then on; the round completes
when the protocol's threshold survives, as in-process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from protocols import BelowThreshold

from ...aggregation import ClientUpdate, SessionParameters
from ...aggregation.sums import float_sum
from ...config import RunConfig, config_to_dict
from ...data.dataset import RatingData, Split
from ...evaluation import MetricSums, combine_metric_sums
from ...inputs import build_model_for
from ...rounds.client import RoundReports
from ...rounds.metrics import RoundMetrics, clipping_summary, transfer_summary
from ...rounds.server import RoundPlan, RoundServer
from ...rounds.wire import broadcast_to_json, plan_to_json
from ..inprocess import server_for
from .codec import EVALUATION_PREFIX, Payload, f64_array, i64_array, model_bytes
from .deadlines import DeadlinePolicy, StageDeadline
from .masking_rounds import KeySessionRounds, masking_round
from .relay import RoundIO

__all__ = [
    "Exchange",
    "FlowerCoordinator",
    "Transport",
    "check_supported",
    "combine_evaluations",
    "reports_from_reply",
]

log = logging.getLogger(__name__)


@dataclass
class Exchange:
    """The outcome of one request/reply step with a set of nodes (keyed by partition)."""

    replies: dict[int, Payload]
    failed: dict[int, str] = field(default_factory=dict)  # partition -> why it counts as gone
    bytes_down: int = 0  # server -> nodes, serialized
    bytes_up: int = 0  # nodes -> server, serialized
    seconds: float = 0.0
    reply_seconds: list[float] = field(default_factory=list)  # when each reply came, after the start


class Transport(Protocol):
    def exchange(self, message_type: str, requests: Mapping[int, Payload], *,
                 deadline: StageDeadline, round_index: int) -> Exchange: ...


def check_supported(config: RunConfig) -> None:
    """Refuse, before anything starts, what the Flower engine does not run."""
    if config.aggregation.protocol not in ("plaintext", "secagg", "secagg+", "paillier"):
        raise ValueError("the Flower engine runs plaintext, secagg, secagg+ and paillier, not "
                         f"{config.aggregation.protocol!r}")


def reports_from_reply(reply: Payload) -> RoundReports:
    """A node's summary of its users' client reports (the totals of their counts, never a
    single user's diagnostic numbers), as :meth:`RoundReports.merge` adds them up."""
    from ...training.dpsgd import DpSgdStep

    spent = [(int(u), DpSgdStep(float(z), float(q), int(s)))
             for u, z, q, s in zip(reply.get("spent_users", []), reply.get("dp_noise_multipliers", []),
                                   reply.get("dp_sample_rates", []), reply.get("dp_steps", []))]
    return RoundReports(reporting=int(reply.get("reporting", 0)), diverged=int(reply.get("diverged", 0)),
                        totals={str(k): float(v) for k, v in zip(reply.get("total_names", []),
                                                                 reply.get("total_values", []))},
                        losses=[float(x) for x in reply.get("losses", [])], spent=spent)


class FlowerCoordinator:
    """Runs a whole job over a :class:`Transport` to ``num_partitions`` nodes.

    ``deadlines`` decides how long each exchange waits (default: from the config's
    ``[flower]`` section; ``train_timeout``/``stage_timeout`` override its fixed values).
    """

    def __init__(self, config: RunConfig, data: RatingData, split: Split, transport: Transport,
                 num_partitions: int, *, train_timeout: float | None = None,
                 stage_timeout: float | None = None, deadlines: DeadlinePolicy | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 paillier_keys: str | None = None) -> None:
        check_supported(config)
        self.config = config
        self.on_event = on_event
        self.data = data
        self.split = split
        self.transport = transport
        self.num_partitions = num_partitions
        section = config.flower
        self.deadlines = deadlines or DeadlinePolicy(
            train_timeout=section.train_timeout if train_timeout is None else train_timeout,
            stage_timeout=section.stage_timeout if stage_timeout is None else stage_timeout,
            factor=section.timeout_factor, floor=section.timeout_floor,
            first=section.node_wait_timeout)
        self.server: RoundServer = server_for(config, split, build_model_for(config, split))
        self.config_json = json.dumps(config_to_dict(config))
        self.plan_json = plan_to_json(self.server.client_plan)
        self.dead: dict[int, str] = {}  # partition -> reason
        #: partition -> (round index, stage) of the request it never answered
        self.dead_at: dict[int, tuple[int, str]] = {}
        self.history: list[RoundMetrics] = []
        self.flower_bytes_down = 0
        self.flower_bytes_up = 0
        self.key_sessions = KeySessionRounds(self.server)
        #: the round (0-based) whose evaluation is due and rides with the next request
        self.evaluation_due: int | None = None
        self.paillier_keys = paillier_keys
        self.paillier_params = None
        #: user -> raw Ed25519 public key, pinned the first time the user's node sends it
        self.identities: dict[int, bytes] = {}
        if config.aggregation.protocol == "paillier":
            if paillier_keys is None:
                raise ValueError("Paillier on Flower needs the dealer's key folder (paillier_keys); "
                                 "see engines.flower.paillier.deal_paillier_keys")
            from .paillier import load_public_params

            self.paillier_params = load_public_params(paillier_keys)

    @property
    def params(self) -> np.ndarray:
        return self.server.params

    # -- helpers --------------------------------------------------------------------------
    def partition_of(self, user: int) -> int:
        return user % self.num_partitions

    def _exchange(self, message_type: str, requests: dict[int, Payload], round_index: int,
                  stats: dict[str, float], stage: str) -> dict[int, Payload]:
        live = {p: r for p, r in requests.items() if p not in self.dead}
        if not live:
            return {}
        if self.on_event is not None:
            self.on_event({"event": "exchange", "round": round_index, "stage": stage,
                           "partitions": sorted(live)})
        label = f"{message_type}:{stage}"
        ex = self.transport.exchange(message_type, live, deadline=self.deadlines.for_stage(message_type, label),
                                     round_index=round_index)
        self.deadlines.observe(label, ex.reply_seconds)
        for p, reason in ex.failed.items():
            log.warning("node of partition %d is gone (%s): its users are dropouts", p, reason)
            self.dead[p] = reason
            self.dead_at[p] = (round_index, stage)
            if self.on_event is not None:
                self.on_event({"event": "node_failed", "round": round_index, "stage": stage,
                               "partition": p, "reason": reason})
        stats["flower_bytes_down"] = stats.get("flower_bytes_down", 0.0) + ex.bytes_down
        stats["flower_bytes_up"] = stats.get("flower_bytes_up", 0.0) + ex.bytes_up
        stats["flower_exchanges"] = stats.get("flower_exchanges", 0.0) + 1
        stats["flower_exchange_seconds"] = stats.get("flower_exchange_seconds", 0.0) + ex.seconds
        self.flower_bytes_down += ex.bytes_down
        self.flower_bytes_up += ex.bytes_up
        return ex.replies

    def _common_train(self, plan: RoundPlan) -> Payload:
        """What every ``train`` request of the round carries (and whether to evaluate first)."""
        server = self.server
        return {"config": self.config_json, "client_plan": self.plan_json, "round": plan.round_index,
                "broadcast": broadcast_to_json(server.broadcast(plan)), "params": model_bytes(server.params),
                "evaluate": self.evaluation_due is not None, "users": [], "slow": []}

    def _train_requests(self, plan: RoundPlan, common: Payload) -> dict[int, Payload]:
        """One ``train`` request per node hosting a trainer: parameters, plan, broadcast, its users;
        when an evaluation is due, one for every live node."""
        requests: dict[int, Payload] = {}
        if common["evaluate"]:
            requests = {p: {**common, "users": [], "slow": []} for p in range(self.num_partitions)
                        if p not in self.dead}
        for user, slow in plan.trainers:
            req = requests.setdefault(self.partition_of(user), {**common, "users": [], "slow": []})
            req["users"].append(user)
            req["slow"].append(slow)
        return requests

    def _collect(self, replies: Mapping[int, Payload]) -> RoundReports:
        """The nodes' training reports; an evaluation riding with them completes the round it was due."""
        reports = RoundReports()
        evaluations = []
        for reply in replies.values():
            reports.merge(reports_from_reply(reply))
            evaluation = {k[len(EVALUATION_PREFIX):]: v for k, v in reply.items()
                          if k.startswith(EVALUATION_PREFIX)}
            if evaluation:
                evaluations.append(evaluation)
        if self.evaluation_due is not None and evaluations:
            self._complete_evaluation(evaluations)
        return reports

    def _complete_evaluation(self, replies: list[Payload]) -> None:
        due = self.evaluation_due
        self.evaluation_due = None
        metrics = next(m for m in reversed(self.history) if m.round == due + 1)
        metrics.evaluation = combine_evaluations(replies, len(self.split.test), bool(self.dead))

    def _round_io(self, plan: RoundPlan, stats: dict[str, float]) -> RoundIO:
        common = self._common_train(plan)
        return RoundIO(
            round_index=plan.round_index, dropouts=plan.dropouts, partition_of=self.partition_of,
            is_dead=lambda p: p in self.dead,
            send=lambda message_type, requests, stage: self._exchange(message_type, requests,
                                                                     plan.round_index, stats, stage),
            train_requests=lambda: self._train_requests(plan, common),
            train_request=lambda partition: {**common, "users": [], "slow": []},
            collect=self._collect)

    # -- one round ------------------------------------------------------------------------
    def run_round(self) -> RoundMetrics:
        started = time.perf_counter()
        server = self.server
        # The in-process engine's own plan: same sampled clients, dropouts and stragglers.
        plan = server.plan_round(server.round_index)
        trained = {user for user, _ in plan.trainers}
        plan.dropouts = {c: s for c, s in plan.dropouts.items() if c in trained}
        stats: dict[str, float] = {}
        session: SessionParameters | BelowThreshold | None = None
        if plan.trainers:
            try:
                session = server.session(len(plan.trainers))
            except BelowThreshold as exc:  # too few to release anything: they still train (as in-process)
                session = exc
        io = self._round_io(plan, stats)
        trainers = [user for user, _ in plan.trainers]
        protocol = self.config.aggregation.protocol
        if session is None:
            self.key_sessions.close()  # a round without a sum: a key session cannot skip it
            reports, outcome, extra = RoundReports(), None, {}
            if self.evaluation_due is not None:
                self.evaluate(stats)
        elif protocol == "plaintext":
            reports, outcome, extra = self._plaintext_round(io, plan, session)
        elif protocol == "paillier":
            from .paillier_round import paillier_round

            reports, outcome, extra = paillier_round(
                io, session, trainers, public_params=self.paillier_params, keys_dir=str(self.paillier_keys),
                identities=self.identities, num_partitions=self.num_partitions)
        elif server.key_rounds > 1:
            reports, outcome, extra = self.key_sessions.round(io, session)
        else:
            reports, outcome, extra = masking_round(io, session, trainers)
        extra["nodes_dropped"] = float(len(self.dead))
        metrics = server.finish_round(plan, reports, outcome, extra={**extra, **stats})
        cfg = self.config.evaluation
        if server.round_index % cfg.every == 0 or server.round_index == self.config.training.rounds:
            self.evaluation_due = plan.round_index
        metrics.seconds = time.perf_counter() - started
        self.history.append(metrics)
        return metrics

    def _plaintext_round(self, io: RoundIO, plan: RoundPlan, session):
        replies = io.send("train", io.train_requests(), "upload")
        reports = io.collect(replies)
        updates: dict[int, ClientUpdate] = {}
        size = len(self.server.params)
        for reply in replies.values():
            for j, user in enumerate(reply.get("float_users", [])):
                updates[int(user)] = ClientUpdate(indices=i64_array(reply["indices"][j]),
                                                  values=f64_array(reply["values"][j]), size=size,
                                                  weight=float(reply["weights"][j]))
        if isinstance(session, BelowThreshold):
            return reports, session, {}
        outcome = float_sum(updates, plan.dropouts) if updates else None
        return reports, outcome, {}

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, stats: dict[str, float] | None = None) -> dict[str, float | str]:
        """Federated evaluation as an exchange of its own: each live node scores its own users;
        means recombined exactly. Completes the evaluation that is due, if any."""
        request = {"config": self.config_json, "params": model_bytes(self.server.params)}
        requests = {p: dict(request) for p in range(self.num_partitions)}
        replies = self._exchange("evaluate", requests, self.server.round_index,
                                 stats if stats is not None else {}, "evaluate")
        evaluation = combine_evaluations(list(replies.values()), len(self.split.test), bool(self.dead))
        if self.evaluation_due is not None:
            self._complete_evaluation(list(replies.values()))
        return evaluation

    def run(self) -> list[RoundMetrics]:
        while self.server.round_index < self.config.training.rounds:
            if not self.server.can_run_round():
                break  # the next round would exceed the privacy budget (as in-process)
            metrics = self.run_round()
            log.info("round %d: %d/%d contributors, %.2fs", metrics.round, metrics.contributors,
                     metrics.sampled, metrics.seconds)
        if self.evaluation_due is not None and self.history:
            # Nothing left to ride with: the last evaluation is an exchange of its own.
            last = self.history[-1]
            started = time.perf_counter()
            stats: dict[str, float] = {}
            self.evaluate(stats)
            for key, value in stats.items():
                last.measurements[key] = last.measurements.get(key, 0.0) + value
            last.seconds += time.perf_counter() - started
        return self.history

    def result(self, started: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The same metrics.json as :func:`secure_fedrec.runner.run_job`, plus a ``flower`` section."""
        from ...outputs import environment

        history = self.history
        final = dict(history[-1].evaluation) if history else {}
        privacy = self.server.privacy
        return {
            "config": config_to_dict(self.config),
            "seed": self.config.seed,
            "engine": self.config.engine,
            "protocol": self.config.aggregation.protocol,
            "model": self.config.model_name,
            "split": self.split.protocol,
            "dataset": self.data.stats(),
            "dataset_notes": list(self.data.notes),
            "rounds": [m.as_dict() for m in history],
            "final": final,
            **transfer_summary(history),
            **clipping_summary(history),
            "privacy": self.server.privacy_summary(),
            "stopped_early": privacy.stopped_reason,
            "wall_time_seconds": time.perf_counter() - started,
            "environment": environment(),
            "flower": {
                "num_nodes": self.num_partitions,
                "dead_nodes": {str(k): v for k, v in self.dead.items()},
                "dead_at": {str(k): {"round": r, "stage": st} for k, (r, st) in self.dead_at.items()},
                "bytes_down": self.flower_bytes_down,
                "bytes_up": self.flower_bytes_up,
                **(extra or {}),
            },
            "final_params_sha256": _digest(self.server.params),
        }


def combine_evaluations(replies: list[Payload], n_test_total: int,
                        partial: bool) -> dict[str, float | str]:
    """Add up the nodes' metric sums and counts (:func:`evaluation.combine_metric_sums`: exact
    for every metric and split); a malformed reply counts as a node that did not answer."""
    parts, total = [], 0
    for reply in replies:
        try:
            n_test = reply["n_test"]
            if isinstance(n_test, bool) or not isinstance(n_test, int) or not 0 <= n_test <= n_test_total:
                raise ValueError("n_test out of range")
            parts.append(MetricSums.from_json(reply))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("an evaluation reply was malformed and is left out: %s", exc)
            partial = True
            continue
        total += n_test
    out = combine_metric_sums(parts)
    if partial:
        out["evaluated_fraction"] = total / max(1, n_test_total)
    return out


def _digest(params: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(params, dtype="<f8").tobytes()).hexdigest()
