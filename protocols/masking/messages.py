"""Messages of the masking protocol and their wire encoding.

Every message travels in a :mod:`protocols.wire` frame (protocol code 1) whose
header carries the session id, the training round, the sender and the
receiver; the frame ``kind`` byte is the message's ``KIND``. Body layouts
(``u32`` big-endian; ``ids`` = ``u32 count-in-bytes || count × u32``, i.e. a
:meth:`Writer.u32_list`; ``blob`` = ``u32 length || bytes``)::

    1 SessionStart         S→C  u8 active | u8 bits | u32 threshold | u32 degree
                                | u32 vector_length | u32 min_survivors | blob graph_seed (32)
                                | ids participants
    2 AdvertiseKeys        C→S  blob c_pk (32) | blob s_pk (32) | blob signature (0 or 64)
    3 KeyDirectory         S→C  ids clients | blob keys (64 per client: c_pk || s_pk)
                                | blob signatures (0, or 64 per client)
    4 EncryptedShares      C→S  ids receivers | blob ciphertexts (90 per receiver)
                                | blob seed_commitment (32)
    5 ShareBundle          S→C  ids senders | blob ciphertexts (90 per sender)
    6 MaskedInput          C→S  u8 word_bytes (1, 2, 4 or 8) | 3 zero bytes | blob words
                                (little-endian; they start at byte 48 of the frame)
    7 ConsistencyRequest   S→C  ids survivors                       (active mode)
    8 ConsistencySignature C→S  blob signature (64)                  (active mode)
    9 UnmaskRequest        S→C  ids survivors | ids dropped | ids signers
                                | blob signatures (64 per signer, active mode)
                                | u32 survivor_count (|U3|, all neighbourhoods)
   10 UnmaskShares         C→S  ids seed_owners | blob seed_shares (33 each)
                                | ids key_owners | blob key_shares (33 each)

A share ciphertext is ChaCha20-Poly1305 over
``u32 owner | u32 holder | seed share (33) | key share (33)`` (74 bytes + 16
tag). Decoding rejects unknown kinds, wrong directions, truncated, padded or
oversized input with :class:`~protocols.errors.MalformedMessage`; nothing
else escapes :func:`decode` for any byte string.

Sizes are checked before anything is allocated: every kind has a largest
legal body for the decoder's :class:`Limits` (``max_body``), and a party that
knows its session decodes with :meth:`Limits.for_session` — the session's own
participant count, neighbourhood size and vector length — so a frame sized for
another session is refused after reading its 40-byte header.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import MalformedMessage
from ..keys import KEY_SIZE, SIGNATURE_SIZE
from ..shamir import SHARE_SIZE
from ..wire import (
    HEADER_SIZE,
    SERVER_ID,
    FrameHeader,
    Reader,
    Writer,
    encode_frame_parts,
    split_frame,
)
from .params import MaskingParams, SessionConfig

__all__ = [
    "PROTOCOL_CODE",
    "SHARE_CIPHERTEXT_SIZE",
    "SHARE_PLAINTEXT_SIZE",
    "AdvertiseKeys",
    "ConsistencyRequest",
    "ConsistencySignature",
    "EncryptedShares",
    "KeyDirectory",
    "KeyEntry",
    "Limits",
    "MaskedInput",
    "Message",
    "SessionStart",
    "ShareBundle",
    "UnmaskRequest",
    "UnmaskShares",
    "decode",
    "decode_kinds",
    "encode",
    "encode_body",
    "encode_writer",
    "max_frame_size",
    "write_key_directory",
    "write_share_bundle",
]

PROTOCOL_CODE = 1
SHARE_PLAINTEXT_SIZE = 4 + 4 + 2 * SHARE_SIZE
SHARE_CIPHERTEXT_SIZE = SHARE_PLAINTEXT_SIZE + 16
COMMITMENT_SIZE = 32


@dataclass(frozen=True)
class Limits:
    """Upper bounds a decoder enforces before allocating anything.

    ``max_neighbourhood`` bounds the lists that name members of one client's
    closed neighbourhood (key directories, share bundles, unmasking requests
    and shares); ``None`` means ``max_participants``. The defaults are what a
    client accepts from a server it has not heard from yet; once a session is
    known, both parties decode with :meth:`for_session`.
    """

    max_participants: int = 1 << 20
    max_vector_length: int = 1 << 28
    max_neighbourhood: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_participants", "max_vector_length", "max_neighbourhood"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"{name} must be an int")
        if self.max_participants < 2 or self.max_vector_length < 0:
            raise ValueError("limits must allow at least 2 participants")
        if self.max_neighbourhood is not None and not (
                2 <= self.max_neighbourhood <= self.max_participants):
            raise ValueError("max_neighbourhood must be in [2, max_participants]")

    @property
    def neighbourhood(self) -> int:
        return self.max_participants if self.max_neighbourhood is None else self.max_neighbourhood

    @classmethod
    def for_session(cls, config: SessionConfig) -> Limits:
        """The tightest bounds for ``config``: its participants, neighbourhood and length."""
        n = len(config)
        return cls(max_participants=n, max_vector_length=config.params.vector_length,
                   max_neighbourhood=min(n, config.params.degree + 1))

    def tightened(self, other: Limits | None) -> Limits:
        """The smaller of each bound of ``self`` and ``other`` (``self`` if there is none)."""
        if other is None:
            return self
        participants = min(self.max_participants, other.max_participants)
        return Limits(max_participants=participants,
                      max_vector_length=min(self.max_vector_length, other.max_vector_length),
                      max_neighbourhood=min(self.neighbourhood, other.neighbourhood, participants))


DEFAULT_LIMITS = Limits()


def _ids_size(count: int) -> int:
    return 4 + 4 * count


def _blob_size(length: int) -> int:
    return 4 + length


# Validation of every list in every message: written as whole-tuple passes (builtins
# over generators) because at n = 10,000 clients they run ~10^7 times per session.
def _ids(values: tuple[int, ...], name: str, *, distinct: bool = True) -> None:
    if not isinstance(values, tuple):
        raise TypeError(f"{name} must be a tuple")
    if not values:
        return
    if not all(type(v) is int for v in values) and not all(
            isinstance(v, int) for v in values):
        raise ValueError(f"{name}: client ids must be integers")
    if min(values) < 0 or max(values) >= SERVER_ID:
        raise ValueError(f"{name}: client id out of range")
    if distinct and len(set(values)) != len(values):
        raise ValueError(f"{name}: client ids must be distinct")


def _fixed(value: bytes, size: int, name: str) -> None:
    if not (isinstance(value, bytes) and len(value) == size):
        raise ValueError(f"{name} must be {size} bytes")


def _all_fixed(values: tuple[bytes, ...], size: int, name: str) -> None:
    if not all(type(v) is bytes and len(v) == size for v in values):
        for v in values:  # the slow path only to name the culprit (and accept subclasses)
            _fixed(v, size, name)


def _wire_ids(values: tuple[int, ...], name: str) -> tuple[int, ...]:
    """The checks of :func:`_ids` that a decoded u32 list still needs (it holds ints < 2^32)."""
    if values and (max(values) >= SERVER_ID or len(set(values)) != len(values)):
        raise MalformedMessage(f"{name}: client ids must be distinct and below {SERVER_ID:#x}")
    return values


def _decoded(cls: type, **fields: object) -> object:
    """An instance of the frozen message ``cls`` from fields its ``read`` already checked.

    ``read`` verifies every invariant ``__post_init__`` would (sizes exact, ids distinct
    and in range) on the wire's own terms; running the constructor's checks again cost
    a third of the decoding time of a neighbourhood-sized message.
    """
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def _chunks(blob: bytes, size: int) -> tuple[bytes, ...]:
    return tuple(blob[i:i + size] for i in range(0, len(blob), size))


@dataclass(frozen=True)
class SessionStart:
    KIND: ClassVar[int] = 1
    TO_SERVER: ClassVar[bool] = False
    config: SessionConfig

    def write(self, w: Writer) -> None:
        p = self.config.params
        w.u8(int(p.active)).u8(p.bits).u32(p.threshold).u32(p.degree).u32(p.vector_length)
        w.u32(p.min_survivors)
        w.blob(self.config.graph_seed).array(self.config.ids, ">u4")

    @staticmethod
    def max_body(limits: Limits) -> int:
        return 1 + 1 + 4 * 4 + _blob_size(32) + _ids_size(limits.max_participants)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> SessionStart:
        active, bits, threshold, degree, length = r.u8(), r.u8(), r.u32(), r.u32(), r.u32()
        min_survivors = r.u32()
        seed = r.blob(exact_len=32)
        # An array, not a tuple: a client of a large session never walks the ids in Python.
        participants = r.array(">u4", max_items=limits.max_participants)
        if active > 1:
            raise MalformedMessage("bad active flag")
        if length > limits.max_vector_length:
            raise MalformedMessage("vector length exceeds the limit")
        try:
            params = MaskingParams(threshold=threshold, degree=degree, bits=bits,
                                   vector_length=length, active=bool(active),
                                   min_survivors=min_survivors)
            return cls(SessionConfig(params, participants, seed))
        except (ValueError, TypeError) as exc:
            raise MalformedMessage(f"invalid session parameters: {exc}") from None


@dataclass(frozen=True)
class AdvertiseKeys:
    KIND: ClassVar[int] = 2
    TO_SERVER: ClassVar[bool] = True
    c_public: bytes
    s_public: bytes
    signature: bytes = b""

    def __post_init__(self) -> None:
        _fixed(self.c_public, KEY_SIZE, "c_public")
        _fixed(self.s_public, KEY_SIZE, "s_public")
        if len(self.signature) not in (0, SIGNATURE_SIZE):
            raise ValueError("signature must be empty or 64 bytes")

    def write(self, w: Writer) -> None:
        w.blob(self.c_public).blob(self.s_public).blob(self.signature)

    @staticmethod
    def max_body(limits: Limits) -> int:
        return 2 * _blob_size(KEY_SIZE) + _blob_size(SIGNATURE_SIZE)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> AdvertiseKeys:
        c_pk, s_pk = r.blob(exact_len=KEY_SIZE), r.blob(exact_len=KEY_SIZE)
        sig = r.blob(max_len=SIGNATURE_SIZE)
        if len(sig) not in (0, SIGNATURE_SIZE):
            raise MalformedMessage("signature must be empty or 64 bytes")
        return _decoded(cls, c_public=c_pk, s_public=s_pk, signature=sig)


@dataclass(frozen=True)
class KeyEntry:
    client_id: int
    c_public: bytes
    s_public: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class KeyDirectory:
    KIND: ClassVar[int] = 3
    TO_SERVER: ClassVar[bool] = False
    entries: tuple[KeyEntry, ...]

    def __post_init__(self) -> None:
        _ids(tuple(e.client_id for e in self.entries), "entries")
        signed = {len(e.signature) for e in self.entries}
        if not signed <= {0, SIGNATURE_SIZE} or len(signed) > 1:
            raise ValueError("either every entry is signed or none is")
        _all_fixed(tuple(e.c_public for e in self.entries), KEY_SIZE, "c_public")
        _all_fixed(tuple(e.s_public for e in self.entries), KEY_SIZE, "s_public")

    def write(self, w: Writer) -> None:
        write_key_directory(w, tuple(e.client_id for e in self.entries),
                            b"".join(e.c_public + e.s_public for e in self.entries),
                            b"".join(e.signature for e in self.entries))

    @staticmethod
    def max_body(limits: Limits) -> int:
        k = limits.neighbourhood
        return _ids_size(k) + _blob_size(2 * KEY_SIZE * k) + _blob_size(SIGNATURE_SIZE * k)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> KeyDirectory:
        ids = _wire_ids(r.u32_tuple(max_items=limits.neighbourhood), "entries")
        keys = r.blob(exact_len=2 * KEY_SIZE * len(ids))
        sigs = r.blob(max_len=SIGNATURE_SIZE * len(ids))
        if len(sigs) not in (0, SIGNATURE_SIZE * len(ids)):
            raise MalformedMessage("signatures must be absent or one per entry")
        sig_list = _chunks(sigs, SIGNATURE_SIZE) if sigs else (b"",) * len(ids)
        key_list = _chunks(keys, KEY_SIZE)  # c_pk, s_pk, c_pk, ...: every key exactly 32 bytes
        entries = tuple(map(KeyEntry, ids, key_list[0::2], key_list[1::2], sig_list))
        return _decoded(cls, entries=entries)


@dataclass(frozen=True)
class EncryptedShares:
    KIND: ClassVar[int] = 4
    TO_SERVER: ClassVar[bool] = True
    receivers: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    seed_commitment: bytes

    def __post_init__(self) -> None:
        _ids(self.receivers, "receivers")
        if len(self.ciphertexts) != len(self.receivers):
            raise ValueError("one ciphertext per receiver")
        _all_fixed(self.ciphertexts, SHARE_CIPHERTEXT_SIZE, "ciphertext")
        _fixed(self.seed_commitment, COMMITMENT_SIZE, "seed_commitment")

    def write(self, w: Writer) -> None:
        w.u32_list(self.receivers).blob(b"".join(self.ciphertexts)).blob(self.seed_commitment)

    @staticmethod
    def max_body(limits: Limits) -> int:
        k = limits.neighbourhood
        return _ids_size(k) + _blob_size(SHARE_CIPHERTEXT_SIZE * k) + _blob_size(COMMITMENT_SIZE)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> EncryptedShares:
        ids = _wire_ids(r.u32_tuple(max_items=limits.neighbourhood), "receivers")
        cts = r.blob(exact_len=SHARE_CIPHERTEXT_SIZE * len(ids))
        commitment = r.blob(exact_len=COMMITMENT_SIZE)
        return _decoded(cls, receivers=ids, ciphertexts=_chunks(cts, SHARE_CIPHERTEXT_SIZE),
                        seed_commitment=commitment)


@dataclass(frozen=True)
class ShareBundle:
    KIND: ClassVar[int] = 5
    TO_SERVER: ClassVar[bool] = False
    senders: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _ids(self.senders, "senders")
        if len(self.ciphertexts) != len(self.senders):
            raise ValueError("one ciphertext per sender")
        _all_fixed(self.ciphertexts, SHARE_CIPHERTEXT_SIZE, "ciphertext")

    def write(self, w: Writer) -> None:
        write_share_bundle(w, self.senders, b"".join(self.ciphertexts))

    @staticmethod
    def max_body(limits: Limits) -> int:
        k = limits.neighbourhood
        return _ids_size(k) + _blob_size(SHARE_CIPHERTEXT_SIZE * k)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> ShareBundle:
        ids = _wire_ids(r.u32_tuple(max_items=limits.neighbourhood), "senders")
        cts = r.blob(exact_len=SHARE_CIPHERTEXT_SIZE * len(ids))
        return _decoded(cls, senders=ids, ciphertexts=_chunks(cts, SHARE_CIPHERTEXT_SIZE))


def write_key_directory(w: Writer, ids: tuple[int, ...] | np.ndarray,
                        keys: bytes | memoryview, signatures: bytes | memoryview) -> None:
    """The body of a :class:`KeyDirectory` from its columns: ``keys`` holds ``c_pk || s_pk``
    of each client in ``ids`` order, ``signatures`` 64 bytes per client or nothing.

    The server of a large session writes directories straight from these columns instead
    of building ``KeyEntry`` objects (n * (k + 1) of them); the layout is written here
    only, for both paths.
    """
    w.u32_list(ids).blob(keys).blob(signatures)


def write_share_bundle(w: Writer, senders: tuple[int, ...] | np.ndarray,
                       ciphertexts: bytes | memoryview) -> None:
    """The body of a :class:`ShareBundle`: ``ciphertexts`` joined, one per sender, in order."""
    w.u32_list(senders).blob(ciphertexts)


def encode_writer(kind: int, w: Writer, *, session_id: bytes, round_index: int, sender: int,
                  receiver: int, protocol: int = PROTOCOL_CODE) -> bytes:
    """A frame of ``kind`` around a body already written to ``w`` (see the writers above)."""
    return encode_frame_parts(FrameHeader(protocol, kind, session_id, round_index, sender,
                                          receiver), w)


_WORD_DTYPES = tuple(np.dtype(f"<u{size}") for size in (1, 2, 4, 8))


@dataclass(frozen=True, eq=False)
class MaskedInput:
    KIND: ClassVar[int] = 6
    TO_SERVER: ClassVar[bool] = True
    #: the narrowest unsigned word holding the session's bits (``prg.wire_dtype``), reduced mod 2^bits
    words: np.ndarray

    def __post_init__(self) -> None:
        if not (isinstance(self.words, np.ndarray) and self.words.ndim == 1
                and self.words.dtype in _WORD_DTYPES):
            raise ValueError("words must be a 1-D little-endian uint8/16/32/64 array")

    def write(self, w: Writer) -> None:
        # Three zero bytes put the words at offset 48 of the frame: 8-byte aligned, so
        # the server adds them straight from the frame at full speed (2x an unaligned add).
        w.u8(self.words.dtype.itemsize).u8(0).u8(0).u8(0)
        w.blob(memoryview(np.ascontiguousarray(self.words)))

    @staticmethod
    def max_body(limits: Limits) -> int:
        return 4 + _blob_size(8 * limits.max_vector_length)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> MaskedInput:
        size = r.u8()
        if size not in (1, 2, 4, 8):
            raise MalformedMessage("word size must be 1, 2, 4 or 8 bytes")
        if (r.u8(), r.u8(), r.u8()) != (0, 0, 0):
            raise MalformedMessage("reserved bytes must be zero")
        words = r.array(f"<u{size}", max_items=limits.max_vector_length)
        return cls(words)


@dataclass(frozen=True)
class ConsistencyRequest:
    KIND: ClassVar[int] = 7
    TO_SERVER: ClassVar[bool] = False
    survivors: tuple[int, ...]

    def __post_init__(self) -> None:
        _ids(self.survivors, "survivors")

    def write(self, w: Writer) -> None:
        w.u32_list(self.survivors)

    @staticmethod
    def max_body(limits: Limits) -> int:
        return _ids_size(limits.max_participants)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> ConsistencyRequest:
        return _decoded(cls, survivors=_wire_ids(
            r.u32_tuple(max_items=limits.max_participants), "survivors"))


@dataclass(frozen=True)
class ConsistencySignature:
    KIND: ClassVar[int] = 8
    TO_SERVER: ClassVar[bool] = True
    signature: bytes

    def __post_init__(self) -> None:
        _fixed(self.signature, SIGNATURE_SIZE, "signature")

    def write(self, w: Writer) -> None:
        w.blob(self.signature)

    @staticmethod
    def max_body(limits: Limits) -> int:
        return _blob_size(SIGNATURE_SIZE)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> ConsistencySignature:
        return cls(r.blob(exact_len=SIGNATURE_SIZE))


@dataclass(frozen=True)
class UnmaskRequest:
    KIND: ClassVar[int] = 9
    TO_SERVER: ClassVar[bool] = False
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signers: tuple[int, ...] = ()
    signatures: tuple[bytes, ...] = ()
    #: |U3| over the whole session, checked against the session's ``min_survivors``.
    survivor_count: int = 0

    def __post_init__(self) -> None:
        # Overlap between survivors and dropped is *not* rejected here: it is a
        # well-formed but dishonest request, refused by the client's policy.
        _ids(self.survivors, "survivors")
        _ids(self.dropped, "dropped")
        _ids(self.signers, "signers")
        if len(self.signatures) != len(self.signers):
            raise ValueError("one signature per signer")
        _all_fixed(self.signatures, SIGNATURE_SIZE, "signature")
        if not (isinstance(self.survivor_count, int) and 0 <= self.survivor_count < SERVER_ID):
            raise ValueError(f"survivor_count out of range: {self.survivor_count!r}")

    def write(self, w: Writer) -> None:
        w.u32_list(self.survivors).u32_list(self.dropped).u32_list(self.signers)
        w.blob(b"".join(self.signatures)).u32(self.survivor_count)

    @staticmethod
    def max_body(limits: Limits) -> int:
        k = limits.neighbourhood
        return 3 * _ids_size(k) + _blob_size(SIGNATURE_SIZE * k) + 4

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> UnmaskRequest:
        survivors = _wire_ids(r.u32_tuple(max_items=limits.neighbourhood), "survivors")
        dropped = _wire_ids(r.u32_tuple(max_items=limits.neighbourhood), "dropped")
        signers = _wire_ids(r.u32_tuple(max_items=limits.neighbourhood), "signers")
        sigs = r.blob(exact_len=SIGNATURE_SIZE * len(signers))
        count = r.u32()
        if count >= SERVER_ID:
            raise MalformedMessage(f"survivor_count out of range: {count}")
        return _decoded(cls, survivors=survivors, dropped=dropped, signers=signers,
                        signatures=_chunks(sigs, SIGNATURE_SIZE), survivor_count=count)


@dataclass(frozen=True)
class UnmaskShares:
    KIND: ClassVar[int] = 10
    TO_SERVER: ClassVar[bool] = True
    seed_owners: tuple[int, ...]
    seed_shares: tuple[bytes, ...]
    key_owners: tuple[int, ...]
    key_shares: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _ids(self.seed_owners, "seed_owners")
        _ids(self.key_owners, "key_owners")
        if len(self.seed_shares) != len(self.seed_owners):
            raise ValueError("one seed share per owner")
        if len(self.key_shares) != len(self.key_owners):
            raise ValueError("one key share per owner")
        _all_fixed(self.seed_shares + self.key_shares, SHARE_SIZE, "share")

    def write(self, w: Writer) -> None:
        w.u32_list(self.seed_owners).blob(b"".join(self.seed_shares))
        w.u32_list(self.key_owners).blob(b"".join(self.key_shares))

    @staticmethod
    def max_body(limits: Limits) -> int:
        k = limits.neighbourhood
        return 2 * (_ids_size(k) + _blob_size(SHARE_SIZE * k))

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> UnmaskShares:
        seed_owners = _wire_ids(r.u32_tuple(max_items=limits.neighbourhood), "seed_owners")
        seed_shares = r.blob(exact_len=SHARE_SIZE * len(seed_owners))
        key_owners = _wire_ids(r.u32_tuple(max_items=limits.neighbourhood), "key_owners")
        key_shares = r.blob(exact_len=SHARE_SIZE * len(key_owners))
        return _decoded(cls, seed_owners=seed_owners, seed_shares=_chunks(seed_shares, SHARE_SIZE),
                        key_owners=key_owners, key_shares=_chunks(key_shares, SHARE_SIZE))


Message = (
    SessionStart | AdvertiseKeys | KeyDirectory | EncryptedShares | ShareBundle | MaskedInput
    | ConsistencyRequest | ConsistencySignature | UnmaskRequest | UnmaskShares
)
_BY_KIND: dict[int, type] = {
    cls.KIND: cls
    for cls in (SessionStart, AdvertiseKeys, KeyDirectory, EncryptedShares, ShareBundle,
                MaskedInput, ConsistencyRequest, ConsistencySignature, UnmaskRequest,
                UnmaskShares)
}


@dataclass(frozen=True)
class Envelope:
    """A decoded frame: who sent what to whom, in which session and round."""

    header: FrameHeader
    message: Message = field(compare=False)


def encode(message: Message, *, session_id: bytes, round_index: int, sender: int,
           receiver: int, protocol: int = PROTOCOL_CODE) -> bytes:
    header = FrameHeader(protocol, message.KIND, session_id, round_index, sender, receiver)
    w = Writer()
    message.write(w)
    return encode_frame_parts(header, w)


def encode_body(message: Message) -> bytes:
    """The body of ``message`` alone, to send one message to many receivers (see server)."""
    w = Writer()
    message.write(w)
    return w.getvalue()


def max_frame_size(limits: Limits = DEFAULT_LIMITS, kinds: Mapping[int, type] | None = None,
                   ) -> int:
    """The largest frame of any kind that :func:`decode` accepts under ``limits``."""
    kinds = _BY_KIND if kinds is None else kinds
    return HEADER_SIZE + max(cls.max_body(limits) for cls in kinds.values())


@functools.lru_cache(maxsize=256)
def _bounds(limits: Limits, kinds: tuple[tuple[int, type], ...],
            ) -> tuple[int, dict[int, tuple[type, int]]]:
    """The largest frame under ``limits`` and, per kind, its class and largest body.

    Every decode asks this; a party decodes thousands of frames under one Limits.
    """
    by_kind = {kind: (cls, cls.max_body(limits)) for kind, cls in kinds}
    return HEADER_SIZE + max(size for _, size in by_kind.values()), by_kind


def decode(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Parse one frame; every failure is :class:`MalformedMessage`.

    Nothing proportional to the frame's length is allocated before its kind's
    largest legal body under ``limits`` has been checked.
    """
    return decode_kinds(data, limits=limits, protocol=PROTOCOL_CODE, kinds=_BY_KIND)


