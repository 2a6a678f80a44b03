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
from typing import ClassVar

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

__all__ = ["DistributedDiscreteGaussianEncoding", "decode_signed"]


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
        for name in ("gamma", "l2_sensitivity", "share_sigma"):
            check_number(name, getattr(self, name))
        check_number("bits", self.bits, low=2, high=62, low_open=False, integer=True)
        check_number("noise_stddev", self.noise_stddev, low_open=False)
        check_number("wrap_probability", self.wrap_probability, high=1.0, low_open=False)

    def payload_length(self, length: int) -> int:
        return length  # no weight coordinate: user-level DP weighs every client 1

    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[np.ndarray, Measurements]:
        modulus_mask = np.uint64((1 << self.bits) - 1)
        levels = conditional_randomized_round(update.dense() / self.gamma, self.l2_sensitivity)
        levels = levels + sample_discrete_gaussian(self.share_sigma, levels.size)
        return levels.astype(np.uint64) & modulus_mask, {}

    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]:
        signed = decode_signed(outcome.total, self.bits)
        aggregate = Aggregate(total=signed.astype(np.float64) * self.gamma,
                              weight_total=float(len(outcome.contributors)),
                              contributors=outcome.contributors, noise_stddev=self.noise_stddev)
        return aggregate, {"ddg_gamma": self.gamma, "ddg_share_sigma": self.share_sigma,
                           "ddg_wrap_probability": self.wrap_probability}
