"""Biased matrix factorization: r̂(u, i) = μ + b_u + b_i + p_u · q_i."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.dataset import RatingData
from .base import FederatedModel

__all__ = ["BiasedMF"]


class BiasedMF(FederatedModel):
    """MF with biases. Shared: q (item factors), b_i, μ. Private: p (user factors), b_u.

    ``task = "explicit"`` regresses on ratings; ``"implicit"`` scores interactions
    (trained with BPR or a logistic loss, see :mod:`secure_fedrec.models.objectives`),
    where the item bias is the popularity a ranking starts from. ``objective`` names
    the training loss; ``private_reg`` > 0 lets a client solve its private row in
    closed form (explicit feedback, :meth:`fit_private_rows`).
    """

    shared_names = ("item_factors.weight", "item_bias.weight", "global_bias.weight")
    item_row_names = frozenset({"item_factors.weight", "item_bias.weight"})
    private_names = ("user_factors.weight", "user_bias.weight")

    def __init__(
        self, *, n_users: int, n_items: int, dim: int = 32, init_std: float = 0.1,
        global_mean: float = 3.5, seed: int = 0, task: str = "explicit", objective: str | None = None,
        private_reg: float = 0.0,
    ) -> None:
        super().__init__()
        if task not in ("explicit", "implicit"):
            raise ValueError(f"task must be 'explicit' or 'implicit', got {task!r}")
        self.task = task
        self.objective = objective or ("mse" if task == "explicit" else "bce")
        self.private_reg = float(private_reg)
        self.hparams = {"dim": dim, "init_std": init_std, "global_mean": global_mean, "seed": seed,
                        "task": task, "objective": self.objective, "private_reg": private_reg}
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

    # -- the private rows in closed form (explicit feedback) --------------------------------------
    @torch.no_grad()
    def fit_private_rows(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                         reg: float) -> None:
        """Set each listed user's (p_u, b_u) to the exact minimizer of its own squared error
        given the shared parameters, with the L2 penalty the local loss puts on them.

        The local loss is ``mean(err² + reg·(|p_u|² + b_u² + item terms))`` over a user's
        n_u ratings, so for fixed items its user part is ridge regression of
        ``r − μ − b_i`` on ``[1, q_i]`` with penalty ``reg·n_u``. A client that joins
        rarely (private runs sample ~10 % of users a round) starts local training from
        its best private row instead of a stale or random one; it runs on the client's
        own data and never leaves it.
        """
        if self.task != "explicit" or len(users) == 0:
            return
        users_t = torch.as_tensor(users, dtype=torch.long)
        items_t = torch.as_tensor(items, dtype=torch.long)
        target = (torch.as_tensor(ratings, dtype=torch.float64)
                  - self.global_bias.weight[0, 0].double()
                  - self.item_bias.weight[items_t, 0].double())
        features = torch.cat([torch.ones(len(items_t), 1, dtype=torch.float64),
                              self.item_factors.weight[items_t].double()], dim=1)
        width = features.shape[1]
        present, local_users = torch.unique(users_t, return_inverse=True)
        gram = torch.zeros(len(present), width, width, dtype=torch.float64)
        moment = torch.zeros(len(present), width, dtype=torch.float64)
        chunk = max(1, (1 << 22) // (width * width))  # bounds the outer products held at once
        for start in range(0, len(items_t), chunk):
            x = features[start:start + chunk]
            who = local_users[start:start + chunk]
            gram.index_add_(0, who, x[:, :, None] * x[:, None, :])
            moment.index_add_(0, who, x * target[start:start + chunk, None])
        counts = torch.bincount(local_users, minlength=len(present)).double()
        gram += (reg * counts)[:, None, None] * torch.eye(width, dtype=torch.float64)
        solution = torch.linalg.solve(gram, moment)
        self.user_bias.weight[present, 0] = solution[:, 0].float()
        self.user_factors.weight[present] = solution[:, 1:].float()

    def prepare_for_evaluation(self, train: RatingData) -> None:
        """Every user refits its private row on its own training ratings (``private_reg`` > 0):
        what each client's device does before it ranks or predicts for its user."""
        if self.private_reg > 0 and self.task == "explicit":
            self.fit_private_rows(train.users, train.items, train.ratings, self.private_reg)
