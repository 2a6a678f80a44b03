"""Versioned binary framing shared by every protocol message.

Byte layout of one frame (all integers big-endian)::

    offset  size  field
    0       4     magic        b"SFR1"
    4       1     version      WIRE_VERSION (1)
    5       1     protocol     protocol code (1 = masking, 2 = paillier, ...)
    6       1     kind         message kind, defined by the protocol
    7       1     flags        reserved, must be 0
    8       16    session_id   random per aggregation session
    24      4     round        the training round this session belongs to
    28      4     sender       party id (0xFFFFFFFF = server)
    32      4     receiver     party id (0xFFFFFFFF = server / broadcast)
    36      4     body_len     length of the body in bytes
    40      ...   body         a sequence of fields written with :class:`Writer`

A body field is either a fixed-size unsigned integer or a length-prefixed byte
string (``u32 length || bytes``). Arrays are byte strings whose length must be
an exact multiple of the item size. Decoding checks every length against the
bytes actually present and against a caller-supplied maximum, so truncated,
padded or oversized input fails with :class:`~protocols.errors.MalformedMessage`
before any allocation proportional to an attacker-chosen length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .errors import MalformedMessage

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "SERVER_ID",
    "WIRE_VERSION",
    "FrameHeader",
    "Reader",
    "Writer",
    "check_round_index",
    "decode_frame",
    "encode_frame",
    "encode_frame_parts",
    "split_frame",
]

MAGIC = b"SFR1"
WIRE_VERSION = 1
SERVER_ID = 0xFFFFFFFF
SESSION_ID_SIZE = 16
_HEADER = struct.Struct(">4sBBBB16sIIII")
# Precompiled: every frame packs and unpacks a handful of integer fields.
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
HEADER_SIZE = _HEADER.size
DEFAULT_MAX_FRAME = 1 << 30  # 1 GiB: far above any legitimate message, below memory exhaustion
MAX_ROUND = 0xFFFFFFFF  # the header's round field is a u32
_SHORT_LIST = 4096  # u32 lists up to this long are packed with struct, longer ones with numpy


def check_round_index(round_index: object) -> int:
    """``round_index`` if it fits the frame header's u32 round field.

    Every derived key, commitment and transcript binds the round as a u32, so
    a caller passing ``-1`` or ``2**32`` must hear about it here, in plain
    words (:class:`ValueError`; :class:`TypeError` for a non-integer), rather
    than as a ``struct.error`` from deep inside a derivation.
    """
    if not isinstance(round_index, int) or isinstance(round_index, bool):
        raise TypeError(f"round_index must be an integer in [0, 2^32), got {round_index!r}")
    if not 0 <= round_index <= MAX_ROUND:
        raise ValueError(f"round_index must be in [0, 2^32), got {round_index}")
    return round_index


@dataclass(frozen=True)
class FrameHeader:
    protocol: int
    kind: int
    session_id: bytes
    round: int
    sender: int
    receiver: int

    def __post_init__(self) -> None:
        # Fast path first: every frame in and out builds a header (about 10^5 per session
        # at n = 10,000); the loop below only runs to name what is wrong.
        if (type(self.protocol) is int and type(self.kind) is int and type(self.round) is int
                and type(self.sender) is int and type(self.receiver) is int
                and 0 <= self.protocol <= 0xFF and 0 <= self.kind <= 0xFF
                and 0 <= self.round <= 0xFFFFFFFF and 0 <= self.sender <= 0xFFFFFFFF
                and 0 <= self.receiver <= 0xFFFFFFFF and type(self.session_id) is bytes
                and len(self.session_id) == SESSION_ID_SIZE):
            return
        for name in ("protocol", "kind"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 <= value <= 0xFF):
                raise ValueError(f"{name} must fit in one byte, got {value!r}")
        for name in ("round", "sender", "receiver"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 <= value <= 0xFFFFFFFF):
                raise ValueError(f"{name} must fit in 32 bits, got {value!r}")
        if not (isinstance(self.session_id, bytes) and len(self.session_id) == SESSION_ID_SIZE):
            raise ValueError(f"session_id must be {SESSION_ID_SIZE} bytes")

    def pack(self, body_len: int) -> bytes:
        return _HEADER.pack(
            MAGIC, WIRE_VERSION, self.protocol, self.kind, 0, self.session_id,
            self.round, self.sender, self.receiver, body_len,
        )


def encode_frame(header: FrameHeader, body: bytes) -> bytes:
    return header.pack(len(body)) + body


def decode_frame(data: bytes, *, max_size: int = DEFAULT_MAX_FRAME) -> tuple[FrameHeader, bytes]:
    """Split a frame into its header and body; any inconsistency is :class:`MalformedMessage`."""
    header, body = split_frame(data, max_size=max_size)
    return header, bytes(body)


def split_frame(data: bytes | bytearray | memoryview, *,
                max_size: int = DEFAULT_MAX_FRAME) -> tuple[FrameHeader, memoryview]:
    """:func:`decode_frame` without copying the body of an immutable ``bytes`` frame.

    The size is checked before anything else, so an oversized frame costs a
    ``len()`` and nothing proportional to its length. The body is a read-only
    view into ``data`` when ``data`` is ``bytes``; a mutable buffer's body is
    copied (once its size has been accepted), so that nothing decoded from it
    can change under the caller's feet.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage("a frame must be bytes")
    try:
        view = memoryview(data).cast("B")
    except TypeError:
        raise MalformedMessage("a frame must be a contiguous byte buffer") from None
    if view.nbytes > max_size:
        raise MalformedMessage(f"frame of {view.nbytes} bytes exceeds the limit of {max_size}")
    if view.nbytes < HEADER_SIZE:
        raise MalformedMessage("truncated frame header")
    magic, version, protocol, kind, flags, session_id, rnd, sender, receiver, body_len = (
        _HEADER.unpack_from(view)
    )
    if magic != MAGIC:
        raise MalformedMessage("bad magic")
    if version != WIRE_VERSION:
        raise MalformedMessage(f"unsupported wire version {version}")
    if flags != 0:
        raise MalformedMessage("reserved flags set")
    if body_len != view.nbytes - HEADER_SIZE:
        raise MalformedMessage("body length does not match the frame size")
    header = FrameHeader(protocol, kind, session_id, rnd, sender, receiver)
    body = view[HEADER_SIZE:]
    if not isinstance(data, bytes):
        body = memoryview(body.tobytes())
    return header, body.toreadonly()


