"""Fixed-point encoding of float vectors into the ring Z_{2^b}.

Every secure-sum protocol in this package adds integers, so floats are
quantized first. One encoder serves all protocols (masking and Paillier).

Worked example of the edge case, with ``bits=8`` (modulus 256), ``clip=1.0``
and ``max_summands=3``::

    scale = floor((2**7 - 1) / 3 - 1) / 1.0 = 41   # levels per unit (one level
                                                   # per summand kept for rounding up)
    x = -0.5  ->  q = -20 or -21 (stochastic)  ->  ring 236 or 235
    three clients at -1.0 each: 3 * (-41) = -123 -> ring 133 -> decoded -123 (ok)
    a fourth would give -164 < -127: it wraps to ring 92, which decodes to +92.

That is why :meth:`FixedPointEncoder.for_sum` derives the scale from the
number of summands, and why :meth:`check_no_wrap` refuses more summands than
the scale was built for: a wrapped sum decodes to a wrong value silently.

Stochastic rounding (``floor(x*s) + Bernoulli(frac)``) keeps the encoding
unbiased, E[decode(encode(x))] = x, so the quantization error averages out
across clients instead of accumulating as a bias. Its coin flips come from
``os.urandom`` (the rounding reveals a little about the fractional part of
the input, so it is treated like any other client-side randomness).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .errors import EncodingError

__all__ = ["FixedPointEncoder", "csprng_uniform"]

_MAX_BITS = 62  # sums are held in int64/uint64; leave room for the sign and one carry


def csprng_uniform(size: int) -> np.ndarray:
    """Uniform floats in [0, 1) from the operating system's CSPRNG (53-bit resolution)."""
    if size < 0:
        raise ValueError("size must be non-negative")
    raw = np.frombuffer(os.urandom(8 * size), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True)
class FixedPointEncoder:
    """Map floats in ``[-clip, clip]`` to integers in Z_{2^bits} and back.

    Parameters
    ----------
    clip:
        Values are clipped to ``[-clip, clip]`` before encoding (per coordinate).
    scale:
        Integer levels per unit of value.
    bits:
        The ring is Z_{2^bits}; 1 <= bits <= 62.
    max_summands:
        The number of encoded vectors that may be added without wrapping.
    """

    clip: float
    scale: float
    bits: int = 32
    max_summands: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 2 <= self.bits <= _MAX_BITS):
            raise EncodingError(f"bits must be an integer in [2, {_MAX_BITS}], got {self.bits!r}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise EncodingError(f"clip must be a positive finite number, got {self.clip!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise EncodingError(f"scale must be a positive finite number, got {self.scale!r}")
        if not (isinstance(self.max_summands, int) and self.max_summands >= 1):
            raise EncodingError(f"max_summands must be a positive integer, got {self.max_summands!r}")
        self.check_no_wrap(self.max_summands)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def for_sum(cls, *, clip: float, max_summands: int, bits: int = 32) -> FixedPointEncoder:
        """The finest scale at which ``max_summands`` vectors clipped to ``clip`` cannot wrap.

        One extra level per summand is reserved for stochastic rounding, which
        can round ``clip * scale`` up by one.
        """
        if not (isinstance(max_summands, int) and max_summands >= 1):
            raise EncodingError(f"max_summands must be a positive integer, got {max_summands!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise EncodingError(f"clip must be a positive finite number, got {clip!r}")
        if not (isinstance(bits, int) and 2 <= bits <= _MAX_BITS):
            raise EncodingError(f"bits must be an integer in [2, {_MAX_BITS}], got {bits!r}")
        # In integers: with bits >= 55, float64 rounds half / max_summands up
        # (e.g. 2^61 - 1 -> 2^61), and the encoder built from it failed its own
        # no-wrap check.
        half = (1 << (bits - 1)) - 1
        levels = half // max_summands - 1
        if levels < 1:
            raise EncodingError(
                f"{max_summands} summands of range ±{clip} do not fit in {bits} bits: "
                f"raise bits to at least {math.ceil(math.log2(max_summands * 4)) + 1}, "
                "lower the number of clients per round, or lower clip"
            )
        scale = levels / float(clip)
        if not math.isfinite(scale):
            raise EncodingError(f"clip {clip!r} is too small to encode at {bits} bits")
        # levels / clip is rounded to the nearest float, which may be just above the
        # exact quotient; step down until the largest encoded level fits (a few
        # ulps at most, and only when levels exceeds 2^53 or clip is not a power of 2).
        while math.ceil(clip * scale) > levels:
            scale = math.nextafter(scale, 0.0)
        return cls(clip=float(clip), scale=scale, bits=bits, max_summands=max_summands)

    # -- derived quantities ---------------------------------------------------------------
    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def max_level(self) -> int:
        """The largest absolute integer one encoded coordinate can take."""
        return math.ceil(self.clip * self.scale)

    def check_no_wrap(self, summands: int) -> None:
        """Raise :class:`EncodingError` if ``summands`` encoded vectors could wrap the modulus."""
        bound = summands * self.max_level
        if bound > (1 << (self.bits - 1)) - 1:
            raise EncodingError(
                f"summing {summands} vectors of up to ±{self.max_level} levels can wrap Z_2^{self.bits}: "
                f"raise bits, lower scale (now {self.scale:g}), lower clip (now {self.clip:g}) "
                "or sum fewer vectors"
            )

    # -- encode / decode --------------------------------------------------------------------
    def quantize(self, values: np.ndarray, *, stochastic: bool = True) -> np.ndarray:
        """Clip and round to signed integer levels (int64), unbiased when ``stochastic``."""
        x = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise EncodingError("cannot encode NaN or infinite values")
        scaled = np.clip(x, -self.clip, self.clip) * self.scale
        if stochastic:
            low = np.floor(scaled)
            q = low + (csprng_uniform(scaled.size).reshape(scaled.shape) < (scaled - low))
        else:
            q = np.rint(scaled)
        return q.astype(np.int64)

    def to_ring(self, levels: np.ndarray) -> np.ndarray:
        """Signed levels → elements of Z_{2^bits} as uint64 (two's complement)."""
        q = np.asarray(levels, dtype=np.int64)
        return q.astype(np.uint64) & np.uint64(self.modulus - 1)

    def encode(self, values: np.ndarray, *, stochastic: bool = True) -> np.ndarray:
        """Floats → ring elements (uint64 in ``[0, 2^bits)``)."""
        return self.to_ring(self.quantize(values, stochastic=stochastic))

    def from_ring(self, ring_values: np.ndarray) -> np.ndarray:
        """Ring elements → signed levels (the two's-complement reading)."""
        r = np.asarray(ring_values, dtype=np.uint64) & np.uint64(self.modulus - 1)
        signed = r.astype(np.int64)
        signed[r >= np.uint64(1 << (self.bits - 1))] -= np.int64(self.modulus) if self.bits < 63 else 0
        return signed

    def decode(self, ring_values: np.ndarray) -> np.ndarray:
        """A ring element (one vector or a sum of at most ``max_summands``) → floats."""
        return self.from_ring(ring_values).astype(np.float64) / self.scale

    def ring_sum(self, vectors: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """The modular sum of ring vectors, as the protocols compute it (reference)."""
        stacked = np.asarray(vectors, dtype=np.uint64)
        return stacked.sum(axis=0, dtype=np.uint64) & np.uint64(self.modulus - 1)
