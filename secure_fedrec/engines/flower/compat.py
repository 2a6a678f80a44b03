"""The per-client steps of the in-process engine, callable one client at a time on a node.

The in-process engine does these inside :meth:`FederatedTrainer.run_round`
and the aggregation pipeline's layers (:mod:`secure_fedrec.engine.aggregators`,
:mod:`secure_fedrec.engine.ddg`), over the whole round at once; a Flower node
does the client half of them for its own users only, and the server the other
half. Each function below names the engine code it must stay identical to.
(Proposed refactor for the lead, so these become one-line delegations:
``FederatedTrainer._weight`` as a module function ``example_weight(config,
n)``, ``QuantizedSecureSum.encode_client(row, weight, n_clients) -> (ring
vector, clipped count)`` and ``DistributedDiscreteGaussianSum.encode_client(row)``
used by their ``sum``, and a ``PrivacySession.for_split(config, split, dim)``
constructor.)
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ...config import RunConfig
from ...data.dataset import Split
from ...engine.aggregators import QuantizedSecureSum
from ...engine.client import examples_per_user
from ...engine.inprocess import FederatedTrainer
from ...engine.server import expected_clients
from ...models import FederatedModel
from ...privacy.discrete_gaussian import sample_discrete_gaussian
from ...privacy.distributed_dp import DdgPlan, conditional_randomized_round
from ...privacy.session import PrivacySession

__all__ = [
    "client_training_rng",
    "clip_l2",
    "ddg_encode",
    "example_weight",
    "privacy_session",
    "quantize_for_sum",
    "sum_coordinate_clip",
    "sum_encoder",
]


def client_training_rng(config: RunConfig, round_index: int, user: int) -> np.random.Generator:
    """The generator a client trains with: ``FederatedTrainer.client_rng``, which derives it
    from (seed, round, client) and reads nothing but ``self.config``."""
    return FederatedTrainer.client_rng(SimpleNamespace(config=config), round_index, user)  # type: ignore[arg-type]


def example_weight(config: RunConfig, num_examples: int) -> float:
    """Same as ``FederatedTrainer._weight`` (user-level DP: every user weighs 1)."""
    agg = config.aggregation
    if agg.weighting == "uniform" or config.privacy.unit == "user":
        return 1.0
    return min(num_examples, agg.weight_cap) / agg.weight_cap


def privacy_session(config: RunConfig, split: Split, model: FederatedModel) -> PrivacySession:
    """The run's :class:`PrivacySession`, built from the same inputs as ``FederatedTrainer``:
    a node derives the noise it adds (DP-SGD multiplier, discrete Gaussian plan) itself."""
    train = split.train
    population = np.flatnonzero(train.ratings_per_user() > 0)
    examples = examples_per_user(model, train.users, train.items, train.n_users, model.n_items,  # type: ignore[arg-type]
                                 config.training.negatives)
    return PrivacySession(
        config, n_users=len(population),
        expected_clients=expected_clients(len(population), config.training.clients_per_round),
        dim=model.layout().size, client_examples=examples[population], n_records=len(train.users),
    )


def clip_l2(update: np.ndarray, clip_norm: float) -> tuple[np.ndarray, bool]:
    """One row of ``Clip.sum``: scale to L2 norm at most ``clip_norm``; whether it was clipped."""
    norm = float(np.sqrt(np.dot(update, update)))
    factor = min(1.0, clip_norm / max(norm, 1e-300))
    return update * factor, norm > clip_norm


def sum_coordinate_clip(config: RunConfig) -> float:
    """The coordinate bound of the round's ``QuantizedSecureSum`` (``build_pipeline``):
    the L2 clip norm under user-level DP, else ``aggregation.coordinate_clip``."""
    if config.privacy.unit == "user":
        return config.privacy.clip_norm
    return config.aggregation.coordinate_clip


def sum_encoder(config: RunConfig, n_clients: int):
    """Same encoder as ``QuantizedSecureSum.encoder_for`` for the round's clients."""
    layer = QuantizedSecureSum(protocol=None, coordinate_clip=sum_coordinate_clip(config),  # type: ignore[arg-type]
                               bits=config.aggregation.bits)
    return layer.encoder_for(n_clients)


def quantize_for_sum(config: RunConfig, dense_update: np.ndarray, weight: float,
                     n_clients: int) -> tuple[np.ndarray, int]:
    """One client's ring vector ``[update..., weight]``, as in ``QuantizedSecureSum.sum``."""
    clip = sum_coordinate_clip(config)
    vector = np.append(dense_update, weight)
    clipped = int(np.count_nonzero(np.abs(vector[:-1]) > clip))
    vector[:-1] = np.clip(vector[:-1], -clip, clip)
    encoder = sum_encoder(config, n_clients)
    return encoder.to_ring(encoder.quantize(vector)), clipped


def ddg_encode(dense_update: np.ndarray, plan: DdgPlan) -> np.ndarray:
    """One client's noised ring vector, as in ``DistributedDiscreteGaussianSum.sum``: scale by
    1/γ, round conditionally, add this client's discrete Gaussian share, reduce mod 2^bits."""
    modulus_mask = np.uint64((1 << plan.bits) - 1)
    levels = conditional_randomized_round(dense_update / plan.gamma, plan.l2_sensitivity)
    levels = levels + sample_discrete_gaussian(plan.share_sigma, levels.size)
    return levels.astype(np.uint64) & modulus_mask
