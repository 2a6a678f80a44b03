"""The values that flow through the aggregation pipeline, on each side of the secure sum.

Client side (one client at a time)::

    ClientUpdate  --client halves-->  ClientUpdate ... --encoding-->  payload
                                                                      (ring vector, or the float
                                                                       update itself for plaintext)

Server side (once per round)::

    SumOutcome  --encoding-->  Aggregate  --server halves-->  Aggregate (the mean update)

The contexts say what each side may know about the round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["Aggregate", "ClientContext", "ClientUpdate", "Measurements", "Payload", "ServerContext",
           "SumOutcome", "check_number"]

#: a layer's or a protocol's numbers for the round's metrics (name -> value)
Measurements = dict[str, float]


def check_number(name: str, value: object, *, low: float = 0.0, high: float = math.inf,
                 low_open: bool = True, integer: bool = False) -> None:
    """Refuse (``ValueError``) a layer parameter that is not a finite number in its range:
    layers are built from a server's message on a Flower node, so they check themselves."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite {'integer' if integer else 'number'}, got {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        bound = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bound}{low:g}, {high:g}], got {value!r}")


@dataclass(frozen=True)
class ClientUpdate:
    """One client's update over the flat shared-parameter vector, stored sparse.

    A client changes only the rows of the items it touched: ``values`` sit at the
    sorted, distinct positions ``indices`` of a vector of length ``size``; every
    layer that needs the dense vector (masking, noise on every coordinate) calls
    :meth:`dense`. ``weight`` is the weight the update carries into a weighted mean
    (set by the mean layer's client half from ``num_examples``).
    """

    indices: np.ndarray  # int64
    values: np.ndarray  # float64
    size: int
    num_examples: int = 0
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.indices.shape != self.values.shape or self.indices.ndim != 1:
            raise ValueError("indices and values must be 1-D arrays of the same length")

    @classmethod
    def from_dense(cls, vector: np.ndarray, **kwargs) -> ClientUpdate:
        vector = np.asarray(vector, dtype=np.float64)
        return cls(indices=np.arange(vector.size, dtype=np.int64), values=vector, size=vector.size, **kwargs)

    def dense(self) -> np.ndarray:
        out = np.zeros(self.size, dtype=np.float64)
        out[self.indices] = self.values
        return out

    def norm(self) -> float:
        return float(np.sqrt(np.dot(self.values, self.values)))

    def scaled(self, factor: float) -> ClientUpdate:
        return replace(self, values=self.values * factor)

    def with_coordinate(self, value: float) -> ClientUpdate:
        """One more coordinate at the end (a value that must ride through the same sum)."""
        return replace(self, indices=np.append(self.indices, self.size), values=np.append(self.values, value),
                       size=self.size + 1)


#: what a client hands to the sum: a ring vector (uint64, secure protocols) or, for the
#: plaintext "protocol", the float update itself
Payload = np.ndarray | ClientUpdate


@dataclass(frozen=True)
class ClientContext:
    """What a client half may know about the round: all of it is in the server's broadcast."""

    round_index: int
    n_clients: int  # clients asked to train this round: the fixed-point encoder's range
    expected_clients: float  # E[clients per round]


@dataclass
class SumOutcome:
    """What the secure sum (or the plaintext float sum) released, over its contributors."""

    total: np.ndarray  # uint64 ring sum; float64 for the plaintext float sum
    contributors: tuple[int, ...]
    weight_total: float | None = None  # the plaintext sum adds the weights beside the vector
    measurements: Measurements = field(default_factory=dict)


@dataclass
class Aggregate:
    """The server's running value: a sum (then a mean) over ``contributors``."""

    total: np.ndarray  # dense float64
    weight_total: float
    contributors: tuple[int, ...]
    #: std of the noise the aggregate carries per coordinate, in model units (None: no noise)
    noise_stddev: float | None = None


@dataclass(frozen=True)
class ServerContext:
    """What a server half may know about the round.

    ``client_totals`` are the sums of the client halves' measurements over the
    ``reporting_clients`` clients that trained (counts such as ``clipped``);
    ``client_diagnostics`` are individual
    values (``update_norm``) that only a simulation has — a deployment's server never
    sees one client's number, so the Flower engine leaves it empty.
    """

    round_index: int
    n_clients: int
    expected_clients: float
    reporting_clients: int = 0
    client_totals: Mapping[str, float] = field(default_factory=dict)
    client_diagnostics: Mapping[str, list[float]] = field(default_factory=dict)
