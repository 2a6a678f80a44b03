"""The compact upload at record level: a public subset of the coordinates, no rotation.

User-level DP rounds one vector per client, so :class:`~.compact.CompactRotatedEncoding`
rotates the client's update before rounding it and sums it in a 16-bit ring. Record-level
mechanisms cannot do either: distributed DP-SGD rounds *each example* on the lattice on its
own before the client sums them (a bound on a rounded sum says nothing about one example,
docs/privacy.md §4.4); a rotated example would touch every coordinate (``d`` coin flips per
example instead of ``d_e``); and the ring must hold the worst case of every training example
(the planner finds no lattice step for ml-latest-small's 80,000 ratings in 16 bits). What
both record-level mechanisms can do cheaply is upload only a public random subset of the
coordinates each round — the one :func:`~.compact.public_subset` draws for the user-level
encoding:

* :class:`SubsetShareEncoding` — distributed noise: the client's integer update (its
  examples' rounded gradients, in units of γ) restricted to the round's subset, plus its
  discrete Gaussian share on the kept coordinates only, in the plan's ring;
* :class:`SubsetQuantizedEncoding` — local noise: the fixed point of
  :class:`~.encodings.QuantizedEncoding` on the kept coordinates, the weight always kept.

Privacy: the subset depends on nothing private, and restricting a vector to it is a
projection, so an example's rounded gradient keeps its norm bound and the accountant's
sensitivity holds on the kept coordinates, the mechanism's dimension (distributed); a
client's DP-SGD output is private before it is encoded, so any encoding is post-processing
(local). The server scatters the decoded sum back into the model's coordinates: the step
gets no data gradient on the ones a round did not keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .compact import compact_length, public_subset
from .ddg import DiscreteGaussianShareEncoding, decode_signed
from .encodings import QuantizedEncoding
from .values import (
    Aggregate,
    ClientContext,
    ClientUpdate,
    Measurements,
    ServerContext,
    SumOutcome,
    check_number,
)

__all__ = ["SubsetQuantizedEncoding", "SubsetShareEncoding"]


def _check_subset(encoding: SubsetShareEncoding | SubsetQuantizedEncoding) -> None:
    check_number("keep_fraction", encoding.keep_fraction, high=1.0)
    check_number("salt", encoding.salt, low=0, low_open=False, high=2**63, integer=True)
    check_number("dense_length", encoding.dense_length, low=1, low_open=False, high=2**40, integer=True)


def _scatter(kept: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.float64)
    out[kept] = values
    return out


@dataclass(frozen=True, kw_only=True)
class SubsetShareEncoding(DiscreteGaussianShareEncoding):
    """Record-level distributed noise on a public subset: the kept integers, their noise shares."""

    kind: ClassVar[str] = "subset_shares"
    keep_fraction: float  # of the coordinates, kept each round
    salt: int  # public: with the round index, seeds the subset
    dense_length: int  # the update's length before the subset (the server scatters back into it)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_subset(self)

    def payload_length(self, length: int) -> int:
        return compact_length(length, self.keep_fraction)

    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[np.ndarray, Measurements]:
        if update.size != self.dense_length:
            raise ValueError(f"an update of {update.size} coordinates, the encoding expects {self.dense_length}")
        values = self.checked_levels(update)
        kept = public_subset(self.salt, ctx.round_index, self.dense_length, self.keep_fraction)
        levels = self.noise_share(kept.size)
        # the client's touched coordinates that the round keeps, at their place in the subset
        where = np.searchsorted(kept, update.indices)
        inside = (where < kept.size) & (kept[np.minimum(where, kept.size - 1)] == update.indices)
        levels[where[inside]] += values[inside]
        return levels.astype(np.uint64) & np.uint64((1 << self.bits) - 1), {}

    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]:
        expected = self.payload_length(self.dense_length)
        if outcome.total.size != expected:
            raise ValueError(f"a sum of {outcome.total.size} coordinates, the encoding expects {expected}")
        kept = public_subset(self.salt, ctx.round_index, self.dense_length, self.keep_fraction)
        signed = decode_signed(outcome.total, self.bits)
        aggregate = Aggregate(total=_scatter(kept, signed.astype(np.float64) * self.gamma, self.dense_length),
                              weight_total=float(len(outcome.contributors)),
                              contributors=outcome.contributors, noise_stddev=self.noise_stddev)
        return aggregate, {"ddg_gamma": self.gamma, "ddg_share_sigma": self.share_sigma,
                           "ddg_wrap_probability": self.wrap_probability}


@dataclass(frozen=True, kw_only=True)
class SubsetQuantizedEncoding(QuantizedEncoding):
    """Record-level local noise on a public subset: fixed point of the kept coordinates and the weight."""

    kind: ClassVar[str] = "subset_quantized"
    keep_fraction: float
    salt: int
    dense_length: int

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_subset(self)

    def payload_length(self, length: int) -> int:
        return compact_length(length, self.keep_fraction) + 1  # the weight rides as one more coordinate

    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[np.ndarray, Measurements]:
        if update.size != self.dense_length:
            raise ValueError(f"an update of {update.size} coordinates, the encoding expects {self.dense_length}")
        kept = public_subset(self.salt, ctx.round_index, self.dense_length, self.keep_fraction)
        return self._encode(update.dense()[kept], update.weight, ctx)

    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]:
        expected = self.payload_length(self.dense_length)
        if outcome.total.size != expected:
            raise ValueError(f"a sum of {outcome.total.size} coordinates, the encoding expects {expected}")
        aggregate, measurements = super().server(outcome, ctx)
        kept = public_subset(self.salt, ctx.round_index, self.dense_length, self.keep_fraction)
        full = Aggregate(total=_scatter(kept, aggregate.total, self.dense_length),
                         weight_total=aggregate.weight_total, contributors=aggregate.contributors)
        return full, measurements
