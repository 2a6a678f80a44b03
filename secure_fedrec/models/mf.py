"""Biased matrix factorization: r̂(u, i) = μ + b_u + b_i + p_u · q_i."""

from __future__ import annotations

import torch
from torch import nn

from .base import FederatedModel

__all__ = ["BiasedMF"]


class BiasedMF(FederatedModel):
    """Explicit-feedback MF. Shared: q (item factors), b_i, μ. Private: p (user factors), b_u."""

    shared_names = ("item_factors.weight", "item_bias.weight", "global_bias.weight")
    item_row_names = frozenset({"item_factors.weight", "item_bias.weight"})
    private_names = ("user_factors.weight", "user_bias.weight")
    task = "explicit"

    def __init__(
        self, *, n_users: int, n_items: int, dim: int = 32, init_std: float = 0.1,
        global_mean: float = 3.5, seed: int = 0,
    ) -> None:
        super().__init__()
        self.hparams = {"dim": dim, "init_std": init_std, "global_mean": global_mean, "seed": seed}
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        gen = torch.Generator().manual_seed(seed)
        self.user_factors = nn.Embedding(n_users, dim)
        self.item_factors = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        with torch.no_grad():
            self.user_factors.weight.copy_(torch.randn(n_users, dim, generator=gen) * init_std)
            self.item_factors.weight.copy_(torch.randn(n_items, dim, generator=gen) * init_std)
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()
        # An Embedding of one row rather than a bare Parameter: every trainable
        # parameter then sits in a layer Opacus computes per-sample gradients for.
        self.global_bias = nn.Embedding(1, 1)
        with torch.no_grad():
            self.global_bias.weight.fill_(float(global_mean))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p, q = self.user_factors(users), self.item_factors(items)
        return (
            self.global_bias(torch.zeros_like(users)).squeeze(-1) + self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
            + (p * q).sum(-1)
        )

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per-rating L2 penalty on the factors and biases the rating touches."""
        return (
            self.user_factors(users).pow(2).sum(-1) + self.item_factors(items).pow(2).sum(-1)
            + self.user_bias(users).squeeze(-1).pow(2) + self.item_bias(items).squeeze(-1).pow(2)
        )

    def score_all_items(self, users: torch.Tensor) -> torch.Tensor:
        return (
            self.global_bias.weight
            + self.user_bias(users)
            + self.item_bias.weight.T
            + self.user_factors(users) @ self.item_factors.weight.T
        )
