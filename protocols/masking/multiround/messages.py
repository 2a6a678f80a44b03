"""Messages of the multi-round masking session and their wire encoding.

Frames carry protocol code 3 (the single-round protocol's are code 1, so one
protocol's frames never decode as the other's); the header's round field is
the round a message belongs to (the setup's frames carry the first round).
Body layouts (``u32`` big-endian; ``ids`` = a length-prefixed u32 array;
``blob`` = ``u32 length || bytes``)::

    1 SessionAnnouncement S→C  [SessionStart body, as protocol 1] | u32 rounds
    2 AdvertiseKeys       C→S  as protocol 1
    3 KeyDirectory        S→C  as protocol 1
    4 Armings             C→S  armings
    5 RoundStart          S→C  u8 armed | u8 next_armed | ids maskers
    6 RoundUpload         C→S  u8 word_bytes | 3 zero bytes | blob words (byte 48 of the frame)
                               | ids holders | blob seed shares (57 per holder)
                               | blob seed commitment (32) | armings

    armings = u8 count (0-2) | count × (u32 armed_round | ids holders
              | blob recovery shares (57 per holder) | blob sealed seeds)
    7 RoundUnmaskRequest  S→C  ids survivors | blob seed shares (57 per survivor but the receiver)
                               | ids dropped | blob recovery shares (57 per dropped)
                               | u32 survivor_count
    8 RoundUnmaskShares   C→S  ids seed_owners | blob seed shares (33 each)
                               | ids recovery_owners | blob recovery shares (33 each)

A share ciphertext (57 bytes) is ChaCha20-Poly1305 over ``u32 owner | u32 holder
| share (33)``; sealed seeds are ``16 + 36 × holders`` bytes (see
:mod:`.derivations`). Every list of a client's neighbours is bounded by the
session's neighbourhood, every vector by its length (:class:`Limits`), before
anything is allocated; decoding raises only :class:`MalformedMessage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ...errors import MalformedMessage
from ...wire import Reader, Writer
from .. import messages as m
from ..messages import COMMITMENT_SIZE, Envelope, Limits, _blob_size, _ids_size
from ..params import SessionConfig
from .derivations import SHARE_CIPHERTEXT_SIZE, sealed_seeds_size

__all__ = [
    "ARMING_WINDOW",
    "PROTOCOL_CODE",
    "Arming",
    "Armings",
    "RoundStart",
    "RoundUnmaskRequest",
    "RoundUnmaskShares",
    "RoundUpload",
    "SessionAnnouncement",
    "decode",
    "encode",
]

PROTOCOL_CODE = 3
MAX_ROUNDS = 1 << 20  # far more rounds than any training run; bounds the u32 field


@dataclass(frozen=True)
class SessionAnnouncement:
    """The session's parameters, participants, graph seed, and its number of rounds."""

    KIND: ClassVar[int] = 1
    TO_SERVER: ClassVar[bool] = False
    config: SessionConfig
    rounds: int

    def __post_init__(self) -> None:
        if not (isinstance(self.rounds, int) and 1 <= self.rounds <= MAX_ROUNDS):
            raise ValueError(f"rounds must be in [1, {MAX_ROUNDS}], got {self.rounds!r}")

    def write(self, w: Writer) -> None:
        m.SessionStart(self.config).write(w)
        w.u32(self.rounds)

    @staticmethod
    def max_body(limits: Limits) -> int:
        return m.SessionStart.max_body(limits) + 4

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> SessionAnnouncement:
        start = m.SessionStart.read(r, limits)
        return cls(start.config, r.u32())


#: A client holds recovery material for at most this many upcoming rounds (see the client).
ARMING_WINDOW = 2


@dataclass(frozen=True)
class Arming:
    """Recovery material for round ``armed_round``: shares of E and the sealed seeds."""

    armed_round: int
    holders: tuple[int, ...]
    shares: tuple[bytes, ...]  # one recovery-share ciphertext per holder
    sealed_seeds: bytes

    def __post_init__(self) -> None:
        if not (isinstance(self.armed_round, int) and 0 <= self.armed_round <= 0xFFFFFFFF):
            raise ValueError("armed_round must fit in 32 bits")
        m._ids(self.holders, "holders")
        if len(self.shares) != len(self.holders):
            raise ValueError("one share per holder")
        m._all_fixed(self.shares, SHARE_CIPHERTEXT_SIZE, "recovery share")
        m._fixed(self.sealed_seeds, sealed_seeds_size(len(self.holders)), "sealed seeds")

    def write(self, w: Writer) -> None:
        w.u32(self.armed_round).u32_list(self.holders)
        w.blob(b"".join(self.shares)).blob(self.sealed_seeds)

    @staticmethod
    def max_body(limits: Limits) -> int:
        k = limits.neighbourhood
        return (4 + _ids_size(k) + _blob_size(SHARE_CIPHERTEXT_SIZE * k)
                + _blob_size(sealed_seeds_size(k)))

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> Arming:
        armed_round = r.u32()
        holders = tuple(r.u32_list(max_items=limits.neighbourhood))
        shares = r.blob(exact_len=SHARE_CIPHERTEXT_SIZE * len(holders))
        sealed = r.blob(exact_len=sealed_seeds_size(len(holders)))
        return cls(armed_round, holders, m._chunks(shares, SHARE_CIPHERTEXT_SIZE), sealed)


