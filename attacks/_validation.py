"""Input checks and seedable randomness shared by the attack modules.

Randomness here belongs to experiments (shadow-model splits, canary draws,
bootstrap resamples), never to protocol secrets, so a seedable numpy
``Generator`` is the right tool.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["RandomState", "check_binary_labels", "check_random_state", "check_scores"]

RandomState = int | np.random.Generator | np.random.SeedSequence | None


def check_random_state(random_state: RandomState) -> np.random.Generator:
    """Turn ``random_state`` into a ``numpy.random.Generator``.

    Mirrors scikit-learn's ``check_random_state`` but for the new Generator API:
    ``None`` gives fresh OS entropy, an int or ``SeedSequence`` seeds a new
    generator, and a ``Generator`` is returned as is (shared, so successive calls
    continue the same stream).

    >>> g = check_random_state(0)
    >>> check_random_state(g) is g
    True
    """
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.SeedSequence)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    raise TypeError(
        f"random_state must be None, an int, a SeedSequence or a numpy Generator, "
        f"got {type(random_state).__name__}"
    )


def check_binary_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-D bool array; reject anything that is not 0/1."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise ValueError(f"{name} must contain only 0/1 or booleans")
        arr = arr.astype(bool)
    return arr


def check_scores(scores: np.ndarray, n: int | None = None, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a finite 1-D float array (of length ``n`` if given)."""
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has length {arr.shape[0]}, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_both_classes(labels: np.ndarray) -> None:
    if labels.all() or not labels.any():
        raise ValueError("need at least one member and one non-member")
