"""The audit's two auditors: canary clients in, the server's view out.

Both implement :class:`secure_fedrec.rounds.auditor.RoundAuditor`, the engine's
narrow interface (the in-process engine calls it; see that module for Flower):

* ``canary_updates(server, plan)`` before the round's broadcast: extra
  ``(client id, update over the flat shared parameters)`` pairs that go through
  the *same* client halves as every client (clipping, noise shares, encoding)
  and the same sum;
* ``observe(server, plan, released, uploads)`` after a round released something:
  ``released`` is ``RoundServer.last_aggregate`` (the mean update the server
  applied, noise included), ``uploads`` every client's upload when the protocol
  is plaintext (what such a server also sees), else nothing.

Both are model-agnostic: they read flat vectors and the pipeline's public
numbers, never a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from attacks import CanaryDirections

from ..aggregation import Aggregate, ClientUpdate, ExpectedBatchMean, Mean
from ..plans import UserLevelPlan
from ..rounds.auditor import RoundAuditor
from ..rounds.server import RoundPlan, RoundServer

__all__ = ["CanaryClientHook", "ReleaseRecorder", "RoundAuditor", "full_weight_examples", "released_sum"]


def _mean_layer(server: RoundServer) -> Mean:
    layers = [layer for layer in server.pipeline.layers if isinstance(layer, Mean)]
    if not layers:
        raise ValueError("the run's pipeline has no mean layer: its release is not a mean")
    return layers[0]


def full_weight_examples(server: RoundServer) -> int:
    """Examples that give an update the largest weight the run's mean layer allows (its cap)."""
    mean = _mean_layer(server)
    return 1 if mean.weighting == "uniform" else math.ceil(mean.weight_cap)


def released_sum(server: RoundServer, released: Aggregate) -> np.ndarray:
    """The noised sum behind the released mean (the mean times its public denominator)."""
    batch = [layer for layer in server.pipeline.layers if isinstance(layer, ExpectedBatchMean)]
    if batch:  # record-level DP-SGD under secure aggregation: the gradient sum over the public q·N
        return np.asarray(released.total, dtype=np.float64) * batch[0].expected_batch
    mean = _mean_layer(server)
    denominator = server.expected_clients if mean.denominator == "expected" else released.weight_total
    return np.asarray(released.total, dtype=np.float64) * float(denominator)


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

    def current_norm(self, server: RoundServer) -> float:
        """The canary's update norm this round: the run's clip norm (the adaptive one, as it is now)."""
        if self.norm is not None:
            return float(self.norm)
        privacy = server.privacy
        return float(privacy.clip_norm if isinstance(privacy, UserLevelPlan) else server.config.privacy.clip_norm)

    def canary_updates(self, server: RoundServer, plan: RoundPlan) -> list[tuple[int, ClientUpdate]]:
        # The auditor's own randomness (never shown to the observer): who of the included
        # canaries takes part this round, like any Poisson-sampled client.
        rng = np.random.default_rng([self.seed, plan.round_index, 0xC11E])
        take_part = np.flatnonzero(self.included & (rng.random(self.included.size) < self.sample_rate))
        self._norm_this_round = self.current_norm(server)
        # A canary weighs as much as any client can (weight 1 under a weighted mean too).
        examples = full_weight_examples(server)
        matrix = self._directions()
        return [(self.first_id + int(j), ClientUpdate.from_dense(
                    self._norm_this_round * (matrix[j].astype(np.float64) if matrix is not None
                                             else self.directions.vector(int(j))), num_examples=examples))
                for j in take_part]

    def observe(self, server: RoundServer, plan: RoundPlan, released: Aggregate,
                uploads: Mapping[int, ClientUpdate]) -> None:
        total = released_sum(server, released)
        matrix = self._directions()
        self.projections.append(matrix @ total.astype(np.float32) if matrix is not None
                                else self.directions.project(total))
        self.shifts.append(self._norm_this_round)
        self.rounds.append(plan.round_index)


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

    def canary_updates(self, server: RoundServer, plan: RoundPlan) -> list[tuple[int, ClientUpdate]]:
        return []

    def observe(self, server: RoundServer, plan: RoundPlan, released: Aggregate,
                uploads: Mapping[int, ClientUpdate]) -> None:
        from attacks import robust_scale

        total = released_sum(server, released)
        self.aggregate_energy.append(np.array([float(np.sum(total[r] ** 2)) for r in self.rows]))
        self.aggregate_scale.append(robust_scale(total[self.item_coordinates]))
        if not self.plaintext:
            return
        if self.client_energy is None:
            self.client_energy = np.zeros(len(self.rows))
            self.client_rounds = np.zeros(len(self.rows), dtype=np.int64)
        for owner in np.unique(self.owners):
            upload = uploads.get(int(owner))
            if upload is None:
                continue
            row = upload.dense()
            scale = robust_scale(row[self.item_coordinates])
            for j in np.flatnonzero(self.owners == owner):
                energy = float(np.sum(row[self.rows[j]] ** 2))
                # Without noise untouched rows are exactly 0: any movement of the canary's row is the canary.
                self.client_energy[j] += energy / max(scale * scale, 1e-24)
                self.client_rounds[j] += 1
