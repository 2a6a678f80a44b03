"""Sans-IO state machines of the Paillier aggregation protocol.

Parties exchange wire frames (bytes); none of them does I/O. A party's
``receive(frame)`` returns the frames it wants sent (each names its receiver
in the header); the caller moves bytes however it likes.

Flow (threshold mode; the two-party mode has one decryptor instead of the key
holders and it answers with the plaintext)::

    aggregator ── RoundAnnouncement ──▶ client            (key, bits, layout, min/max clients)
    client ───── EncryptedUpdate ────▶ aggregator        (ciphertexts + Ed25519 signature)
    aggregator multiplies the accepted ciphertexts
    aggregator ── DecryptionRequest ─▶ key holder i      (aggregate + contributor list,
                                                           digests, signatures[, contributions])
    key holder ── PartialDecryption ─▶ aggregator        (c^(2Δs_i) + batched proof)
    aggregator verifies ≥ t partials, combines, unpacks  → sum mod 2^bits

States (anything else raises, and for clients moves to ``ABORTED``)::

    client      WAITING ─announcement→ READY ─upload()→ UPLOADED
    aggregator  COLLECTING ─close_collection()→ DECRYPTING ─t valid partials→ DONE
    key holder  stateless per request; serves each session id at most once

Error policy: a client or key holder has one peer, so any protocol error
aborts it. The aggregator has many: a bad message raises its typed error
and is dropped, the aggregator stays alive, and the sender is excluded only
once its signature has verified (an unauthenticated header could name any
client, and must not let a third party exclude an honest one).

Trust (see docs/protocols/paillier.md): key holders decrypt only an
aggregate whose contributor list holds at least their own ``min_clients``
distinct registered clients, each with a valid signature over its
ciphertext digest for this session. They trust the aggregator to have
multiplied exactly those ciphertexts, unless ``require_contributions`` is
set, in which case they receive every contribution and recompute the
product themselves (threshold mode only: the two-party decryptor must never
see an individual ciphertext).
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import (
    BelowThreshold,
    ConsistencyError,
    DecryptionError,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from ..wire import SERVER_ID, SESSION_ID_SIZE, FrameHeader, decode_frame, encode_frame
from ._lazy import gmpy2
from .encryption import (
    RANDOMIZER_MODES,
    RandomizerPool,
    add_ciphertexts,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    encrypt_packed,
)
from .errors import ForeignKey, InvalidPartialDecryption, SlotOverflow, UnknownParty
from .keys import PaillierPrivateKey, PaillierPublicKey
from .messages import (
    MAX_CLIENT_ID,
    PROTOCOL_CODE,
    AggregatePlaintext,
    DecryptionRequest,
    EncryptedUpdate,
    Kind,
    Mode,
    PartialDecryptionMessage,
    RoundAnnouncement,
    SessionParams,
    key_holder_id,
    update_statement,
)
from .packing import PackingLayout
from .threshold import (
    KeyShare,
    PartialDecryption,
    ThresholdParams,
    combine_partials,
    partial_decrypt,
    verify_partial,
)

__all__ = [
    "ClientState",
    "AggregatorState",
    "AggregationResult",
    "PaillierClient",
    "PaillierAggregator",
    "ThresholdKeyHolder",
    "TwoPartyDecryptor",
]

ClientRegistry = Mapping[int, Ed25519PublicKey]


# -- framing helpers -------------------------------------------------------------------------
def _frame(
    kind: Kind, session_id: bytes, round_index: int, sender: int, receiver: int, body: bytes
) -> bytes:
    return encode_frame(
        FrameHeader(PROTOCOL_CODE, int(kind), session_id, round_index, sender, receiver), body
    )


def _open(frame: bytes, *, receiver: int) -> tuple[FrameHeader, Kind, bytes]:
    header, body = decode_frame(frame)
    if header.protocol != PROTOCOL_CODE:
        raise MalformedMessage(f"not a Paillier frame (protocol {header.protocol})")
    if header.receiver != receiver:
        raise SessionMismatch("frame addressed to another party")
    try:
        kind = Kind(header.kind)
    except ValueError as exc:
        raise MalformedMessage(f"unknown message kind {header.kind}") from exc
    return header, kind, body


def _context(session_id: bytes, round_index: int, params: SessionParams, aggregate: bytes) -> bytes:
    """What a partial decryption is bound to: this session's exact aggregate."""
    return hashlib.sha256(
        b"secure_fedrec/paillier/decryption/v1"
        + params.digest(session_id, round_index)
        + hashlib.sha256(aggregate).digest()
    ).digest()