def decode_kinds(data: bytes, *, limits: Limits, protocol: int,
                 kinds: Mapping[int, type]) -> Envelope:
    """:func:`decode` for the message ``kinds`` of ``protocol`` (shared with the multi-round
    variant, whose frames carry their own protocol code)."""
    max_frame, by_kind = _bounds(limits, tuple(kinds.items()))
    header, body = split_frame(data, max_size=max_frame)
    if header.protocol != protocol:
        raise MalformedMessage(f"not a frame of protocol {protocol} (protocol {header.protocol})")
    known = by_kind.get(header.kind)
    if known is None:
        raise MalformedMessage(f"unknown message kind {header.kind}")
    cls, max_body = known
    to_server, from_server = header.receiver == SERVER_ID, header.sender == SERVER_ID
    if cls.TO_SERVER != to_server or cls.TO_SERVER == from_server:
        raise MalformedMessage("message travels in the wrong direction")
    if body.nbytes > max_body:
        raise MalformedMessage(f"{cls.__name__} of {body.nbytes} bytes exceeds this session's "
                               f"limit of {max_body}")
    reader = Reader(body, max_blob=max_body)
    try:
        message = cls.read(reader, limits)
    except (ValueError, TypeError) as exc:
        raise MalformedMessage(f"invalid {cls.__name__}: {exc}") from None
    reader.end()
    return Envelope(header, message)
