"""The per-client steps of the in-process engine, callable one client at a time on a node.

The in-process engine does these inside :meth:`FederatedTrainer.run_round`
and :meth:`QuantizedSecureSum.sum`, over the whole round at once; a Flower
node does them for its own users only. Each function below names the engine
code it must stay identical to. (Proposed refactor for the lead, so the last two
become one-line delegations: ``FederatedTrainer._weight`` as a module
function ``example_weight(config, n)``, and ``QuantizedSecureSum.encode_client(
row, weight, n_clients) -> (ring vector, clipped count)`` used by ``sum``.)
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ...config import RunConfig
from ...engine.aggregators import QuantizedSecureSum
from ...engine.inprocess import FederatedTrainer

__all__ = ["client_training_rng", "example_weight", "quantize_for_sum", "sum_encoder"]


def client_training_rng(config: RunConfig, round_index: int, user: int) -> np.random.Generator:
    """The generator a client trains with: ``FederatedTrainer.client_rng``, which derives it
    from (seed, round, client) and reads nothing but ``self.config``."""
    return FederatedTrainer.client_rng(SimpleNamespace(config=config), round_index, user)  # type: ignore[arg-type]


def example_weight(config: RunConfig, num_examples: int) -> float:
    """Same as ``FederatedTrainer._weight``."""
    agg = config.aggregation
    if agg.weighting == "uniform":
        return 1.0
    return min(num_examples, agg.weight_cap) / agg.weight_cap


def sum_encoder(config: RunConfig, n_clients: int):
    """Same encoder as ``QuantizedSecureSum.encoder_for`` for the round's sampled clients."""
    agg = config.aggregation
    layer = QuantizedSecureSum(protocol=None, coordinate_clip=agg.coordinate_clip, bits=agg.bits)  # type: ignore[arg-type]
    return layer.encoder_for(n_clients)


def quantize_for_sum(config: RunConfig, dense_update: np.ndarray, weight: float,
                     n_clients: int) -> tuple[np.ndarray, int]:
    """One client's ring vector ``[update..., weight]``, as in ``QuantizedSecureSum.sum``."""
    clip = config.aggregation.coordinate_clip
    vector = np.append(dense_update, weight)
    clipped = int(np.count_nonzero(np.abs(vector[:-1]) > clip))
    vector[:-1] = np.clip(vector[:-1], -clip, clip)
    encoder = sum_encoder(config, n_clients)
    return encoder.to_ring(encoder.quantize(vector)), clipped
