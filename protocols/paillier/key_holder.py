"""The parties that decrypt, sans-IO: threshold key holders and the two-party decryptor.

Both outlive sessions and answer one :class:`~.messages.DecryptionRequest` per
session id. Before anything is decrypted, each checks on its own (not on the
aggregator's word): the request is for its key and mode, names at least
``max(own min_clients, session min_clients)`` distinct registered
contributors, each with a valid signature over its ciphertext digest for this
session, round and parameters; no contributor or digest twice; the count fits
the slot headroom; every ciphertext lies in Z*_{n^2}; with
``require_contributions``, the aggregate is the product of the signed
contributions. A refused request raises its typed error and leaves the session
unserved (states: :class:`~.states.KeyHolderState`).

The request is decoded against its own declared size (read from its first
bytes, no copy), with no more contributors than registered clients, before
anything proportional to its length is allocated.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import (
    BelowThreshold,
    ConsistencyError,
    MalformedMessage,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from ..wire import HEADER_SIZE, SERVER_ID, FrameHeader
from .encryption import add_ciphertexts, ciphertexts_from_bytes, ciphertexts_to_bytes
from .errors import ForeignKey, UnknownParty
from .keys import PaillierPrivateKey, PaillierPublicKey
from .messages import (
    AggregatePlaintext,
    ClientRegistry,
    DecryptionRequest,
    Mode,
    PartialDecryptionMessage,
    decryption_context,
    encode_message,
    key_holder_id,
    open_frame,
    update_statement,
    verify_update_signature,
)
from .states import KeyHolderState, Role, next_state, received
from .threshold import KeyShare, partial_decrypt

__all__ = ["ThresholdKeyHolder", "TwoPartyDecryptor"]


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
        self.served_sessions: set[bytes] = set()  # the session ids in state SERVED

    def session_state(self, session_id: bytes) -> KeyHolderState:
        return KeyHolderState.SERVED if session_id in self.served_sessions else KeyHolderState.NEW

    def _open(self, frame: bytes) -> tuple[FrameHeader, Any, bytes]:
        declared = DecryptionRequest.declared_body_size(
            memoryview(frame)[HEADER_SIZE:],
            ciphertext_bytes=self.public_key.ciphertext_bytes,
            max_contributors=len(self.clients),
        )
        return open_frame(frame, receiver=self.my_id, max_body=declared)

    def check(self, frame: bytes) -> tuple[FrameHeader, DecryptionRequest, list[Any]]:
        header, kind, body = self._open(frame)
        event = received(kind)
        state = self.session_state(header.session_id)
        if header.sender != SERVER_ID or next_state(Role.KEY_HOLDER, KeyHolderState.NEW, event) is None:
            raise SessionMismatch("expected a decryption request from the aggregator")
        if next_state(Role.KEY_HOLDER, state, event) is None:
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
            verify_update_signature(
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
        self.served_sessions.add(header.session_id)  # NEW -> SERVED
        return header, request, aggregate


class _DecryptingParty:
    """What both decrypting parties share: the request checks, the id, the per-session state."""

    _checker: _RequestChecker

    @property
    def party_id(self) -> int:
        return self._checker.my_id

    def session_state(self, session_id: bytes) -> KeyHolderState:
        return self._checker.session_state(session_id)

    def _answer(self, header: FrameHeader, message: Any) -> list[bytes]:
        """``message`` to the aggregator, in the session and round of the request."""
        return [
            encode_message(
                message.kind, header.session_id, header.round, self.party_id, SERVER_ID,
                message.body(),
            )
        ]


class ThresholdKeyHolder(_DecryptingParty):
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

    def receive(self, frame: bytes) -> list[bytes]:
        header, request, aggregate = self._checker.check(frame)
        context = decryption_context(
            header.session_id, header.round, request.params, request.aggregate
        )
        partial = partial_decrypt(self.share, aggregate, context=context)
        return self._answer(header, PartialDecryptionMessage(
            partial.index,
            ciphertexts_to_bytes(self.share.params.public_key, partial.values),
            partial.commitment_ciphertexts,
            partial.commitment_generator,
            partial.response,
        ))


class TwoPartyDecryptor(_DecryptingParty):
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

    def receive(self, frame: bytes) -> list[bytes]:
        header, _, aggregate = self._checker.check(frame)
        plaintexts = self.private_key.decrypt_raw(aggregate)
        size = self.private_key.public_key.plaintext_bytes
        return self._answer(header, AggregatePlaintext(
            b"".join(p.to_bytes(size, "big") for p in plaintexts)))
