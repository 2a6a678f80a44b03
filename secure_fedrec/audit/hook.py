"""The audit's narrow interface to an engine: canary clients in, the server's view out.

An engine that supports audits takes one ``audit_hook`` object and calls it
twice a round (see the ``AUDIT HOOK`` lines of
``secure_fedrec/engine/inprocess.py``):

* ``canary_updates(trainer, round_index)`` after the real clients trained:
  extra ``(client id, update vector over the flat shared parameters)`` pairs
  that go through the *same* aggregation pipeline as every client (clipping,
  noise shares, quantisation, secure sum);
* ``observe(trainer, round_index, out, updates, ctx)`` after a round released
  something: ``out`` is what the server optimizer receives (the noised mean,
  ``out.update``), ``updates`` the clients' uploads (what a server sees under
  the plaintext protocol only), ``ctx`` the round context.

Nothing else of the engine is touched, so porting the hook to another engine
is two calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from attacks import CanaryDirections

__all__ = ["AuditHook", "CanaryClientHook", "ReleaseRecorder", "released_sum"]


class AuditHook(Protocol):
    def canary_updates(self, trainer: Any, round_index: int) -> list[tuple[int, np.ndarray]]: ...

    def observe(self, trainer: Any, round_index: int, out: Any, updates: Any, ctx: Any) -> None: ...


def released_sum(trainer: Any, out: Any, ctx: Any) -> np.ndarray:
    """The noised sum behind the released mean (the mean times its public denominator)."""
    denominator = (ctx.expected_clients if trainer.pipeline.denominator == "expected"
                   else out.measurements.get("weight_total", 0.0))
    return np.asarray(out.update, dtype=np.float64) * float(denominator)


@dataclass
class CanaryClientHook:
    """Canary clients (Andrew et al. 2024): included ones are Poisson-sampled at ``sample_rate``
    every round and upload ``norm · u_j``; every released round is projected on every ``u_j``.

    ``norm=None`` uses the run's clip norm at that round (the adaptive one when clipping adapts).
    """

    directions: CanaryDirections
    included: np.ndarray
    sample_rate: float
    first_id: int
    seed: int
    norm: float | None = None
    projections: list[np.ndarray] = field(default_factory=list)
    shifts: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    _norm_this_round: float = 0.0
    _matrix: np.ndarray | None = field(default=None, repr=False)

    #: keep the directions in memory (float32) below this many values (400 MB); regenerate above
    MAX_CACHED_VALUES = 100_000_000

    def _directions(self) -> np.ndarray | None:
        d = self.directions
        if self._matrix is None and d.num_canaries * d.dim <= self.MAX_CACHED_VALUES:
            self._matrix = np.vstack([rows.astype(np.float32) for _, rows in d.chunks()])
        return self._matrix

    def current_norm(self, trainer: Any) -> float:
        if self.norm is not None:
            return float(self.norm)
        adaptive = getattr(trainer.privacy, "adaptive_clip", None)
        return float(adaptive.clip_norm if adaptive is not None else trainer.config.privacy.clip_norm)

    def canary_updates(self, trainer: Any, round_index: int) -> list[tuple[int, np.ndarray]]:
        # The auditor's own randomness (never shown to the observer): who of the included
        # canaries takes part this round, like any Poisson-sampled client.
        rng = np.random.default_rng([self.seed, round_index, 0xC11E])
        take_part = np.flatnonzero(self.included & (rng.random(self.included.size) < self.sample_rate))
        self._norm_this_round = self.current_norm(trainer)
        matrix = self._directions()
        return [(self.first_id + int(j), self._norm_this_round
                 * (matrix[j].astype(np.float64) if matrix is not None else self.directions.vector(int(j))))
                for j in take_part]

    def observe(self, trainer: Any, round_index: int, out: Any, updates: Any, ctx: Any) -> None:
        total = released_sum(trainer, out, ctx)
        matrix = self._directions()
        self.projections.append(matrix @ total.astype(np.float32) if matrix is not None
                                else self.directions.project(total))
        self.shifts.append(self._norm_this_round)
        self.rounds.append(round_index)


@dataclass
class ReleaseRecorder:
    """For canaries inside ordinary users' data: per released round, the energy of chosen rows.

    ``rows[j]`` are the flat indices of canary j's item rows. Records, per round,
    Σ of squared released-sum entries over each canary's rows, the round's noise
    scale (robust, over all item-row coordinates), and, when the protocol is
    plaintext, the same for the canary owner's own upload (``owners[j]``).
    """

    rows: list[np.ndarray]
    owners: np.ndarray
    item_coordinates: np.ndarray
    plaintext: bool
    aggregate_energy: list[np.ndarray] = field(default_factory=list)
    aggregate_scale: list[float] = field(default_factory=list)
    client_energy: np.ndarray | None = None  # Σ over the rounds the owner uploaded, normalised
    client_rounds: np.ndarray | None = None

    def canary_updates(self, trainer: Any, round_index: int) -> list[tuple[int, np.ndarray]]:
        return []

    def observe(self, trainer: Any, round_index: int, out: Any, updates: Any, ctx: Any) -> None:
        from attacks import robust_scale

        total = released_sum(trainer, out, ctx)
        self.aggregate_energy.append(np.array([float(np.sum(total[r] ** 2)) for r in self.rows]))
        self.aggregate_scale.append(robust_scale(total[self.item_coordinates]))
        if not self.plaintext:
            return
        if self.client_energy is None:
            self.client_energy = np.zeros(len(self.rows))
            self.client_rounds = np.zeros(len(self.rows), dtype=np.int64)
        position = {int(c): k for k, c in enumerate(updates.client_ids)}
        for owner in np.unique(self.owners):
            k = position.get(int(owner))
            if k is None:
                continue
            row = updates.dense_row(k)
            scale = robust_scale(row[self.item_coordinates])
            for j in np.flatnonzero(self.owners == owner):
                energy = float(np.sum(row[self.rows[j]] ** 2))
                # Without noise untouched rows are exactly 0: any movement of the canary's row is the canary.
                self.client_energy[j] += energy / max(scale * scale, 1e-24)
                self.client_rounds[j] += 1
