"""Parameters of one masking session, validated on construction."""

from __future__ import annotations

import hashlib
import struct
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..graph import GraphParameters, choose_parameters
from ..wire import check_round_index

__all__ = ["GraphParameters", "MaskingParams", "SessionConfig", "choose_parameters", "params_for"]

MAX_BITS = 62
#: Hard ceilings of the wire format (u32 fields), far above any session we simulate.
MAX_PARTICIPANTS = 0xFFFFFFFF
MAX_VECTOR_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class MaskingParams:
    """What every client must agree on before a session starts.

    ``degree = n - 1`` is classic SecAgg; smaller even degrees are SecAgg+.
    ``threshold`` counts members of a closed neighbourhood (k + 1 clients,
    the owner included) and must be a strict majority of it, so that no two
    disjoint groups of honest clients can be made to reveal both secrets of
    one client; ``active`` additionally requires ``3t > 2(k + 1)``
    (Bonawitz et al., Theorem 6.5).

    ``min_survivors`` is a *global* floor on the number of clients whose
    input is in the released sum (|U3|), independent of the per-neighbourhood
    threshold: the server refuses to start unmasking below it, and an honest
    client refuses to reveal its shares when the unmasking request states
    fewer survivors (:class:`~protocols.errors.BelowThreshold` on both sides).
    A distributed-DP layer sets it to the number of noise shares its noise
    was sized for, so that a sum is never released with less noise than the
    accountant charges. The default 1 adds no requirement.
    """

    threshold: int
    degree: int
    bits: int
    vector_length: int
    active: bool = False
    min_survivors: int = 1

    def __post_init__(self) -> None:
        for name in ("threshold", "degree", "bits", "vector_length", "min_survivors"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in [1, {MAX_BITS}], got {self.bits}")
        if not 0 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise ValueError(f"vector_length must be in [0, {MAX_VECTOR_LENGTH}], "
                             f"got {self.vector_length}")
        if not 1 <= self.degree <= MAX_PARTICIPANTS - 1:
            raise ValueError(f"degree must be in [1, {MAX_PARTICIPANTS - 1}], got {self.degree}")
        if not 1 <= self.min_survivors <= MAX_PARTICIPANTS:
            raise ValueError(f"min_survivors must be in [1, {MAX_PARTICIPANTS}], "
                             f"got {self.min_survivors}")
        size = self.degree + 1
        if not (2 * self.threshold > size and self.threshold <= size):
            raise ValueError(
                f"threshold {self.threshold} must be a strict majority of the neighbourhood "
                f"(degree + 1 = {size}) and at most its size"
            )
        if self.active and not 3 * self.threshold > 2 * size:
            raise ValueError(
                f"active mode needs threshold > 2/3 of the neighbourhood ({size}), "
                f"got {self.threshold}"
            )

    def check_population(self, n: int) -> None:
        if self.min_survivors > n:
            raise ValueError(f"min_survivors {self.min_survivors} exceeds the {n} participants: "
                             "the session could never release a sum")
        if self.degree > n - 1:
            raise ValueError(f"degree {self.degree} exceeds n - 1 = {n - 1}")
        if self.degree < n - 1 and self.degree % 2:
            raise ValueError("a SecAgg+ (Harary) degree below n - 1 must be even")


#: Read-only id arrays, shared by every SessionConfig with the same participants: a
#: process that hosts many clients of one session (a simulation, a Flower node serving
#: many users) keeps one copy of a 10,000-client list instead of one per client.
_ID_ARRAYS: weakref.WeakValueDictionary[bytes, np.ndarray] = weakref.WeakValueDictionary()


def _shared_ids(ids: np.ndarray) -> np.ndarray:
    """``ids`` (a private native uint32 copy) or the equal array already shared."""
    key = ids.tobytes()
    shared = _ID_ARRAYS.get(key)
    if shared is None:
        ids.flags.writeable = False
        _ID_ARRAYS[key] = shared = ids
    return shared


class SessionConfig:
    """The session announcement: parameters, participants and the graph seed.

    ``participants`` are the sorted, distinct client ids. They are held as a
    read-only uint32 array, :attr:`ids`, which the hot paths use (a client of
    a 10,000-client session validates, hashes and searches it in C, instead of
    walking 10,000 Python ints several times); :attr:`participants` is the same
    list as a tuple of ints, built on first use. Immutable; equal when the
    parameters, the ids and the graph seed are.
    """

    __slots__ = ("_ids", "_participants", "graph_seed", "params")

    def __init__(self, params: MaskingParams, participants: Sequence[int] | np.ndarray,
                 graph_seed: bytes) -> None:
        if not isinstance(params, MaskingParams):
            raise TypeError("params must be MaskingParams")
        if not (isinstance(graph_seed, bytes) and len(graph_seed) == 32):
            raise ValueError("graph_seed must be 32 bytes")
        ids = np.asarray(participants)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError("participants must be a sequence of integer client ids")
        if ids.size < 2:
            raise ValueError("a session needs at least 2 participants")
        # One private native copy first (a decoded announcement is big-endian), then the
        # checks on it: a client of a 10,000-client session runs them on every announcement.
        fits = ids.dtype.kind == "u" and ids.dtype.itemsize <= 4  # then every value fits
        if not fits and (int(ids.min()) < 0 or int(ids.max()) >= 0xFFFFFFFF):
            raise ValueError("client ids must be in [0, 2^32 - 1)")
        ids = ids.astype(np.uint32)  # a private copy: nobody can change it afterwards
        if not (ids[1:] > ids[:-1]).all():
            raise ValueError("participants must be sorted and distinct")
        if int(ids[-1]) >= 0xFFFFFFFF:
            raise ValueError("client ids must be in [0, 2^32 - 1)")
        params.check_population(int(ids.size))
        ids = _shared_ids(ids)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "graph_seed", graph_seed)
        object.__setattr__(self, "_ids", ids)
        object.__setattr__(self, "_participants", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SessionConfig is immutable")

    def __reduce__(self) -> tuple[type, tuple[MaskingParams, np.ndarray, bytes]]:
        # Rebuilt through the constructor (validated, ids shared again) when unpickled:
        # engines keep a node's clients between messages that way.
        return SessionConfig, (self.params, np.array(self._ids), self.graph_seed)

    @property
    def ids(self) -> np.ndarray:
        """The participants as a read-only uint32 array."""
        return self._ids

    @property
    def participants(self) -> tuple[int, ...]:
        if self._participants is None:
            object.__setattr__(self, "_participants", tuple(self._ids.tolist()))
        return self._participants

    def __len__(self) -> int:
        return int(self._ids.size)

    def includes(self, client_id: int) -> bool:
        """Whether ``client_id`` is a participant (a binary search, no tuple built)."""
        pos = int(np.searchsorted(self._ids, client_id))
        return pos < self._ids.size and int(self._ids[pos]) == client_id

    def includes_all(self, client_ids: Iterable[int]) -> bool:
        """Whether every id in ``client_ids`` is a participant."""
        wanted = np.fromiter(client_ids, dtype=np.int64)
        if wanted.size == 0:
            return True
        pos = np.searchsorted(self._ids, wanted)
        return bool((pos < self._ids.size).all()
                    and (self._ids[np.minimum(pos, self._ids.size - 1)] == wanted).all())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionConfig):
            return NotImplemented
        return (self.params == other.params and self.graph_seed == other.graph_seed
                and np.array_equal(self._ids, other._ids))

    def __hash__(self) -> int:
        return hash((self.params, self.graph_seed, self._ids.tobytes()))

    def __repr__(self) -> str:
        return (f"SessionConfig(params={self.params!r}, participants=<{self._ids.size} ids>, "
                f"graph_seed={self.graph_seed.hex()[:16]}...)")

    def digest(self, session_id: bytes, round_index: int) -> bytes:
        """SHA-256 of everything the clients must agree on; signed in active mode."""
        h = hashlib.sha256(b"sfr-masking config v2\x00")
        p = self.params
        h.update(session_id)
        h.update(struct.pack(">IIIIIIB", check_round_index(round_index), p.threshold, p.degree,
                             p.bits, p.vector_length, p.min_survivors, int(p.active)))
        h.update(self.graph_seed)
        h.update(self._ids.astype(">u4").tobytes())
        return h.digest()


def params_for(
    n: int,
    *,
    bits: int,
    vector_length: int,
    degree: int | None = None,
    threshold: int | None = None,
    active: bool = False,
    min_survivors: int = 1,
) -> MaskingParams:
    """Convenience: fill in classic-SecAgg defaults (complete graph, smallest legal threshold)."""
    k = n - 1 if degree is None else degree
    size = k + 1
    if threshold is None:
        threshold = (2 * size) // 3 + 1 if active else size // 2 + 1
    return MaskingParams(threshold=threshold, degree=k, bits=bits, vector_length=vector_length,
                         active=active, min_survivors=min_survivors)

