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
    (trained with BPR, a logistic loss or iALS's weighted squared error, see
    :mod:`secure_fedrec.models.objectives`), where the item bias is the popularity a
    ranking starts from. ``objective`` names the training loss; ``private_reg`` > 0
    lets a client solve its private row in closed form (:meth:`fit_private_rows`):
    explicit ratings, and implicit feedback under iALS, whose loss covers every item.
    ``positive_weight`` is iALS's α: an interaction's squared error weighs 1 + α, an
    unrated item's 1.
    """

    shared_names = ("item_factors.weight", "item_bias.weight", "global_bias.weight")
    item_row_names = frozenset({"item_factors.weight", "item_bias.weight"})
    private_names = ("user_factors.weight", "user_bias.weight")

    def __init__(
        self, *, n_users: int, n_items: int, dim: int = 32, init_std: float = 0.1,
        global_mean: float = 3.5, seed: int = 0, task: str = "explicit", objective: str | None = None,
        private_reg: float = 0.0, positive_weight: float = 1.0, initialize: bool = True,
    ) -> None:
        super().__init__()
        if task not in ("explicit", "implicit"):
            raise ValueError(f"task must be 'explicit' or 'implicit', got {task!r}")
        self.task = task
        self.objective = objective or ("mse" if task == "explicit" else "bce")
        if self.objective == "ials" and task != "implicit":
            raise ValueError("objective 'ials' is for implicit feedback")
        self.private_reg = float(private_reg)
        self.positive_weight = float(positive_weight)
        self.hparams = {"dim": dim, "init_std": init_std, "global_mean": global_mean, "seed": seed,
                        "task": task, "objective": self.objective, "private_reg": private_reg,
                        "positive_weight": positive_weight}
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.user_factors = _zero_embedding(n_users, dim)
        self.item_factors = _zero_embedding(n_items, dim)
        self.user_bias = _zero_embedding(n_users, 1)
        self.item_bias = _zero_embedding(n_items, 1)
        # An Embedding of one row rather than a bare Parameter: every trainable
        # parameter then sits in a layer Opacus computes per-sample gradients for.
        self.global_bias = _zero_embedding(1, 1)
        self._item_sums_cache: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None
        if initialize:  # a client view skips this: every parameter is copied in next
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                self.user_factors.weight.copy_(torch.randn(n_users, dim, generator=gen) * init_std)
                self.item_factors.weight.copy_(torch.randn(n_items, dim, generator=gen) * init_std)
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

    # -- the private rows in closed form ---------------------------------------------------------
    @property
    def solves_private_rows(self) -> bool:
        """Whether clients set their private rows in closed form (:meth:`fit_private_rows`)."""
        return self.private_reg > 0 and (self.task == "explicit" or self.objective == "ials")

    @torch.no_grad()
    def fit_private_rows(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                         reg: float) -> None:
        """Set each listed user's (p_u, b_u) to the exact minimizer of its own local loss given
        the shared parameters, with the L2 penalty that loss puts on them.

        Explicit ratings: the local loss is ``mean(err² + reg·(|p_u|² + b_u² + item terms))``
        over a user's n_u ratings, so for fixed items its user part is ridge regression of
        ``r − μ − b_i`` on ``[1, q_i]`` with penalty ``reg·n_u``. iALS (``items`` are the
        user's interactions, ``ratings`` ignored): the loss is the same mean over **every**
        item, target 1 for an interaction and 0 otherwise, weight 1 + α and 1, so the
        penalty is ``reg·n_items`` and the Gram matrix is that of all items plus α times
        that of the user's own (Hu, Koren & Volinsky, ICDM 2008). A client that joins
        rarely (private runs sample ~10 % of users a round) starts local training from
        its best private row instead of a stale or random one; it runs on the client's
        own data and never leaves it.
        """
        if len(users) == 0 or not (self.task == "explicit" or self.objective == "ials"):
            return
        users_t = torch.as_tensor(users, dtype=torch.long)
        items_t = torch.as_tensor(items, dtype=torch.long)
        if self.task == "explicit":
            present, owners = torch.unique(users_t, return_inverse=True)
            counts = torch.bincount(owners, minlength=len(present)).double()
            offset = (self.global_bias.weight[0, 0] + self.item_bias.weight[items_t, 0]).double()
            features = torch.cat([torch.ones(len(items_t), 1, dtype=torch.float64),
                                  self.item_factors.weight[items_t].double()], dim=1)
            solution = _ridge_rows(features, torch.as_tensor(ratings, dtype=torch.float64) - offset,
                                   owners, len(present), reg * counts)
        else:
            item_offset = (self.global_bias.weight[0, 0] + self.item_bias.weight[:, 0]).double()
            item_features = torch.cat([torch.ones(self.n_items, 1, dtype=torch.float64),
                                       self.item_factors.weight.double()], dim=1)
            present, owners, others = _unique_pairs(users_t, items_t)
            solution = _implicit_ridge_rows(item_features, item_offset, owners, others, len(present),
                                            self.positive_weight, reg * self.n_items,
                                            shared=self._item_sums(item_features, item_offset))
        self.user_bias.weight[present, 0] = solution[:, 0].float()
        self.user_factors.weight[present] = solution[:, 1:].float()

    def _item_sums(self, features: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """iALS's sums over every item (Gram matrix and moment), which depend on the shared
        parameters only: kept until those change, so that the clients of a simulated round
        share one computation (a device computes them once per round too)."""
        key = tuple((id(p), p._version) for p in (self.item_factors.weight, self.item_bias.weight,
                                                   self.global_bias.weight))
        if self._item_sums_cache is None or self._item_sums_cache[0] != key:
            self._item_sums_cache = (key, _all_rows_sums(features, offset))
        return self._item_sums_cache[1]

    @torch.no_grad()
    def fit_item_rows(self, users: np.ndarray, items: np.ndarray, reg: float) -> None:
        """iALS's item step (the centralized twin's, not a client's): every item's (q_i, b_i) set
        to the minimizer of the sum of the users' local losses given their rows, whose
        per-example penalty adds up to ``reg`` × users for each item row."""
        users_t = torch.as_tensor(users, dtype=torch.long)
        items_t = torch.as_tensor(items, dtype=torch.long)
        trained = torch.unique(users_t)
        user_offset = (self.global_bias.weight[0, 0] + self.user_bias.weight[trained, 0]).double()
        user_features = torch.cat([torch.ones(len(trained), 1, dtype=torch.float64),
                                   self.user_factors.weight[trained].double()], dim=1)
        present, owners, others = _unique_pairs(items_t, torch.searchsorted(trained, users_t))
        # every item, those without an interaction too (their rows fit target 0 everywhere)
        solution = _implicit_ridge_rows(user_features, user_offset, present[owners], others, self.n_items,
                                        self.positive_weight, reg * len(trained))
        self.item_bias.weight[:, 0] = solution[:, 0].float()
        self.item_factors.weight[:] = solution[:, 1:].float()

    def prepare_for_evaluation(self, train: RatingData) -> None:
        """Every user refits its private row on its own training data (when clients solve it
        in closed form): what each client's device does before it ranks or predicts."""
        if self.solves_private_rows:
            self.fit_private_rows(train.users, train.items, train.ratings, self.private_reg)


def _unique_pairs(owners: torch.Tensor, others: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(owners present, each distinct pair's local owner index, its other side): duplicate
    interactions count once."""
    width = int(others.max()) + 1 if len(others) else 1
    pairs = torch.unique(owners * width + others)
    present, local = torch.unique(pairs // width, return_inverse=True)
    return present, local, pairs % width


def _ridge_rows(features: torch.Tensor, target: torch.Tensor, owners: torch.Tensor, n_owners: int,
                ridge: torch.Tensor) -> torch.Tensor:
    """For each owner, the ridge regression of its targets on its examples' features."""
    width = features.shape[1]
    gram = torch.zeros(n_owners, width, width, dtype=torch.float64)
    moment = torch.zeros(n_owners, width, dtype=torch.float64)
    chunk = max(1, (1 << 22) // (width * width))  # bounds the outer products held at once
    for start in range(0, len(features), chunk):
        x = features[start:start + chunk]
        who = owners[start:start + chunk]
        gram.index_add_(0, who, x[:, :, None] * x[:, None, :])
        moment.index_add_(0, who, x * target[start:start + chunk, None])
    gram += ridge[:, None, None] * torch.eye(width, dtype=torch.float64)
    return torch.linalg.solve(gram, moment)


def _all_rows_sums(features: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ x xᵀ and Σ −o x over every row: weight 1 and target 0 − offset."""
    return features.T @ features, -(features * offset[:, None]).sum(0)


def _implicit_ridge_rows(features: torch.Tensor, offset: torch.Tensor, owners: torch.Tensor,
                         positives: torch.Tensor, n_owners: int, alpha: float, ridge: float,
                         shared: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """iALS's row solve for each owner: weighted ridge regression over **every** row of
    ``features`` (target 1 − offset with weight 1 + α on the owner's ``positives``, −offset
    with weight 1 elsewhere). The all-rows part (``shared``, :func:`_all_rows_sums`) is one
    Gram matrix for every owner; only the positives differ (Hu, Koren & Volinsky, ICDM 2008).
    ``owners`` must be sorted."""
    width = features.shape[1]
    all_gram, shared_moment = shared if shared is not None else _all_rows_sums(features, offset)
    shared_gram = all_gram + ridge * torch.eye(width, dtype=torch.float64)
    x = features[positives]
    # the positives as a correction of the shared sums: weight 1 + α and target 1 − o
    # instead of weight 1 and target −o
    correction = ((1.0 + alpha) * (1.0 - offset[positives]) + offset[positives])[:, None] * x
    solution = torch.empty(n_owners, width, dtype=torch.float64)
    block = max(1, (1 << 22) // (width * width))  # owners whose Gram matrices are held at once
    for low in range(0, n_owners, block):
        high = min(n_owners, low + block)
        start, stop = (int(v) for v in torch.searchsorted(owners, torch.tensor([low, high])))
        gram = shared_gram.expand(high - low, width, width).clone()
        for first in range(start, stop, block):  # the outer products held at once: also a block
            last = min(stop, first + block)
            part = x[first:last]
            gram.index_add_(0, owners[first:last] - low, alpha * part[:, :, None] * part[:, None, :])
        moment = shared_moment.expand(high - low, width).clone().index_add_(
            0, owners[start:stop] - low, correction[start:stop])
        solution[low:high] = torch.linalg.solve(gram, moment)
    return solution


def _zero_embedding(rows: int, width: int) -> nn.Embedding:
    """An embedding table of zeros (not nn.Embedding's own random start, drawn from torch's
    global generator only to be overwritten)."""
    return nn.Embedding(rows, width, _weight=torch.zeros(rows, width))