def _check_armings(armings: tuple[Arming, ...]) -> None:
    if not isinstance(armings, tuple) or len(armings) > ARMING_WINDOW:
        raise ValueError(f"at most {ARMING_WINDOW} armings")
    if not all(isinstance(a, Arming) for a in armings):
        raise TypeError("armings must be Arming objects")
    rounds = [a.armed_round for a in armings]
    if rounds != sorted(set(rounds)):
        raise ValueError("armings must be for distinct rounds, in order")


def _write_armings(w: Writer, armings: tuple[Arming, ...]) -> None:
    w.u8(len(armings))
    for arming in armings:
        arming.write(w)


def _read_armings(r: Reader, limits: Limits) -> tuple[Arming, ...]:
    count = r.u8()
    if count > ARMING_WINDOW:
        raise MalformedMessage(f"at most {ARMING_WINDOW} armings")
    return tuple(Arming.read(r, limits) for _ in range(count))


def _armings_max_body(limits: Limits) -> int:
    return 1 + ARMING_WINDOW * Arming.max_body(limits)


@dataclass(frozen=True)
class Armings:
    """Recovery material for upcoming rounds, from a client that is not uploading now."""

    KIND: ClassVar[int] = 4
    TO_SERVER: ClassVar[bool] = True
    armings: tuple[Arming, ...]

    def __post_init__(self) -> None:
        _check_armings(self.armings)

    def write(self, w: Writer) -> None:
        _write_armings(w, self.armings)

    @staticmethod
    def max_body(limits: Limits) -> int:
        return _armings_max_body(limits)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> Armings:
        return cls(_read_armings(r, limits))


@dataclass(frozen=True)
class RoundStart:
    """Round r begins: is the receiver armed for r (and for r + 1), whom it masks with."""

    KIND: ClassVar[int] = 5
    TO_SERVER: ClassVar[bool] = False
    armed: bool
    next_armed: bool = False
    maskers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        m._ids(self.maskers, "maskers")
        if not self.armed and self.maskers:
            raise ValueError("an unarmed client masks with nobody")

    def write(self, w: Writer) -> None:
        w.u8(int(self.armed)).u8(int(self.next_armed)).u32_list(self.maskers)

    @staticmethod
    def max_body(limits: Limits) -> int:
        return 2 + _ids_size(limits.neighbourhood)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> RoundStart:
        armed, next_armed = r.u8(), r.u8()
        if armed > 1 or next_armed > 1:
            raise MalformedMessage("bad armed flag")
        return cls(bool(armed), bool(next_armed),
                   tuple(r.u32_list(max_items=limits.neighbourhood)))


@dataclass(frozen=True, eq=False)
class RoundUpload:
    """The masked input of round r, the seed shares for its holders, and upcoming armings."""

    KIND: ClassVar[int] = 6
    TO_SERVER: ClassVar[bool] = True
    words: np.ndarray
    holders: tuple[int, ...]
    seed_shares: tuple[bytes, ...]
    seed_commitment: bytes
    armings: tuple[Arming, ...] = ()  # none in the session's last round

    def __post_init__(self) -> None:
        m.MaskedInput(self.words)  # the same checks as a single-round upload
        m._ids(self.holders, "holders")
        if len(self.seed_shares) != len(self.holders):
            raise ValueError("one seed share per holder")
        m._all_fixed(self.seed_shares, SHARE_CIPHERTEXT_SIZE, "seed share")
        m._fixed(self.seed_commitment, COMMITMENT_SIZE, "seed_commitment")
        _check_armings(self.armings)

    def write(self, w: Writer) -> None:
        m.MaskedInput(self.words).write(w)
        w.u32_list(self.holders).blob(b"".join(self.seed_shares)).blob(self.seed_commitment)
        _write_armings(w, self.armings)

    @staticmethod
    def max_body(limits: Limits) -> int:
        k = limits.neighbourhood
        return (m.MaskedInput.max_body(limits) + _ids_size(k)
                + _blob_size(SHARE_CIPHERTEXT_SIZE * k) + _blob_size(COMMITMENT_SIZE)
                + _armings_max_body(limits))

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> RoundUpload:
        words = m.MaskedInput.read(r, limits).words
        holders = tuple(r.u32_list(max_items=limits.neighbourhood))
        shares = r.blob(exact_len=SHARE_CIPHERTEXT_SIZE * len(holders))
        commitment = r.blob(exact_len=COMMITMENT_SIZE)
        armings = _read_armings(r, limits)
        return cls(words, holders, m._chunks(shares, SHARE_CIPHERTEXT_SIZE), commitment, armings)


