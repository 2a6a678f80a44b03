"""In-process driver of whole Paillier sessions, and the :class:`~protocols.api.SecureSum` adapter.

:class:`PaillierDeployment` holds the long-lived parties (keys, client
identity keys, key holders): key holders must outlive a session because each
refuses to serve the same session twice. :func:`run_session` wires one
session's state machines together in memory, moving real wire frames, so the
byte counts are those a network would carry.

Dropout stages (:attr:`PaillierSecureSum.stages`): a client scheduled to drop
before ``"announce"`` never receives the announcement; one scheduled before
``"upload"`` receives it but never sends its ciphertexts. Either way it just
does not contribute. Key holders can drop too (``key_holder_dropouts``); the
aggregate is decrypted as long as ``threshold`` of them answer.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ..api import DropoutSchedule, SecureSumResult
from ..errors import BelowThreshold, LocalProtocolError, ProtocolError
from ..wire import decode_frame
from .aggregator import PaillierAggregator
from .client import PaillierClient
from .encryption import RANDOMIZER_MODES, RandomizerPool
from .key_holder import ThresholdKeyHolder, TwoPartyDecryptor
from .keys import (
    DEFAULT_KEY_BITS,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_keypair,
)
from .messages import KEY_HOLDER_ID_BASE, MAX_CLIENT_ID
from .threshold import ThresholdKeySet, deal_threshold_keys

__all__ = ["STAGES", "PaillierDeployment", "PaillierSecureSum", "SessionOutcome", "run_session"]

STAGES: tuple[str, ...] = ("announce", "upload")


class PaillierDeployment:
    """Keys and long-lived parties of one deployment.

    Give exactly one of ``threshold_keys`` (threshold mode) or ``private_key``
    (two-party mode). ``min_clients`` is enforced by clients, aggregator and
    key holders alike.
    """

    def __init__(
        self,
        *,
        threshold_keys: ThresholdKeySet | None = None,
        private_key: PaillierPrivateKey | None = None,
        min_clients: int = 2,
        require_contributions: bool = False,
    ) -> None:
        if (threshold_keys is None) == (private_key is None):
            raise ValueError("give exactly one of threshold_keys and private_key")
        if private_key is not None and require_contributions:
            raise ValueError("the two-party decryptor must never receive individual ciphertexts")
        self.threshold_keys = threshold_keys
        self.min_clients = min_clients
        self.require_contributions = require_contributions
        self.registry: dict[int, Ed25519PublicKey] = {}
        self._signing_keys: dict[int, Ed25519PrivateKey] = {}
        self.key_holders: dict[int, ThresholdKeyHolder | TwoPartyDecryptor]
        if threshold_keys is not None:
            self.public_key: PaillierPublicKey = threshold_keys.public_key
            self.key_holders = {
                share.index: ThresholdKeyHolder(
                    share,
                    self.registry,
                    min_clients=min_clients,
                    require_contributions=require_contributions,
                )
                for share in threshold_keys.shares
            }
        else:
            assert private_key is not None
            self.public_key = private_key.public_key
            self.key_holders = {
                1: TwoPartyDecryptor(private_key, self.registry, min_clients=min_clients)
            }

    @property
    def threshold(self) -> int:
        return self.threshold_keys.params.threshold if self.threshold_keys else 1

    def register_client(self, client_id: int) -> Ed25519PrivateKey:
        """The client's identity key (made on first use); its public half joins the registry."""
        if not (isinstance(client_id, int) and 0 <= client_id <= MAX_CLIENT_ID):
            raise ValueError(f"client id must be in [0, {MAX_CLIENT_ID}]")
        key = self._signing_keys.get(client_id)
        if key is None:
            key = Ed25519PrivateKey.generate()
            self._signing_keys[client_id] = key
            self.registry[client_id] = key.public_key()
        return key


@dataclass(frozen=True)
class SessionOutcome:
    total: np.ndarray
    contributors: tuple[int, ...]
    dropped: tuple[int, ...]  # scheduled dropouts and rejected clients
    rejected: Mapping[int, str]
    bytes_sent: Mapping[int, int]
    bytes_received: Mapping[int, int]
    client_seconds: float
    server_seconds: float
    key_holder_seconds: float
    measurements: Mapping[str, float] = field(default_factory=dict)


