"""A node's model update as one ring vector: the weighted parameters and the weight, in fixed point.

A node uploads ``[w·x, w]`` with ``x`` its flattened parameters and ``w = min(n, max_weight)
/ max_weight`` for its ``n`` training examples, so the secure sum gives ``Σ w·x`` and
``Σ w`` and the server the weighted mean ``Σ w·x / Σ w`` — what FedAvg computes —
without learning any node's ``x`` or ``n``. Every coordinate of ``w·x`` is clipped to
``±clip`` (values beyond it are the caller's to avoid: Flower's SecAgg+ has the same
``clipping_range``); the fixed-point scale leaves room for ``summands`` vectors
(:meth:`protocols.FixedPointEncoder.for_sum`). A member that does not train in a round
of a multi-round session uploads the zero vector: ``w = 0``, nothing added.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..encoding import FixedPointEncoder
from ..errors import EncodingError

__all__ = ["WeightedEncoding"]


@dataclass(frozen=True)
class WeightedEncoding:
    """Client and server build the same one from the parameters the workflow sends."""

    clip: float = 8.0
    max_weight: float = 1000.0
    bits: int = 32
    summands: int = 2

    def __post_init__(self) -> None:
        for name in ("clip", "max_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= 1e12):
                raise ValueError(f"{name} must be a number in (0, 1e12], got {value!r}")
        if not (isinstance(self.summands, int) and 1 <= self.summands <= 0xFFFFFFFF):
            raise ValueError(f"summands must be an integer in [1, 2^32), got {self.summands!r}")
        self.encoder()  # refuses bits and summands that do not fit

    def encoder(self) -> FixedPointEncoder:
        # The weight coordinate lies in [0, 1]: the range is at least that.
        return FixedPointEncoder.for_sum(clip=max(float(self.clip), 1.0), max_summands=self.summands,
                                         bits=self.bits)

    @staticmethod
    def length(shapes: Sequence[tuple[int, ...]]) -> int:
        """The ring vector's length for parameters of these shapes (the weight is one more)."""
        return sum(math.prod(s) for s in shapes) + 1

    def weight(self, examples: float) -> float:
        if not math.isfinite(examples) or examples < 0:
            raise EncodingError(f"the number of training examples must be finite and >= 0, got {examples!r}")
        return min(float(examples), self.max_weight) / self.max_weight

    def encode(self, arrays: Sequence[np.ndarray], examples: float) -> np.ndarray:
        """``[w·x, w]`` in the ring (uint64 words), stochastically rounded (unbiased)."""
        w = self.weight(examples)
        flat = (np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
                if arrays else np.zeros(0))
        return self.encoder().encode(flat * w, weight=w)

    def decode(self, total: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> tuple[list[np.ndarray], float]:
        """The weighted mean as arrays of ``shapes``, and the summed weight (0: nothing to average)."""
        values = self.encoder().decode(np.asarray(total, dtype=np.uint64))
        if values.size != self.length(shapes):
            raise EncodingError(f"the sum has {values.size} coordinates, the parameters {self.length(shapes)}")
        weight = float(values[-1])
        mean = values[:-1] / weight if weight > 0 else np.zeros(values.size - 1)
        arrays, start = [], 0
        for shape in shapes:
            size = math.prod(shape)
            arrays.append(mean[start:start + size].reshape(shape))
            start += size
        return arrays, weight