@dataclass(frozen=True)
class RoundUnmaskRequest:
    """Reveal the seed shares of ``survivors`` and the recovery shares of ``dropped``.

    The ciphertexts are the ones the owners addressed to the receiver: seed
    shares from this round's uploads (none for the receiver itself, which
    kept its own), recovery shares from the arming of this round.
    """

    KIND: ClassVar[int] = 7
    TO_SERVER: ClassVar[bool] = False
    survivors: tuple[int, ...]
    seed_shares: tuple[bytes, ...]
    dropped: tuple[int, ...]
    recovery_shares: tuple[bytes, ...]
    survivor_count: int

    def __post_init__(self) -> None:
        # Overlap of survivors and dropped is well-formed but dishonest: refused by the client.
        m._ids(self.survivors, "survivors")
        m._ids(self.dropped, "dropped")
        if len(self.seed_shares) != max(0, len(self.survivors) - 1):
            raise ValueError("one seed share per survivor other than the receiver")
        if len(self.recovery_shares) != len(self.dropped):
            raise ValueError("one recovery share per dropped client")
        m._all_fixed(self.seed_shares + self.recovery_shares, SHARE_CIPHERTEXT_SIZE, "share")
        if not (isinstance(self.survivor_count, int) and 0 <= self.survivor_count <= 0xFFFFFFFF):
            raise ValueError("survivor_count must fit in 32 bits")

    def write(self, w: Writer) -> None:
        w.u32_list(self.survivors).blob(b"".join(self.seed_shares))
        w.u32_list(self.dropped).blob(b"".join(self.recovery_shares)).u32(self.survivor_count)

    @staticmethod
    def max_body(limits: Limits) -> int:
        k = limits.neighbourhood
        return 2 * (_ids_size(k) + _blob_size(SHARE_CIPHERTEXT_SIZE * k)) + 4

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> RoundUnmaskRequest:
        survivors = tuple(r.u32_list(max_items=limits.neighbourhood))
        seed = r.blob(exact_len=SHARE_CIPHERTEXT_SIZE * max(0, len(survivors) - 1))
        dropped = tuple(r.u32_list(max_items=limits.neighbourhood))
        recovery = r.blob(exact_len=SHARE_CIPHERTEXT_SIZE * len(dropped))
        return cls(survivors, m._chunks(seed, SHARE_CIPHERTEXT_SIZE), dropped,
                   m._chunks(recovery, SHARE_CIPHERTEXT_SIZE), r.u32())


@dataclass(frozen=True)
class RoundUnmaskShares:
    KIND: ClassVar[int] = 8
    TO_SERVER: ClassVar[bool] = True
    seed_owners: tuple[int, ...]
    seed_shares: tuple[bytes, ...]
    recovery_owners: tuple[int, ...]
    recovery_shares: tuple[bytes, ...]

    def __post_init__(self) -> None:
        m.UnmaskShares(self.seed_owners, self.seed_shares, self.recovery_owners,
                       self.recovery_shares)  # same layout, same checks

    def write(self, w: Writer) -> None:
        m.UnmaskShares(self.seed_owners, self.seed_shares, self.recovery_owners,
                       self.recovery_shares).write(w)

    @staticmethod
    def max_body(limits: Limits) -> int:
        return m.UnmaskShares.max_body(limits)

    @classmethod
    def read(cls, r: Reader, limits: Limits) -> RoundUnmaskShares:
        shares = m.UnmaskShares.read(r, limits)
        return cls(shares.seed_owners, shares.seed_shares, shares.key_owners, shares.key_shares)


Message = (SessionAnnouncement | m.AdvertiseKeys | m.KeyDirectory | Armings | RoundStart
           | RoundUpload | RoundUnmaskRequest | RoundUnmaskShares)
KINDS: dict[int, type] = {
    cls.KIND: cls
    for cls in (SessionAnnouncement, m.AdvertiseKeys, m.KeyDirectory, Armings, RoundStart,
                RoundUpload, RoundUnmaskRequest, RoundUnmaskShares)
}


def encode(message: Message, *, session_id: bytes, round_index: int, sender: int,
           receiver: int) -> bytes:
    return m.encode(message, session_id=session_id, round_index=round_index, sender=sender,
                    receiver=receiver, protocol=PROTOCOL_CODE)


def decode(data: bytes, *, limits: Limits = m.DEFAULT_LIMITS) -> Envelope:
    """Parse one frame of the multi-round session; every failure is :class:`MalformedMessage`."""
    return m.decode_kinds(data, limits=limits, protocol=PROTOCOL_CODE, kinds=KINDS)
