"""The one interface every secure-sum protocol implements.

A secure-sum protocol takes one integer vector per client (elements of
Z_{2^bits}, produced by :class:`protocols.encoding.FixedPointEncoder`) and
returns their modular sum over the clients that survived, plus what the round
cost. The sans-IO client and server state machines of each protocol do the
real work; :meth:`SecureSum.run_round` is the in-process driver that wires
them together, so that a caller who does not need a network (a simulation, a
test, the in-process engine) can treat every protocol alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["DropoutSchedule", "SecureSum", "SecureSumResult"]

#: client id -> the name of the protocol stage *before* which the client vanishes.
#: Each protocol documents its stage names (``SecureSum.stages``).
DropoutSchedule = Mapping[int, str]


@dataclass(frozen=True)
class SecureSumResult:
    """The outcome of one aggregation session."""

    total: np.ndarray  # uint64, the sum over ``contributors`` modulo 2^bits
    contributors: tuple[int, ...]  # clients whose input is inside ``total``
    dropped: tuple[int, ...]  # clients that vanished at some stage
    bytes_sent: Mapping[int, int] = field(default_factory=dict)  # per client, uplink
    bytes_received: Mapping[int, int] = field(default_factory=dict)  # per client, downlink
    client_seconds: float = 0.0  # CPU time of all clients together
    server_seconds: float = 0.0
    measurements: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class SecureSum(Protocol):
    """A protocol that sums client vectors without revealing any single one."""

    name: str
    stages: tuple[str, ...]

    def run_round(
        self,
        inputs: Mapping[int, np.ndarray],
        *,
        bits: int,
        round_index: int = 0,
        dropouts: DropoutSchedule | None = None,
    ) -> SecureSumResult:
        """Run one complete session over ``inputs`` (client id -> uint64 vector)."""
        ...
