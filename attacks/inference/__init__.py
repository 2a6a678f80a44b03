"""What a curious server infers from the updates it observes."""

from .updates import (
    AggregateObservation,
    ClientUpdateObservation,
    ItemInferenceResult,
    UpdateInferenceAttack,
    evaluate_item_inference,
    server_observation,
)

__all__ = [
    "AggregateObservation",
    "ClientUpdateObservation",
    "ItemInferenceResult",
    "UpdateInferenceAttack",
    "evaluate_item_inference",
    "server_observation",
]