# -- client ---------------------------------------------------------------------------------
class ClientState(enum.Enum):
    WAITING = "waiting"
    READY = "ready"
    UPLOADED = "uploaded"
    ABORTED = "aborted"


class PaillierClient:
    """Encrypts one vector for one session.

    ``min_clients`` is the client's own floor: it refuses a session announcing
    a weaker one. ``round_index``, if given, must match the announcement.
    """

    def __init__(
        self,
        client_id: int,
        public_key: PaillierPublicKey,
        signing_key: Ed25519PrivateKey,
        *,
        min_clients: int = 1,
        round_index: int | None = None,
        pool: RandomizerPool | None = None,
        processes: int = 1,
        randomizers: str = "full",
    ) -> None:
        if not (isinstance(client_id, int) and 0 <= client_id <= MAX_CLIENT_ID):
            raise ValueError(f"client id must be in [0, {MAX_CLIENT_ID}]")
        self.client_id = client_id
        self.public_key = public_key
        self._signing_key = signing_key
        self.min_clients = min_clients
        self.round_index = round_index
        if randomizers not in RANDOMIZER_MODES:
            raise ValueError(f"randomizers must be one of {RANDOMIZER_MODES}")
        self.pool = pool
        self.processes = processes
        self.randomizers = randomizers  # "full" or "djn": see protocols.paillier.encryption
        self.state = ClientState.WAITING
        self._session_id = b""
        self._round = 0
        self._params: SessionParams | None = None

    def _abort(self, error: ProtocolError) -> ProtocolError:
        self.state = ClientState.ABORTED
        return error

    def receive(self, frame: bytes) -> list[bytes]:
        """Accept the round announcement; returns no frames (call :meth:`upload` next)."""
        if self.state is not ClientState.WAITING:
            raise self._abort(
                LocalProtocolError(f"no message expected in state {self.state.value}")
            )
        try:
            header, kind, body = _open(frame, receiver=self.client_id)
            if header.sender != SERVER_ID or kind is not Kind.ROUND_ANNOUNCEMENT:
                raise SessionMismatch("expected a round announcement from the aggregator")
            if self.round_index is not None and header.round != self.round_index:
                raise SessionMismatch(
                    f"announcement for round {header.round}, expected {self.round_index}"
                )
            params = RoundAnnouncement.parse(body).params
            if params.key_fingerprint != self.public_key.fingerprint:
                raise ForeignKey("the session uses another public key")
            if not params.layout.fits_key(self.public_key.bits):
                raise MalformedMessage("the packing layout overflows the key's plaintext space")
            if params.min_clients < self.min_clients:
                raise RemoteProtocolError(
                    f"session allows decryption of {params.min_clients} clients, "
                    f"this client requires {self.min_clients}"
                )
        except ProtocolError as error:
            raise self._abort(error) from None
        self._session_id, self._round, self._params = header.session_id, header.round, params
        self.state = ClientState.READY
        return []

    def upload(self, vector: np.ndarray) -> bytes:
        """Pack, encrypt and sign ``vector`` (uint64 ring elements): the frame to upload."""
        if self.state is not ClientState.READY or self._params is None:
            raise self._abort(LocalProtocolError(f"cannot upload in state {self.state.value}"))
        params = self._params
        try:
            plaintexts = params.layout.pack(np.asarray(vector))
        except ValueError as error:  # EncodingError: wrong shape, dtype or range
            raise self._abort(LocalProtocolError(str(error))) from error
        ciphertexts = encrypt_packed(
            self.public_key,
            plaintexts,
            pool=self.pool,
            processes=self.processes,
            randomizers=self.randomizers,  # type: ignore[arg-type]
        )
        blob = ciphertexts_to_bytes(self.public_key, ciphertexts)
        statement = update_statement(
            self._session_id,
            self._round,
            self.client_id,
            params.digest(self._session_id, self._round),
            hashlib.sha256(blob).digest(),
        )
        message = EncryptedUpdate(
            self.public_key.fingerprint, blob, self._signing_key.sign(statement)
        )
        self.state = ClientState.UPLOADED
        return _frame(
            message.kind, self._session_id, self._round, self.client_id, SERVER_ID, message.body()
        )


