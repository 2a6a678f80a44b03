"""Federated orchestration: client training, the aggregation pipeline, the server, engines."""

from .aggregators import CentralGaussianNoise, Clip, FloatSum, Mean, QuantizedSecureSum
from .inprocess import FederatedTrainer, RoundMetrics
from .updates import ClientUpdates, RoundContext, SumOutput

__all__ = [
    "CentralGaussianNoise", "Clip", "ClientUpdates", "FederatedTrainer", "FloatSum", "Mean",
    "QuantizedSecureSum", "RoundContext", "RoundMetrics", "SumOutput",
]
