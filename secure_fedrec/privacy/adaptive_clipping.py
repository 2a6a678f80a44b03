"""Adaptive clipping for user-level DP-FedAvg (Andrew, Thakkar, McMahan, Ramaswamy 2021).

"Differentially Private Learning with Adaptive Clipping" (NeurIPS 2021,
arXiv 1905.03871), Algorithm 1 with geometric updates. Each round every
participating client also reports the bit ``b_i = 1[||Δ_i|| <= C]``; the
server estimates the fraction of unclipped updates from the noisy sum of the
*centred* bits ``b_i - 1/2`` (sensitivity 1/2 under add/remove)::

    b̄ = (Σ_i (b_i - 1/2) + N(0, σ_b²)) / m + 1/2        (m = expected clients)
    C ← C · exp(-η_C (b̄ - γ))                            (γ = target quantile)

so ``C`` tracks the ``γ``-quantile of the update norms. Both sums are one
Gaussian mechanism: an update clipped to ``C`` with noise ``z_Δ·C`` and a bit
with noise ``σ_b`` compose exactly like a single Gaussian of multiplier::

    z = (z_Δ^-2 + (2σ_b)^-2)^(-1/2)     ⇔     z_Δ = (z^-2 - (2σ_b)^-2)^(-1/2)

The accountant is charged ``z`` (calibrated for the target ε as with fixed
clipping); the update noise uses the larger ``z_Δ``
(:func:`~.clipping.effective_update_noise_multiplier`), and the clip norm moves
by :class:`~.clipping.AdaptiveClipNorm`. This module adds what the engine
needs to carry the bit through secure aggregation. We implement it as that
single mechanism on an augmented vector (why: the bit then rides through the
same secure sum and noise layers as the update, so the server never sees a
client's bit): each update is divided by ``C`` (norm <= 1) and the bit
coordinate ``k·(b_i - 1/2)`` is appended, with ``k = z_Δ/σ_b``; the augmented
vector has L2 norm at most ``L = sqrt(1 + k²/4)`` and noise ``z_Δ`` per
coordinate gives the bit coordinate noise ``σ_b`` once divided by ``k`` and a
multiplier ``z_Δ / L = z`` overall.
"""

from __future__ import annotations

import math

__all__ = [
    "InvalidBitNoiseError",
    "augmented_l2_bound",
    "bit_scale_for_l2_bound",
    "default_bit_noise_std",
]


class InvalidBitNoiseError(ValueError):
    """σ_b too small for the noise multiplier: the clipped-count estimate alone would exceed the budget."""


def augmented_l2_bound(effective_multiplier: float, bit_noise_std: float) -> float:
    """L such that an L2 norm of 1 plus a bit coordinate ``±k/2`` with noise ``z·L/k = σ_b`` fit in L.

    Solves ``L² = 1 + k²/4`` with ``k = z·L/σ_b`` (the noise on every coordinate is
    ``z·L`` for a mechanism of multiplier ``z`` and sensitivity ``L``).
    """
    ratio = (effective_multiplier / (2.0 * bit_noise_std)) ** 2
    if ratio >= 1.0:
        raise InvalidBitNoiseError(
            f"privacy.clip_count_stddev (σ_b={bit_noise_std:g}) must exceed z/2 = {effective_multiplier / 2:g}"
        )
    return 1.0 / math.sqrt(1.0 - ratio)


def bit_scale_for_l2_bound(l2_bound: float) -> float:
    """The bit scale ``k`` with ``1 + k²/4 = L²`` (the augmented vector then has norm <= L exactly)."""
    if l2_bound < 1.0:
        raise ValueError("the augmented bound must be >= 1")
    return 2.0 * math.sqrt(l2_bound ** 2 - 1.0)


def default_bit_noise_std(expected_clients: float) -> float:
    """σ_b = m/20, the paper's recommendation (Andrew et al. 2021, Section 3)."""
    return max(expected_clients, 1.0) / 20.0