# -- shared validation of decryption requests ------------------------------------------------
def _verify_signature(key: Ed25519PublicKey, signature: bytes, statement: bytes) -> None:
    try:
        key.verify(signature, statement)
    except _CryptographyInvalidSignature:
        raise InvalidSignature("client signature does not verify") from None


class _RequestChecker:
    """What every key holder checks before it lets an aggregate be decrypted."""

    def __init__(
        self,
        public_key: PaillierPublicKey,
        clients: ClientRegistry,
        *,
        mode: Mode,
        min_clients: int,
        my_id: int,
        contributions: str,
    ) -> None:
        if not (isinstance(min_clients, int) and min_clients >= 1):
            raise ValueError("min_clients must be a positive integer")
        if contributions not in ("required", "forbidden", "optional"):
            raise ValueError("contributions must be 'required', 'forbidden' or 'optional'")
        self.contributions = contributions
        self.public_key = public_key
        self.clients = clients  # a live view: clients registered later are honoured
        self.mode = mode
        self.min_clients = min_clients
        self.my_id = my_id
        self.served_sessions: set[bytes] = set()

    def check(self, frame: bytes) -> tuple[FrameHeader, DecryptionRequest, list[Any]]:
        header, kind, body = _open(frame, receiver=self.my_id)
        if header.sender != SERVER_ID or kind is not Kind.DECRYPTION_REQUEST:
            raise SessionMismatch("expected a decryption request from the aggregator")
        if header.session_id in self.served_sessions:
            raise ReplayedMessage("this session was already decrypted once")
        request = DecryptionRequest.parse(body, ciphertext_bytes=self.public_key.ciphertext_bytes)
        if self.contributions == "required" and request.contributions is None:
            raise RemoteProtocolError("this key holder recomputes the aggregate: send them all")
        if self.contributions == "forbidden" and request.contributions is not None:
            raise RemoteProtocolError("this decryptor must never receive individual ciphertexts")
        params = request.params
        if params.key_fingerprint != self.public_key.fingerprint:
            raise ForeignKey("the request names another public key")
        if params.mode is not self.mode:
            raise SessionMismatch(
                f"request for mode {params.mode.name}, this key holder serves {self.mode.name}"
            )
        if not params.layout.fits_key(self.public_key.bits):
            raise MalformedMessage("the packing layout overflows the key's plaintext space")
        contributors = request.contributors
        if len(set(contributors)) != len(contributors):
            raise ReplayedMessage("a contributor is listed twice")
        if len(set(request.digests)) != len(request.digests):
            raise ReplayedMessage("two contributors share one ciphertext")
        floor = max(self.min_clients, params.min_clients)
        if len(contributors) < floor:
            raise BelowThreshold(len(contributors), floor, "decryption request")
        params.layout.check_summands(len(contributors))
        params_digest = params.digest(header.session_id, header.round)
        attestations = zip(contributors, request.digests, request.signatures, strict=True)
        for client_id, digest, signature in attestations:
            key = self.clients.get(client_id)
            if key is None:
                raise UnknownParty(f"contributor {client_id} is not registered")
            _verify_signature(
                key,
                signature,
                update_statement(header.session_id, header.round, client_id, params_digest, digest),
            )
        count = params.layout.num_plaintexts
        aggregate = ciphertexts_from_bytes(self.public_key, request.aggregate, count)
        if request.contributions is not None:
            batches = []
            for digest, contribution in zip(request.digests, request.contributions, strict=True):
                if hashlib.sha256(contribution).digest() != digest:
                    raise ConsistencyError("a contribution does not match its signed digest")
                batches.append(ciphertexts_from_bytes(self.public_key, contribution, count))
            if add_ciphertexts(self.public_key, batches) != aggregate:
                raise ConsistencyError("the aggregate is not the product of the contributions")
        self.served_sessions.add(header.session_id)
        return header, request, aggregate


