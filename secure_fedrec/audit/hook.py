"""The audit's auditors: canaries in, the server's view out.

:class:`GradientCanaryHook` (record-level DP-SGD under secure aggregation) also
implements the engine's :class:`~secure_fedrec.training.canaries.CanaryGradients`
hook: its canaries are examples inside real clients' DP-SGD steps, not clients.
All implement :class:`secure_fedrec.rounds.auditor.RoundAuditor`, the engine's
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

from attacks import CanaryDirections, DiracDirections
from protocols import BelowThreshold

from ..aggregation import Aggregate, ClientUpdate, ExpectedBatchMean, Mean
from ..models.base import ParamLayout
from ..plans import UserLevelPlan
from ..rounds.auditor import RoundAuditor
from ..rounds.server import RoundPlan, RoundServer
from ..training.canaries import CanaryGradient, CanaryGradients

__all__ = ["CanaryClientHook", "GradientCanaryHook", "ReleaseRecorder", "RoundAuditor", "full_weight_examples",
           "item_coordinates", "released_sum"]


def item_coordinates(layout: ParamLayout, items: np.ndarray) -> np.ndarray:
    """Flat indices of the item-indexed shared parameters of ``items`` (no other parameter)."""
    items = np.asarray(items, dtype=np.int64).reshape(-1)
    parts = []
    for name, shape, start in zip(layout.names, layout.shapes, layout.offsets.values()):
        if name in layout.item_rows:
            width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            parts.append((start + items[:, None] * width + np.arange(width)[None, :]).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


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
    With :class:`attacks.DiracDirections` each canary uploads one coordinate (a sparse update)
    and its projection is the release at that coordinate.
    """

    directions: CanaryDirections | DiracDirections
    included: np.ndarray
    sample_rate: float
    first_id: int
    seed: int
    norm: float | None = None
    projections: list[np.ndarray] = field(default_factory=list)
    shifts: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    #: per observed round, which canaries took part (the auditor's own knowledge: it drew them);
    #: used only by the one-shot *estimate*, never by a score or a bound, unless the observer knows
    #: who took part (``schedule``)
    took_part: list[np.ndarray] = field(default_factory=list)
    _norm_this_round: float = 0.0
    _this_round: np.ndarray | None = field(default=None, repr=False)
    _matrix: np.ndarray | None = field(default=None, repr=False)

    #: the canaries withhold their distributed-noise share (the auditor's sybils; see
    #: :func:`~.twin.plan_without_noise_share`): the release then carries the honest clients' noise only
    withhold_noise: bool = False

    #: participation known to the observer (``audit.participation = "known"``): shape (rounds,
    #: canaries), the rounds each canary takes part in, fixed in advance and the same whether it is
    #: included or not; an excluded canary then uploads a zero update (the same data-independent
    #: participation, the direction withheld). None: included canaries take part by the auditor's coin.
    schedule: np.ndarray | None = None

    #: keep the directions in memory (float32) below this many values (400 MB); regenerate above
    MAX_CACHED_VALUES = 100_000_000

    def _directions(self) -> np.ndarray | None:
        d = self.directions
        if isinstance(d, DiracDirections):
            return None
        if self._matrix is None and d.num_canaries * d.dim <= self.MAX_CACHED_VALUES:
            self._matrix = np.vstack([rows.astype(np.float32) for _, rows in d.chunks()])
        return self._matrix

    def canary_client_plan(self, server: RoundServer):
        """The client halves the canaries go through (the run's, unless they withhold noise)."""
        if not self.withhold_noise:
            return server.client_plan
        from .twin import plan_without_noise_share

        return plan_without_noise_share(server.client_plan)

    def check_release(self, server: RoundServer, plan: RoundPlan, outcome) -> None:
        """Sybils that withhold their noise share must not carry a round over the survivor floor:
        the accountant charges the noise of ``min_survivors`` honest shares, so a round with
        fewer noise-bearing (real) contributors aborts, as it would without the audit."""
        floor = getattr(server.privacy, "min_survivors", None)
        if not self.withhold_noise or floor is None:
            return
        canaries = set(plan.canaries)
        honest = sum(1 for client in outcome.contributors if client not in canaries)
        if honest < floor:
            raise BelowThreshold(honest, floor, "upload (noise-bearing clients; canaries that withhold shares "
                                                "do not count)")

    def current_norm(self, server: RoundServer) -> float:
        """The canary's update norm this round: the run's clip norm (the adaptive one, as it is now)."""
        if self.norm is not None:
            return float(self.norm)
        privacy = server.privacy
        return float(privacy.clip_norm if isinstance(privacy, UserLevelPlan) else server.config.privacy.clip_norm)

    def canary_updates(self, server: RoundServer, plan: RoundPlan) -> list[tuple[int, ClientUpdate]]:
        # The auditor's own randomness (never shown to the observer): who of the included
        # canaries takes part this round, like any Poisson-sampled client; or, participation
        # known to the observer, the schedule fixed in advance for members and non-members alike.
        if self.schedule is not None:
            self._this_round = (self.schedule[plan.round_index] if plan.round_index < len(self.schedule)
                                else np.zeros(self.included.size, dtype=bool))
        else:
            rng = np.random.default_rng([self.seed, plan.round_index, 0xC11E])
            self._this_round = self.included & (rng.random(self.included.size) < self.sample_rate)
        take_part = np.flatnonzero(self._this_round)
        self._norm_this_round = self.current_norm(server)
        # A canary weighs as much as any client can (weight 1 under a weighted mean too).
        examples = full_weight_examples(server)

        def norm(j: int) -> float:  # only a scheduled excluded canary uploads zero
            return self._norm_this_round if self.included[j] else 0.0

        if isinstance(self.directions, DiracDirections):
            size, coordinates = self.directions.dim, self.directions.coordinates
            return [(self.first_id + int(j), ClientUpdate(indices=coordinates[j:j + 1].copy(),
                                                          values=np.array([norm(j)]), size=size,
                                                          num_examples=examples))
                    for j in take_part]
        matrix = self._directions()
        return [(self.first_id + int(j), ClientUpdate.from_dense(
                    norm(j) * (matrix[j].astype(np.float64) if matrix is not None
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
        self.took_part.append(self._this_round if self._this_round is not None
                              else np.zeros(self.included.size, dtype=bool))


@dataclass
class GradientCanaryHook(CanaryGradients):
    """Gradient canaries for record-level DP-SGD under secure aggregation (Nasr et al. 2023's
    Dirac canary, Andrew et al. 2024's random direction, in gradient space).

    Canary j is one crafted example held by the real client ``owners[j]``: its clipped
    gradient is ``clip_norm · u_j``, a seeded random unit direction over the item rows of
    one item, ``coords[j]`` (at most the coordinates one real example touches). An included canary
    enters its owner's DP-SGD step every round through the engine's
    :class:`~secure_fedrec.training.canaries.CanaryGradients` hook: Poisson-sampled at the
    step's rate by the client's own CSPRNG coins, clipped, rounded to the lattice on its
    own, summed with the client's examples *before* its noise share, then the secure sum —
    the path of a real record. Every released round is projected on every ``−u_j`` (the
    release is a descent direction: minus the gradient sum), in units of the sum.
    """

    coords: np.ndarray  # (m, w) flat coordinates of each canary
    units: np.ndarray  # (m, w) its unit direction over them
    owners: np.ndarray  # (m,) the real client holding each canary
    members: np.ndarray  # (m,) bool: included in the run (``included`` is the hook's method)
    clip_norm: float
    sample_rate: float
    projections: list[np.ndarray] = field(default_factory=list)
    shifts: list[float] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    #: per observed round, which canaries the steps sampled (reported by the clients' steps; the
    #: auditor's own knowledge, used only by the one-shot *estimate*, never by a score or bound)
    took_part: list[np.ndarray] = field(default_factory=list)
    _held: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _sampled: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.members = np.asarray(self.members, dtype=bool)
        inside = np.flatnonzero(self.members)
        self._held = {int(c): inside[self.owners[inside] == c] for c in np.unique(self.owners[inside])}

    @classmethod
    def design(cls, layout: ParamLayout, item_examples: np.ndarray, client_examples: dict[int, int], *,
               included: np.ndarray, clip_norm: float, sample_rate: float, seed: int,
               isolated: np.ndarray | None = None) -> GradientCanaryHook:
        """Canaries on the items with the fewest training examples (least crosstalk from real
        gradients, as Nasr et al. pick Dirac coordinates), one per item while items last; owners
        spread over the clients, never past the largest client's example count (the encoding's
        planned range). Nothing here depends on which canaries are included.

        ``isolated``: one coordinate per canary that no real example touches (Dirac canaries,
        the audit's isolated design); the canaries are then independent trials."""
        m = len(included)
        rng = np.random.default_rng([seed, 0x6CA])
        if isolated is not None:
            coords = np.asarray(isolated, dtype=np.int64).reshape(m, 1)
            units = np.ones(coords.shape)
        else:
            order = np.lexsort((rng.random(len(item_examples)), np.asarray(item_examples)))
            items = order[np.arange(m) % len(order)]
            width = item_coordinates(layout, items[:1]).size
            coords = (np.vstack([item_coordinates(layout, np.array([i])) for i in items]) if m
                      else np.zeros((0, width), np.int64))
            units = rng.standard_normal(coords.shape)
            units /= np.linalg.norm(units, axis=1, keepdims=True)
        biggest = max(client_examples.values())
        clients = np.array(sorted(client_examples), dtype=np.int64)
        per_client = -(-m // max(1, len(clients)))
        room = np.array([client_examples[int(c)] + per_client <= biggest for c in clients])
        eligible = rng.permutation(clients[room] if room.any() else clients)
        owners = eligible[np.arange(m) % len(eligible)]
        return cls(coords=coords, units=units, owners=owners, members=np.asarray(included, bool),
                   clip_norm=float(clip_norm), sample_rate=float(sample_rate))

    # -- the engine's CanaryGradients hook (called inside each client's DP-SGD step) -------------
    def for_step(self, client: int, round_index: int, step: int) -> list[CanaryGradient]:
        held = self._held.get(int(client))
        if held is None:
            return []
        return [CanaryGradient(indices=self.coords[j], values=self.clip_norm * self.units[j]) for j in held]

    def included(self, client: int, round_index: int, step: int, sampled: np.ndarray) -> None:
        held = self._held.get(int(client))
        if held is None:
            return
        row = self._sampled.setdefault(round_index, np.zeros(len(self.owners), dtype=bool))
        row[held[np.asarray(sampled, dtype=bool)]] = True

    # -- the RoundAuditor side: no canary clients, the release observed ---------------------------
    def canary_updates(self, server: RoundServer, plan: RoundPlan) -> list[tuple[int, ClientUpdate]]:
        return []

    def observe(self, server: RoundServer, plan: RoundPlan, released: Aggregate,
                uploads: Mapping[int, ClientUpdate]) -> None:
        total = released_sum(server, released)
        self.projections.append(-(total[self.coords] * self.units).sum(axis=1))
        self.shifts.append(self.clip_norm)
        self.rounds.append(plan.round_index)
        self.took_part.append(self._sampled.pop(plan.round_index, np.zeros(len(self.owners), dtype=bool)))


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
