"""Continuous Gaussian noise for central DP-FedAvg, from the operating system's CSPRNG.

DP noise is a secret (anyone who can predict it can subtract it), so it is
never drawn from ``numpy.random``. Normal variates come from the Box-Muller
transform of 53-bit uniforms from :func:`protocols.encoding.csprng_uniform`
(an AES-256-CTR keystream under a fresh key from ``secrets``).

Floating-point Gaussian noise is known to leak through the low-order bits of
its output (Mironov 2012 for Laplace; Jin et al. 2022 for Gaussian). The
central path releases a model average, not raw noisy floats, which limits the
exposure; the distributed-DP path avoids floats entirely with discrete
Gaussian noise (:mod:`secure_fedrec.privacy.discrete_gaussian`).
"""

from __future__ import annotations

import math

import numpy as np

from protocols.encoding import csprng_uniform

__all__ = ["add_gaussian_noise", "csprng_normal"]


def csprng_normal(size: int) -> np.ndarray:
    """``size`` independent N(0, 1) variates (Box-Muller on CSPRNG uniforms)."""
    if size < 0:
        raise ValueError("size must be non-negative")
    pairs = (size + 1) // 2
    u1 = 1.0 - csprng_uniform(pairs)  # in (0, 1]: log is finite
    u2 = csprng_uniform(pairs)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * math.pi * u2
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:size]


def add_gaussian_noise(aggregate: np.ndarray, *, noise_multiplier: float, clip_norm: float) -> np.ndarray:
    """``aggregate + N(0, (noise_multiplier * clip_norm)^2)`` per coordinate (a new array).

    ``aggregate`` is the *sum* of clipped client updates; divide by the
    (expected) number of clients afterwards, as in DP-FedAvg.
    """
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError("noise_multiplier must be finite and >= 0")
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError("clip_norm must be positive and finite")
    values = np.asarray(aggregate, dtype=np.float64)
    std = noise_multiplier * clip_norm
    return values + std * csprng_normal(values.size).reshape(values.shape)
