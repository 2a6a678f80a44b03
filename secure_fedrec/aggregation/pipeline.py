"""A whole aggregation pipeline: layers (outermost first) around one encoding, and the sum between.

::

    client:  update -> layers[0].client -> ... -> layers[-1].client -> encoding.client -> payload
    (the secure sum adds the payloads of the clients that survive)
    server:  outcome -> encoding.server -> layers[-1].server -> ... -> layers[0].server -> mean update

The pipeline is a frozen value: the privacy plan builds it once per run
(:mod:`secure_fedrec.plans`), the server keeps the layers' states, and a client
needs nothing but the pipeline and the round's broadcast to compute its payload.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .encodings import Encoding
from .layers import Layer
from .values import (
    Aggregate,
    ClientContext,
    ClientUpdate,
    Measurements,
    Payload,
    ServerContext,
    SumOutcome,
)

__all__ = ["DIAGNOSTIC_KEYS", "AggregationPipeline"]

#: client measurements that are one client's private number, not a count: kept per client by a
#: simulation (medians in the round's metrics), never sent by a deployment's nodes
DIAGNOSTIC_KEYS = frozenset({"update_norm"})


@dataclass(frozen=True)
class AggregationPipeline:
    layers: tuple[Layer, ...]
    encoding: Encoding

    @property
    def bits(self) -> int | None:
        """The ring the secure sum adds in (``None``: the plaintext float sum)."""
        return self.encoding.bits

    def initial_states(self) -> tuple[Any, ...]:
        return tuple(layer.initial_state() for layer in self.layers)

    def payload_length(self, dim: int) -> int:
        """The length of the vector each client hands to the sum, for a model of ``dim`` shared values."""
        length = dim
        for layer in self.layers:
            length = layer.client_length(length)
        return self.encoding.payload_length(length)

    def client(self, update: ClientUpdate, states: Sequence[Any], ctx: ClientContext
               ) -> tuple[Payload, Measurements]:
        """Every client half, outermost first, then the encoding; ``encode_seconds`` is their CPU time."""
        started = time.process_time()
        measurements: Measurements = {}
        for layer, state in zip(self.layers, states, strict=True):
            update, step = layer.client(update, state, ctx)
            measurements.update(step)
        payload, step = self.encoding.client(update, ctx)
        measurements.update(step)
        measurements["encode_seconds"] = time.process_time() - started
        return payload, measurements

    def server(self, outcome: SumOutcome, states: Sequence[Any], ctx: ServerContext
               ) -> tuple[Aggregate, tuple[Any, ...], Measurements]:
        """The encoding's server half, then every layer's, innermost first; the next states."""
        measurements: Measurements = dict(outcome.measurements)
        if "protocol_client_seconds" in measurements:  # the clients' encoding is part of their protocol cost
            measurements["protocol_client_seconds"] += ctx.client_totals.get("encode_seconds", 0.0)
        aggregate, step = self.encoding.server(outcome, ctx)
        measurements.update(step)
        next_states = list(states)
        for index in reversed(range(len(self.layers))):
            aggregate, next_states[index], step = self.layers[index].server(aggregate, states[index], ctx)
            measurements.update(step)
        if aggregate.noise_stddev is not None:
            measurements["noise_stddev"] = float(aggregate.noise_stddev)
        return aggregate, tuple(next_states), measurements