class ThresholdKeyHolder:
    """Holds one share; answers a valid decryption request with a proven partial decryption."""

    def __init__(
        self,
        share: KeyShare,
        clients: ClientRegistry,
        *,
        min_clients: int,
        require_contributions: bool = False,
    ) -> None:
        self.share = share
        self.require_contributions = require_contributions
        self._checker = _RequestChecker(
            share.params.public_key,
            clients,
            mode=Mode.THRESHOLD,
            min_clients=min_clients,
            my_id=key_holder_id(share.index),
            contributions="required" if require_contributions else "optional",
        )

    @property
    def party_id(self) -> int:
        return self._checker.my_id

    def receive(self, frame: bytes) -> list[bytes]:
        header, request, aggregate = self._checker.check(frame)
        context = _context(header.session_id, header.round, request.params, request.aggregate)
        partial = partial_decrypt(self.share, aggregate, context=context)
        message = PartialDecryptionMessage(
            partial.index,
            ciphertexts_to_bytes(self.share.params.public_key, partial.values),
            partial.commitment_ciphertexts,
            partial.commitment_generator,
            partial.response,
        )
        return [
            _frame(
                message.kind,
                header.session_id,
                header.round,
                self.party_id,
                SERVER_ID,
                message.body(),
            )
        ]


class TwoPartyDecryptor:
    """Holds the whole private key; decrypts only aggregates, never sees a single contribution."""

    def __init__(
        self, private_key: PaillierPrivateKey, clients: ClientRegistry, *, min_clients: int
    ) -> None:
        self.private_key = private_key
        self._checker = _RequestChecker(
            private_key.public_key,
            clients,
            mode=Mode.TWO_PARTY,
            min_clients=min_clients,
            my_id=key_holder_id(1),
            contributions="forbidden",
        )

    @property
    def party_id(self) -> int:
        return self._checker.my_id

    def receive(self, frame: bytes) -> list[bytes]:
        header, request, aggregate = self._checker.check(frame)
        plaintexts = self.private_key.decrypt_raw(aggregate)
        size = self.private_key.public_key.plaintext_bytes
        message = AggregatePlaintext(b"".join(p.to_bytes(size, "big") for p in plaintexts))
        return [
            _frame(
                message.kind,
                header.session_id,
                header.round,
                self.party_id,
                SERVER_ID,
                message.body(),
            )
        ]


# -- aggregator --------------------------------------------------------------------------------
class AggregatorState(enum.Enum):
    COLLECTING = "collecting"
    DECRYPTING = "decrypting"
    DONE = "done"
    ABORTED = "aborted"


@dataclass(frozen=True)
class AggregationResult:
    total: np.ndarray  # uint64, sum modulo 2^bits over ``contributors``
    contributors: tuple[int, ...]
    rejected: Mapping[int, str] = field(default_factory=dict)  # client -> error type
    key_holders_used: tuple[int, ...] = ()


@dataclass
class _Contribution:
    digest: bytes
    signature: bytes
    blob: bytes | None


