"""Which clients a round samples, and how many a round expects."""

from __future__ import annotations

import numpy as np

__all__ = ["expected_clients", "sample_clients"]


def sample_clients(
    population: np.ndarray, clients_per_round: float, scheme: str, rng: np.random.Generator
) -> np.ndarray:
    """Clients for one round: a fixed-size sample without replacement, or Poisson sampling
    (each client independently with probability q, which DP accounting assumes)."""
    n = len(population)
    if clients_per_round < 1:
        rate, count = float(clients_per_round), max(1, round(clients_per_round * n))
    else:
        count = min(n, int(clients_per_round))
        rate = count / n
    if scheme == "poisson":
        return np.sort(population[rng.random(n) < rate])
    return np.sort(rng.choice(population, size=count, replace=False))


def expected_clients(n: int, clients_per_round: float) -> float:
    """E[clients per round] under either sampling scheme."""
    if clients_per_round < 1:
        return clients_per_round * n
    return float(min(n, int(clients_per_round)))
