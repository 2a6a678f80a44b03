"""The server side of a Flower job, written against a small transport interface.

The coordinator is the in-process engine's round, cut where the network is:
it reuses a :class:`FederatedTrainer` for everything the server owns (the
seeded generator that samples clients, dropouts and stragglers; the
aggregation pipeline; the server optimizer; the flat shared parameters), so
with the same seed it makes the same random choices in the same order. The
clients' half of the round runs on the nodes (:mod:`.node`); between them
travel only the payloads of :mod:`.codec`.

With a secure protocol the coordinator drives one :class:`MaskingServer` per
round over the transport, stage by stage — the same sans-IO state machine the
in-process driver runs — and every sampled *user* is a protocol party. A node
that fails (error reply, or no reply before the stage's timeout) is a dropout
of all its users from then on; the round completes when the protocol's
threshold survives, as in-process.

Differential privacy and Paillier plug in the same way. The coordinator reads
the in-process engine's aggregation pipeline (:func:`sum_spec`) and splits
each layer where it runs: per-user L2 clipping, DP-SGD and the distributed
discrete Gaussian noise shares on the nodes (:mod:`.node`), central noise,
decoding and the mean on the server; the trainer's own
:class:`~secure_fedrec.privacy.session.PrivacySession` guards the budget and
accounts every round, so ε is the in-process engine's. Packed threshold
Paillier runs its aggregator here, its clients and key holders on the nodes
(:mod:`.paillier`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import sparse

from protocols.errors import ProtocolError

from ...config import RunConfig, config_to_dict
from ...data.dataset import RatingData, Split
from ...engine.aggregators import CentralGaussianNoise, Clip, Mean, QuantizedSecureSum
from ...engine.ddg import DistributedDiscreteGaussianSum
from ...engine.inprocess import FederatedTrainer, RoundMetrics
from ...engine.updates import ClientUpdates, RoundContext
from ...privacy.distributed_dp import DdgPlan
from ...privacy.noise import csprng_normal
from .codec import Payload, f64_array, f64_bytes, i64_array

__all__ = [
    "Exchange",
    "FlowerCoordinator",
    "SumSpec",
    "Transport",
    "build_trainer",
    "check_supported",
    "combine_evaluations",
    "session_params",
    "sum_spec",
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
    if getattr(config.privacy, "clipping", "fixed") != "fixed" and config.privacy.unit == "user":
        # The clip norm would move with a noisy count the nodes never see (AdaptiveClip).
        raise ValueError("the Flower engine clips user updates at a fixed privacy.clip_norm "
                         "(privacy.clipping = 'fixed')")


@dataclass(frozen=True)
class SumSpec:
    """The server's half of the engine's secure-sum pipeline for one run.

    Read off the pipeline ``build_pipeline`` made (so the layers, their order
    and parameters are the in-process engine's); the nodes do the client half
    (clip, quantize or discrete-Gaussian encode) from the same config.
    """

    protocol: Any  # the engine's SecureSum (ThresholdPolicy around masking, or Paillier)
    bits: int
    vector_length: int  # dim + 1 (the weight rides along) for a quantized sum, dim for DDG
    denominator: str  # Mean's: "weights" or "expected"
    clip_norm: float | None  # Clip's L2 bound, applied on the nodes
    central_stddev: float | None  # CentralGaussianNoise's, added here after decoding
    quantized: QuantizedSecureSum | None
    ddg_plan: DdgPlan | None


def sum_spec(pipeline: Mean, dim: int) -> SumSpec:
    layer: Any = pipeline.inner
    clip_norm = stddev = None
    while isinstance(layer, (Clip, CentralGaussianNoise)):
        if isinstance(layer, Clip):
            clip_norm = layer.clip_norm
        else:
            stddev = layer.stddev
        layer = layer.inner
    if isinstance(layer, DistributedDiscreteGaussianSum):
        return SumSpec(layer.protocol, layer.plan.bits, dim, pipeline.denominator, clip_norm,
                       stddev, None, layer.plan)
    if isinstance(layer, QuantizedSecureSum):
        return SumSpec(layer.protocol, layer.bits, dim + 1, pipeline.denominator, clip_norm,
                       stddev, layer, None)
    raise ValueError(f"no secure sum in the pipeline (found {type(layer).__name__})")


def build_trainer(config: RunConfig, split: Split) -> FederatedTrainer:
    """The server's trainer (the engine's own pipeline); the tests run it in-process too."""
    check_supported(config)
    return FederatedTrainer(config, split)


class _Probed(Exception):
    def __init__(self, params: Any) -> None:
        self.params = params


class _ParamsProbe:
    """Stands in for the masking protocol inside the engine's policy wrapper for one call:
    records the parameters the policy would run the session with, and stops there."""

    def __init__(self, inner: Any, vector_length: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.stages = inner.stages
        self.vector_length = vector_length
        self.threshold = getattr(inner, "threshold", None)

    def run_round(self, inputs, *, bits, round_index=0, dropouts=None):
        if hasattr(self.inner, "threshold"):
            self.inner.threshold = self.threshold
        raise _Probed(self.inner.params(len(inputs), bits=bits, vector_length=self.vector_length))


def session_params(protocol: Any, n: int, *, bits: int, vector_length: int):
    """The MaskingParams the in-process engine would use for a session of ``n`` clients,
    and the survivors it requires.

    The engine wraps the masking protocol in a policy
    (:class:`secure_fedrec.engine.protocols.ThresholdPolicy`) that sets the
    threshold per session inside its ``run_round``; rather than copy that rule,
    the policy is run once around a probe that records the parameters.
    (Proposed refactor: a ``ThresholdPolicy.session_params(n, bits, vector_length)``.)
    """
    inner = getattr(protocol, "protocol", None)
    if inner is None:  # a bare SecAgg / SecAggPlus
        return protocol.params(n, bits=bits, vector_length=vector_length), 1
    probe = _ParamsProbe(inner, vector_length)
    protocol.protocol = probe
    try:
        protocol.run_round({i: np.zeros(0, dtype=np.uint64) for i in range(n)}, bits=bits)
    except _Probed as probed:
        return probed.params, int(getattr(protocol, "min_survivors", 1))
    finally:
        protocol.protocol = inner
    raise RuntimeError("the protocol policy did not start a session")  # pragma: no cover


class RoundFailed(RuntimeError):
    """A round could not complete (fewer survivors than the protocol's threshold)."""


class FlowerCoordinator:
    """Runs a whole job over a :class:`Transport` to ``num_partitions`` nodes."""

    def __init__(self, config: RunConfig, data: RatingData, split: Split, transport: Transport,
                 num_partitions: int, *, train_timeout: float | None = None,
                 stage_timeout: float | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 paillier_keys: str | None = None) -> None:
        self.config = config
        self.on_event = on_event
        self.data = data
        self.split = split
        self.transport = transport
        self.num_partitions = num_partitions
        self.train_timeout = train_timeout
        self.stage_timeout = stage_timeout
        self.trainer = build_trainer(config, split)
        self.config_json = json.dumps(config_to_dict(config))
        self.dead: dict[int, str] = {}  # partition -> reason
        #: partition -> (round index, stage) of the request it never answered
        self.dead_at: dict[int, tuple[int, str]] = {}
        self.history: list[RoundMetrics] = []
        self.flower_bytes_down = 0
        self.flower_bytes_up = 0
        self.sum = (sum_spec(self.trainer.pipeline, self.trainer.layout.size)
                    if config.aggregation.protocol != "plaintext" else None)
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

    def _train_requests(self, sampled: np.ndarray, stragglers: np.ndarray) -> dict[int, Payload]:
        tr = self.trainer
        requests: dict[int, Payload] = {}
        params = f64_bytes(tr.params)
        for user, slow in zip(sampled.tolist(), stragglers.tolist()):
            p = self.partition_of(user)
            req = requests.setdefault(p, {
                "config": self.config_json, "round": tr.round_index, "params": params,
                "users": [], "slow": [], "n_clients": len(sampled),
                "frame_users": [], "frames": [],
                **({"paillier_keys": str(self.paillier_keys)} if self.paillier_keys else {}),
            })
            req["users"].append(int(user))
            req["slow"].append(bool(slow))
        return requests

    # -- one round ------------------------------------------------------------------------
    def run_round(self) -> RoundMetrics:
        started = time.perf_counter()
        tr = self.trainer
        t = self.config.training
        # The in-process engine's own plan: same sampled clients, dropouts and stragglers.
        sampled, dropouts, stragglers = tr.plan_round(tr.round_index)
        # Record level: a user whose own budget is spent abstains (decided as in-process).
        trains = np.array([tr.privacy.client_can_train(int(u), tr.num_examples(int(u)))
                           for u in sampled.tolist()], dtype=bool)
        trained = sampled[trains]
        ctx = RoundContext(round_index=tr.round_index, expected_clients=tr.expected_clients,
                           dropouts={c: s for c, s in dropouts.items() if c in set(trained.tolist())})
        stats: dict[str, float] = {}
        requests = self._train_requests(trained, stragglers[trains])
        update, contributors, losses, measurements = np.zeros(tr.layout.size), (), [], {}
        if len(trained) == 0:
            pass
        elif self.config.aggregation.protocol == "plaintext":
            update, contributors, losses, measurements = self._plaintext_round(
                trained, ctx, requests, stats)
        elif self.config.aggregation.protocol == "paillier":
            update, contributors, losses, measurements = self._paillier_round(
                trained, ctx, requests, stats)
        else:
            update, contributors, losses, measurements = self._secure_round(
                trained, ctx, requests, stats)
        if contributors:
            tr.params = tr.server_optimizer.step(tr.params, update)
            tr.model.load_shared_state(tr.layout.unflatten(tr.params))
        measurements.update(stats)
        measurements.update(tr.privacy.after_round())
        metrics = RoundMetrics(
            round=tr.round_index + 1, sampled=len(sampled), contributors=len(contributors),
            train_loss=float(np.mean(losses)) if losses else float("nan"), seconds=0.0,
            measurements=measurements,
        )
        tr.round_index += 1
        cfg = self.config.evaluation
        if tr.round_index % cfg.every == 0 or tr.round_index == t.rounds:
            metrics.evaluation = self.evaluate(stats)
            metrics.measurements.update(stats)  # with the evaluation exchange's bytes and time
        metrics.seconds = time.perf_counter() - started
        self.history.append(metrics)
        return metrics

    def _record_dp_steps(self, reply: Payload) -> None:
        """Record level: charge each user's DP-SGD steps to its accountant (server-side, as in-process)."""
        if self.config.privacy.unit != "record":
            return
        from ...privacy.dpsgd import DpSgdStep

        for user, sigma, rate, steps in zip(reply["users"], reply["dp_noise_multipliers"],
                                            reply["dp_sample_rates"], reply["dp_steps"]):
            self.trainer.privacy.record_client_step(
                int(user), DpSgdStep(float(sigma), float(rate), int(steps)))

    def _plaintext_round(self, sampled, ctx, requests, stats):
        tr = self.trainer
        replies = self._exchange("train", requests, self.train_timeout, tr.round_index, stats,
                                 "upload")
        rows: dict[int, tuple[np.ndarray, np.ndarray, float, float]] = {}
        for reply in replies.values():
            self._record_dp_steps(reply)
            for j, user in enumerate(reply["users"]):
                rows[int(user)] = (i64_array(reply["indices"][j]), f64_array(reply["values"][j]),
                                   float(reply["weights"][j]), float(reply["losses"][j]))
        ids = [u for u in sampled.tolist() if u in rows]
        if not ids:
            return np.zeros(tr.layout.size), (), [], {"nodes_dropped": float(len(self.dead))}
        indptr = np.cumsum([0] + [len(rows[u][0]) for u in ids])
        matrix = sparse.csr_array(
            (np.concatenate([rows[u][1] for u in ids]) if ids else np.zeros(0),
             np.concatenate([rows[u][0] for u in ids]) if ids else np.zeros(0, dtype=np.int64),
             indptr), shape=(len(ids), tr.layout.size))
        updates = ClientUpdates(client_ids=np.asarray(ids, dtype=np.int64), matrix=matrix,
                                weights=np.asarray([rows[u][2] for u in ids], dtype=np.float64))
        out = tr.pipeline.aggregate(updates, ctx)
        out.measurements["nodes_dropped"] = float(len(set(map(self.partition_of, sampled.tolist()))
                                                      & set(self.dead)))
        return out.update, out.contributors, [rows[u][3] for u in ids], out.measurements

    def _secure_round(self, sampled, ctx, requests, stats):
        from protocols import BelowThreshold
        from protocols.masking import MaskingServer, stages_for

        tr = self.trainer
        spec = self.sum
        assert spec is not None
        ids = [int(u) for u in sampled.tolist()]
        if len(ids) < 2:
            raise RoundFailed("a masking session needs at least 2 sampled clients")
        try:
            params, min_survivors = session_params(spec.protocol, len(ids), bits=spec.bits,
                                                   vector_length=spec.vector_length)
        except BelowThreshold as exc:  # fewer sampled than the noise needs: nothing is released
            return self._aborted(exc.survivors, [])
        server_seconds = 0.0
        clock = time.process_time()
        server = MaskingServer(params, ids, round_index=tr.round_index)
        outgoing = server.start()
        server_seconds += time.process_time() - clock
        gone: set[int] = set()
        sent = dict.fromkeys(ids, 0)
        received = dict.fromkeys(ids, 0)
        losses: list[float] = []
        counts = {"coordinates_clipped": 0, "l2_clipped": 0}
        rejected = 0
        node_errors: list[str] = []
        stages = stages_for(params.active)
        try:
            for index, stage in enumerate(stages):
                per_node: dict[int, Payload] = {}
                for user, frame in outgoing:
                    if user in gone or ctx.dropouts.get(user) == stage or self.partition_of(user) in self.dead:
                        gone.add(user)
                        continue
                    received[user] += len(frame)
                    if index == 0:
                        requests[self.partition_of(user)]["frame_users"].append(user)
                        requests[self.partition_of(user)]["frames"].append(frame)
                    else:
                        req = per_node.setdefault(self.partition_of(user), {
                            "round": tr.round_index, "stage": stage, "frame_users": [],
                            "frames": [], "last": index == len(stages) - 1})
                        req["frame_users"].append(user)
                        req["frames"].append(frame)
                if index == 0:
                    # Every sampled user trains, even one scheduled to vanish (as in-process).
                    replies = self._exchange("train", requests, self.train_timeout,
                                             tr.round_index, stats, stage)
                else:
                    replies = self._exchange("train.stage", per_node, self.stage_timeout,
                                             tr.round_index, stats, stage)
                clock = time.process_time()
                for partition, reply in replies.items():
                    if index == 0:
                        self._train_reply(reply, losses, counts)
                    node_errors.extend(str(e) for e in reply["errors"])
                    for user, frame in zip(reply["frame_users"], reply["frames"]):
                        user = int(user)
                        if user not in sent or self.partition_of(user) != partition:
                            rejected += 1  # a node answering for a user it does not host
                            continue
                        sent[user] += len(frame)
                        try:
                            server.receive(frame)
                        except ProtocolError as exc:
                            rejected += 1
                            log.warning("rejected a frame of user %d: %s", user, exc)
                outgoing = server.advance()
                server_seconds += time.process_time() - clock
        except ProtocolError as exc:
            log.error("round %d failed: %s", tr.round_index + 1, exc)
            return np.zeros(tr.layout.size), (), losses, {
                "protocol_failed": 1.0, "aborted": 1.0, "protocol_dropped": float(len(gone)),
                "nodes_dropped": float(len(self.dead))}
        result = server.result
        assert result is not None
        if len(result.contributors) < min_survivors:
            log.error("round %d failed: %d survivors, fewer than %d", tr.round_index + 1,
                      len(result.contributors), min_survivors)
            return self._aborted(len(result.contributors), losses)
        measurements = {
            "protocol_server_seconds": server_seconds,
            "protocol_dropped": float(len(result.dropped)),
            "protocol_rejected_frames": float(rejected),
            "protocol_node_errors": float(len(node_errors)),
            **self._byte_measurements(sent, received, result.contributors),
        }
        update = self._finish_sum(result.total, result.contributors, len(ids), ctx, counts,
                                  measurements)
        return update, result.contributors, losses, measurements

    def _paillier_round(self, sampled, ctx, requests, stats):
        """Packed threshold Paillier: train (+ identity keys), announce → encrypted updates,
        decrypt → partial decryptions from the key holders' nodes (see :mod:`.paillier`)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from protocols import BelowThreshold
        from protocols.paillier import PaillierAggregator, key_holder_id
        from protocols.paillier.messages import KEY_HOLDER_ID_BASE
        from protocols.wire import decode_frame

        from .paillier import KEY_HOLDERS, key_holder_host

        tr = self.trainer
        spec = self.sum
        assert spec is not None and self.paillier_params is not None
        ids = [int(u) for u in sampled.tolist()]
        losses: list[float] = []
        counts = {"coordinates_clipped": 0, "l2_clipped": 0}
        replies = self._exchange("train", requests, self.train_timeout, tr.round_index, stats,
                                 "train")
        registry: dict[int, Ed25519PublicKey] = {}
        rejected = 0
        for partition, reply in replies.items():
            self._train_reply(reply, losses, counts)
            for user, raw in zip(reply["users"], reply["identity_keys"]):
                user, raw = int(user), bytes(raw)
                if user not in ids or self.partition_of(user) != partition:
                    rejected += 1
                    continue
                if self.identities.setdefault(user, raw) != raw:
                    rejected += 1  # a user's identity key never changes: treat it as gone
                    log.warning("user %d came back with another identity key", user)
                    continue
                registry[user] = Ed25519PublicKey.from_public_bytes(raw)
        if len(registry) < spec.protocol.min_clients:
            return self._aborted(len(registry), losses)
        clock = time.process_time()
        aggregator = PaillierAggregator(
            self.paillier_params.public_key, registry, bits=spec.bits, length=spec.vector_length,
            min_clients=spec.protocol.min_clients, threshold_params=self.paillier_params,
            round_index=tr.round_index)
        server_seconds = time.process_time() - clock
        sent = dict.fromkeys(ids, 0)
        received = dict.fromkeys(ids, 0)
        announce: dict[int, Payload] = {}
        for user in sorted(registry):
            if ctx.dropouts.get(user) == "announce":
                continue
            frame = aggregator.announcement_for(user)
            received[user] += len(frame)
            req = announce.setdefault(self.partition_of(user), {
                "round": tr.round_index, "stage": "announce", "frame_users": [], "frames": [],
                "last": True})
            req["frame_users"].append(user)
            req["frames"].append(frame)
        node_errors: list[str] = []
        for partition, reply in self._exchange("train.stage", announce, self.stage_timeout,
                                               tr.round_index, stats, "announce").items():
            node_errors.extend(str(e) for e in reply["errors"])
            clock = time.process_time()
            for user, frame in zip(reply["frame_users"], reply["frames"]):
                user = int(user)
                if user not in registry or self.partition_of(user) != partition:
                    rejected += 1
                    continue
                if ctx.dropouts.get(user) == "upload":
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
            return self._aborted(exc.survivors, losses)
        # The contributors' identity keys travel with the request: key holders check the
        # signatures themselves (and pin each user's first key).
        contributors = aggregator.contributors
        decrypt: dict[int, Payload] = {}
        key_holder_bytes = 0
        for frame in decryption:
            index = decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE
            host = key_holder_host(index, self.num_partitions)
            req = decrypt.setdefault(host, {
                "config": self.config_json, "round": tr.round_index, "stage": "decrypt",
                "paillier_keys": str(self.paillier_keys), "frame_users": [], "frames": [],
                "registry_users": list(contributors),
                "registry_keys": [self.identities[c] for c in contributors], "last": False})
            req["frame_users"].append(key_holder_id(index))
            req["frames"].append(frame)
            key_holder_bytes += len(frame)
        holders = {key_holder_id(i) for i in range(1, KEY_HOLDERS + 1)}
        for reply in self._exchange("train.stage", decrypt, self.stage_timeout, tr.round_index,
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
            log.error("round %d failed: too few key holders answered (%s)", tr.round_index + 1,
                      "; ".join(node_errors) or "no errors reported")
            return self._aborted(len(contributors), losses)
        layout = aggregator.layout
        measurements = {
            "protocol_server_seconds": server_seconds,
            "protocol_dropped": float(len(ids) - len(result.contributors)),
            "protocol_rejected_frames": float(rejected),
            "protocol_node_errors": float(len(node_errors)),
            "protocol_slots_per_ciphertext": float(layout.slots),
            "protocol_ciphertexts_per_client": float(layout.num_plaintexts),
            "protocol_key_bits": float(self.paillier_params.public_key.bits),
            "protocol_key_holder_bytes": float(key_holder_bytes),
            **self._byte_measurements(sent, received, result.contributors),
        }
        update = self._finish_sum(result.total, result.contributors, len(ids), ctx, counts,
                                  measurements)
        return update, result.contributors, losses, measurements

    # -- the server's half of the pipeline -------------------------------------------------
    def _train_reply(self, reply: Payload, losses: list[float], counts: dict[str, int]) -> None:
        losses.extend(float(x) for x in reply["losses"])
        counts["coordinates_clipped"] += int(reply["coordinates_clipped"])
        counts["l2_clipped"] += int(reply.get("l2_clipped", 0))
        self._record_dp_steps(reply)

    def _aborted(self, survivors: int, losses: list[float]):
        """The protocol released nothing: the round changes no shared parameter (as in-process)."""
        return np.zeros(self.trainer.layout.size), (), losses, {
            "aborted": 1.0, "abort_survivors": float(survivors), "protocol_failed": 1.0,
            "nodes_dropped": float(len(self.dead))}

    def _byte_measurements(self, sent: Mapping[int, int], received: Mapping[int, int],
                           contributors) -> dict[str, float]:
        spec = self.sum
        assert spec is not None
        contributor_bytes = np.array([sent[c] for c in contributors], dtype=float)
        plain_bytes = spec.vector_length * spec.bits / 8
        any_ = len(contributor_bytes) > 0
        return {
            "bytes_sent_per_client": float(contributor_bytes.mean()) if any_ else 0.0,
            "bytes_sent_per_client_max": float(contributor_bytes.max()) if any_ else 0.0,
            "bytes_received_per_client": float(np.mean(list(received.values()))),
            "communication_expansion": float(contributor_bytes.mean() / plain_bytes) if any_ else 0.0,
        }

    def _finish_sum(self, total: np.ndarray, contributors, n_clients: int, ctx: RoundContext,
                    counts: Mapping[str, int], measurements: dict[str, float]) -> np.ndarray:
        """Decode the ring sum, add central noise, take the mean: the layers of ``sum_spec``
        that run on the server, with their measurements."""
        spec = self.sum
        assert spec is not None
        dim = self.trainer.layout.size
        if spec.ddg_plan is not None:  # DistributedDiscreteGaussianSum.sum
            plan = spec.ddg_plan
            ring = np.asarray(total).astype(np.uint64) & np.uint64((1 << plan.bits) - 1)
            signed = ring.astype(np.int64)
            signed[ring >= np.uint64(1 << (plan.bits - 1))] -= np.int64(1 << plan.bits)
            summed = signed.astype(np.float64) * plan.gamma
            weight_total = float(len(contributors))
            measurements.update(ddg_gamma=plan.gamma, ddg_share_sigma=plan.share_sigma,
                                ddg_wrap_probability=plan.wrap_probability,
                                noise_stddev=plan.model_unit_noise_std)
        else:  # QuantizedSecureSum.sum
            assert spec.quantized is not None
            encoder = spec.quantized.encoder_for(n_clients)
            decoded = encoder.decode(total)
            summed, weight_total = decoded[:-1], float(decoded[-1])
            measurements["coordinates_clipped"] = float(counts["coordinates_clipped"])
            measurements["quantization_step"] = 1.0 / encoder.scale
            if spec.central_stddev is not None:  # CentralGaussianNoise.sum
                summed = summed + spec.central_stddev * csprng_normal(summed.size)
                measurements["noise_stddev"] = float(spec.central_stddev)
        if spec.clip_norm is not None:  # Clip.sum (the clipping itself ran on the nodes)
            measurements["fraction_clipped"] = counts["l2_clipped"] / max(1, n_clients)
            measurements["clip_norm"] = float(spec.clip_norm)
        denom = weight_total if spec.denominator == "weights" else ctx.expected_clients
        measurements["nodes_dropped"] = float(len(self.dead))
        measurements["contributors"] = float(len(contributors))
        measurements["weight_total"] = weight_total
        return summed / denom if denom > 0 else np.zeros(dim)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, stats: dict[str, float] | None = None) -> dict[str, float | str]:
        """Federated evaluation: each live node scores its own users; means recombined exactly."""
        tr = self.trainer
        request = {"config": self.config_json, "params": f64_bytes(tr.params)}
        requests = {p: dict(request) for p in range(self.num_partitions)}
        replies = self._exchange("evaluate", requests, self.train_timeout, tr.round_index,
                                 stats if stats is not None else {}, "evaluate")
        return combine_evaluations(list(replies.values()), len(self.split.test), bool(self.dead))

    def run(self) -> list[RoundMetrics]:
        while self.trainer.round_index < self.config.training.rounds:
            if not self.trainer.privacy.can_run_round():
                break  # the next round would exceed the privacy budget (as in-process)
            metrics = self.run_round()
            log.info("round %d: %d/%d contributors, %.2fs", metrics.round, metrics.contributors,
                     metrics.sampled, metrics.seconds)
        return self.history

    def result(self, started: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The same metrics.json as :func:`secure_fedrec.runner.run_job`, plus a ``flower`` section."""
        from ...runner import environment

        history = self.history
        final = dict(history[-1].evaluation) if history else {}
        bytes_per_round = [m.measurements.get("bytes_sent_per_client", 0.0) for m in history]
        out: dict[str, Any] = {
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
            "privacy": self.trainer.privacy.summary(),
            "stopped_early": self.trainer.privacy.stopped_reason,
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
            "final_params_sha256": _digest(self.trainer.params),
        }
        return out


def combine_evaluations(replies: list[Payload], n_test_total: int,
                        partial: bool) -> dict[str, float | str]:
    """Recombine the nodes' metric means exactly: weights ``n_test``, RMSE through its square."""
    sums: dict[str, float] = {}
    labels: dict[str, str] = {}
    total = 0
    for reply in replies:
        n = int(reply["n_test"])
        total += n
        for name, value in zip(reply["names"], reply["values"]):
            squared = name == "rmse"
            sums[name] = sums.get(name, 0.0) + n * (float(value) ** 2 if squared else float(value))
        labels.update(zip(reply["labels"], reply["label_values"]))
    out: dict[str, float | str] = {}
    for name, value in sums.items():
        mean = value / total if total else float("nan")
        out[name] = float(np.sqrt(mean)) if name == "rmse" else float(mean)
    out.update(labels)
    if partial:
        out["evaluated_fraction"] = total / max(1, n_test_total)
    return out


def _digest(params: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(params, dtype="<f8").tobytes()).hexdigest()
