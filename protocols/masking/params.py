"""Parameters of one masking session, validated on construction."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

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


@dataclass(frozen=True)
class SessionConfig:
    """The session announcement: parameters, participants and the graph seed."""

    params: MaskingParams
    participants: tuple[int, ...]
    graph_seed: bytes

    def __post_init__(self) -> None:
        if len(self.graph_seed) != 32:
            raise ValueError("graph_seed must be 32 bytes")
        if len(self.participants) < 2:
            raise ValueError("a session needs at least 2 participants")
        if list(self.participants) != sorted(set(self.participants)):
            raise ValueError("participants must be sorted and distinct")
        for cid in self.participants:
            if not (isinstance(cid, int) and 0 <= cid < 0xFFFFFFFF):
                raise ValueError(f"client id {cid!r} out of range")
        self.params.check_population(len(self.participants))

    def digest(self, session_id: bytes, round_index: int) -> bytes:
        """SHA-256 of everything the clients must agree on; signed in active mode."""
        h = hashlib.sha256(b"sfr-masking config v2\x00")
        p = self.params
        h.update(session_id)
        h.update(struct.pack(">IIIIIIB", check_round_index(round_index), p.threshold, p.degree,
                             p.bits, p.vector_length, p.min_survivors, int(p.active)))
        h.update(self.graph_seed)
        h.update(struct.pack(f">{len(self.participants)}I", *self.participants))
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