def run_session(
    deployment: PaillierDeployment,
    inputs: Mapping[int, np.ndarray],
    *,
    bits: int,
    round_index: int = 0,
    dropouts: DropoutSchedule | None = None,
    key_holder_dropouts: Collection[int] = (),
    max_clients: int | None = None,
    pools: Mapping[int, RandomizerPool] | None = None,
    processes: int = 1,
    randomizers: str = "full",
) -> SessionOutcome:
    """One complete session over ``inputs`` (client id -> uint64 vector in [0, 2^bits))."""
    dropouts = dict(dropouts or {})
    unknown = set(dropouts.values()) - set(STAGES)
    if unknown:
        raise LocalProtocolError(f"unknown stage(s) {sorted(unknown)}; stages are {STAGES}")
    if not inputs:
        raise ValueError("no inputs")
    lengths = {np.asarray(v).shape for v in inputs.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError("inputs must be 1-D vectors of one common length")
    length = next(iter(lengths))[0]
    bytes_sent = {cid: 0 for cid in inputs}
    bytes_received = {cid: 0 for cid in inputs}
    timers = {"client": 0.0, "server": 0.0, "key_holder": 0.0}

    def timed(role: str, call: Any, *args: Any) -> Any:
        start = time.process_time()
        try:
            return call(*args)
        finally:
            timers[role] += time.process_time() - start

    clients = {}
    for cid in sorted(inputs):
        signing_key = deployment.register_client(cid)
        clients[cid] = PaillierClient(
            cid,
            deployment.public_key,
            signing_key,
            min_clients=deployment.min_clients,
            round_index=round_index,
            pool=(pools or {}).get(cid),
            processes=processes,
            randomizers=randomizers,
        )
    aggregator = timed(
        "server",
        lambda: PaillierAggregator(
            deployment.public_key,
            {cid: deployment.registry[cid] for cid in inputs},
            bits=bits,
            length=length,
            min_clients=deployment.min_clients,
            max_clients=max_clients,
            threshold_params=deployment.threshold_keys.params
            if deployment.threshold_keys
            else None,
            send_contributions=deployment.require_contributions,
            round_index=round_index,
        ),
    )
    rejected: dict[int, str] = {}
    for frame in timed("server", aggregator.start):
        cid = decode_frame(frame)[0].receiver
        if dropouts.get(cid) == "announce":
            continue
        bytes_received[cid] += len(frame)
        timed("client", clients[cid].receive, frame)
    for cid, client in clients.items():
        if cid in dropouts:
            continue
        try:
            frame = timed("client", client.upload, inputs[cid])
        except ProtocolError as error:
            rejected[cid] = type(error).__name__
            continue
        bytes_sent[cid] += len(frame)
        try:
            timed("server", aggregator.receive, frame)
        except ProtocolError as error:
            rejected[cid] = type(error).__name__
    requests = timed("server", aggregator.close_collection)
    answers: list[bytes] = []
    key_holder_errors: list[ProtocolError] = []
    key_holder_bytes = 0
    for frame in requests:
        index = decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE
        if index in key_holder_dropouts:
            continue
        key_holder_bytes += len(frame)
        try:
            answers.extend(timed("key_holder", deployment.key_holders[index].receive, frame))
        except ProtocolError as error:
            key_holder_errors.append(error)
    for frame in answers:
        key_holder_bytes += len(frame)
        if aggregator.result is not None:
            break  # enough partial decryptions: the rest are not needed
        try:
            timed("server", aggregator.receive, frame)
        except ProtocolError:
            continue  # a bad key holder is excluded; any threshold of honest ones suffice
    if aggregator.result is None:
        if key_holder_errors:  # the key holders' own reason (e.g. too few contributors) says most
            raise key_holder_errors[0]
        raise BelowThreshold(
            deployment.threshold - aggregator.missing_key_holders(),
            deployment.threshold,
            "decryption",
        )
    result = aggregator.result
    rejected.update(result.rejected)
    contributors = result.contributors
    dropped = tuple(sorted(cid for cid in inputs if cid not in contributors))
    layout = aggregator.layout
    return SessionOutcome(
        total=result.total,
        contributors=contributors,
        dropped=dropped,
        rejected=rejected,
        bytes_sent={cid: b for cid, b in bytes_sent.items() if b},
        bytes_received=bytes_received,
        client_seconds=timers["client"],
        server_seconds=timers["server"],
        key_holder_seconds=timers["key_holder"],
        measurements={
            "contributors": float(len(contributors)),
            "dropped": float(len(dropped)),
            "rejected": float(len(rejected)),
            "slots_per_ciphertext": float(layout.slots),
            "ciphertexts_per_client": float(layout.num_plaintexts),
            "headroom_bits": float(layout.headroom_bits),
            "key_bits": float(deployment.public_key.bits),
            "key_holder_seconds": timers["key_holder"],
            "key_holders_answering": float(
                len(requests) - len(set(key_holder_dropouts)) - len(key_holder_errors)
            ),
            "key_holder_bytes": float(key_holder_bytes),
        },
    )


class PaillierSecureSum:
    """Packed Paillier behind the :class:`~protocols.api.SecureSum` interface.

    Keys are generated once per object, on first use (2048-bit threshold
    dealing takes seconds), or passed in pre-generated via ``keys`` (a
    :class:`ThresholdKeySet` for ``mode="threshold"``, a
    :class:`PaillierPrivateKey` for ``mode="two_party"``).
    ``max_clients`` fixes the slot headroom; by default it is the number of
    clients in each round.
    """

    name = "paillier"
    stages: tuple[str, ...] = STAGES

    def __init__(
        self,
        *,
        key_bits: int = DEFAULT_KEY_BITS,
        mode: str = "threshold",
        threshold: int = 2,
        key_holders: int = 3,
        min_clients: int = 2,
        max_clients: int | None = None,
        require_contributions: bool = False,
        insecure_for_tests: bool = False,
        keys: ThresholdKeySet | PaillierPrivateKey | None = None,
        processes: int = 1,
        key_holder_dropouts: Collection[int] = (),
        randomizers: str = "full",
    ) -> None:
        if mode not in ("threshold", "two_party"):
            raise ValueError("mode must be 'threshold' or 'two_party'")
        if mode == "threshold" and keys is not None and not isinstance(keys, ThresholdKeySet):
            raise ValueError("threshold mode needs a ThresholdKeySet")
        if mode == "two_party" and keys is not None and not isinstance(keys, PaillierPrivateKey):
            raise ValueError("two-party mode needs a PaillierPrivateKey")
        self.key_bits = key_bits
        self.mode = mode
        self.threshold = threshold
        self.key_holders = key_holders
        self.min_clients = min_clients
        self.max_clients = max_clients
        self.require_contributions = require_contributions
        self.insecure_for_tests = insecure_for_tests
        if randomizers not in RANDOMIZER_MODES:
            raise ValueError(f"randomizers must be one of {RANDOMIZER_MODES}")
        self.processes = processes
        self.randomizers = randomizers  # "full" (DCR only) or "djn" (faster; see encryption.py)
        self.key_holder_dropouts = tuple(key_holder_dropouts)
        self._keys = keys
        self._deployment: PaillierDeployment | None = None
        self.keygen_seconds = 0.0

    @property
    def deployment(self) -> PaillierDeployment:
        if self._deployment is None:
            start = time.perf_counter()
            if self.mode == "threshold":
                keys = self._keys or deal_threshold_keys(
                    self.key_bits,
                    threshold=self.threshold,
                    parties=self.key_holders,
                    insecure_for_tests=self.insecure_for_tests,
                )
                assert isinstance(keys, ThresholdKeySet)
                self._deployment = PaillierDeployment(
                    threshold_keys=keys,
                    min_clients=self.min_clients,
                    require_contributions=self.require_contributions,
                )
            else:
                private = self._keys
                if private is None:
                    private = generate_keypair(
                        self.key_bits, insecure_for_tests=self.insecure_for_tests
                    )[1]
                assert isinstance(private, PaillierPrivateKey)
                self._deployment = PaillierDeployment(
                    private_key=private, min_clients=self.min_clients
                )
            self.keygen_seconds = time.perf_counter() - start
        return self._deployment

    def run_round(
        self,
        inputs: Mapping[int, np.ndarray],
        *,
        bits: int,
        round_index: int = 0,
        dropouts: DropoutSchedule | None = None,
    ) -> SecureSumResult:
        mask = np.uint64((1 << bits) - 1)
        ring_inputs = {cid: np.asarray(v, dtype=np.uint64) & mask for cid, v in inputs.items()}
        outcome = run_session(
            self.deployment,
            ring_inputs,
            bits=bits,
            round_index=round_index,
            dropouts=dropouts,
            key_holder_dropouts=self.key_holder_dropouts,
            max_clients=self.max_clients,
            processes=self.processes,
            randomizers=self.randomizers,
        )
        return SecureSumResult(
            total=outcome.total,
            contributors=outcome.contributors,
            dropped=outcome.dropped,
            bytes_sent=dict(outcome.bytes_sent),
            bytes_received=dict(outcome.bytes_received),
            client_seconds=outcome.client_seconds,
            server_seconds=outcome.server_seconds,
            measurements=dict(outcome.measurements, keygen_seconds=self.keygen_seconds),
        )
