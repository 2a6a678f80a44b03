"""BatchCrypt-style packing of many small integers into one Paillier plaintext.

Inputs are ring elements of Z_{2^bits} (from :class:`protocols.encoding.FixedPointEncoder`),
read as non-negative integers in ``[0, 2^bits)``. Each gets a slot of
``bits + headroom_bits`` bits; ``slots`` slots sit side by side in one
plaintext, slot 0 in the least significant bits::

    plaintext = Σ_k value_k * 2^(k * slot_bits),   slot_bits = bits + headroom_bits

Adding ciphertexts adds plaintexts, hence slots. A slot holding the sum of
``count`` inputs is at most ``count * (2^bits - 1)``, which stays below
``2^slot_bits`` while ``count <= 2^headroom_bits``: no carry reaches the
next slot. The sum modulo 2^bits the protocols want is the low ``bits`` bits
of each slot, so the packed sum is exact for any count within the headroom.

Worked example, bits=4, headroom_bits=2 (slot_bits=6), count=4::

    inputs 15, 15, 15, 15 in slot 0 -> 60 = 0b111100 < 2^6        (fits)
    a fifth 15 would give 75 = 0b1001011: bit 6 carries into slot 1
    -> the server refuses a fifth summand, and :meth:`unpack` rejects any
       slot above count * 15 (a client that encrypted an out-of-range value),
       and any non-zero padding slot (the carry out of the last real slot)

The plaintext uses at most ``n.bit_length() - 1`` bits, so it stays below n.
The layout depends only on public parameters (key size, bits, headroom,
length); there is no per-vector exponent, so nothing about the values leaks
through the encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import EncodingError
from .errors import SlotOverflow

__all__ = ["PackingLayout", "headroom_for"]

_MAX_VALUE_BITS = 62  # as protocols.encoding
_MAX_HEADROOM_BITS = 32


def headroom_for(max_clients: int) -> int:
    """⌈log2(max_clients)⌉: enough carry bits for ``max_clients`` summands."""
    if not (isinstance(max_clients, int) and max_clients >= 1):
        raise ValueError("max_clients must be a positive integer")
    return (max_clients - 1).bit_length()


@dataclass(frozen=True)
class PackingLayout:
    """Where each of ``length`` values sits inside ``num_plaintexts`` packed plaintexts."""

    bits: int
    headroom_bits: int
    slots: int
    length: int

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 1 <= self.bits <= _MAX_VALUE_BITS):
            raise ValueError(f"bits must be in [1, {_MAX_VALUE_BITS}]")
        if not (
            isinstance(self.headroom_bits, int) and 0 <= self.headroom_bits <= _MAX_HEADROOM_BITS
        ):
            raise ValueError(f"headroom_bits must be in [0, {_MAX_HEADROOM_BITS}]")
        if not (isinstance(self.slots, int) and self.slots >= 1):
            raise ValueError("slots must be a positive integer")
        if not (isinstance(self.length, int) and self.length >= 1):
            raise ValueError("length must be a positive integer")

    @classmethod
    def for_key(cls, key_bits: int, *, bits: int, max_clients: int, length: int) -> PackingLayout:
        """As many slots as fit below a ``key_bits``-bit modulus."""
        headroom = headroom_for(max_clients)
        slot_bits = bits + headroom
        slots = (key_bits - 1) // slot_bits
        if slots < 1:
            raise EncodingError(
                f"a {slot_bits}-bit slot does not fit in a {key_bits}-bit plaintext"
            )
        return cls(bits=bits, headroom_bits=headroom, slots=slots, length=length)

    @property
    def slot_bits(self) -> int:
        return self.bits + self.headroom_bits

    @property
    def max_summands(self) -> int:
        return 1 << self.headroom_bits

    @property
    def num_plaintexts(self) -> int:
        return math.ceil(self.length / self.slots)

    @property
    def plaintext_bits(self) -> int:
        return self.slots * self.slot_bits

    def fits_key(self, key_bits: int) -> bool:
        return self.plaintext_bits <= key_bits - 1

    def check_summands(self, count: int) -> None:
        """Refuse a sum of more ciphertexts than the headroom can carry."""
        if count > self.max_summands:
            raise SlotOverflow(
                f"{count} summands exceed the {self.headroom_bits}-bit headroom "
                f"({self.max_summands})"
            )

    # -- pack / unpack (vectorized through bit matrices: one numpy pass, no per-value Python) --
    def _bit_matrix(self, values: np.ndarray, width: int) -> np.ndarray:
        """``values`` (uint64) as a (len, width) matrix of bits, most significant first."""
        as_bytes = values.astype(">u8").view(np.uint8).reshape(-1, 8)
        bits64 = np.unpackbits(as_bytes, axis=1)
        if width <= 64:
            return bits64[:, 64 - width :]
        return np.concatenate([np.zeros((len(values), width - 64), dtype=np.uint8), bits64], axis=1)

    def pack(self, values: np.ndarray) -> list[int]:
        """``length`` ring elements → ``num_plaintexts`` packed integers."""
        array = np.asarray(values)
        if array.dtype != np.uint64 or array.shape != (self.length,):
            raise EncodingError(
                f"expected a uint64 vector of shape ({self.length},), "
                f"got {array.dtype} {array.shape}"
            )
        if self.bits < 64 and np.any(array >> np.uint64(self.bits)):
            raise EncodingError(f"input values must lie in [0, 2^{self.bits})")
        padded = np.zeros(self.num_plaintexts * self.slots, dtype=np.uint64)
        padded[: self.length] = array
        # Slot 0 is least significant: reverse the slot order within each plaintext.
        grid = padded.reshape(self.num_plaintexts, self.slots)[:, ::-1].reshape(-1)
        bits = self._bit_matrix(grid, self.slot_bits).reshape(self.num_plaintexts, -1)
        pad = (-bits.shape[1]) % 8
        if pad:
            bits = np.concatenate(
                [np.zeros((self.num_plaintexts, pad), dtype=np.uint8), bits], axis=1
            )
        packed = np.packbits(bits, axis=1)
        return [int.from_bytes(row.tobytes(), "big") for row in packed]

    def unpack(self, plaintexts: list[int], *, count: int) -> np.ndarray:
        """The sum modulo 2^bits of ``count`` packed vectors, after checking every slot.

        Raises :class:`SlotOverflow` if a slot exceeds ``count * (2^bits - 1)``,
        if a padding slot (past ``length``, in the last plaintext) is not zero,
        or if bits above the last slot are set: a carry crossed a slot boundary,
        or a client packed something other than a ring element. Padding is
        checked like the rest: a carry out of the last real slot lands there
        (or above the last slot when the last plaintext is full).
        """
        if len(plaintexts) != self.num_plaintexts:
            raise EncodingError(f"expected {self.num_plaintexts} plaintexts, got {len(plaintexts)}")
        if not (isinstance(count, int) and count >= 1):
            raise ValueError("count must be a positive integer")
        self.check_summands(count)
        width = self.plaintext_bits
        width_bytes = (width + 7) // 8
        rows = []
        for plaintext in plaintexts:
            if plaintext < 0 or plaintext >> width:
                raise SlotOverflow("bits set above the last slot")
            rows.append(plaintext.to_bytes(width_bytes, "big"))
        raw = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(
            self.num_plaintexts, width_bytes
        )
        bits = np.unpackbits(raw, axis=1)[:, width_bytes * 8 - width :]
        slot_bits = bits.reshape(self.num_plaintexts, self.slots, self.slot_bits)[:, ::-1, :]
        slot_bits = slot_bits.reshape(-1, self.slot_bits)  # every slot, padding included
        low = _bits_to_uint64(slot_bits[:, self.headroom_bits :])
        carry = _bits_to_uint64(slot_bits[:, : self.headroom_bits])
        if np.any(low[self.length :]) or np.any(carry[self.length :]):
            raise SlotOverflow("a padding slot is not zero: a carry left the last slot")
        low, carry = low[: self.length], carry[: self.length]
        # A slot is at most count * (2^bits - 1) = q_max * 2^bits + r_max: compare (carry, low).
        q_max, r_max = divmod(count * ((1 << self.bits) - 1), 1 << self.bits)
        if np.any(carry > np.uint64(q_max)) or np.any(
            (carry == np.uint64(q_max)) & (low > np.uint64(r_max))
        ):
            raise SlotOverflow("a slot exceeds what the summed inputs can produce")
        return low


def _bits_to_uint64(bit_columns: np.ndarray) -> np.ndarray:
    rows, width = bit_columns.shape
    if width == 0:
        return np.zeros(rows, dtype=np.uint64)
    padded = np.zeros((rows, 64), dtype=np.uint8)
    padded[:, 64 - width :] = bit_columns
    return np.packbits(padded, axis=1).view(">u8").reshape(-1).astype(np.uint64)
