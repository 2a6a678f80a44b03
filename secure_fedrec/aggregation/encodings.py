"""The innermost layer: what a client's float update becomes for the sum, and back.

An encoding's client half turns the (clipped, weighted) float update into the
payload the sum adds; its server half turns what the sum released into an
:class:`~.values.Aggregate`:

* :class:`FloatEncoding` — no encoding: the plaintext "protocol" adds float updates
  (the server sees every one; a baseline, no privacy);
* :class:`QuantizedEncoding` — fixed point in ``Z_{2^bits}`` for the secure
  protocols, with the weight as one more coordinate, so the server learns only the
  sum of weights;
* :class:`~.ddg.DistributedDiscreteGaussianEncoding` — integer rounding plus each
  client's discrete Gaussian noise share (:mod:`.ddg`).

``payload_length`` says how long the vector the secure sum adds is (the session
parameters need it); ``bits`` is its ring (``None`` for floats).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from protocols import FixedPointEncoder

from .values import (
    Aggregate,
    ClientContext,
    ClientUpdate,
    Measurements,
    Payload,
    ServerContext,
    SumOutcome,
    check_number,
)

__all__ = ["Encoding", "FloatEncoding", "QuantizedEncoding"]


class Encoding(ABC):
    kind: ClassVar[str]
    bits: int | None

    @abstractmethod
    def payload_length(self, length: int) -> int: ...

    @abstractmethod
    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[Payload, Measurements]: ...

    @abstractmethod
    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]: ...


@dataclass(frozen=True)
class FloatEncoding(Encoding):
    """The float update itself, for the plaintext sum (the server sees every update)."""

    kind: ClassVar[str] = "float"
    bits: None = None

    def payload_length(self, length: int) -> int:
        return length

    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[ClientUpdate, Measurements]:
        return update, {}

    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]:
        if outcome.weight_total is None:
            raise ValueError("the plaintext sum carries the total weight beside the vector")
        return Aggregate(total=outcome.total, weight_total=outcome.weight_total,
                         contributors=outcome.contributors), {}


@dataclass(frozen=True)
class QuantizedEncoding(Encoding):
    """Fixed point in ``Z_{2^bits}``: ``[update..., weight]``, every coordinate clipped to
    ``coordinate_clip`` (values beyond it are clipped and counted; a preceding
    :class:`~.layers.Clip` at L2 norm C already guarantees ``|x_j| <= C``).

    The scale leaves room for ``ctx.n_clients`` summands, the clients asked to train this
    round (:meth:`FixedPointEncoder.for_sum`); client and server build the same encoder
    from the round's broadcast.
    """

    kind: ClassVar[str] = "quantized"
    coordinate_clip: float
    bits: int = 32

    def __post_init__(self) -> None:
        check_number("coordinate_clip", self.coordinate_clip)
        check_number("bits", self.bits, low=2, high=62, low_open=False, integer=True)

    def payload_length(self, length: int) -> int:
        return length + 1  # the weight rides as one more coordinate

    def encoder(self, n_clients: int) -> FixedPointEncoder:
        clip = max(self.coordinate_clip, 1.0)  # the weight coordinate lies in [0, 1]
        return FixedPointEncoder.for_sum(clip=clip, max_summands=max(1, n_clients), bits=self.bits)

    def client(self, update: ClientUpdate, ctx: ClientContext) -> tuple[np.ndarray, Measurements]:
        return self._encode(update.dense(), update.weight, ctx)

    def _encode(self, values: np.ndarray, weight: float, ctx: ClientContext) -> tuple[np.ndarray, Measurements]:
        """``[values..., weight]`` clipped and in the ring (a subclass may pass fewer coordinates)."""
        encoder = self.encoder(ctx.n_clients)
        vector = np.append(values, weight)
        clipped = int(np.count_nonzero(np.abs(vector[:-1]) > self.coordinate_clip))
        vector[:-1] = np.clip(vector[:-1], -self.coordinate_clip, self.coordinate_clip)
        return encoder.to_ring(encoder.quantize(vector)), {"coordinates_clipped": float(clipped)}

    def server(self, outcome: SumOutcome, ctx: ServerContext) -> tuple[Aggregate, Measurements]:
        encoder = self.encoder(ctx.n_clients)
        decoded = encoder.decode(outcome.total)
        aggregate = Aggregate(total=decoded[:-1], weight_total=float(decoded[-1]),
                              contributors=outcome.contributors)
        return aggregate, {"coordinates_clipped": float(ctx.client_totals.get("coordinates_clipped", 0.0)),
                           "quantization_step": 1.0 / encoder.scale}
