"""How Opacus' Poisson data loader samples a client's examples (torch-free, for planning).

The engine plans and accounts record-level DP-SGD with these, and the DP-SGD
client charges what its loader really ran; they must agree, and
``tests/privacy/test_privacy_lazy_noise.py`` checks that they do.
"""

from __future__ import annotations

__all__ = ["client_sample_rate", "planned_steps"]


def client_sample_rate(num_examples: int, batch_size: int) -> float:
    """The rate Opacus' Poisson loader samples each example at: ``1 / len(loader)`` for a loader
    of ``min(batch_size, n)`` per batch, i.e. ``1/⌈n/B⌉`` (at most ``B/n``)."""
    n = max(1, num_examples)
    return 1.0 / -(-n // min(batch_size, n))


def planned_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    """Steps of one round: Opacus' sampler runs ``int(1/q)`` batches per epoch (which float
    rounding makes ``⌈n/B⌉ − 1`` for some sizes, e.g. 92 for 93 batches)."""
    return epochs * int(1.0 / client_sample_rate(num_examples, batch_size))
