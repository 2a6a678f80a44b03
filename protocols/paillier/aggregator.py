"""The aggregator of a Paillier session, sans-IO.

It announces the session, collects signed encrypted updates and multiplies
them (which adds the plaintexts), sends the aggregate with the contributor
list, digests and signatures to the key holders (:meth:`close_collection`),
and verifies and combines their answers into the sum modulo 2^bits.

Error policy (:mod:`.states`): a bad frame raises its typed error and is
dropped; the aggregator keeps its state, because one client must not be able
to end a session for everyone. A client is excluded only once its signature
verified (an unauthenticated header could name any client, and must not let a
third party exclude an honest one); a key holder whose partial decryption
fails its proof is excluded. The aggregator aborts, releasing nothing, when
the session cannot finish correctly: fewer than ``min_clients`` contributors
at close (it then sends no decryption request at all), decryption shares that
do not combine, or a slot overflow.

Every frame is bounded by this session's parameters before it is decoded: an
update has one exact size, a decryption share a maximum (:mod:`.messages`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import (
    BelowThreshold,
    DecryptionError,
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from ..wire import SERVER_ID, SESSION_ID_SIZE, FrameHeader
from ._lazy import gmpy2
from .encryption import add_ciphertexts, ciphertexts_from_bytes, ciphertexts_to_bytes
from .errors import ForeignKey, InvalidPartialDecryption, SlotOverflow, UnknownParty
from .keys import PaillierPublicKey
from .messages import (
    MAX_CLIENT_ID,
    AggregatePlaintext,
    ClientRegistry,
    DecryptionRequest,
    EncryptedUpdate,
    Kind,
    Mode,
    PartialDecryptionMessage,
    RoundAnnouncement,
    SessionParams,
    decryption_context,
    encode_message,
    key_holder_id,
    open_frame,
    update_statement,
    verify_update_signature,
)
from .packing import PackingLayout
from .states import AggregatorState, Event, Role, accepted_kinds, next_state, received
from .threshold import (
    PartialDecryption,
    ThresholdParams,
    combine_partials,
    verify_partial,
)

__all__ = ["AggregationResult", "PaillierAggregator"]


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
        self._batch_size = layout.num_plaintexts * public_key.ciphertext_bytes
        self._accepted = accepted_kinds(Role.AGGREGATOR, self.params.mode)
        self._max_body = max(self._body_limit(kind) for kind in self._accepted)
        self.state = AggregatorState.COLLECTING
        self._contributions: dict[int, _Contribution] = {}
        self._digests: set[bytes] = set()
        self._aggregate: list[Any] | None = None
        self.rejected: dict[int, str] = {}
        self._partials: dict[int, PartialDecryption] = {}
        self._bad_key_holders: set[int] = set()
        self._request_blob = b""
        self.result: AggregationResult | None = None

    def _body_limit(self, kind: Kind) -> int:
        """The largest body of ``kind`` this session can produce."""
        if kind is Kind.ENCRYPTED_UPDATE:
            return EncryptedUpdate.body_size(self._batch_size)
        if kind is Kind.PARTIAL_DECRYPTION:
            return PartialDecryptionMessage.max_body_size(
                partials_size=self._batch_size, key_bytes=self.public_key.plaintext_bytes
            )
        if kind is Kind.AGGREGATE_PLAINTEXT:
            return AggregatePlaintext.body_size(
                self.layout.num_plaintexts * self.public_key.plaintext_bytes
            )
        raise AssertionError(f"the aggregator never receives {kind.name}")

    @property
    def layout(self) -> PackingLayout:
        return self.params.layout

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(sorted(self._contributions))

    def _send(self, kind: Kind, receiver: int, body: bytes) -> bytes:
        return encode_message(kind, self.session_id, self.round_index, SERVER_ID, receiver, body)

    def _move(self, event: Event) -> AggregatorState | None:
        move = next_state(Role.AGGREGATOR, self.state, event, self.params.mode)
        assert move is None or isinstance(move, AggregatorState)
        return move

    def start(self) -> list[bytes]:
        """One announcement per registered client."""
        body = RoundAnnouncement(self.params).body()
        return [self._send(Kind.ROUND_ANNOUNCEMENT, cid, body) for cid in sorted(self.clients)]

    def announcement_for(self, client_id: int) -> bytes:
        if client_id not in self.clients:
            raise LocalProtocolError(f"client {client_id} is not registered")
        return self._send(Kind.ROUND_ANNOUNCEMENT, client_id, RoundAnnouncement(self.params).body())

    def receive(self, frame: bytes) -> list[bytes]:
        header, kind, body = open_frame(frame, receiver=SERVER_ID, max_body=self._max_body)
        if header.session_id != self.session_id or header.round != self.round_index:
            raise SessionMismatch("frame of another session or round")
        if kind not in self._accepted:
            if kind is Kind.PARTIAL_DECRYPTION:
                raise MalformedMessage("partial decryptions exist only in threshold mode")
            if kind is Kind.AGGREGATE_PLAINTEXT:
                raise MalformedMessage("plaintext answers exist only in two-party mode")
            raise MalformedMessage(f"the aggregator does not accept {kind.name}")
        if self._move(received(kind)) is None:  # a frame of another phase: late, early or replayed
            if kind is Kind.ENCRYPTED_UPDATE:
                raise SessionMismatch("update arrived after collection closed")
            raise SessionMismatch(
                f"{kind.name.lower().replace('_', ' ')} arrived in state {self.state.value}"
            )
        if kind is Kind.ENCRYPTED_UPDATE:
            self._receive_update(header, body)
        elif kind is Kind.PARTIAL_DECRYPTION:
            self._receive_partial(header, body)
        else:
            self._receive_plaintext(header, body)
        return []

    def _receive_update(self, header: FrameHeader, body: bytes) -> None:
        sender = header.sender
        key = self.clients.get(sender)
        if key is None:
            raise UnknownParty(f"client {sender} is not registered for this session")
        if sender in self._contributions:
            raise ReplayedMessage(f"client {sender} already contributed")
        if sender in self.rejected:
            raise ReplayedMessage(f"client {sender} was already rejected")
        update = EncryptedUpdate.parse(body, ciphertexts_size=self._batch_size)
        if update.key_fingerprint != self.public_key.fingerprint:
            raise ForeignKey("update encrypted under another key")
        digest = hashlib.sha256(update.ciphertexts).digest()
        verify_update_signature(
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
        """Stop accepting updates; the decryption requests for the key holders.

        With fewer than ``min_clients`` contributors the aggregator aborts and
        raises :class:`~protocols.errors.BelowThreshold` instead: no request
        leaves it, so nothing can be decrypted.
        """
        nxt = self._move(Event.CLOSE_COLLECTION)
        if nxt is None:
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
        self.state = nxt
        holders = range(1, self.threshold_params.parties + 1) if self.threshold_params else (1,)
        return [self._send(Kind.DECRYPTION_REQUEST, key_holder_id(i), body) for i in holders]

    def _key_holder_index(self, sender: int) -> int:
        parties = self.threshold_params.parties if self.threshold_params else 1
        for index in range(1, parties + 1):
            if key_holder_id(index) == sender:
                return index
        raise UnknownParty(f"party {sender:#x} is not a key holder of this session")

    def _receive_partial(self, header: FrameHeader, body: bytes) -> None:
        assert self.threshold_params is not None  # the table admits partials in threshold mode only
        index = self._key_holder_index(header.sender)
        if index in self._partials or index in self._bad_key_holders:
            raise ReplayedMessage(f"key holder {index} already answered")
        message = PartialDecryptionMessage.parse(
            body, partials_size=self._batch_size, key_bytes=self.public_key.plaintext_bytes
        )
        if message.index != index:
            raise SessionMismatch("partial decryption index does not match its sender")
        gmp = gmpy2()
        width = self.public_key.ciphertext_bytes
        values = tuple(
            int.from_bytes(message.partials[k : k + width], "big")
            for k in range(0, self._batch_size, width)
        )
        partial = PartialDecryption(
            index,
            values,
            message.commitment_ciphertexts,
            message.commitment_generator,
            message.response,
        )
        context = decryption_context(
            self.session_id, self.round_index, self.params, self._request_blob
        )
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
        nxt = self._move(Event.DECRYPTED)
        assert nxt is AggregatorState.DONE
        try:
            total = self.layout.unpack(plaintexts, count=len(self._contributions))
        except SlotOverflow:
            self.state = AggregatorState.ABORTED
            raise
        self.result = AggregationResult(total, self.contributors, dict(self.rejected), key_holders)
        self.state = nxt

    def missing_key_holders(self) -> int:
        """How many more valid partial decryptions are needed (0 once done)."""
        if self.threshold_params is None:
            return 0 if self.state is AggregatorState.DONE else 1
        return max(0, self.threshold_params.threshold - len(self._partials))
