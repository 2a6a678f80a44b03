"""Aggregation as a pipeline of layers, each split into a client half and a server half.

* :mod:`.values` — what flows: :class:`ClientUpdate` on a client, :class:`Aggregate` on the server;
* :mod:`.layers` — :class:`Mean`, :class:`ExpectedBatchMean`, :class:`Clip`, :class:`AdaptiveClip`,
  :class:`CentralGaussianNoise`;
* :mod:`.encodings`, :mod:`.ddg` — the innermost layer: float, fixed point, or discrete Gaussian
  shares (on a rounded update, or on an update already on the lattice);
* :mod:`.compact`, :mod:`.subset` — the compact uploads: a public coordinate subset, rotated into a
  16-bit ring (user level) or as is in the plan's ring (record level);
* :mod:`.pipeline` — :class:`AggregationPipeline`, the layers in order around one encoding;
* :mod:`.session` — the pure function that sizes each secure-sum session;
* :mod:`.sums` — the sum between the halves, in one process (the Flower engine runs it over the network).

See docs/architecture.md for one round through these modules.
"""

from .compact import CompactRotatedEncoding, compact_length
from .ddg import DiscreteGaussianShareEncoding, DistributedDiscreteGaussianEncoding
from .encodings import Encoding, FloatEncoding, QuantizedEncoding
from .layers import (
    AdaptiveClip,
    AdaptiveClipState,
    CentralGaussianNoise,
    Clip,
    ExpectedBatchMean,
    Layer,
    Mean,
)
from .pipeline import DIAGNOSTIC_KEYS, AggregationPipeline
from .session import (
    SessionParameters,
    SessionPolicy,
    protocol_stages,
    session_parameters,
)
from .subset import SubsetQuantizedEncoding, SubsetShareEncoding
from .values import (
    Aggregate,
    ClientContext,
    ClientUpdate,
    Measurements,
    Payload,
    ServerContext,
    SumOutcome,
)

__all__ = [
    "DIAGNOSTIC_KEYS",
    "AdaptiveClip",
    "AdaptiveClipState",
    "Aggregate",
    "AggregationPipeline",
    "CentralGaussianNoise",
    "ClientContext",
    "ClientUpdate",
    "Clip",
    "CompactRotatedEncoding",
    "DiscreteGaussianShareEncoding",
    "DistributedDiscreteGaussianEncoding",
    "Encoding",
    "ExpectedBatchMean",
    "FloatEncoding",
    "Layer",
    "Mean",
    "Measurements",
    "Payload",
    "QuantizedEncoding",
    "ServerContext",
    "SessionParameters",
    "SessionPolicy",
    "SubsetQuantizedEncoding",
    "SubsetShareEncoding",
    "SumOutcome",
    "compact_length",
    "protocol_stages",
    "session_parameters",
]
