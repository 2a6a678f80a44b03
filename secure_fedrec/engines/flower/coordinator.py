"""The server side of a Flower job: the round's server step, with the sum carried over a transport.

The coordinator owns a :class:`~secure_fedrec.rounds.server.RoundServer`, the same
server the in-process engine uses: it samples the clients (same seed, same
choices), broadcasts the round, sizes the session, and finishes the round with the
pipeline's server halves, the server optimizer and the accountant. What it adds is
only transport: the ``train`` request carries the shared parameters, the run's
client plan (:mod:`secure_fedrec.rounds.wire`) and the round's broadcast to the
nodes, which run :func:`~secure_fedrec.rounds.client.client_step` for their users
(:mod:`.node`); then it moves protocol frames between its sans-IO protocol server
and the nodes' parties, stage by stage.

* plaintext: the nodes' float payloads are added with the in-process float sum;
* SecAgg / SecAgg+: one :class:`protocols.masking.MaskingServer` per round; the
  first stage's frames ride with the ``train`` request, every *user* is a party;
* packed threshold Paillier: the aggregator here, clients and key holders on the
  nodes (:mod:`.paillier`).

A node that fails (error reply, or no reply before the stage's timeout) is a
dropout of all its users from then on; the round completes when the protocol's
threshold survives, as in-process.
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
from protocols.errors import ProtocolError

from ...aggregation import ClientUpdate, SessionParameters, SumOutcome
from ...aggregation.sums import float_sum, transfer_measurements
from ...config import RunConfig, config_to_dict
from ...data.dataset import RatingData, Split
from ...evaluation import MetricSums, combine_metric_sums
from ...inputs import build_model_for
from ...rounds.client import RoundReports
from ...rounds.metrics import RoundMetrics
from ...rounds.server import RoundPlan, RoundServer
from ...rounds.wire import broadcast_to_json, plan_to_json
from ..inprocess import server_for
from .codec import Payload, f64_array, f64_bytes, i64_array

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


class Transport(Protocol):
    def exchange(self, message_type: str, requests: Mapping[int, Payload], *,
                 timeout: float | None, round_index: int) -> Exchange: ...


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
             for u, z, q, s in zip(reply["spent_users"], reply["dp_noise_multipliers"],
                                   reply["dp_sample_rates"], reply["dp_steps"])]
    return RoundReports(reporting=int(reply["reporting"]), diverged=int(reply["diverged"]),
                        totals={str(k): float(v) for k, v in zip(reply["total_names"], reply["total_values"])},
                        losses=[float(x) for x in reply["losses"]], spent=spent)


class FlowerCoordinator:
    """Runs a whole job over a :class:`Transport` to ``num_partitions`` nodes."""

    def __init__(self, config: RunConfig, data: RatingData, split: Split, transport: Transport,
                 num_partitions: int, *, train_timeout: float | None = None,
                 stage_timeout: float | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 paillier_keys: str | None = None) -> None:
        check_supported(config)
        self.config = config
        self.on_event = on_event
        self.data = data
        self.split = split
        self.transport = transport
        self.num_partitions = num_partitions
        self.train_timeout = train_timeout
        self.stage_timeout = stage_timeout
        self.server: RoundServer = server_for(config, split, build_model_for(config, split))
        self.config_json = json.dumps(config_to_dict(config))
        self.plan_json = plan_to_json(self.server.client_plan)
        self.dead: dict[int, str] = {}  # partition -> reason
        #: partition -> (round index, stage) of the request it never answered
        self.dead_at: dict[int, tuple[int, str]] = {}
        self.history: list[RoundMetrics] = []
        self.flower_bytes_down = 0
        self.flower_bytes_up = 0
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

    def _exchange(self, message_type: str, requests: dict[int, Payload], timeout: float | None,
                  round_index: int, stats: dict[str, float], stage: str) -> dict[int, Payload]:
        live = {p: r for p, r in requests.items() if p not in self.dead}
        if not live:
            return {}
        if self.on_event is not None:
            self.on_event({"event": "exchange", "round": round_index, "stage": stage,
                           "partitions": sorted(live)})
        ex = self.transport.exchange(message_type, live, timeout=timeout, round_index=round_index)
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

    def _train_requests(self, plan: RoundPlan, session: SessionParameters | None) -> dict[int, Payload]:
        """One ``train`` request per node hosting a trainer: parameters, plan, broadcast, its users."""
        server = self.server
        common = {"config": self.config_json, "client_plan": self.plan_json, "round": plan.round_index,
                  "broadcast": broadcast_to_json(server.broadcast(plan)), "params": f64_bytes(server.params),
                  **({"min_clients": session.min_survivors} if session is not None else {}),
                  **({"paillier_keys": str(self.paillier_keys)} if self.paillier_keys else {})}
        requests: dict[int, Payload] = {}
        for user, slow in plan.trainers:
            req = requests.setdefault(self.partition_of(user), {**common, "users": [], "slow": [],
                                                                 "frame_users": [], "frames": []})
            req["users"].append(user)
            req["slow"].append(slow)
        return requests

    def _collect(self, replies: Mapping[int, Payload]) -> RoundReports:
        reports = RoundReports()
        for reply in replies.values():
            reports.merge(reports_from_reply(reply))
        return reports

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
        protocol = self.config.aggregation.protocol
        if not plan.trainers:
            reports, outcome, extra = RoundReports(), None, {}
        elif protocol == "plaintext":
            reports, outcome, extra = self._plaintext_round(plan, session, stats)
        elif protocol == "paillier":
            reports, outcome, extra = self._paillier_round(plan, session, stats)
        else:
            reports, outcome, extra = self._masking_round(plan, session, stats)
        metrics = server.finish_round(plan, reports, outcome, extra={**extra, **stats})
        cfg = self.config.evaluation
        if server.round_index % cfg.every == 0 or server.round_index == self.config.training.rounds:
            metrics.evaluation = self.evaluate(stats)
            metrics.measurements.update(stats)  # with the evaluation exchange's bytes and time
        metrics.seconds = time.perf_counter() - started
        self.history.append(metrics)
        return metrics

    def _aborted(self, reason: ProtocolError) -> tuple[ProtocolError, dict[str, float]]:
        """The protocol released nothing: the round changes no shared parameter (as in-process)."""
        return reason, {"protocol_failed": 1.0, "nodes_dropped": float(len(self.dead))}

    def _plaintext_round(self, plan: RoundPlan, session, stats):
        requests = self._train_requests(plan, None)
        replies = self._exchange("train", requests, self.train_timeout, plan.round_index, stats, "upload")
        reports = self._collect(replies)
        updates: dict[int, ClientUpdate] = {}
        size = len(self.server.params)
        for reply in replies.values():
            for j, user in enumerate(reply["float_users"]):
                updates[int(user)] = ClientUpdate(indices=i64_array(reply["indices"][j]),
                                                  values=f64_array(reply["values"][j]), size=size,
                                                  weight=float(reply["weights"][j]))
        nodes_dropped = float(len(set(map(self.partition_of, plan.sampled.tolist())) & set(self.dead)))
        if isinstance(session, BelowThreshold):
            return reports, session, {"nodes_dropped": nodes_dropped}
        outcome = float_sum(updates, plan.dropouts) if updates else None
        return reports, outcome, {"nodes_dropped": nodes_dropped}

    def _masking_round(self, plan: RoundPlan, session, stats):
        from protocols.masking import MaskingServer, stages_for

        if isinstance(session, BelowThreshold):  # train only: nothing can be released
            replies = self._exchange("train", self._train_requests(plan, None), self.train_timeout,
                                     plan.round_index, stats, "advertise_keys")
            return (self._collect(replies), *self._aborted(session))
        ids = [user for user, _ in plan.trainers]
        params = session.masking_params()
        server_seconds = 0.0
        clock = time.process_time()
        protocol_server = MaskingServer(params, ids, round_index=plan.round_index)
        outgoing = protocol_server.start()
        server_seconds += time.process_time() - clock
        requests = self._train_requests(plan, session)
        gone: set[int] = set()
        sent = dict.fromkeys(ids, 0)
        received = dict.fromkeys(ids, 0)
        reports = RoundReports()
        rejected = 0
        node_errors: list[str] = []
        stages = stages_for(params.active)
        try:
            for index, stage in enumerate(stages):
                per_node: dict[int, Payload] = {}
                for user, frame in outgoing:
                    if user in gone or plan.dropouts.get(user) == stage or self.partition_of(user) in self.dead:
                        gone.add(user)
                        continue
                    received[user] += len(frame)
                    req = requests[self.partition_of(user)] if index == 0 else per_node.setdefault(
                        self.partition_of(user), {"round": plan.round_index, "stage": stage, "frame_users": [],
                                                  "frames": [], "last": index == len(stages) - 1})
                    req["frame_users"].append(user)
                    req["frames"].append(frame)
                if index == 0:
                    # Every trainer trains, even one scheduled to vanish (as in-process).
                    replies = self._exchange("train", requests, self.train_timeout, plan.round_index, stats,
                                             stage)
                    reports = self._collect(replies)
                else:
                    replies = self._exchange("train.stage", per_node, self.stage_timeout, plan.round_index,
                                             stats, stage)
                clock = time.process_time()
                for partition, reply in replies.items():
                    node_errors.extend(str(e) for e in reply["errors"])
                    for user, frame in zip(reply["frame_users"], reply["frames"]):
                        user = int(user)
                        if user not in sent or self.partition_of(user) != partition:
                            rejected += 1  # a node answering for a user it does not host
                            continue
                        sent[user] += len(frame)
                        try:
                            protocol_server.receive(frame)
                        except ProtocolError as exc:
                            rejected += 1
                            log.warning("rejected a frame of user %d: %s", user, exc)
                outgoing = protocol_server.advance()
                server_seconds += time.process_time() - clock
        except ProtocolError as exc:
            log.error("round %d failed: %s", plan.round_index + 1, exc)
            outcome, extra = self._aborted(exc)
            return reports, outcome, {**extra, "protocol_dropped": float(len(gone))}
        result = protocol_server.result
        assert result is not None
        # Until the protocol enforces min_survivors itself, the sum is refused here.
        if len(result.contributors) < session.min_survivors:
            log.error("round %d failed: %d survivors, fewer than %d", plan.round_index + 1,
                      len(result.contributors), session.min_survivors)
            return (reports, *self._aborted(
                BelowThreshold(len(result.contributors), session.min_survivors, "unmasking")))
        measurements = transfer_measurements(sent, received, result.contributors,
                                             plain_bytes=session.vector_length * params.bits / 8)
        measurements.update({
            "protocol_server_seconds": server_seconds,
            "protocol_dropped": float(len(result.dropped)),
            "protocol_rejected_frames": float(rejected),
            "protocol_node_errors": float(len(node_errors)),
        })
        outcome = SumOutcome(total=result.total, contributors=tuple(result.contributors),
                             measurements=measurements)
        return reports, outcome, {"nodes_dropped": float(len(self.dead))}

    def _paillier_round(self, plan: RoundPlan, session, stats):
        """Packed threshold Paillier: train (+ identity keys), announce → encrypted updates,
        decrypt → partial decryptions from the key holders' nodes (see :mod:`.paillier`)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from protocols.paillier import PaillierAggregator, key_holder_id
        from protocols.paillier.messages import KEY_HOLDER_ID_BASE
        from protocols.wire import decode_frame

        from .paillier import KEY_HOLDERS, key_holder_host

        assert self.paillier_params is not None
        if isinstance(session, BelowThreshold):
            replies = self._exchange("train", self._train_requests(plan, None), self.train_timeout,
                                     plan.round_index, stats, "train")
            return (self._collect(replies), *self._aborted(session))
        ids = [user for user, _ in plan.trainers]
        replies = self._exchange("train", self._train_requests(plan, session), self.train_timeout,
                                 plan.round_index, stats, "train")
        reports = self._collect(replies)
        registry: dict[int, Ed25519PublicKey] = {}
        rejected = 0
        for partition, reply in replies.items():
            for user, raw in zip(reply["identity_users"], reply["identity_keys"]):
                user, raw = int(user), bytes(raw)
                if user not in ids or self.partition_of(user) != partition:
                    rejected += 1
                    continue
                if self.identities.setdefault(user, raw) != raw:
                    rejected += 1  # a user's identity key never changes: treat it as gone
                    log.warning("user %d came back with another identity key", user)
                    continue
                registry[user] = Ed25519PublicKey.from_public_bytes(raw)
        if len(registry) < session.min_survivors:
            return (reports, *self._aborted(BelowThreshold(len(registry), session.min_survivors, "train")))
        clock = time.process_time()
        aggregator = PaillierAggregator(
            self.paillier_params.public_key, registry, bits=session.bits, length=session.vector_length,
            min_clients=session.min_survivors, threshold_params=self.paillier_params,
            round_index=plan.round_index)
        server_seconds = time.process_time() - clock
        sent = dict.fromkeys(ids, 0)
        received = dict.fromkeys(ids, 0)
        announce: dict[int, Payload] = {}
        for user in sorted(registry):
            if plan.dropouts.get(user) == "announce":
                continue
            frame = aggregator.announcement_for(user)
            received[user] += len(frame)
            req = announce.setdefault(self.partition_of(user), {
                "round": plan.round_index, "stage": "announce", "frame_users": [], "frames": [], "last": True})
            req["frame_users"].append(user)
            req["frames"].append(frame)
        node_errors: list[str] = []
        for partition, reply in self._exchange("train.stage", announce, self.stage_timeout,
                                               plan.round_index, stats, "announce").items():
            node_errors.extend(str(e) for e in reply["errors"])
            clock = time.process_time()
            for user, frame in zip(reply["frame_users"], reply["frames"]):
                user = int(user)
                if user not in registry or self.partition_of(user) != partition:
                    rejected += 1
                    continue
                if plan.dropouts.get(user) == "upload":
                    continue  # scheduled to vanish after the announcement: never sent
                sent[user] += len(frame)
                try:
                    aggregator.receive(frame)
                except ProtocolError as exc:
                    rejected += 1
                    log.warning("rejected the update of user %d: %s", user, exc)
            server_seconds += time.process_time() - clock
        try:
            clock = time.process_time()
            decryption = aggregator.close_collection()
            server_seconds += time.process_time() - clock
        except BelowThreshold as exc:
            return (reports, *self._aborted(exc))
        # The contributors' identity keys travel with the request: key holders check the
        # signatures themselves (and pin each user's first key).
        contributors = aggregator.contributors
        decrypt: dict[int, Payload] = {}
        key_holder_bytes = 0
        for frame in decryption:
            index = decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE
            host = key_holder_host(index, self.num_partitions)
            req = decrypt.setdefault(host, {
                "round": plan.round_index, "stage": "decrypt", "min_clients": session.min_survivors,
                "paillier_keys": str(self.paillier_keys), "frame_users": [], "frames": [],
                "registry_users": list(contributors),
                "registry_keys": [self.identities[c] for c in contributors], "last": False})
            req["frame_users"].append(key_holder_id(index))
            req["frames"].append(frame)
            key_holder_bytes += len(frame)
        holders = {key_holder_id(i) for i in range(1, KEY_HOLDERS + 1)}
        for reply in self._exchange("train.stage", decrypt, self.stage_timeout, plan.round_index,
                                    stats, "decrypt").values():
            node_errors.extend(str(e) for e in reply["errors"])
            clock = time.process_time()
            for party, frame in zip(reply["frame_users"], reply["frames"]):
                key_holder_bytes += len(frame)
                if int(party) not in holders or aggregator.result is not None:
                    continue
                try:
                    aggregator.receive(frame)
                except ProtocolError as exc:
                    rejected += 1
                    log.warning("rejected a partial decryption of %#x: %s", int(party), exc)
            server_seconds += time.process_time() - clock
        result = aggregator.result
        if result is None:
            log.error("round %d failed: too few key holders answered (%s)", plan.round_index + 1,
                      "; ".join(node_errors) or "no errors reported")
            return (reports, *self._aborted(BelowThreshold(len(contributors), session.min_survivors,
                                                           "decryption")))
        layout = aggregator.layout
        measurements = transfer_measurements(sent, received, result.contributors,
                                             plain_bytes=session.vector_length * session.bits / 8)
        measurements.update({
            "protocol_server_seconds": server_seconds,
            "protocol_dropped": float(len(ids) - len(result.contributors)),
            "protocol_rejected_frames": float(rejected),
            "protocol_node_errors": float(len(node_errors)),
            "protocol_slots_per_ciphertext": float(layout.slots),
            "protocol_ciphertexts_per_client": float(layout.num_plaintexts),
            "protocol_key_bits": float(self.paillier_params.public_key.bits),
            "protocol_key_holder_bytes": float(key_holder_bytes),
        })
        outcome = SumOutcome(total=result.total, contributors=tuple(result.contributors),
                             measurements=measurements)
        return reports, outcome, {"nodes_dropped": float(len(self.dead))}

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, stats: dict[str, float] | None = None) -> dict[str, float | str]:
        """Federated evaluation: each live node scores its own users; means recombined exactly."""
        request = {"config": self.config_json, "params": f64_bytes(self.server.params)}
        requests = {p: dict(request) for p in range(self.num_partitions)}
        replies = self._exchange("evaluate", requests, self.train_timeout, self.server.round_index,
                                 stats if stats is not None else {}, "evaluate")
        return combine_evaluations(list(replies.values()), len(self.split.test), bool(self.dead))

    def run(self) -> list[RoundMetrics]:
        while self.server.round_index < self.config.training.rounds:
            if not self.server.can_run_round():
                break  # the next round would exceed the privacy budget (as in-process)
            metrics = self.run_round()
            log.info("round %d: %d/%d contributors, %.2fs", metrics.round, metrics.contributors,
                     metrics.sampled, metrics.seconds)
        return self.history

    def result(self, started: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The same metrics.json as :func:`secure_fedrec.runner.run_job`, plus a ``flower`` section."""
        from ...outputs import environment

        history = self.history
        final = dict(history[-1].evaluation) if history else {}
        bytes_per_round = [m.measurements.get("bytes_sent_per_client", 0.0) for m in history]
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
            "bytes_sent_per_client_per_round": bytes_per_round,
            "bytes_sent_per_client_mean": float(np.mean(bytes_per_round)) if bytes_per_round else 0.0,
            "privacy": privacy.summary(),
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