class Writer:
    """Builds a message body field by field.

    Fields are kept as separate buffers and joined once by :meth:`getvalue`
    (or by :func:`encode_frame_parts`, together with the header), so a large
    array is copied exactly once on its way into a frame.
    """

    def __init__(self) -> None:
        self._parts: list[bytes | memoryview] = []
        self._size = 0

    def _append(self, part: bytes | memoryview) -> None:
        self._parts.append(part)
        self._size += len(part) if isinstance(part, bytes) else part.nbytes

    def u8(self, value: int) -> Writer:
        self._append(_U8.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        self._append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        self._append(_U64.pack(value))
        return self

    def blob(self, value: bytes | bytearray | memoryview) -> Writer:
        """A length-prefixed byte string; a memoryview is referenced, not copied, until joined."""
        view = memoryview(value).cast("B") if not isinstance(value, bytes) else value
        self._append(_U32.pack(len(view)))
        self._append(view if isinstance(view, bytes) else view.toreadonly())
        return self

    def bigint(self, value: int) -> Writer:
        """A non-negative integer of any size, as a length-prefixed big-endian string."""
        if value < 0:
            raise ValueError("bigint fields are non-negative")
        return self.blob(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))

    def array(self, values: np.ndarray, dtype: str) -> Writer:
        """A 1-D array in the given dtype (e.g. ``'>u4'``); no copy when it already is one."""
        return self.blob(memoryview(np.ascontiguousarray(values, dtype=np.dtype(dtype))))

    def u32_list(self, values: list[int] | tuple[int, ...] | np.ndarray) -> Writer:
        if isinstance(values, (list, tuple)) and len(values) <= _SHORT_LIST:
            # A neighbourhood's list: struct packs it without building two arrays.
            try:
                packed = struct.pack(f">{len(values)}I", *values)
            except struct.error as exc:
                raise ValueError(f"a u32 list entry is out of range: {exc}") from None
            self._append(_U32.pack(len(packed)))
            self._append(packed)
            return self
        return self.array(np.asarray(values, dtype=np.int64), ">u4")

    @property
    def size(self) -> int:
        return self._size

    @property
    def parts(self) -> list[bytes | memoryview]:
        return list(self._parts)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def encode_frame_parts(header: FrameHeader, writer: Writer) -> bytes:
    """``encode_frame(header, writer.getvalue())`` with a single copy of the body."""
    return b"".join([header.pack(writer.size), *writer.parts])


