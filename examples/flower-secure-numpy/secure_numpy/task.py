"""The learning task: linear regression on each node's own synthetic data, in NumPy."""

from __future__ import annotations

import numpy as np

#: Every node's data comes from the same true model (seed 0) with its own inputs and noise.
TRUE_MODEL_SEED = 0


def true_model(size: int) -> np.ndarray:
    return np.random.default_rng(TRUE_MODEL_SEED).normal(0.0, 1.0, size)


def load_data(partition_id: int, size: int, examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Node ``partition_id``'s inputs and targets (nodes hold different amounts of data).

    Inputs have variance 1/size, so a gradient step of a fixed size is stable at any size.
    """
    rng = np.random.default_rng(1000 + partition_id)
    n = examples * (1 + partition_id % 3)
    x = (rng.normal(0.0, 1.0, (n, size)) / np.sqrt(size)).astype(np.float32)
    y = x @ true_model(size).astype(np.float32) + 0.1 + rng.normal(0.0, 0.1, n).astype(np.float32)
    return x, y


def initial_parameters(size: int) -> list[np.ndarray]:
    return [np.zeros(size, dtype=np.float64), np.zeros(1, dtype=np.float64)]


def mse(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    weights, bias = params
    return float(np.mean((x @ weights + bias[0] - y) ** 2))


def train(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> list[np.ndarray]:
    """Full-batch gradient descent on the squared error."""
    weights, bias = params[0].astype(np.float64).copy(), params[1].astype(np.float64).copy()
    for _ in range(steps):
        error = x @ weights + bias[0] - y
        weights -= lr * (x.T @ error) / len(y)
        bias -= lr * np.mean(error)
    return [weights, bias]
