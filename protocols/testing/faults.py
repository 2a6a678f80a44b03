"""Fault injection for the secure-sum protocols: a hostile network and misbehaving parties.

The in-process drivers (:func:`protocols.masking.run_session`,
:func:`protocols.paillier.run_session`) move frames in order, once each. This
module drives the same sans-IO parties message by message through a network
that reorders, duplicates, delays and replays frames, with dropouts at every
stage and a fraction of clients that tamper with their own messages
(truncated or bit-flipped frames, another session or round, a replay of a
previous round, a vector of the wrong length, a small-order X25519 key). Masking
sessions sometimes set a session-wide ``min_survivors`` floor. It then
classifies the round:

``exact``
    the server released a sum, and it equals the plain modular sum over the
    contributors the server reported (for a client whose tampered masked
    vector was accepted, the vector it effectively sent: a client may always
    choose its own input);
``aborted``
    a party stopped the session with a typed :class:`~protocols.errors.ProtocolError`
    (e.g. ``BelowThreshold``, ``InvalidShare``) and no sum was released;
``unverifiable``
    passive masking mode only: a tampering client's bit flip landed in its own
    advertised mask public key and was accepted. Nothing in the passive
    protocol can tell a client's choice of key from its choice of input, so
    the sum is the honest sum plus a value the client chose blindly; the
    round is checked only for "no crash". The active mode signs the keys.
``other``
    anything else: an exception that is not a protocol error, a wrong sum, a
    sum released with fewer contributors than the threshold, or a result that
    disagrees with the dropout oracle (:func:`protocols.testing.expected_outcome`).
    Always a bug.

The transport is assumed to authenticate the *sender* of each frame (TLS client
certificates, Flower node ids): a frame whose header names another sender
than the channel it arrived on is dropped by the network, as a real server
front-end would. Everything else in the frame is attacker-controlled.

Randomness: the fault schedule and the inputs come from a seeded
:class:`numpy.random.Generator` (simulation randomness, reproducible on
purpose); every protocol secret still comes from the parties' own CSPRNG.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BelowThreshold, ProtocolError
from ..keys import StaticTrustStore
from ..masking import messages as mm
from ..masking.client import MaskingClient
from ..masking.driver import stages_for
from ..masking.params import MaskingParams
from ..masking.server import MaskingServer
from ..wire import HEADER_SIZE, decode_frame
from . import expected_outcome

__all__ = [
    "MASKING_VARIANTS",
    "PAILLIER_VARIANTS",
    "FaultConfig",
    "PaillierSoak",
    "RoundReport",
    "SoakTally",
    "soak_masking_round",
]

#: variant name -> (sparse SecAgg+ graph?, active mode?)
MASKING_VARIANTS: dict[str, tuple[bool, bool]] = {
    "secagg": (False, False),
    "secagg+": (True, False),
    "secagg-active": (False, True),
    "secagg+-active": (True, True),
}
PAILLIER_VARIANTS = ("paillier-threshold", "paillier-two-party")

#: Ways a tampering client corrupts one of its own frames.
#: ``replay`` sends an earlier round's frame as recorded; ``replay_restamped`` rewrites its
#: header into the current session and round (the body still belongs to the old one).
TAMPERING = ("truncate", "bitflip", "wrong_session", "wrong_round", "replay", "replay_restamped",
             "wrong_length", "low_order_key")

#: u-coordinates of the small-order points of Curve25519 (and its twist), RFC 7748 §6.1.
_SMALL_ORDER_U = (
    0, 1, 2**255 - 20, 2**255 - 19, 2**255 - 18,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
)


@dataclass(frozen=True)
class FaultConfig:
    """Rates of each fault; each is a probability in [0, 1]."""

    dropout_rate: float = 0.1  # a client vanishes before a uniformly chosen stage
    adversary_rate: float = 0.1  # a client tampers with its own frames
    tamper_rate: float = 0.6  # per frame of a tampering client
    keep_honest_rate: float = 0.5  # the tampered frame is sent besides the honest one
    duplicate_rate: float = 0.01  # per frame, both directions
    late_rate: float = 0.01  # a client's reply arrives after its stage closed
    downlink_replay_rate: float = 0.005  # per client and stage: a stale server frame arrives
    max_clients: int = 12
    max_length: int = 24

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.name.startswith("max_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be a probability, got {value!r}")
        if not (isinstance(self.max_clients, int) and self.max_clients >= 2):
            raise ValueError("max_clients must be an integer >= 2")
        if not (isinstance(self.max_length, int) and self.max_length >= 1):
            raise ValueError("max_length must be an integer >= 1")


@dataclass(frozen=True)
class RoundReport:
    """The classification of one soaked round and what was injected into it."""

    variant: str
    verdict: str  # "exact" | "aborted" | "unverifiable" | "other"
    detail: str  # the abort's error type, or what went wrong
    n: int
    faults: dict[str, int] = field(default_factory=dict)


@dataclass
class SoakTally:
    """Counts over many rounds, per variant and overall."""

    rounds: int = 0
    verdicts: Counter = field(default_factory=Counter)
    by_variant: dict[str, Counter] = field(default_factory=dict)
    abort_types: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # details of "other" rounds (first 20)
    seconds: float = 0.0

    def add(self, report: RoundReport) -> None:
        self.rounds += 1
        self.verdicts[report.verdict] += 1
        self.by_variant.setdefault(report.variant, Counter())[report.verdict] += 1
        self.faults.update(report.faults)
        if report.verdict == "aborted":
            self.abort_types[report.detail] += 1
        if report.verdict == "other" and len(self.failures) < 20:
            self.failures.append(f"{report.variant}: {report.detail}")

    def as_dict(self) -> dict[str, Any]:
        keys = ("exact", "aborted", "unverifiable", "other")
        return {
            "rounds": self.rounds,
            **{k: self.verdicts.get(k, 0) for k in keys},
            "by_variant": {v: {k: c.get(k, 0) for k in keys} | {"rounds": sum(c.values())}
                           for v, c in sorted(self.by_variant.items())},
            "abort_types": dict(self.abort_types.most_common()),
            "faults_injected": dict(sorted(self.faults.items())),
            "failures": list(self.failures),
            "seconds": round(self.seconds, 1),
        }


# ----------------------------------------------------------------------------- frame surgery
def _flip_bit(frame: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(frame)
    pos = int(rng.integers(0, len(buf)))
    buf[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(buf)


def _restamp(frame: bytes, *, start: int, value: bytes) -> bytes:
    return frame[:start] + value + frame[start + len(value):]


# Header offsets (protocols.wire): session id 8..24, round 24..28, sender 28..32, receiver 32..36.
def _with_session(frame: bytes, session_id: bytes) -> bytes:
    return _restamp(frame, start=8, value=session_id)


def _with_round(frame: bytes, round_index: int) -> bytes:
    return _restamp(frame, start=24, value=round_index.to_bytes(4, "big"))


def _with_sender(frame: bytes, sender: int) -> bytes:
    return _restamp(frame, start=28, value=sender.to_bytes(4, "big"))


def _with_receiver(frame: bytes, receiver: int) -> bytes:
    return _restamp(frame, start=32, value=receiver.to_bytes(4, "big"))


def _header_sender(frame: bytes) -> int | None:
    """The sender a frame claims, if its header is well-formed enough to name one."""
    if len(frame) < HEADER_SIZE:
        return None
    try:
        return decode_frame(frame)[0].sender
    except ProtocolError:
        return int.from_bytes(frame[28:32], "big")


class _Network:
    """Shared fault machinery: tampering, duplication, the previous rounds' frames."""

    def __init__(self, config: FaultConfig, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        self.faults: Counter = Counter()
        self.history_up: list[bytes] = []  # client -> server frames of earlier rounds
        self.history_down: list[bytes] = []  # server -> client frames of earlier rounds

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def remember(self, up: list[bytes], down: list[bytes], keep: int = 64) -> None:
        for store, new in ((self.history_up, up), (self.history_down, down)):
            if new:
                picks = self.rng.choice(len(new), size=min(len(new), 8), replace=False)
                store.extend(new[int(i)] for i in picks)
            del store[:-keep]

    def tamper(self, frame: bytes, sender: int, wrong_length: Callable[[bytes], bytes | None],
               low_order_key: Callable[[bytes, bytes], bytes | None] | None = None,
               ) -> bytes:
        """One corrupted version of ``frame``, as the tampering ``sender`` would send it."""
        kinds = list(TAMPERING)
        while True:
            kind = kinds[int(self.rng.integers(0, len(kinds)))]
            if kind == "truncate":
                out = frame[:int(self.rng.integers(0, len(frame)))]
            elif kind == "bitflip":
                out = _flip_bit(frame, self.rng)
                for _ in range(int(self.rng.integers(0, 3))):
                    out = _flip_bit(out, self.rng)
            elif kind == "wrong_session":
                out = _with_session(frame, self.rng.bytes(16))
            elif kind == "wrong_round":
                current = int.from_bytes(frame[24:28], "big")
                out = _with_round(frame, (current + int(self.rng.integers(1, 1 << 32))) % (1 << 32))
            elif kind in ("replay", "replay_restamped"):
                if not self.history_up:
                    continue
                old = self.history_up[int(self.rng.integers(0, len(self.history_up)))]
                out = _with_sender(old, sender)  # the adversary's own channel
                if kind == "replay_restamped" and len(old) >= HEADER_SIZE:
                    out = out[:8] + frame[8:28] + out[28:]  # this session id and round
            elif kind == "low_order_key":
                u = _SMALL_ORDER_U[int(self.rng.integers(0, len(_SMALL_ORDER_U)))]
                high = int(self.rng.integers(0, 2)) << 255
                changed = (None if low_order_key is None
                           else low_order_key(frame, (u | high).to_bytes(32, "little")))
                if changed is None:
                    continue
                out = changed
            else:
                changed = wrong_length(frame)
                if changed is None:
                    continue
                out = changed
            self.faults[f"tamper_{kind}"] += 1
            return out

    def shuffled(self, items: list[Any]) -> list[Any]:
        order = self.rng.permutation(len(items))
        return [items[int(i)] for i in order]


# ---------------------------------------------------------------------------- masking rounds
def _random_masking_params(rng: np.random.Generator, n: int, *, sparse: bool, active: bool,
                           max_length: int) -> MaskingParams:
    degree = n - 1
    if sparse and n >= 4:
        even = [k for k in range(2, n - 1) if k % 2 == 0]
        degree = even[int(rng.integers(0, len(even)))]
    size = degree + 1
    lowest = (2 * size) // 3 + 1 if active else size // 2 + 1
    # Mostly the smallest legal threshold (the common deployment), sometimes a stricter one.
    threshold = lowest if rng.random() < 0.7 else int(rng.integers(lowest, size + 1))
    # Mostly no session-wide floor; sometimes one anywhere up to every participant.
    min_survivors = 1 if rng.random() < 0.7 else int(rng.integers(1, n + 1))
    return MaskingParams(threshold=threshold, degree=degree, bits=int(rng.integers(1, 63)),
                         vector_length=int(rng.integers(0, max_length + 1)), active=active,
                         min_survivors=min_survivors)


def _wrong_length_masked(frame: bytes) -> bytes | None:
    try:
        env = mm.decode(frame)
    except ProtocolError:
        return None
    if not isinstance(env.message, mm.MaskedInput):
        return None
    words = env.message.words
    other = np.zeros(words.size + 1 if words.size < 3 else words.size - 1, dtype=words.dtype)
    h = env.header
    return mm.encode(mm.MaskedInput(other), session_id=h.session_id, round_index=h.round,
                     sender=h.sender, receiver=h.receiver)


def _low_order_key(frame: bytes, key: bytes) -> bytes | None:
    """The client's AdvertiseKeys with one of its keys replaced by ``key`` (None otherwise)."""
    try:
        env = mm.decode(frame)
    except ProtocolError:
        return None
    if not isinstance(env.message, mm.AdvertiseKeys):
        return None
    field_name = ("c_public", "s_public")[key[0] & 1]
    h = env.header
    return mm.encode(dataclasses.replace(env.message, **{field_name: key}),
                     session_id=h.session_id, round_index=h.round, sender=h.sender,
                     receiver=h.receiver)


def soak_masking_round(variant: str, network: _Network, *, round_index: int) -> RoundReport:
    """One masking session of random shape under the faults of ``network.config``."""
    sparse, active = MASKING_VARIANTS[variant]
    rng, config = network.rng, network.config
    network.faults = Counter()
    n = int(rng.integers(2, config.max_clients + 1))
    ids = sorted(int(x) for x in rng.choice(1 << 20, size=n, replace=False))
    params = _random_masking_params(rng, n, sparse=sparse, active=active,
                                    max_length=config.max_length)
    inputs = {cid: rng.integers(0, 1 << params.bits, size=params.vector_length, dtype=np.uint64)
              for cid in ids}
    stages = stages_for(active)
    schedule = {cid: stages[int(rng.integers(0, len(stages)))] for cid in ids
                if network.chance(config.dropout_rate)}
    adversaries = {cid for cid in ids if network.chance(config.adversary_rate)}
    network.faults["dropouts"] += len(schedule)
    network.faults["adversaries"] += len(adversaries)

    def report(verdict: str, detail: str) -> RoundReport:
        return RoundReport(variant, verdict, detail, n, dict(network.faults))

    try:
        return _run_masking(variant, network, params, ids, inputs, schedule, adversaries,
                            round_index, report)
    except Exception as exc:  # noqa: BLE001 - anything escaping the parties is the finding
        return report("other", f"{type(exc).__name__}: {exc} (n={n}, {params})")


def _run_masking(
    variant: str,
    network: _Network,
    params: MaskingParams,
    ids: list[int],
    inputs: dict[int, np.ndarray],
    schedule: dict[int, str],
    adversaries: set[int],
    round_index: int,
    report: Callable[[str, str], RoundReport],
) -> RoundReport:
    rng, config = network.rng, network.config
    stages = stages_for(params.active)
    trust, signing = StaticTrustStore.generate(ids) if params.active else (None, {})
    server = MaskingServer(params, ids, round_index=round_index, trust=trust)
    clients = {}
    for cid in ids:
        clients[cid] = MaskingClient(cid, signing_key=signing.get(cid),
                                     trust=trust if params.active else None)
        clients[cid].set_input(inputs[cid])
    effective = {cid: inputs[cid].copy() for cid in ids}  # what each client's vector amounts to
    honest_words: dict[int, np.ndarray] = {}
    unverifiable: set[int] = set()
    honest_keys: dict[int, bytes] = {}
    up_log: list[bytes] = []
    down_log: list[bytes] = []
    clean = not adversaries  # no tampering, duplication, lateness or replay at all
    gone: set[int] = set()
    outgoing = server.start()

    def to_server(frame: bytes, channel: int, honest: bytes) -> None:
        if _header_sender(frame) not in (None, channel):
            network.faults["transport_dropped"] += 1
            return
        try:
            server.receive(frame)
        except ProtocolError:
            return
        if frame == honest:
            return
        env = mm.decode(frame)  # accepted, so it decodes
        if isinstance(env.message, mm.MaskedInput):
            # The client's masked vector changed by a known delta: so did its input.
            delta = env.message.words.astype(np.uint64) - honest_words[channel].astype(np.uint64)
            effective[channel] = (effective[channel] + delta) & np.uint64((1 << params.bits) - 1)
        elif isinstance(env.message, mm.AdvertiseKeys) and env.message.s_public != honest_keys[
                channel]:
            unverifiable.add(channel)

    for stage in stages:
        # One queue of pending deliveries, popped in random order: reordering across
        # clients and between downlink and uplink.
        queue: list[tuple[str, int, bytes, bytes]] = []  # (direction, party, frame, honest)
        for cid, frame in outgoing:
            down_log.append(frame)
            queue.append(("down", cid, frame, frame))
            if network.chance(config.duplicate_rate):
                network.faults["duplicate_down"] += 1
                clean = False
                queue.append(("down", cid, frame, frame))
            if network.history_down and network.chance(config.downlink_replay_rate):
                network.faults["replay_down"] += 1
                clean = False
                old = network.history_down[int(rng.integers(0, len(network.history_down)))]
                queue.append(("down", cid, _with_receiver(old, cid), b""))
        late: list[tuple[int, bytes, bytes]] = []
        while queue:
            direction, party, frame, honest = queue.pop(int(rng.integers(0, len(queue))))
            if direction == "up":
                to_server(frame, party, honest)
                continue
            if party in gone or schedule.get(party) == stage:
                gone.add(party)
                continue
            client = clients[party]
            if client.state.value == "aborted":
                continue
            try:
                replies = client.receive(frame)
            except ProtocolError:
                continue  # the client aborted: a dropout from now on
            for reply in replies:
                up_log.append(reply)
                env = mm.decode(reply)
                if isinstance(env.message, mm.MaskedInput):
                    honest_words[party] = env.message.words
                elif isinstance(env.message, mm.AdvertiseKeys):
                    honest_keys[party] = env.message.s_public
                sends = [reply]
                if party in adversaries and network.chance(config.tamper_rate):
                    bad = network.tamper(reply, party, _wrong_length_masked, _low_order_key)
                    sends = [bad, reply] if network.chance(config.keep_honest_rate) else [bad]
                if network.chance(config.duplicate_rate):
                    network.faults["duplicate_up"] += 1
                    clean = False
                    sends.append(sends[-1])
                for frame_out in sends:
                    if network.chance(config.late_rate):
                        network.faults["late_up"] += 1
                        clean = False
                        late.append((party, frame_out, reply))
                    else:
                        queue.append(("up", party, frame_out, reply))
        try:
            outgoing = server.advance()
        except ProtocolError as exc:
            network.remember(up_log, down_log)
            if clean:
                network.faults["oracle_checked"] += 1
                oracle = expected_outcome(ids, params, server.config.graph_seed, schedule)
                if oracle.below_threshold_stage is None:
                    return report("other", f"aborted with {type(exc).__name__} at {stage} but "
                                           f"the oracle expects contributors {oracle.contributors}")
            return report("aborted", type(exc).__name__)
        for party, frame_out, honest in late:
            to_server(frame_out, party, honest)
    network.remember(up_log, down_log)
    result = server.result
    if result is None:
        return report("other", "the server finished without a result")
    want = np.zeros(params.vector_length, dtype=np.uint64)
    for cid in result.contributors:
        want += effective[cid]
    want &= np.uint64((1 << params.bits) - 1)
    if len(result.contributors) < params.threshold:
        return report("other", f"sum released over {len(result.contributors)} < t contributors")
    if len(result.contributors) < params.min_survivors:
        return report("other", f"sum released over {len(result.contributors)} contributors, "
                               f"below min_survivors = {params.min_survivors}")
    exact = np.array_equal(result.total, want)
    if set(result.contributors) & unverifiable:
        return report("exact" if exact else "unverifiable", "tampered advertised key")
    if not exact:
        return report("other", f"wrong sum over {result.contributors} (n={len(ids)}, {params})")
    if clean:
        network.faults["oracle_checked"] += 1
        oracle = expected_outcome(ids, params, server.config.graph_seed, schedule)
        if oracle.contributors != result.contributors:
            return report("other", f"contributors {result.contributors} but the oracle expects "
                                   f"{oracle.contributors or oracle.below_threshold_stage}")
    return report("exact", "")


# ---------------------------------------------------------------------------- Paillier rounds
class PaillierSoak:
    """Paillier sessions under faults, for one deployment (keys are dealt once: slow).

    Needs small keys for speed, which the key code refuses unless told
    ``insecure_for_tests=True`` — this is a test harness, never a deployment.
    """

    def __init__(self, mode: str, *, key_bits: int = 512, insecure_for_tests: bool = False,
                 keys: Any = None) -> None:
        from ..paillier import PaillierDeployment, deal_threshold_keys, generate_keypair

        if mode == "threshold":
            keys = keys or deal_threshold_keys(key_bits, threshold=2, parties=3,
                                               insecure_for_tests=insecure_for_tests)
            self.deployment = PaillierDeployment(threshold_keys=keys, min_clients=2)
        elif mode == "two_party":
            keys = keys or generate_keypair(key_bits, insecure_for_tests=insecure_for_tests)[1]
            self.deployment = PaillierDeployment(private_key=keys, min_clients=2)
        else:
            raise ValueError("mode must be 'threshold' or 'two_party'")
        self.mode = mode
        self.variant = f"paillier-{mode.replace('_', '-')}"
        self._other_key: Any = None

    def round(self, network: _Network, *, round_index: int) -> RoundReport:
        network.faults = Counter()
        n = int(network.rng.integers(2, min(network.config.max_clients, 8) + 1))

        def report(verdict: str, detail: str) -> RoundReport:
            return RoundReport(self.variant, verdict, detail, n, dict(network.faults))

        try:
            return self._run(network, n, round_index, report)
        except Exception as exc:  # noqa: BLE001 - anything escaping the parties is the finding
            return report("other", f"{type(exc).__name__}: {exc} (n={n})")

    def _wrong_length_update(self, signing_keys: dict[int, Any], layout_count: int,
                             session: bytes, round_index: int, params_digest: bytes,
                             ) -> Callable[[bytes], bytes | None]:
        """A correctly signed update carrying one ciphertext too many or too few."""
        from ..paillier.messages import EncryptedUpdate, update_statement

        public = self.deployment.public_key

        def build(frame: bytes) -> bytes | None:
            header, _ = decode_frame(frame)
            count = layout_count + (1 if layout_count < 2 else -1)
            blob = (1).to_bytes(public.ciphertext_bytes, "big") * count
            statement = update_statement(session, round_index, header.sender, params_digest,
                                         hashlib.sha256(blob).digest())
            body = EncryptedUpdate(public.fingerprint, blob,
                                   signing_keys[header.sender].sign(statement)).body()
            return frame[:36] + len(body).to_bytes(4, "big") + body
        return build

    def _run(self, network: _Network, n: int, round_index: int,
             report: Callable[[str, str], RoundReport]) -> RoundReport:
        from ..paillier import PaillierAggregator, PaillierClient
        from ..paillier.messages import KEY_HOLDER_ID_BASE

        rng, config, dep = network.rng, network.config, self.deployment
        ids = sorted(int(x) for x in rng.choice(1 << 20, size=n, replace=False))
        bits = int(rng.integers(1, 63))
        length = int(rng.integers(1, config.max_length + 1))
        inputs = {cid: rng.integers(0, 1 << bits, size=length, dtype=np.uint64) for cid in ids}
        signing = {cid: dep.register_client(cid) for cid in ids}
        schedule = {cid: ("announce", "upload")[int(rng.integers(0, 2))] for cid in ids
                    if network.chance(config.dropout_rate)}
        adversaries = {cid for cid in ids if network.chance(config.adversary_rate)}
        holders = sorted(dep.key_holders)
        holder_drops = {h for h in holders if network.chance(config.dropout_rate)}
        # Only threshold key holders prove their partial decryptions; the two-party
        # decryptor is trusted to decrypt correctly (docs/security.md), so it never lies here.
        bad_holders = {h for h in holders if dep.threshold_keys is not None
                       and network.chance(config.adversary_rate / 2)}
        network.faults.update(dropouts=len(schedule) + len(holder_drops),
                              adversaries=len(adversaries) + len(bad_holders))
        aggregator = PaillierAggregator(
            dep.public_key, {cid: dep.registry[cid] for cid in ids}, bits=bits, length=length,
            min_clients=dep.min_clients,
            threshold_params=dep.threshold_keys.params if dep.threshold_keys else None,
            send_contributions=bool(dep.threshold_keys and rng.random() < 0.3),
            round_index=round_index)
        clients = {cid: PaillierClient(cid, dep.public_key, signing[cid],
                                       min_clients=dep.min_clients, round_index=round_index)
                   for cid in ids}
        up_log, down_log = [], []
        wrong_length = self._wrong_length_update(
            signing, aggregator.layout.num_plaintexts, aggregator.session_id, round_index,
            aggregator.params.digest(aggregator.session_id, round_index))

        aggregator_errors: list[ProtocolError] = []

        def deliver_up(frame: bytes, channel: int) -> None:
            if _header_sender(frame) not in (None, channel):
                network.faults["transport_dropped"] += 1
                return
            try:
                aggregator.receive(frame)
            except ProtocolError as exc:
                aggregator_errors.append(exc)

        # Announce, with duplicated and replayed downlink frames, in random order.
        deliveries = []
        for frame in aggregator.start():
            cid = decode_frame(frame)[0].receiver
            down_log.append(frame)
            deliveries.append((cid, frame))
            if network.chance(config.duplicate_rate):
                network.faults["duplicate_down"] += 1
                deliveries.append((cid, frame))
            if network.history_down and network.chance(config.downlink_replay_rate):
                network.faults["replay_down"] += 1
                old = network.history_down[int(rng.integers(0, len(network.history_down)))]
                deliveries.append((cid, _with_receiver(old, cid)))
        for cid, frame in network.shuffled(deliveries):
            if schedule.get(cid) == "announce":
                continue
            try:
                clients[cid].receive(frame)
            except ProtocolError:
                pass
        # Upload.
        uploads = []
        for cid in ids:
            if cid in schedule or clients[cid].state.value != "ready":
                continue
            frame = clients[cid].upload(inputs[cid])
            up_log.append(frame)
            sends = [frame]
            if cid in adversaries and network.chance(config.tamper_rate):
                bad = network.tamper(frame, cid, wrong_length)
                sends = [bad, frame] if network.chance(config.keep_honest_rate) else [bad]
            if network.chance(config.duplicate_rate):
                network.faults["duplicate_up"] += 1
                sends.append(sends[-1])
            uploads.extend((cid, f) for f in sends)
        late = []
        for cid, frame in network.shuffled(uploads):
            if network.chance(config.late_rate):
                network.faults["late_up"] += 1
                late.append((cid, frame))
            else:
                deliver_up(frame, cid)
        try:
            requests = aggregator.close_collection()
        except ProtocolError as exc:
            network.remember(up_log, down_log)
            return report("aborted", type(exc).__name__)
        for cid, frame in late:
            deliver_up(frame, cid)
        # Decryption: key holders answer in random order; some drop, some tamper.
        answers = []
        for frame in network.shuffled(requests):
            index = decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE
            if index in holder_drops:
                continue
            copies = 2 if network.chance(config.duplicate_rate) else 1
            for _ in range(copies):
                try:
                    replies = dep.key_holders[index].receive(frame)
                except ProtocolError:
                    continue  # e.g. a duplicated request: the key holder serves a session once
                for reply in replies:
                    if index in bad_holders:
                        network.faults["tamper_key_holder"] += 1
                        reply = _flip_bit(reply, rng) if rng.random() < 0.7 else reply[:-3]
                    answers.append((KEY_HOLDER_ID_BASE + index, reply))
        for party, frame in network.shuffled(answers):
            deliver_up(frame, party)
        network.remember(up_log, down_log)
        result = aggregator.result
        if result is None:
            if aggregator.state.value == "aborted" and aggregator_errors:
                return report("aborted", type(aggregator_errors[-1]).__name__)
            # Too few valid partial decryptions: dropped, tampering or refusing key holders.
            return report("aborted", BelowThreshold.__name__)
        want = np.zeros(length, dtype=np.uint64)
        for cid in result.contributors:
            want += inputs[cid]
        want &= np.uint64((1 << bits) - 1)
        if len(result.contributors) < dep.min_clients:
            return report("other", "sum released below min_clients")
        if not np.array_equal(result.total, want):
            return report("other", f"wrong sum over {result.contributors} (bits={bits})")
        return report("exact", "")


# ---------------------------------------------------------------------------------- the soak
def run_soak(
    variants: Sequence[str],
    *,
    rounds: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    config: FaultConfig | None = None,
    paillier: Sequence[PaillierSoak] = (),
    paillier_every: int = 5,
    on_round: Callable[[RoundReport], None] | None = None,
) -> SoakTally:
    """Round-robin over the masking ``variants`` until ``rounds`` rounds or ``seconds`` elapse.

    Every ``paillier_every``-th round is a Paillier round instead (round-robin
    over ``paillier``); with no masking variants, every round is.
    """
    if rounds is None and seconds is None:
        raise ValueError("give rounds, seconds, or both")
    unknown = set(variants) - set(MASKING_VARIANTS)
    if unknown:
        raise ValueError(f"unknown masking variants {sorted(unknown)}")
    if not variants and not paillier:
        raise ValueError("nothing to soak")
    config = config if config is not None else FaultConfig()
    rng = np.random.default_rng(seed)
    masking_net = _Network(config, rng)
    paillier_net = _Network(config, rng)
    tally = SoakTally()
    start = time.perf_counter()
    k = p = 0
    while True:
        if rounds is not None and tally.rounds >= rounds:
            break
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
        round_index = int(rng.integers(0, 1 << 32))
        if paillier and (not variants or k % paillier_every == paillier_every - 1):
            rep = paillier[p % len(paillier)].round(paillier_net, round_index=round_index)
            p += 1
        else:
            rep = soak_masking_round(variants[k % len(variants)], masking_net,
                                     round_index=round_index)
        k += 1
        tally.add(rep)
        if on_round is not None:
            on_round(rep)
    tally.seconds = time.perf_counter() - start
    return tally


__all__.append("run_soak")
