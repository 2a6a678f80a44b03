"""Plaintext summation behind the :class:`~protocols.api.SecureSum` interface.

No privacy at all: the server sees every client's vector. It is the baseline
the secure protocols are measured against, and a switch to isolate protocol
effects in experiments.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from .api import DropoutSchedule, SecureSumResult
from .errors import BelowThreshold, LocalProtocolError

__all__ = ["PlaintextSum"]


class PlaintextSum:
    name = "plaintext"
    stages: tuple[str, ...] = ("upload",)

    def __init__(self, *, min_clients: int = 1) -> None:
        self.min_clients = min_clients

    def run_round(
        self,
        inputs: Mapping[int, np.ndarray],
        *,
        bits: int,
        round_index: int = 0,
        dropouts: DropoutSchedule | None = None,
    ) -> SecureSumResult:
        dropouts = dict(dropouts or {})
        unknown = set(dropouts.values()) - set(self.stages)
        if unknown:
            raise LocalProtocolError(f"unknown stage(s) {sorted(unknown)}; stages are {self.stages}")
        start = time.process_time()
        contributors = tuple(sorted(cid for cid in inputs if cid not in dropouts))
        if len(contributors) < self.min_clients:
            raise BelowThreshold(len(contributors), self.min_clients, "upload")
        mask = np.uint64((1 << bits) - 1)
        total = np.zeros_like(next(iter(inputs.values())), dtype=np.uint64)
        for cid in contributors:
            total = (total + (np.asarray(inputs[cid], dtype=np.uint64) & mask)) & mask
        # A packed b-bit vector is what a real plaintext upload would cost.
        size = {cid: (total.size * bits + 7) // 8 for cid in contributors}
        return SecureSumResult(
            total=total,
            contributors=contributors,
            dropped=tuple(sorted(dropouts)),
            bytes_sent=size,
            bytes_received={cid: 0 for cid in contributors},
            server_seconds=time.process_time() - start,
        )
