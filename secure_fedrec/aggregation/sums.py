"""The sum between the halves, run in one process: the plaintext float sum, or a :class:`protocols.SecureSum`.

The Flower engine runs the same protocols' sans-IO parties over the network
instead (:mod:`secure_fedrec.engines.flower`); both report the protocol's cost with
:func:`transfer_measurements`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from protocols import BelowThreshold, SecureSum, SecureSumResult

from .session import SessionParameters
from .values import ClientUpdate, Measurements, SumOutcome

__all__ = ["InProcessSum", "float_sum", "ring_sum", "transfer_measurements"]


def transfer_measurements(bytes_sent: Mapping[int, int], bytes_received: Mapping[int, int],
                          contributors: tuple[int, ...], *, plain_bytes: float) -> Measurements:
    """Bytes per client of one session: uploads averaged over the contributors, downloads over
    every party; ``communication_expansion`` is the upload over the plain ring vector's size."""
    sent = np.array([bytes_sent.get(c, 0) for c in contributors], dtype=float)
    any_ = len(sent) > 0
    return {
        "bytes_sent_per_client": float(sent.mean()) if any_ else 0.0,
        "bytes_sent_per_client_max": float(sent.max()) if any_ else 0.0,
        "bytes_received_per_client": float(np.mean(list(bytes_received.values()))) if bytes_received else 0.0,
        "communication_expansion": float(sent.mean() / plain_bytes) if any_ else 0.0,
    }


def float_sum(updates: Mapping[int, ClientUpdate], dropouts: Mapping[int, str]) -> SumOutcome:
    """The plaintext "protocol": the exact float sum of the updates of the clients that did not drop.

    Each coordinate accumulates the clients in ascending id order, as the sparse row sum
    of the first engine did, so a plaintext run is reproducible bit for bit. Bytes are
    counted as a sparse float32 upload (a 4-byte index and a 4-byte value per non-zero).
    """
    kept = [c for c in sorted(updates) if c not in dropouts]
    size = next(iter(updates.values())).size if updates else 0
    total = np.zeros(size, dtype=np.float64)
    for client in kept:
        total[updates[client].indices] += updates[client].values
    nnz = np.array([len(updates[c].indices) for c in kept])
    weights = np.array([updates[c].weight for c in kept], dtype=np.float64)
    return SumOutcome(
        total=total, contributors=tuple(kept), weight_total=float(weights.sum()),
        measurements={
            "bytes_sent_per_client": float(np.mean(nnz * 8 + 4)) if kept else 0.0,
            "bytes_sent_per_client_max": float(np.max(nnz * 8 + 4)) if kept else 0.0,
        },
    )


def ring_sum(payloads: Mapping[int, np.ndarray], dropouts: Mapping[int, str], *, bits: int,
             min_survivors: int = 1) -> SumOutcome:
    """A *simulation* of the secure sum: the same ring vectors, added in the clear modulo ``2^bits``.

    What masking releases is exactly this sum over the clients that did not drop out (the
    masks cancel), so a study may run it in place of the protocol to save the protocol's
    cost — with the same clients' noise shares, hence the same privacy of the *released sum*,
    but a server that sees every client's noised vector, which a deployment must never
    allow (the run's statement says "simulation"). ``tests/aggregation/test_ring_sum.py``
    checks the result is bit for bit the protocols'. Fewer than ``min_survivors`` survivors
    release nothing, as in the protocol.
    """
    kept = [c for c in sorted(payloads) if c not in dropouts]
    if len(kept) < min_survivors:
        raise BelowThreshold(len(kept), min_survivors, "upload")
    mask = np.uint64((1 << bits) - 1)
    total = np.zeros(len(next(iter(payloads.values()))) if payloads else 0, dtype=np.uint64)
    for client in kept:
        total += np.asarray(payloads[client], dtype=np.uint64) & mask  # wraps modulo 2^64, a multiple of 2^bits
    total &= mask
    plain_bytes = float(total.size * bits / 8)
    return SumOutcome(total=total, contributors=tuple(kept),
                      measurements={"bytes_sent_per_client": plain_bytes if kept else 0.0,
                                    "bytes_sent_per_client_max": plain_bytes if kept else 0.0,
                                    "simulated_secure_sum": 1.0})


class InProcessSum:
    """Runs each round's session of the run's secure protocol, in this process.

    A masking session is a fresh :class:`protocols.masking.SecAgg` /
    :class:`~protocols.masking.SecAggPlus` built from the session's parameters, the
    privacy plan's ``min_survivors`` included (the protocol aborts below it, before
    any unmasking);
    Paillier keeps one :class:`protocols.paillier.PaillierSecureSum` for the run (its
    keys are dealt once, on first use).
    """

    def __init__(self, protocol: str, *, paillier_key_bits: int = 2048, paillier_min_clients: int = 2) -> None:
        self.protocol = protocol
        self._paillier: SecureSum | None = None
        self._paillier_args = {"key_bits": paillier_key_bits, "min_clients": paillier_min_clients}

    def _protocol_for(self, session: SessionParameters) -> SecureSum:
        if session.protocol == "secagg":
            from protocols.masking import SecAgg

            return SecAgg(threshold=session.threshold, min_survivors=session.min_survivors)
        if session.protocol == "secagg+":
            from protocols.masking import SecAggPlus

            return SecAggPlus(degree=session.degree, threshold=session.threshold,
                              min_survivors=session.min_survivors)
        if session.protocol == "paillier":
            if self._paillier is None:
                from protocols.paillier import PaillierSecureSum

                self._paillier = PaillierSecureSum(**self._paillier_args)
            return self._paillier
        raise ValueError(f"no secure-sum protocol named {session.protocol!r}")

    def run(self, payloads: Mapping[int, np.ndarray], session: SessionParameters, *, round_index: int,
            dropouts: Mapping[int, str]) -> SumOutcome:
        """One session over ``payloads``; raises :class:`BelowThreshold` when it releases nothing."""
        assert session.bits is not None
        result: SecureSumResult = self._protocol_for(session).run_round(
            payloads, bits=session.bits, round_index=round_index, dropouts=dropouts)
        # Defence in depth: the masking protocols enforce min_survivors before unmasking (their
        # server and honest clients refuse) and Paillier's parties refuse below min_clients, so
        # this never fires unless a protocol object was built without the plan's floor.
        if len(result.contributors) < session.min_survivors:
            raise BelowThreshold(len(result.contributors), session.min_survivors, "unmasking")
        measurements = transfer_measurements(result.bytes_sent, result.bytes_received, result.contributors,
                                             plain_bytes=session.vector_length * session.bits / 8)
        measurements.update({
            "protocol_client_seconds": result.client_seconds,
            "protocol_server_seconds": result.server_seconds,
            "protocol_dropped": float(len(result.dropped)),
        })
        measurements.update({f"protocol_{k}": float(v) for k, v in result.measurements.items()})
        return SumOutcome(total=result.total, contributors=tuple(result.contributors), measurements=measurements)
