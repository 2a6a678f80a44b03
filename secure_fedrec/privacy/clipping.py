"""L2 clipping of client updates, fixed and adaptive (Andrew et al. 2021).

User-level DP-FedAvg (McMahan et al. 2018) bounds each client's contribution
by clipping its whole model update to L2 norm ``C``; the noise on the sum is
then ``z * C``. Client updates arrive as rows of a 2-D array, dense
(``numpy.ndarray``) or sparse (``scipy.sparse`` CSR, one row per client over
the flattened shared parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .noise import csprng_normal

__all__ = [
    "AdaptiveClipNorm",
    "ClipResult",
    "NonFiniteUpdateError",
    "clip_updates_l2",
    "effective_update_noise_multiplier",
]

Updates = np.ndarray | sp.csr_array | sp.csr_matrix

# Clipped rows are scaled by C / norm shrunk by this relative margin, so that
# floating-point rounding in the scaling can never leave a row above C.
_CLIP_MARGIN = 1e-12


class NonFiniteUpdateError(ValueError):
    """Some client updates contain NaN or infinity; ``rows`` lists them.

    Such an update cannot be clipped meaningfully: the caller should treat
    those clients as dropouts for the round.
    """

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        super().__init__(f"non-finite values in client update rows {self.rows.tolist()}")


@dataclass(frozen=True)
class ClipResult:
    """Clipped updates (same type and shape as the input) and what clipping did."""

    updates: Updates
    norms: np.ndarray  # L2 norm of each row before clipping
    clipped: np.ndarray  # bool per row: was it scaled down?

    @property
    def fraction_clipped(self) -> float:
        return float(self.clipped.mean()) if self.clipped.size else 0.0


def clip_updates_l2(updates: Updates, clip_norm: float) -> ClipResult:
    """Scale every row whose L2 norm exceeds ``clip_norm`` down to at most ``clip_norm``.

    Rows at or below the bound are returned unchanged (bit for bit). Raises
    :class:`NonFiniteUpdateError` if any row holds NaN/inf, ``ValueError`` for a
    non-2-D input or a non-positive ``clip_norm``. The input is not modified.
    """
    if not (isinstance(clip_norm, (int, float)) and math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be positive and finite, got {clip_norm!r}")
    if sp.issparse(updates):
        csr = sp.csr_array(updates, dtype=np.float64)
        if csr.ndim != 2:
            raise ValueError("updates must be 2-D (rows = clients)")
        bad = ~np.isfinite(csr.data)
        if bad.any():
            row_of_entry = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
            raise NonFiniteUpdateError(np.unique(row_of_entry[bad]))
        norms = np.sqrt(np.asarray(csr.multiply(csr).sum(axis=1)).ravel())
        factors = _factors(norms, clip_norm)
        clipped_matrix = sp.csr_array(sp.diags_array(factors) @ csr)
        result: Updates = (
            sp.csr_array(clipped_matrix)
            if isinstance(updates, sp.csr_array)
            else sp.csr_matrix(clipped_matrix)
        )
    else:
        dense = np.asarray(updates, dtype=np.float64)
        if dense.ndim != 2:
            raise ValueError("updates must be 2-D (rows = clients)")
        finite_rows = np.isfinite(dense).all(axis=1)
        if not finite_rows.all():
            raise NonFiniteUpdateError(np.flatnonzero(~finite_rows))
        norms = np.linalg.norm(dense, axis=1)
        factors = _factors(norms, clip_norm)
        result = dense * factors[:, None]
    return ClipResult(updates=result, norms=norms, clipped=factors < 1.0)


def _factors(norms: np.ndarray, clip_norm: float) -> np.ndarray:
    factors = np.ones_like(norms)
    over = norms > clip_norm
    factors[over] = clip_norm / norms[over] * (1.0 - _CLIP_MARGIN)
    return factors


def effective_update_noise_multiplier(noise_multiplier: float, count_noise_multiplier: float) -> float:
    """The noise multiplier left for the update sum when the clipped count is also released.

    Andrew et al. 2021 (Thm. 1): releasing the clipped-update sum with noise
    ``z_delta * C`` and the count of unclipped clients (sensitivity 1/2 after
    centering the bits at 1/2) with noise ``sigma_b`` is equivalent, for
    privacy, to one Gaussian mechanism with multiplier ``z`` where
    ``z^-2 = z_delta^-2 + (2 sigma_b)^-2``. So ``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``;
    account with ``z``, add noise with ``z_delta``. Requires ``2 sigma_b > z``.
    """
    if not (noise_multiplier > 0 and count_noise_multiplier > 0):
        raise ValueError("noise multipliers must be positive")
    remainder = noise_multiplier**-2 - (2.0 * count_noise_multiplier) ** -2
    if remainder <= 0:
        raise ValueError(
            f"count_noise_multiplier={count_noise_multiplier} is too small for noise_multiplier="
            f"{noise_multiplier}: need 2 * sigma_b > z"
        )
    return remainder**-0.5


@dataclass
class AdaptiveClipNorm:
    """Quantile-tracking clip norm (Andrew, Thakkar, McMahan, Ramaswamy 2021, geometric update).

    After each round, with ``b`` the fraction of participating clients whose
    update norm was at most the current clip norm, estimated privately::

        b_noisy = (sum_i 1[||Delta_i|| <= C] + N(0, sigma_b^2)) / expected_clients
        C <- C * exp(-learning_rate * (b_noisy - target_quantile))

    The noise on the count is drawn here from the OS CSPRNG unless the count
    arrives already noised (e.g. from secure aggregation with distributed
    noise), in which case pass ``already_noised=True``. Account for the round
    with ``noise_multiplier`` and add update noise with
    :func:`effective_update_noise_multiplier`.
    """

    clip_norm: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise_multiplier: float = 0.0  # sigma_b; 0 only for non-private experiments

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError("clip_norm must be positive and finite")
        if not 0 <= self.target_quantile <= 1:
            raise ValueError("target_quantile must be in [0, 1]")
        if not (math.isfinite(self.learning_rate) and self.learning_rate >= 0):
            raise ValueError("learning_rate must be finite and >= 0")
        if not (math.isfinite(self.count_noise_multiplier) and self.count_noise_multiplier >= 0):
            raise ValueError("count_noise_multiplier must be finite and >= 0")

    def update(
        self, unclipped_count: float, expected_clients: float, *, already_noised: bool = False
    ) -> float:
        """Move the clip norm toward the target quantile; returns the new clip norm."""
        if not (expected_clients > 0 and math.isfinite(expected_clients)):
            raise ValueError("expected_clients must be positive")
        if not math.isfinite(unclipped_count):
            raise ValueError("unclipped_count must be finite")
        count = float(unclipped_count)
        if not already_noised and self.count_noise_multiplier > 0:
            count += float(csprng_normal(1)[0]) * self.count_noise_multiplier
        fraction = count / expected_clients
        self.clip_norm = self.clip_norm * math.exp(-self.learning_rate * (fraction - self.target_quantile))
        return self.clip_norm
