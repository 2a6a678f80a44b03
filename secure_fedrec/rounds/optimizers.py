"""Server optimizers: how the server applies the round's mean update to the shared parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FedAdam", "FedAvg", "ServerOptimizer", "build_server_optimizer"]


class ServerOptimizer:
    """Applies the aggregated client delta (a pseudo-gradient, with sign) to the global vector."""

    def step(self, params: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class FedAvg(ServerOptimizer):
    """x ← x + η·Δ̄ (McMahan et al. 2017; η = 1 is plain model averaging)."""

    lr: float = 1.0

    def step(self, params: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        return params + self.lr * mean_delta


@dataclass
class FedAdam(ServerOptimizer):
    """Adam on the pseudo-gradient −Δ̄ (Reddi et al. 2021, "Adaptive Federated Optimization").

    Adaptive per-coordinate steps matter here: an item row's averaged delta is
    diluted by every client that did not rate the item, and Adam's
    normalization undoes that dilution.
    """

    lr: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)

    def step(self, params: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        if self.m is None or self.v is None:
            self.m = np.zeros_like(params)
            self.v = np.full_like(params, self.tau ** 2)
        self.m = self.beta1 * self.m + (1 - self.beta1) * mean_delta
        self.v = self.beta2 * self.v + (1 - self.beta2) * mean_delta ** 2
        return params + self.lr * self.m / (np.sqrt(self.v) + self.tau)

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v = state["m"], state["v"]


def build_server_optimizer(name: str, lr: float) -> ServerOptimizer:
    if name == "fedavg":
        return FedAvg(lr=lr)
    if name == "fedadam":
        return FedAdam(lr=lr)
    raise ValueError(f"unknown server optimizer {name!r}")
