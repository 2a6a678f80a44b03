"""Randomized rounding to the integer lattice, the client's first step of the distributed discrete Gaussian.

Kept apart from the planning code (:mod:`.distributed_dp`) so that a client, which
only rounds and adds its noise share, imports numpy and nothing of the accountants.
"""

from __future__ import annotations

import numpy as np

from protocols.encoding import csprng_uniform

__all__ = ["RoundingFailedError", "conditional_randomized_round", "randomized_round"]


class RoundingFailedError(RuntimeError):
    """Conditional rounding exceeded its attempt budget (the input norm is above the clip norm?)."""


def randomized_round(scaled: np.ndarray) -> np.ndarray:
    """Round each coordinate to ``floor`` or ``ceil`` with probability given by its fraction (unbiased).

    The coin flips come from :func:`protocols.encoding.csprng_uniform` (an AES-256-CTR
    keystream under a fresh key from ``secrets``): the rounding is part of the
    mechanism, so its randomness is treated like the noise.
    """
    values = np.asarray(scaled, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot round non-finite values")
    floor = np.floor(values)
    return (floor + (csprng_uniform(values.size).reshape(values.shape) < (values - floor))).astype(np.int64)


def conditional_randomized_round(
    scaled: np.ndarray, l2_bound: float, *, max_attempts: int = 1000
) -> np.ndarray:
    """Randomized rounding, re-drawn until the integer vector's L2 norm is at most ``l2_bound``.

    With ``l2_bound = conditional_rounding_l2_bound(c, gamma, d, beta)`` and an
    input of norm ``<= c/gamma``, each attempt succeeds with probability at
    least ``1 - beta`` (KLS 2021), so the expected number of attempts is at
    most ``1/(1 - beta)``; :class:`RoundingFailedError` after ``max_attempts``
    signals an input that was not clipped as promised.
    """
    values = np.asarray(scaled, dtype=np.float64)
    for _ in range(max_attempts):
        rounded = randomized_round(values)
        # Exact integer arithmetic for the norm check: the accountant relies on it.
        if int(np.dot(rounded, rounded)) <= l2_bound * l2_bound:
            return rounded
    raise RoundingFailedError(f"no rounding within L2 norm {l2_bound} after {max_attempts} attempts")
