"""Server optimizers: how the server applies the round's mean update to the shared parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..training.adam import adam_step

__all__ = ["Adam", "FedAdam", "FedAvg", "ServerOptimizer", "build_server_optimizer"]


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


@dataclass
class Adam(ServerOptimizer):
    """Adam on the released DP-SGD gradient estimate ``g = −Δ̄`` (bias-corrected, torch's defaults).

    Record-level DP-SGD with distributed noise: the server's half of the step whose
    other half each client applies to its private rows (:func:`~secure_fedrec.training.adam.adam_step`
    on both sides), so the split step equals ``torch.optim.Adam`` on the whole model.
    """

    lr: float = 0.02
    weight_decay: float = 0.0  # added to the gradient, as torch's Adam does (data-independent)
    step_count: int = 0
    m: np.ndarray | None = field(default=None, repr=False)
    v: np.ndarray | None = field(default=None, repr=False)

    def step(self, params: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        if self.m is None or self.v is None:
            self.m, self.v = np.zeros_like(params), np.zeros_like(params)
        self.step_count += 1
        grad = -mean_delta + self.weight_decay * params
        updated, self.m, self.v = adam_step(params, grad, self.m, self.v, step=self.step_count, lr=self.lr)
        return updated

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v, self.step_count = state["m"], state["v"], int(state["step_count"])


def build_server_optimizer(name: str, lr: float, *, weight_decay: float = 0.0) -> ServerOptimizer:
    """``fedavg`` / ``fedadam`` (``training.server_optimizer``), or the record-level DP-SGD step's
    own ``adam`` / ``sgd`` (``privacy.record_optimizer``: SGD is FedAvg on the descent direction)."""
    if name in ("fedavg", "sgd"):
        if weight_decay:
            raise ValueError("weight decay is implemented for the adam step only")
        return FedAvg(lr=lr)
    if name == "adam":
        return Adam(lr=lr, weight_decay=weight_decay)
    if name == "fedadam":
        return FedAdam(lr=lr)
    raise ValueError(f"unknown server optimizer {name!r}")
