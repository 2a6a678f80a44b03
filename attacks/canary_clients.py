"""Canary clients scored from what a server observes every round (Andrew et al., ICLR 2024).

A canary client is an extra participant whose update is a fixed random unit
direction ``u_j`` scaled to the clip norm C; it is included in the run with
probability ½ (the one-run design) and, once included, sampled like any
client. Every round the observer sees a released aggregate ``A_t`` (the
noised sum of the round's updates); what it can compute is the projection
``x_jt = <A_t, u_j>``, which gains C when canary j took part and is noise
plus the other clients' crosstalk otherwise. Two scores per canary:

* ``sum`` — Σ_t x_jt / σ_t, Andrew et al.'s statistic (their cosine, summed
  over rounds);
* ``llr`` — the likelihood ratio of "included" against "excluded" for a
  client Poisson-sampled at rate q: Σ_t log(1 − q + q·exp(μ_t z_jt − μ_t²/2))
  with z_jt = x_jt/σ_t and μ_t = C/σ_t. For a Gaussian mechanism it is the
  Neyman–Pearson test of a single canary.

σ_t is estimated from the round's own projections (1.4826·MAD over all
canaries; at most a fraction q of them took part), so noise and crosstalk are
both in it and no inclusion bit is used. Everything here is a function of the
released aggregates and the public canary directions only.

Directions are regenerated from a seed in chunks rather than stored: m
canaries in a model of d shared coordinates would otherwise hold m·d floats
(700 MB for 1000 canaries on MovieLens' 88k coordinates).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ._validation import RandomState, check_random_state

__all__ = ["CanaryDirections", "DiracDirections", "canary_client_scores", "robust_scale", "round_scales",
           "simulate_canary_projections"]

_CHUNK_FLOATS = 1 << 22  # ~32 MB of float64 per generated chunk


@dataclass(frozen=True)
class CanaryDirections:
    """``num_canaries`` seeded random unit vectors in R^dim (Gaussian, normalised).

    >>> d = CanaryDirections(5, 40, seed=1)
    >>> bool(np.allclose(np.linalg.norm(d.rows(0, 5), axis=1), 1.0)), bool(np.allclose(d.vector(3), d.rows(0, 5)[3]))
    (True, True)
    """

    num_canaries: int
    dim: int
    seed: int

    def __post_init__(self) -> None:
        if self.num_canaries < 1 or self.dim < 1:
            raise ValueError("num_canaries and dim must be positive")

    def vector(self, j: int) -> np.ndarray:
        if not 0 <= j < self.num_canaries:
            raise IndexError(f"canary {j} out of range")
        v = np.random.default_rng([self.seed, 0xCA9, int(j)]).standard_normal(self.dim)
        return v / np.linalg.norm(v)

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.vstack([self.vector(j) for j in range(start, stop)])

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        step = max(1, _CHUNK_FLOATS // self.dim)
        for start in range(0, self.num_canaries, step):
            yield start, self.rows(start, min(self.num_canaries, start + step))

    def project(self, aggregate: np.ndarray) -> np.ndarray:
        """``<aggregate, u_j>`` for every canary j."""
        a = np.asarray(aggregate, dtype=np.float64)
        if a.shape != (self.dim,):
            raise ValueError(f"aggregate must have shape ({self.dim},), got {a.shape}")
        out = np.empty(self.num_canaries)
        for start, rows in self.chunks():
            out[start:start + len(rows)] = rows @ a
        return out


@dataclass(frozen=True)
class DiracDirections:
    """Canary j is the unit vector on coordinate ``coordinates[j]``: each canary alone on its own
    coordinate (Nasr et al. 2023's Dirac canary).

    When nothing but canary j ever writes to its coordinate, its projections are a function of
    its own inclusion, its own sampling coins and the noise on that coordinate only: the
    canaries are independent trials (the premise of :func:`attacks.audit_heldout_fdp`). Whether
    nothing else writes there is the caller's design (for example coordinates of items nobody
    rated), not something this class can see.

    >>> d = DiracDirections(np.array([4, 1]), 6)
    >>> d.project(np.arange(6.0)).tolist(), d.vector(1).tolist()
    ([4.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    """

    coordinates: np.ndarray
    dim: int

    def __post_init__(self) -> None:
        c = np.asarray(self.coordinates, dtype=np.int64).reshape(-1)
        if c.size < 1 or self.dim < 1:
            raise ValueError("need at least one canary coordinate and a positive dimension")
        if c.min() < 0 or c.max() >= self.dim:
            raise ValueError(f"canary coordinates must lie in [0, {self.dim})")
        if np.unique(c).size != c.size:
            raise ValueError("canary coordinates must be distinct (one coordinate per canary)")
        object.__setattr__(self, "coordinates", c)

    @property
    def num_canaries(self) -> int:
        return int(self.coordinates.size)

    def vector(self, j: int) -> np.ndarray:
        if not 0 <= j < self.num_canaries:
            raise IndexError(f"canary {j} out of range")
        out = np.zeros(self.dim)
        out[self.coordinates[j]] = 1.0
        return out

    def project(self, aggregate: np.ndarray) -> np.ndarray:
        """``<aggregate, e_{c_j}>`` for every canary j: the aggregate at each canary's coordinate."""
        a = np.asarray(aggregate, dtype=np.float64)
        if a.shape != (self.dim,):
            raise ValueError(f"aggregate must have shape ({self.dim},), got {a.shape}")
        return a[self.coordinates]


def robust_scale(values: np.ndarray) -> float:
    """1.4826 × the median absolute deviation: σ of the bulk, insensitive to a few shifted values.

    >>> round(robust_scale(np.random.default_rng(0).standard_normal(20000) * 3.0), 1)
    3.0
    """
    v = np.asarray(values, dtype=np.float64)
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def round_scales(projections: np.ndarray) -> np.ndarray:
    """Each round's noise scale over the canaries: :func:`robust_scale`, else the standard
    deviation (a round without noise where most projections are exactly 0), else 1 (an
    all-equal round, which then carries no evidence).

    >>> round_scales(np.array([[0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]])).round(3).tolist()
    [0.866, 1.0]
    """
    x = np.asarray(projections, dtype=np.float64)
    scales = np.array([robust_scale(row) for row in x])
    fallback = x.std(axis=1)
    scales = np.where(scales > 0, scales, fallback)
    return np.where(scales > 0, scales, 1.0)


def canary_client_scores(
    projections: np.ndarray, *, shift: float | np.ndarray, sample_rate: float,
    took_part: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``{"llr": ..., "sum": ...}`` from per-round projections, shape (rounds, canaries).

    ``shift`` is what one participation adds to a projection (the canary norm
    in the aggregate's units), per round or one value for all.

    ``took_part`` (same shape, bool): an observer that knows which canary took part in which
    round, member or not (a server that picks the sample). Only those rounds carry evidence for
    it, and in them the canary's effect is unmixed: the score is the log-likelihood ratio of the
    Gaussian shift summed over the rounds taken part in (``sample_rate`` is then not used).
    """
    x = np.asarray(projections, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:
        raise ValueError("projections must have shape (rounds >= 1, canaries >= 2)")
    if not np.all(np.isfinite(x)):
        raise ValueError("projections contain NaN or infinite values")
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError("sample_rate must be in (0, 1]")
    shifts = np.broadcast_to(np.asarray(shift, dtype=np.float64), (x.shape[0],))
    sigma = round_scales(x)
    z = x / sigma[:, None]
    mu = (shifts / sigma)[:, None]
    log_ratio = mu * z - mu * mu / 2
    if took_part is not None:
        known = np.asarray(took_part)
        if known.shape != x.shape or known.dtype != bool:
            raise ValueError("took_part must be a bool array of the projections' shape")
        return {"llr": np.where(known, log_ratio, 0.0).sum(axis=0), "sum": np.where(known, z, 0.0).sum(axis=0)}
    # log(1 - q + q e^a), stable for the large a of a run without noise
    llr = (np.logaddexp(np.log1p(-sample_rate), np.log(sample_rate) + log_ratio) if sample_rate < 1
           else log_ratio).sum(axis=0)
    return {"llr": llr, "sum": z.sum(axis=0)}


def simulate_canary_projections(
    num_canaries: int, rounds: int, *, sample_rate: float, mu: float, random_state: RandomState = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(included, projections)`` of canaries under an ideal Gaussian mechanism (noise units).

    Each canary is included with probability ½, an included canary takes part
    in each round with probability ``sample_rate`` and then shifts its
    projection by ``mu`` = clip norm / noise std; no crosstalk. Scoring these
    with :func:`canary_client_scores` and auditing them gives what the audit
    can certify at best with this many canaries: its ceiling.
    """
    rng = check_random_state(random_state)
    included = rng.random(num_canaries) < 0.5
    took_part = (rng.random((rounds, num_canaries)) < sample_rate) & included[None, :]
    return included, rng.standard_normal((rounds, num_canaries)) + mu * took_part
