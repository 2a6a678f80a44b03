"""The distributed discrete Gaussian encoding (Kairouz, Liu, Steinke 2021).

Each client scales its clipped update by 1/γ, rounds it conditionally (the
rounded vector's L2 norm stays within the planned sensitivity), adds its own
discrete Gaussian share in the integer domain and only then hands the vector
to the secure-sum protocol. The server therefore never sees an un-noised sum;
the shares are sized so that the *minimum* number of survivors the protocol
guarantees already carries the full noise (the plan's ``min_survivors``, which
the session parameters enforce), so a round with fewer survivors releases nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..privacy.discrete_gaussian import sample_discrete_gaussian
from ..privacy.rounding import conditional_randomized_round
from .encodings import Encoding
from .values import (
    Aggregate,
    ClientContext,
    ClientUpdate,
    Measurements,
    ServerContext,
    SumOutcome,
    check_number,
)

__all__ = ["DiscreteGaussianShareEncoding", "DistributedDiscreteGaussianEncoding", "decode_signed"]


def decode_signed(total: np.ndarray, bits: int) -> np.ndarray:
    """A ring sum in ``Z_{2^bits}`` as signed integers in ``[-2^(bits-1), 2^(bits-1))`` (int64)."""
    ring = np.asarray(total).astype(np.uint64) & np.uint64((1 << bits) - 1)
    signed = ring.astype(np.int64)
    signed[ring >= np.uint64(1 << (bits - 1))] -= np.int64(1 << bits)
    return signed


@dataclass(frozen=True)
class DistributedDiscreteGaussianEncoding(Encoding):
    """The client's rounding and noise share; the server's signed decoding.

    The fields are the public numbers of a :class:`~secure_fedrec.privacy.distributed_dp.DdgPlan`
    (integer-domain lengths): what every client needs, and what the server reports.
    """

    kind: ClassVar[str] = "ddg"
    gamma: float  # quantization step: integer 1 stands for gamma in model units
    l2_sensitivity: float  # the conditional rounding's bound on a client's integer vector
    share_sigma: float  # each client's discrete Gaussian scale
    bits: int
    noise_stddev: float  # of the summed noise at the planned minimum of shares, in model units
    wrap_probability: float  # per round (reported)

    def __post_init__(self) -> None:
        _check_fields(self, ("gamma", "l2_sensitivity", "share_sigma"))

    def payload_length(self, length: int) -> int:
        return length  # no weight coordinate: user-level DP weighs every client 1

    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[np.ndarray, Measurements]:
        modulus_mask = np.uint64((1 << self.bits) - 1)
        levels = conditional_randomized_round(update.dense() / self.gamma, self.l2_sensitivity)
        levels = levels + self.noise_share(levels.size)
        return levels.astype(np.uint64) & modulus_mask, {}

    def noise_share(self, size: int) -> np.ndarray:
        """This client's discrete Gaussian share of the sum's noise."""
        return sample_discrete_gaussian(self.share_sigma, size)

    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]:
        return _decode(self, outcome)


@dataclass(frozen=True)
class DiscreteGaussianShareEncoding(Encoding):
    """The client's discrete Gaussian noise share on an update already on the lattice γ·Z.

    Record-level DP-SGD rounds each example's gradient on its own before summing
    (:mod:`secure_fedrec.training.dpsgd_shares`: a bound on the rounded *sum* would not
    bound one example), so the update reaching this encoding holds integers in units of
    ``gamma``; this half only adds the share and reduces modulo ``2^bits``. Anything that is
    not an integer of at most ``max_level`` in magnitude is refused (``ValueError``): the
    client's own training made it, so it is a bug, never data to encode. The server half
    is the same signed decoding as :class:`DistributedDiscreteGaussianEncoding`'s.
    """

    kind: ClassVar[str] = "ddg_shares"
    gamma: float
    share_sigma: float
    bits: int
    max_level: float  # the largest |coordinate| of one client's rounded sum (its examples × bound)
    noise_stddev: float  # of the summed noise at the planned minimum of shares, in model units
    wrap_probability: float  # per round (reported)

    def __post_init__(self) -> None:
        _check_fields(self, ("gamma", "share_sigma", "max_level"))

    def payload_length(self, length: int) -> int:
        return length

    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[np.ndarray, Measurements]:
        levels = self.noise_share(update.size)
        levels[update.indices] += self.checked_levels(update)
        return levels.astype(np.uint64) & np.uint64((1 << self.bits) - 1), {}

    def checked_levels(self, update: ClientUpdate) -> np.ndarray:
        """The update's values as int64 lattice levels; anything else is a ``ValueError``."""
        values = update.values
        if values.size and not (np.all(np.abs(values) <= self.max_level) and np.all(np.floor(values) == values)):
            raise ValueError("a record-level update must hold integers within the planned bound")
        return values.astype(np.int64)

    def noise_share(self, size: int) -> np.ndarray:
        """This client's discrete Gaussian share of the sum's noise, as int64."""
        return sample_discrete_gaussian(self.share_sigma, size)

    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]:
        return _decode(self, outcome)


def _check_fields(encoding: Any, positive: tuple[str, ...]) -> None:
    for name in positive:
        check_number(name, getattr(encoding, name))
    check_number("bits", encoding.bits, low=2, high=62, low_open=False, integer=True)
    check_number("noise_stddev", encoding.noise_stddev, low_open=False)
    check_number("wrap_probability", encoding.wrap_probability, high=1.0, low_open=False)


def _decode(encoding: Any, outcome: SumOutcome) -> tuple[Aggregate, Measurements]:
    """Both DDG encodings' server half: the signed ring sum times γ, with the noise it carries."""
    signed = decode_signed(outcome.total, encoding.bits)
    aggregate = Aggregate(total=signed.astype(np.float64) * encoding.gamma,
                          weight_total=float(len(outcome.contributors)),
                          contributors=outcome.contributors, noise_stddev=encoding.noise_stddev)
    return aggregate, {"ddg_gamma": encoding.gamma, "ddg_share_sigma": encoding.share_sigma,
                       "ddg_wrap_probability": encoding.wrap_probability}
