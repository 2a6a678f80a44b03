"""Neural matrix factorization (He et al., WWW 2017): GMF and MLP towers fused.

Shared: item embeddings of both towers, the MLP and the output layer.
Private: the user's embeddings of both towers.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FederatedModel

__all__ = ["NeuMF"]


class NeuMF(FederatedModel):
    shared_names = (
        "item_gmf.weight", "item_mlp.weight", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight",
        "mlp.2.bias", "output.weight", "output.bias",
    )
    item_row_names = frozenset({"item_gmf.weight", "item_mlp.weight"})
    private_names = ("user_gmf.weight", "user_mlp.weight")
    task = "implicit"

    def __init__(
        self, *, n_users: int, n_items: int, dim: int = 16, hidden: int = 32,
        init_std: float = 0.1, seed: int = 0, objective: str = "bce", initialize: bool = True,
    ) -> None:
        super().__init__()
        self.objective = objective
        self.hparams = {"dim": dim, "hidden": hidden, "init_std": init_std, "seed": seed, "objective": objective}
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        gen = torch.Generator().manual_seed(seed)
        self.user_gmf = nn.Embedding(n_users, dim)
        self.user_mlp = nn.Embedding(n_users, dim)
        self.item_gmf = nn.Embedding(n_items, dim)
        self.item_mlp = nn.Embedding(n_items, dim)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.ReLU())
        self.output = nn.Linear(2 * dim, 1)
        if not initialize:  # a client view: every parameter is copied in next
            return
        with torch.no_grad():
            for emb in (self.user_gmf, self.user_mlp, self.item_gmf, self.item_mlp):
                emb.weight.copy_(torch.randn(emb.weight.shape, generator=gen) * init_std)
            for layer in (self.mlp[0], self.mlp[2], self.output):
                bound = 1.0 / layer.in_features ** 0.5
                layer.weight.copy_((torch.rand(layer.weight.shape, generator=gen) * 2 - 1) * bound)
                layer.bias.zero_()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.user_gmf(users) * self.item_gmf(items)
        mlp = self.mlp(torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1))
        return self.output(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    def penalty(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (
            self.user_gmf(users).pow(2).sum(-1) + self.item_gmf(items).pow(2).sum(-1)
            + self.user_mlp(users).pow(2).sum(-1) + self.item_mlp(items).pow(2).sum(-1)
        )

    def score_all_items(self, users: torch.Tensor) -> torch.Tensor:
        n_u, n_i = len(users), self.n_items
        gmf = self.user_gmf(users)[:, None, :] * self.item_gmf.weight[None, :, :]
        pair = torch.cat(
            [self.user_mlp(users)[:, None, :].expand(n_u, n_i, -1),
             self.item_mlp.weight[None].expand(n_u, n_i, -1)],
            dim=-1,
        )
        return self.output(torch.cat([gmf, self.mlp(pair)], dim=-1)).squeeze(-1)
