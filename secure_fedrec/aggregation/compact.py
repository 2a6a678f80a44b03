"""A compact, row-hiding upload: a public coordinate subset, rotated, in a 16-bit ring.

The dense encodings upload every coordinate of the shared parameters in a 32-bit
ring, so the masked vector hides which item rows a user touched but costs 4 bytes
per coordinate. This encoding cuts the bytes twice, without looking at the data:

1. **a public coordinate subset**: each round keeps ``kept`` of the ``length``
   coordinates, the same ones for every client, drawn from ``(salt, round)``
   before any client trains (the trailing ``dense_tail`` coordinates, e.g. the
   adaptive clipping bit, are always kept). Which coordinates travel depends on
   nothing private, so the upload still hides the touched rows; the server
   applies the sum on the kept coordinates and a zero update to the others
   (FedAdam's momentum still moves them; keeping the moments of unobserved
   coordinates frozen instead measured worse, docs/results.md);
2. **a randomized rotation and fewer bits** (Kairouz, Liu, Steinke 2021, §4):
   random signs and an orthonormal DCT-II flatten the kept vector (each rotated
   coordinate of a sum of norm ``S`` is sub-Gaussian with variance proxy
   ``2 S^2 / kept``), so a ring of ``bits`` (16 by default, 2 bytes per
   coordinate on the wire) holds the noisy sum; the rare coordinate that wraps
   is *modular clipping*, a utility loss only (the modular sum is a function of
   the integer sum, see docs/privacy.md).

The rounding and the client's discrete Gaussian share are those of
:class:`~.ddg.DistributedDiscreteGaussianEncoding`, applied in the rotated
domain: the rotation is orthonormal and the subset a projection, so a clipped
update keeps its L2 bound and the accountant's sensitivity is unchanged; the
mechanism's dimension is ``payload_length`` (the accountant is built for it).
With ``share_sigma = 0`` the client adds no noise; central noise
(``central_stddev``) is added by the server to the kept coordinates after the
sum, sized for ``gamma * l2_sensitivity``, the rounded vector's bound.

The subset and the signs are public randomness (numpy's PCG64 from the salt and
the round): they need no secrecy, and the privacy argument holds for any subset
and any signs, even ones the server picks; they only move the wrap probability.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..privacy.discrete_gaussian import sample_discrete_gaussian
from ..privacy.noise import csprng_normal
from ..privacy.rounding import conditional_randomized_round
from .ddg import decode_signed
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

__all__ = ["CompactRotatedEncoding", "compact_length", "public_subset"]

#: the public stream's domain separator (so the subset never reuses another stream of the seed)
_STREAM = 0x636F6D70  # "comp"


def compact_length(length: int, keep_fraction: float, dense_tail: int = 0) -> int:
    """How many of ``length`` coordinates a round keeps (``dense_tail`` of them always)."""
    body = length - dense_tail
    return max(1, round(keep_fraction * body)) + dense_tail


def public_subset(salt: int, round_index: int, length: int, keep_fraction: float,
                  dense_tail: int = 0) -> np.ndarray:
    """The coordinates a round keeps (sorted; the ``dense_tail`` last ones always): public, drawn
    from ``(salt, round_index)`` alone, the same for every party and independent of any data.
    Read-only: one draw serves every client of the round in a process."""
    return _public_draw(salt, round_index, length, keep_fraction, dense_tail)[0]


@functools.lru_cache(maxsize=4)
def _public_draw(salt: int, round_index: int, length: int, keep_fraction: float,
                 dense_tail: int) -> tuple[np.ndarray, np.ndarray]:
    """The round's subset and signs. Drawing a subset of ~10^5 coordinates costs ~1 ms, paid
    once per round instead of once per client (a record-level round has every client)."""
    kept, rng = _draw_subset(salt, round_index, length, keep_fraction, dense_tail)
    signs = rng.integers(0, 2, size=kept.size).astype(np.float64) * 2.0 - 1.0
    kept.flags.writeable = False
    signs.flags.writeable = False
    return kept, signs


def _draw_subset(salt: int, round_index: int, length: int, keep_fraction: float,
                 dense_tail: int) -> tuple[np.ndarray, np.random.Generator]:
    rng = np.random.default_rng([_STREAM, salt, round_index])
    body = length - dense_tail
    kept_body = compact_length(length, keep_fraction, dense_tail) - dense_tail
    kept = np.sort(rng.choice(body, size=kept_body, replace=False))
    return np.concatenate([kept, np.arange(body, length)]).astype(np.int64), rng


@dataclass(frozen=True)
class CompactRotatedEncoding(Encoding):
    """Public subset, random signs and orthonormal DCT, rounding, discrete Gaussian share, ``Z_{2^bits}``."""

    kind: ClassVar[str] = "compact"
    keep_fraction: float  # of the coordinates, kept each round
    salt: int  # public: with the round index, seeds the subset and the signs
    dense_length: int  # the update's length before the subset (the server scatters back into it)
    gamma: float  # quantization step: integer 1 stands for gamma in (rotated) model units
    l2_sensitivity: float  # the conditional rounding's bound on a client's integer vector
    share_sigma: float  # each client's discrete Gaussian scale (0: no client noise)
    bits: int = 16
    noise_stddev: float = 0.0  # of the summed noise per kept coordinate, in model units (reported)
    wrap_probability: float = 0.0  # per round (reported)
    dense_tail: int = 0  # trailing coordinates always kept (the adaptive clipping bit)
    #: central DP: the server adds N(0, central_stddev^2) to each kept coordinate after the sum
    central_stddev: float = 0.0
    #: central noise: the ring holds this many clients' worst case; a sum of more is not decoded
    max_summands: int = 0  # 0: no limit (client noise: a wrap is post-processing of the noisy sum)

    def __post_init__(self) -> None:
        check_number("keep_fraction", self.keep_fraction, high=1.0)
        check_number("salt", self.salt, low=0, low_open=False, high=2**63, integer=True)
        for name in ("gamma", "l2_sensitivity"):
            check_number(name, getattr(self, name))
        check_number("share_sigma", self.share_sigma, low_open=False)
        check_number("central_stddev", self.central_stddev, low_open=False)
        check_number("max_summands", self.max_summands, low_open=False, high=2**31, integer=True)
        check_number("bits", self.bits, low=8, high=32, low_open=False, integer=True)
        check_number("noise_stddev", self.noise_stddev, low_open=False)
        check_number("wrap_probability", self.wrap_probability, high=1.0, low_open=False)
        check_number("dense_tail", self.dense_tail, low=0, low_open=False, high=8, integer=True)
        check_number("dense_length", self.dense_length, low=self.dense_tail, integer=True)

    def payload_length(self, length: int) -> int:
        # no weight coordinate: user-level DP weighs every client 1
        return compact_length(length, self.keep_fraction, self.dense_tail)

    def _public(self, round_index: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """The round's kept coordinates (sorted) and signs: public, the same for every party."""
        return _public_draw(self.salt, round_index, length, self.keep_fraction, self.dense_tail)

    def rotate(self, vector: np.ndarray, round_index: int) -> np.ndarray:
        """The kept coordinates of a dense ``vector``, sign-flipped and rotated (norm <= ``||vector||``)."""
        # imported here, not with the module: a Flower node on a dense run loads no scipy
        from scipy import fft

        kept, signs = self._public(round_index, vector.size)
        return fft.dct(vector[kept] * signs, norm="ortho")

    def unrotate(self, rotated: np.ndarray, round_index: int, length: int) -> np.ndarray:
        """The inverse of :meth:`rotate` on the kept coordinates; zeros elsewhere."""
        from scipy import fft

        kept, signs = self._public(round_index, length)
        out = np.zeros(length, dtype=np.float64)
        out[kept] = fft.idct(rotated, norm="ortho") * signs
        return out

    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[np.ndarray, Measurements]:
        if update.size != self.dense_length:
            raise ValueError(f"an update of {update.size} coordinates, the encoding expects {self.dense_length}")
        rotated = self.rotate(update.dense(), ctx.round_index)
        levels = conditional_randomized_round(rotated / self.gamma, self.l2_sensitivity)
        if self.share_sigma > 0:
            levels = levels + sample_discrete_gaussian(self.share_sigma, levels.size)
        return levels.astype(np.uint64) & np.uint64((1 << self.bits) - 1), {}

    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]:
        if self.max_summands and len(outcome.contributors) > self.max_summands:
            # more clients than the ring was sized for: a wrap could not be ruled out, release nothing
            nothing = Aggregate(total=np.zeros(self.dense_length), weight_total=0.0, contributors=())
            return nothing, {"compact_refused": 1.0}
        signed = decode_signed(outcome.total, self.bits)
        length = self._length_from_payload(signed.size)
        rotated = signed.astype(np.float64) * self.gamma
        if self.central_stddev > 0:  # rotation is orthonormal: the same noise on the kept coordinates
            rotated += self.central_stddev * csprng_normal(rotated.size)
        dense = self.unrotate(rotated, ctx.round_index, length)
        # how close the sum came to the ring's edge: the largest rotated coordinate over 2^(bits-1)
        peak = float(np.max(np.abs(signed))) / float(1 << (self.bits - 1)) if signed.size else 0.0
        aggregate = Aggregate(total=dense, weight_total=float(len(outcome.contributors)),
                              contributors=outcome.contributors,
                              noise_stddev=self.noise_stddev + self.central_stddev)
        return aggregate, {"compact_gamma": self.gamma, "compact_share_sigma": self.share_sigma,
                           "compact_ring_peak": peak, "compact_wrap_probability": self.wrap_probability}

    def _length_from_payload(self, kept: int) -> int:
        if self.payload_length(self.dense_length) != kept:
            raise ValueError(f"a sum of {kept} coordinates, the encoding expects "
                             f"{self.payload_length(self.dense_length)}")
        return self.dense_length
