"""Paillier protocol messages and their byte layout on top of :mod:`protocols.wire`.

Every message travels in a wire frame (protocol code 2) whose header binds it
to the session id, round, sender and receiver. Party ids: clients use
``0 .. 0xFFFFFEFF``; the aggregator is ``wire.SERVER_ID``; key holder ``i``
(1-based) is ``KEY_HOLDER_ID_BASE + i``.

Bodies (u8/u32 big-endian, ``blob`` = u32 length || bytes)::

    SessionParams        blob(32) key_fingerprint | u8 mode | u8 bits | u8 headroom_bits
                         | u32 slots | u32 length | u32 min_clients | u32 max_clients
    1 RoundAnnouncement  SessionParams
    2 EncryptedUpdate    blob(32) key_fingerprint | blob(C*L) ciphertexts | blob(64) signature
    3 DecryptionRequest  SessionParams | u32-list contributors | blob(32*k) digests
                         | blob(64*k) signatures | blob(C*L) aggregate
                         | u8 has_contributions | k x blob(C*L) contributions (if set)
    4 PartialDecryption  u8 index | blob(C*L) partials | bigint a | bigint b | bigint z
    5 AggregatePlaintext blob(C*P) plaintexts

C = number of ciphertexts (ceil(length / slots)), L = ciphertext bytes
(= bytes of n^2), P = plaintext bytes (= bytes of n), k = contributors.

Every size above follows from the session's parameters, so each party bounds
a frame *before* decoding it (:func:`open_frame`'s ``max_body``): a client
knows the announcement's fixed size, the aggregator the exact size of an
update and the largest decryption share of its session, and a key holder reads
the request's own parameters and contributor count from the first bytes
(:meth:`DecryptionRequest.declared_body_size`, no copy) and accepts a body of
exactly that size, with no more contributors than it has registered clients.
An oversized frame costs a length comparison, nothing proportional to its size.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptographyInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import InvalidSignature, MalformedMessage, SessionMismatch
from ..wire import HEADER_SIZE, FrameHeader, Reader, Writer, decode_frame, encode_frame
from .packing import PackingLayout

__all__ = [
    "KEY_HOLDER_ID_BASE",
    "MAX_CLIENT_ID",
    "PROTOCOL_CODE",
    "AggregatePlaintext",
    "ClientRegistry",
    "DecryptionRequest",
    "EncryptedUpdate",
    "Kind",
    "Mode",
    "PartialDecryptionMessage",
    "RoundAnnouncement",
    "SessionParams",
    "decryption_context",
    "encode_message",
    "key_holder_id",
    "open_frame",
    "update_statement",
    "verify_update_signature",
]

PROTOCOL_CODE = 2
KEY_HOLDER_ID_BASE = 0xFFFFFF00
MAX_CLIENT_ID = KEY_HOLDER_ID_BASE - 1
FINGERPRINT_SIZE = 32
DIGEST_SIZE = 32
SIGNATURE_SIZE = 64  # Ed25519
MAX_VECTOR_LENGTH = 1 << 26
MAX_CONTRIBUTORS = 1 << 20
MAX_KEY_BYTES = 1024  # 8192-bit moduli
_U32 = 4  # a u32 field, and the length prefix of every blob

#: Client id -> Ed25519 identity key: who may sign updates (a PKI assumption, see the docs).
ClientRegistry = Mapping[int, Ed25519PublicKey]


class Kind(enum.IntEnum):
    ROUND_ANNOUNCEMENT = 1
    ENCRYPTED_UPDATE = 2
    DECRYPTION_REQUEST = 3
    PARTIAL_DECRYPTION = 4
    AGGREGATE_PLAINTEXT = 5


class Mode(enum.IntEnum):
    THRESHOLD = 1  # t-of-m key holders, none can decrypt alone
    TWO_PARTY = 2  # one decryptor with the whole key, sees only the aggregate


def key_holder_id(index: int) -> int:
    if not 1 <= index <= 0xFE:
        raise ValueError("key holder index must be in [1, 254]")
    return KEY_HOLDER_ID_BASE + index


def _check_bytes(name: str, value: bytes, size: int | None = None) -> None:
    if not isinstance(value, bytes):
        # ValueError for any bad field, as every message constructor here promises
        raise ValueError(f"{name} must be bytes")  # noqa: TRY004
    if size is not None and len(value) != size:
        raise ValueError(f"{name} must be {size} bytes")


@dataclass(frozen=True)
class SessionParams:
    """The public parameters of one session; clients sign their digest."""

    key_fingerprint: bytes
    mode: Mode
    bits: int
    headroom_bits: int
    slots: int
    length: int
    min_clients: int
    max_clients: int

    def __post_init__(self) -> None:
        _check_bytes("key_fingerprint", self.key_fingerprint, FINGERPRINT_SIZE)
        object.__setattr__(self, "mode", Mode(self.mode))
        self.layout  # validates bits, headroom, slots and length  # noqa: B018
        if not 1 <= self.length <= MAX_VECTOR_LENGTH:
            raise ValueError(f"length must be in [1, {MAX_VECTOR_LENGTH}]")
        if not (isinstance(self.min_clients, int) and 1 <= self.min_clients <= self.max_clients):
            raise ValueError("need 1 <= min_clients <= max_clients")
        if not (
            isinstance(self.max_clients, int)
            and self.max_clients <= min(MAX_CONTRIBUTORS, 1 << self.headroom_bits)
        ):
            raise ValueError("max_clients exceeds the slot headroom")

    #: bytes of the encoded parameters (fixed: blob(32), 3 x u8, 4 x u32)
    SIZE = _U32 + FINGERPRINT_SIZE + 3 + 4 * _U32

    @property
    def layout(self) -> PackingLayout:
        return PackingLayout(
            bits=self.bits, headroom_bits=self.headroom_bits, slots=self.slots, length=self.length
        )

    def write(self, writer: Writer) -> Writer:
        return (
            writer.blob(self.key_fingerprint)
            .u8(self.mode)
            .u8(self.bits)
            .u8(self.headroom_bits)
            .u32(self.slots)
            .u32(self.length)
            .u32(self.min_clients)
            .u32(self.max_clients)
        )

    @classmethod
    def read(cls, reader: Reader) -> SessionParams:
        fingerprint = reader.blob(exact_len=FINGERPRINT_SIZE)
        fields = (
            reader.u8(),
            reader.u8(),
            reader.u8(),
            reader.u32(),
            reader.u32(),
            reader.u32(),
            reader.u32(),
        )
        try:
            return cls(fingerprint, *fields)
        except ValueError as exc:
            raise MalformedMessage(f"invalid session parameters: {exc}") from exc

    def digest(self, session_id: bytes, round_index: int) -> bytes:
        encoded = self.write(Writer()).getvalue()
        return hashlib.sha256(
            b"secure_fedrec/paillier/params/v1"
            + session_id
            + struct.pack(">I", round_index)
            + encoded
        ).digest()


def update_statement(
    session_id: bytes,
    round_index: int,
    client_id: int,
    params_digest: bytes,
    ciphertext_digest: bytes,
) -> bytes:
    """What a client signs: its ciphertexts, bound to session, round, identity and parameters."""
    return (
        b"secure_fedrec/paillier/update/v1"
        + session_id
        + struct.pack(">II", round_index, client_id)
        + params_digest
        + ciphertext_digest
    )


@dataclass(frozen=True)
class RoundAnnouncement:
    kind = Kind.ROUND_ANNOUNCEMENT
    params: SessionParams

    BODY_SIZE = SessionParams.SIZE

    def body(self) -> bytes:
        return self.params.write(Writer()).getvalue()

    @classmethod
    def parse(cls, body: bytes) -> RoundAnnouncement:
        reader = Reader(body)
        message = cls(SessionParams.read(reader))
        reader.end()
        return message


@dataclass(frozen=True)
class EncryptedUpdate:
    kind = Kind.ENCRYPTED_UPDATE
    key_fingerprint: bytes
    ciphertexts: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_bytes("key_fingerprint", self.key_fingerprint, FINGERPRINT_SIZE)
        _check_bytes("ciphertexts", self.ciphertexts)
        _check_bytes("signature", self.signature, SIGNATURE_SIZE)

    def body(self) -> bytes:
        return (
            Writer()
            .blob(self.key_fingerprint)
            .blob(self.ciphertexts)
            .blob(self.signature)
            .getvalue()
        )

    @staticmethod
    def body_size(ciphertexts_size: int) -> int:
        return 3 * _U32 + FINGERPRINT_SIZE + ciphertexts_size + SIGNATURE_SIZE

    @classmethod
    def parse(cls, body: bytes, *, ciphertexts_size: int) -> EncryptedUpdate:
        reader = Reader(body)
        message = cls(
            reader.blob(exact_len=FINGERPRINT_SIZE),
            reader.blob(exact_len=ciphertexts_size),
            reader.blob(exact_len=SIGNATURE_SIZE),
        )
        reader.end()
        return message


@dataclass(frozen=True)
class DecryptionRequest:
    kind = Kind.DECRYPTION_REQUEST
    params: SessionParams
    contributors: tuple[int, ...]
    digests: tuple[bytes, ...]
    signatures: tuple[bytes, ...]
    aggregate: bytes
    contributions: tuple[bytes, ...] | None = None

    def __post_init__(self) -> None:
        k = len(self.contributors)
        if len(self.digests) != k or len(self.signatures) != k:
            raise ValueError("one digest and one signature per contributor")
        if self.contributions is not None and len(self.contributions) != k:
            raise ValueError("one contribution per contributor")
        for digest in self.digests:
            _check_bytes("digest", digest, DIGEST_SIZE)
        for signature in self.signatures:
            _check_bytes("signature", signature, SIGNATURE_SIZE)

    def body(self) -> bytes:
        writer = self.params.write(Writer())
        writer.u32_list(list(self.contributors)).blob(b"".join(self.digests)).blob(
            b"".join(self.signatures)
        )
        writer.blob(self.aggregate).u8(0 if self.contributions is None else 1)
        for contribution in self.contributions or ():
            writer.blob(contribution)
        return writer.getvalue()

    @staticmethod
    def body_size(
        params: SessionParams, contributors: int, *, ciphertext_bytes: int, contributions: bool
    ) -> int:
        """Bytes of a request for ``contributors`` clients in a session of ``params``."""
        aggregate = params.layout.num_plaintexts * ciphertext_bytes
        fixed = SessionParams.SIZE + 4 * _U32 + 1 + aggregate
        per_contributor = _U32 + DIGEST_SIZE + SIGNATURE_SIZE
        if contributions:
            per_contributor += _U32 + aggregate
        return fixed + contributors * per_contributor

    @classmethod
    def declared_body_size(
        cls, body: bytes | memoryview, *, ciphertext_bytes: int, max_contributors: int
    ) -> int:
        """The size the request in ``body`` declares, read from its first bytes without a copy.

        Reads the session parameters, the contributor count and the
        contributions flag (whose offset both fix); a count above
        ``max_contributors`` (the registered clients: every contributor must
        be one of them) or above the session's ``max_clients`` is refused here.
        """
        reader = Reader(body)
        params = SessionParams.read(reader)
        listed = reader.u32()
        if listed % _U32:
            raise MalformedMessage("array length is not a multiple of its item size")
        count = listed // _U32
        if count > min(params.max_clients, max_contributors):
            raise MalformedMessage(f"{count} contributors: more than this session can have")
        bare = cls.body_size(params, count, ciphertext_bytes=ciphertext_bytes, contributions=False)
        flag_offset = bare - 1
        if flag_offset >= len(body):
            raise MalformedMessage("truncated message body")
        flag = body[flag_offset]
        if flag not in (0, 1):
            raise MalformedMessage("bad contributions flag")
        return cls.body_size(params, count, ciphertext_bytes=ciphertext_bytes, contributions=bool(flag))

    @classmethod
    def parse(cls, body: bytes, *, ciphertext_bytes: int) -> DecryptionRequest:
        reader = Reader(body)
        params = SessionParams.read(reader)
        size = params.layout.num_plaintexts * ciphertext_bytes
        contributors = tuple(reader.u32_list(max_items=params.max_clients))
        k = len(contributors)
        digests = reader.blob(exact_len=k * DIGEST_SIZE)
        signatures = reader.blob(exact_len=k * SIGNATURE_SIZE)
        aggregate = reader.blob(exact_len=size)
        flag = reader.u8()
        if flag not in (0, 1):
            raise MalformedMessage("bad contributions flag")
        contributions = tuple(reader.blob(exact_len=size) for _ in range(k)) if flag else None
        reader.end()
        return cls(
            params,
            contributors,
            tuple(digests[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE] for i in range(k)),
            tuple(signatures[i * SIGNATURE_SIZE : (i + 1) * SIGNATURE_SIZE] for i in range(k)),
            aggregate,
            contributions,
        )


@dataclass(frozen=True)
class PartialDecryptionMessage:
    kind = Kind.PARTIAL_DECRYPTION
    index: int
    partials: bytes
    commitment_ciphertexts: int
    commitment_generator: int
    response: int

    def __post_init__(self) -> None:
        if not (isinstance(self.index, int) and 1 <= self.index <= 0xFE):
            raise ValueError("index out of range")
        _check_bytes("partials", self.partials)

    def body(self) -> bytes:
        return (
            Writer()
            .u8(self.index)
            .blob(self.partials)
            .bigint(self.commitment_ciphertexts)
            .bigint(self.commitment_generator)
            .bigint(self.response)
            .getvalue()
        )

    @staticmethod
    def _bigint_limits(key_bytes: int) -> tuple[int, int, int]:
        # a, b < n^2 (2P bytes); z = r + e*Δ*s_i has about |Δ*s_i| + 384 bits: 4P + 128 is ample
        return 2 * key_bytes, 2 * key_bytes, 4 * key_bytes + 128

    @classmethod
    def max_body_size(cls, *, partials_size: int, key_bytes: int) -> int:
        limits = cls._bigint_limits(key_bytes)
        return 1 + _U32 + partials_size + sum(_U32 + limit for limit in limits)

    @classmethod
    def parse(cls, body: bytes, *, partials_size: int, key_bytes: int) -> PartialDecryptionMessage:
        reader = Reader(body)
        a_limit, b_limit, z_limit = cls._bigint_limits(key_bytes)
        fields = (
            reader.u8(),
            reader.blob(exact_len=partials_size),
            reader.bigint(max_bytes=a_limit),
            reader.bigint(max_bytes=b_limit),
            reader.bigint(max_bytes=z_limit),
        )
        reader.end()
        try:
            return cls(*fields)
        except ValueError as exc:  # index 0 or 255 (fuzz contract, fuzz/targets.py)
            raise MalformedMessage(f"invalid partial decryption: {exc}") from None


@dataclass(frozen=True)
class AggregatePlaintext:
    kind = Kind.AGGREGATE_PLAINTEXT
    plaintexts: bytes

    def body(self) -> bytes:
        return Writer().blob(self.plaintexts).getvalue()

    @staticmethod
    def body_size(size: int) -> int:
        return _U32 + size

    @classmethod
    def parse(cls, body: bytes, *, size: int) -> AggregatePlaintext:
        reader = Reader(body)
        message = cls(reader.blob(exact_len=size))
        reader.end()
        return message


# -- frames: every body travels in a protocols.wire frame bound to its session ---------------
def encode_message(
    kind: Kind, session_id: bytes, round_index: int, sender: int, receiver: int, body: bytes
) -> bytes:
    return encode_frame(
        FrameHeader(PROTOCOL_CODE, int(kind), session_id, round_index, sender, receiver), body
    )


def open_frame(frame: bytes, *, receiver: int, max_body: int) -> tuple[FrameHeader, Kind, bytes]:
    """Header, kind and body of a Paillier frame for ``receiver``.

    ``max_body`` is the largest body the receiver's session allows: a longer
    frame is refused before its body is copied or decoded.
    """
    header, body = decode_frame(frame, max_size=HEADER_SIZE + max_body)
    if header.protocol != PROTOCOL_CODE:
        raise MalformedMessage(f"not a Paillier frame (protocol {header.protocol})")
    if header.receiver != receiver:
        raise SessionMismatch("frame addressed to another party")
    try:
        kind = Kind(header.kind)
    except ValueError as exc:
        raise MalformedMessage(f"unknown message kind {header.kind}") from exc
    return header, kind, body


def decryption_context(
    session_id: bytes, round_index: int, params: SessionParams, aggregate: bytes
) -> bytes:
    """What a partial decryption is bound to: this session's exact aggregate."""
    return hashlib.sha256(
        b"secure_fedrec/paillier/decryption/v1"
        + params.digest(session_id, round_index)
        + hashlib.sha256(aggregate).digest()
    ).digest()


def verify_update_signature(key: Ed25519PublicKey, signature: bytes, statement: bytes) -> None:
    """Raise :class:`~protocols.errors.InvalidSignature` unless ``signature`` signs ``statement``."""
    try:
        key.verify(signature, statement)
    except _CryptographyInvalidSignature:
        raise InvalidSignature("client signature does not verify") from None
