"""The client (uploader) of a Paillier session, sans-IO.

It takes the aggregator's round announcement (:meth:`PaillierClient.receive`),
then packs, encrypts and signs its vector (:meth:`PaillierClient.upload`).
It has one peer, so any protocol error moves it to ``ABORTED`` and is
re-raised; an aborted client sends nothing more (the aggregator sees a
dropout). Refusals: an announcement of another key, round or receiver, a
packing layout the key cannot hold, or a ``min_clients`` below the client's
own floor (the aggregator could otherwise have a small sum decrypted).
"""

from __future__ import annotations

import hashlib

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import (
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
    SessionMismatch,
)
from ..wire import SERVER_ID
from .encryption import (
    RANDOMIZER_MODES,
    RandomizerPool,
    ciphertexts_to_bytes,
    encrypt_packed,
)
from .errors import ForeignKey
from .keys import PaillierPublicKey
from .messages import (
    MAX_CLIENT_ID,
    EncryptedUpdate,
    RoundAnnouncement,
    SessionParams,
    encode_message,
    open_frame,
    update_statement,
)
from .states import ClientState, Event, Role, next_state, received

__all__ = ["PaillierClient"]


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

    def _move(self, event: Event) -> ClientState | None:
        move = next_state(Role.CLIENT, self.state, event)  # no client move depends on the mode
        assert move is None or isinstance(move, ClientState)
        return move

    def receive(self, frame: bytes) -> list[bytes]:
        """Accept the round announcement; returns no frames (call :meth:`upload` next)."""
        if self._move(Event.ROUND_ANNOUNCEMENT) is None:
            raise self._abort(
                LocalProtocolError(f"no message expected in state {self.state.value}")
            )
        try:
            header, kind, body = open_frame(
                frame, receiver=self.client_id, max_body=RoundAnnouncement.BODY_SIZE
            )
            nxt = self._move(received(kind))
            if header.sender != SERVER_ID or nxt is None:
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
        self.state = nxt
        return []

    def upload(self, vector: np.ndarray) -> bytes:
        """Pack, encrypt and sign ``vector`` (uint64 ring elements): the frame to upload."""
        nxt = self._move(Event.UPLOAD)
        if nxt is None or self._params is None:
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
        self.state = nxt
        return encode_message(
            message.kind, self._session_id, self._round, self.client_id, SERVER_ID, message.body()
        )