class PaillierAggregator:
    """Collects encrypted updates, multiplies them, and gets only their sum decrypted.

    ``threshold_params`` selects the threshold mode (the aggregator verifies
    and combines partial decryptions); without it the mode is two-party.
    """

    def __init__(
        self,
        public_key: PaillierPublicKey,
        clients: ClientRegistry,
        *,
        bits: int,
        length: int,
        min_clients: int,
        max_clients: int | None = None,
        threshold_params: ThresholdParams | None = None,
        send_contributions: bool = False,
        session_id: bytes | None = None,
        round_index: int = 0,
    ) -> None:
        if not clients:
            raise ValueError("no clients registered")
        for client_id in clients:
            if not (isinstance(client_id, int) and 0 <= client_id <= MAX_CLIENT_ID):
                raise ValueError(f"client id {client_id!r} out of range")
        if max_clients is None:  # at least min_clients, so a thin round ends in BelowThreshold
            max_clients = max(len(clients), min_clients)
        if max_clients < len(clients):
            raise ValueError("max_clients is below the number of registered clients")
        if threshold_params is not None and threshold_params.public_key != public_key:
            raise ValueError("threshold parameters belong to another key")
        if threshold_params is None and send_contributions:
            raise ValueError("the two-party decryptor must never receive individual ciphertexts")
        layout = PackingLayout.for_key(
            public_key.bits, bits=bits, max_clients=max_clients, length=length
        )
        self.public_key = public_key
        self.clients = dict(clients)
        self.threshold_params = threshold_params
        self.send_contributions = send_contributions
        self.session_id = secrets.token_bytes(SESSION_ID_SIZE) if session_id is None else session_id
        if len(self.session_id) != SESSION_ID_SIZE:
            raise ValueError(f"session_id must be {SESSION_ID_SIZE} bytes")
        self.round_index = round_index
        self.params = SessionParams(
            key_fingerprint=public_key.fingerprint,
            mode=Mode.THRESHOLD if threshold_params else Mode.TWO_PARTY,
            bits=bits,
            headroom_bits=layout.headroom_bits,
            slots=layout.slots,
            length=length,
            min_clients=min_clients,
            max_clients=max_clients,
        )
        self._params_digest = self.params.digest(self.session_id, round_index)
        self.state = AggregatorState.COLLECTING
        self._contributions: dict[int, _Contribution] = {}
        self._digests: set[bytes] = set()
        self._aggregate: list[Any] | None = None
        self.rejected: dict[int, str] = {}
        self._partials: dict[int, PartialDecryption] = {}
        self._bad_key_holders: set[int] = set()
        self._request_blob = b""
        self.result: AggregationResult | None = None

    @property
    def layout(self) -> PackingLayout:
        return self.params.layout

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(sorted(self._contributions))

    def _send(self, kind: Kind, receiver: int, body: bytes) -> bytes:
        return _frame(kind, self.session_id, self.round_index, SERVER_ID, receiver, body)

    def start(self) -> list[bytes]:
        """One announcement per registered client."""
        body = RoundAnnouncement(self.params).body()
        return [self._send(Kind.ROUND_ANNOUNCEMENT, cid, body) for cid in sorted(self.clients)]

    def announcement_for(self, client_id: int) -> bytes:
        if client_id not in self.clients:
            raise LocalProtocolError(f"client {client_id} is not registered")
        return self._send(Kind.ROUND_ANNOUNCEMENT, client_id, RoundAnnouncement(self.params).body())

    def receive(self, frame: bytes) -> list[bytes]:
        header, kind, body = _open(frame, receiver=SERVER_ID)
        if header.session_id != self.session_id or header.round != self.round_index:
            raise SessionMismatch("frame of another session or round")
        if kind is Kind.ENCRYPTED_UPDATE:
            self._receive_update(header, body)
            return []
        if kind is Kind.PARTIAL_DECRYPTION:
            self._receive_partial(header, body)
            return []
        if kind is Kind.AGGREGATE_PLAINTEXT:
            self._receive_plaintext(header, body)
            return []
        raise MalformedMessage(f"the aggregator does not accept {kind.name}")

    def _receive_update(self, header: FrameHeader, body: bytes) -> None:
        sender = header.sender
        if self.state is not AggregatorState.COLLECTING:
            raise SessionMismatch("update arrived after collection closed")
        key = self.clients.get(sender)
        if key is None:
            raise UnknownParty(f"client {sender} is not registered for this session")
        if sender in self._contributions:
            raise ReplayedMessage(f"client {sender} already contributed")
        if sender in self.rejected:
            raise ReplayedMessage(f"client {sender} was already rejected")
        size = self.layout.num_plaintexts * self.public_key.ciphertext_bytes
        update = EncryptedUpdate.parse(body, ciphertexts_size=size)
        if update.key_fingerprint != self.public_key.fingerprint:
            raise ForeignKey("update encrypted under another key")
        digest = hashlib.sha256(update.ciphertexts).digest()
        _verify_signature(
            key,
            update.signature,
            update_statement(
                self.session_id, self.round_index, sender, self._params_digest, digest
            ),
        )
        # From here on the client itself vouched for these bytes: defects exclude it.
        try:
            if digest in self._digests:
                raise ReplayedMessage("ciphertexts identical to another client's")
            ciphertexts = ciphertexts_from_bytes(
                self.public_key, update.ciphertexts, self.layout.num_plaintexts
            )
        except ProtocolError as error:
            self.rejected[sender] = type(error).__name__
            raise
        self._aggregate = (
            ciphertexts
            if self._aggregate is None
            else add_ciphertexts(self.public_key, [self._aggregate, ciphertexts])
        )
        self._digests.add(digest)
        self._contributions[sender] = _Contribution(
            digest, update.signature, update.ciphertexts if self.send_contributions else None
        )

    def close_collection(self) -> list[bytes]:
        """Stop accepting updates; the decryption requests for the key holders."""
        if self.state is not AggregatorState.COLLECTING:
            raise LocalProtocolError(f"cannot close collection in state {self.state.value}")
        contributors = self.contributors
        if len(contributors) < self.params.min_clients or self._aggregate is None:
            self.state = AggregatorState.ABORTED
            raise BelowThreshold(len(contributors), self.params.min_clients, "upload")
        self.layout.check_summands(len(contributors))
        self._request_blob = ciphertexts_to_bytes(self.public_key, self._aggregate)
        contributions = None
        if self.send_contributions:
            contributions = tuple(self._contributions[c].blob or b"" for c in contributors)
        request = DecryptionRequest(
            self.params,
            contributors,
            tuple(self._contributions[c].digest for c in contributors),
            tuple(self._contributions[c].signature for c in contributors),
            self._request_blob,
            contributions,
        )
        body = request.body()
        self.state = AggregatorState.DECRYPTING
        holders = range(1, self.threshold_params.parties + 1) if self.threshold_params else (1,)
        return [self._send(Kind.DECRYPTION_REQUEST, key_holder_id(i), body) for i in holders]

    def _key_holder_index(self, sender: int) -> int:
        parties = self.threshold_params.parties if self.threshold_params else 1
        for index in range(1, parties + 1):
            if key_holder_id(index) == sender:
                return index
        raise UnknownParty(f"party {sender:#x} is not a key holder of this session")

    def _receive_partial(self, header: FrameHeader, body: bytes) -> None:
        if self.threshold_params is None:
            raise MalformedMessage("partial decryptions exist only in threshold mode")
        if self.state is not AggregatorState.DECRYPTING:
            raise SessionMismatch(f"partial decryption arrived in state {self.state.value}")
        index = self._key_holder_index(header.sender)
        if index in self._partials or index in self._bad_key_holders:
            raise ReplayedMessage(f"key holder {index} already answered")
        size = self.layout.num_plaintexts * self.public_key.ciphertext_bytes
        message = PartialDecryptionMessage.parse(
            body, partials_size=size, key_bytes=self.public_key.plaintext_bytes
        )
        if message.index != index:
            raise SessionMismatch("partial decryption index does not match its sender")
        gmp = gmpy2()
        values = tuple(
            int.from_bytes(message.partials[k : k + self.public_key.ciphertext_bytes], "big")
            for k in range(0, size, self.public_key.ciphertext_bytes)
        )
        partial = PartialDecryption(
            index,
            values,
            message.commitment_ciphertexts,
            message.commitment_generator,
            message.response,
        )
        context = _context(self.session_id, self.round_index, self.params, self._request_blob)
        assert self._aggregate is not None
        try:
            verify_partial(
                self.threshold_params,
                [gmp.mpz(c) for c in self._aggregate],
                partial,
                context=context,
            )
        except InvalidPartialDecryption:
            self._bad_key_holders.add(index)
            raise
        self._partials[index] = partial
        if len(self._partials) >= self.threshold_params.threshold:
            try:
                plaintexts = combine_partials(self.threshold_params, list(self._partials.values()))
            except DecryptionError:
                self.state = AggregatorState.ABORTED
                raise
            self._finish(
                plaintexts, tuple(sorted(self._partials))[: self.threshold_params.threshold]
            )

    def _receive_plaintext(self, header: FrameHeader, body: bytes) -> None:
        if self.threshold_params is not None:
            raise MalformedMessage("plaintext answers exist only in two-party mode")
        if self.state is not AggregatorState.DECRYPTING:
            raise SessionMismatch(f"plaintext arrived in state {self.state.value}")
        self._key_holder_index(header.sender)
        size = self.public_key.plaintext_bytes
        message = AggregatePlaintext.parse(body, size=self.layout.num_plaintexts * size)
        plaintexts = [
            int.from_bytes(message.plaintexts[k : k + size], "big")
            for k in range(0, len(message.plaintexts), size)
        ]
        if any(p >= self.public_key.n for p in plaintexts):
            self.state = AggregatorState.ABORTED
            raise DecryptionError("plaintext out of range")
        self._finish(plaintexts, (1,))

    def _finish(self, plaintexts: list[int], key_holders: tuple[int, ...]) -> None:
        try:
            total = self.layout.unpack(plaintexts, count=len(self._contributions))
        except SlotOverflow:
            self.state = AggregatorState.ABORTED
            raise
        self.result = AggregationResult(total, self.contributors, dict(self.rejected), key_holders)
        self.state = AggregatorState.DONE

    def missing_key_holders(self) -> int:
        """How many more valid partial decryptions are needed (0 once done)."""
        if self.threshold_params is None:
            return 0 if self.state is AggregatorState.DONE else 1
        return max(0, self.threshold_params.threshold - len(self._partials))


__all__ += ["ClientRegistry"]
