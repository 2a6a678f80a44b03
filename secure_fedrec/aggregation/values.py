"""The batch of client updates one round hands to aggregation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import sparse

__all__ = ["ClientUpdates", "RoundContext", "SumOutput"]


@dataclass(frozen=True)
class ClientUpdates:
    """One row per client over the flat shared-parameter vector.

    Rows are sparse because a client changes only the rows of the items it
    touched; every protocol that needs a dense vector (masking, Paillier,
    noise on every coordinate) densifies a row itself.
    """

    client_ids: np.ndarray  # (k,) int64
    matrix: sparse.csr_array  # (k, dim) float64
    weights: np.ndarray  # (k,) float64 in [0, 1]: the weight each client's row carries

    def __post_init__(self) -> None:
        k = len(self.client_ids)
        if self.matrix.shape[0] != k or len(self.weights) != k:
            raise ValueError("client_ids, matrix rows and weights must have the same length")

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.client_ids)

    def row_norms(self) -> np.ndarray:
        sq = self.matrix.multiply(self.matrix).sum(axis=1)
        return np.sqrt(np.asarray(sq, dtype=np.float64).reshape(-1))

    def scale_rows(self, factors: np.ndarray) -> ClientUpdates:
        scaled = sparse.csr_array(sparse.diags_array(np.asarray(factors, dtype=np.float64)) @ self.matrix)
        return replace(self, matrix=scaled)

    def append_column(self, column: np.ndarray) -> ClientUpdates:
        """One more coordinate per client (a value that must ride through the same sum)."""
        extra = sparse.csr_array(np.asarray(column, dtype=np.float64).reshape(-1, 1))
        return replace(self, matrix=sparse.csr_array(sparse.hstack([self.matrix, extra], format="csr")))

    def dense_row(self, j: int) -> np.ndarray:
        out = np.zeros(self.dim, dtype=np.float64)
        start, end = self.matrix.indptr[j], self.matrix.indptr[j + 1]
        out[self.matrix.indices[start:end]] = self.matrix.data[start:end]
        return out

    def nnz_per_row(self) -> np.ndarray:
        return np.diff(self.matrix.indptr)


@dataclass
class RoundContext:
    """What every aggregation layer may know about the round."""

    round_index: int
    expected_clients: float  # E[clients per round]: the fixed denominator DP needs
    dropouts: dict[int, str] = field(default_factory=dict)  # client id -> stage it vanishes before


@dataclass
class SumOutput:
    """The (weighted) sum over the clients that made it to the end of the protocol."""

    total: np.ndarray  # dense float64, sum of the contributors' rows
    weight_total: float  # sum of the contributors' weights
    contributors: tuple[int, ...]
    measurements: dict[str, float] = field(default_factory=dict)