class Reader:
    """Reads a body written by :class:`Writer`; every error is :class:`MalformedMessage`."""

    def __init__(self, body: bytes, *, max_blob: int = DEFAULT_MAX_FRAME) -> None:
        self._view = memoryview(body)
        self._pos = 0
        self._max_blob = max_blob

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._view):
            raise MalformedMessage("truncated message body")
        out = self._view[self._pos:self._pos + n]
        self._pos += n
        return out

    def _int(self, fmt: struct.Struct) -> int:
        pos = self._pos
        if pos + fmt.size > len(self._view):
            raise MalformedMessage("truncated message body")
        self._pos = pos + fmt.size
        return fmt.unpack_from(self._view, pos)[0]

    def u8(self) -> int:
        return self._int(_U8)

    def u32(self) -> int:
        return self._int(_U32)

    def u64(self) -> int:
        return self._int(_U64)

    def blob(self, *, max_len: int | None = None, exact_len: int | None = None) -> bytes:
        return bytes(self._blob_view(max_len, exact_len))

    def _blob_view(self, max_len: int | None, exact_len: int | None) -> memoryview:
        n = self.u32()
        limit = self._max_blob if max_len is None else min(max_len, self._max_blob)
        if n > limit:
            raise MalformedMessage(f"field of {n} bytes exceeds the limit of {limit}")
        if exact_len is not None and n != exact_len:
            raise MalformedMessage(f"field must be {exact_len} bytes, got {n}")
        return self._take(n)

    def bigint(self, *, max_bytes: int) -> int:
        return int.from_bytes(self.blob(max_len=max_bytes), "big")

    def array(self, dtype: str, *, max_items: int, exact_items: int | None = None) -> np.ndarray:
        """A read-only array viewing the body (no copy); its size is checked first."""
        dt = np.dtype(dtype)
        raw = self._blob_view(max_items * dt.itemsize, None)
        if raw.nbytes % dt.itemsize:
            raise MalformedMessage("array length is not a multiple of its item size")
        arr = np.frombuffer(raw, dtype=dt)
        if exact_items is not None and arr.size != exact_items:
            raise MalformedMessage(f"array must have {exact_items} items, got {arr.size}")
        return arr

    def u32_list(self, *, max_items: int) -> list[int]:
        return self.array(">u4", max_items=max_items).tolist()

    def u32_tuple(self, *, max_items: int) -> tuple[int, ...]:
        """:meth:`u32_list` as a tuple, unpacked by :mod:`struct` (no array built): the
        lists of one neighbourhood are short, and a party decodes thousands of them."""
        raw = self._blob_view(max_items * 4, None)
        if raw.nbytes % 4:
            raise MalformedMessage("array length is not a multiple of its item size")
        return struct.unpack(f">{raw.nbytes // 4}I", raw)

    def end(self) -> None:
        """Assert that the whole body was consumed (no trailing bytes)."""
        if self._pos != len(self._view):
            raise MalformedMessage("trailing bytes after the message body")
