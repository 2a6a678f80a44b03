"""Parameters of one masking session, validated on construction."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..graph import GraphParameters, choose_parameters

__all__ = ["GraphParameters", "MaskingParams", "SessionConfig", "choose_parameters", "params_for"]

MAX_BITS = 62


@dataclass(frozen=True)
class MaskingParams:
    """What every client must agree on before a session starts.

    ``degree = n - 1`` is classic SecAgg; smaller even degrees are SecAgg+.
    ``threshold`` counts members of a closed neighbourhood (k + 1 clients,
    the owner included) and must be a strict majority of it, so that no two
    disjoint groups of honest clients can be made to reveal both secrets of
    one client; ``active`` additionally requires ``3t > 2(k + 1)``
    (Bonawitz et al., Theorem 6.5).
    """

    threshold: int
    degree: int
    bits: int
    vector_length: int
    active: bool = False

    def __post_init__(self) -> None:
        for name in ("threshold", "degree", "bits", "vector_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in [1, {MAX_BITS}], got {self.bits}")
        if self.vector_length < 0:
            raise ValueError("vector_length must be non-negative")
        if self.degree < 1:
            raise ValueError("degree must be at least 1")
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
        h = hashlib.sha256(b"sfr-masking config v1\x00")
        p = self.params
        h.update(session_id)
        h.update(struct.pack(">IIIIIB", round_index, p.threshold, p.degree, p.bits,
                             p.vector_length, int(p.active)))
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
) -> MaskingParams:
    """Convenience: fill in classic-SecAgg defaults (complete graph, smallest legal threshold)."""
    k = n - 1 if degree is None else degree
    size = k + 1
    if threshold is None:
        threshold = (2 * size) // 3 + 1 if active else size // 2 + 1
    return MaskingParams(threshold=threshold, degree=k, bits=bits,
                         vector_length=vector_length, active=active)

