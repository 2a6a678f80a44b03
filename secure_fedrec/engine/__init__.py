"""Federated orchestration: client training, the aggregation pipeline, the server, engines."""

from typing import Any

from .aggregators import CentralGaussianNoise, Clip, FloatSum, Mean, QuantizedSecureSum
from .updates import ClientUpdates, RoundContext, SumOutput

__all__ = [
    "CentralGaussianNoise", "Clip", "ClientUpdates", "FederatedTrainer", "FloatSum", "Mean",
    "QuantizedSecureSum", "RoundContext", "RoundMetrics", "SumOutput",
]


def __getattr__(name: str) -> Any:
    # The trainer is loaded on first use, not here: privacy.dpsgd imports engine.client,
    # and an eager import of .inprocess (which imports privacy.dpsgd) would close a cycle.
    if name in ("FederatedTrainer", "RoundMetrics"):
        from . import inprocess

        return getattr(inprocess, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
