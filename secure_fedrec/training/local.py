"""Local training on one client's own ratings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import FederatedModel
from .optimizers import SGD
from .optimizers import make_optimizer as optimizer_named

__all__ = [
    "ClientData",
    "ClientResult",
    "LocalTraining",
    "examples_per_user",
    "local_examples",
    "num_local_examples",
    "train_client",
]


@dataclass(frozen=True)
class LocalTraining:
    epochs: int = 5
    batch_size: int = 0  # 0: full batch
    lr: float = 0.05
    optimizer: str = "adam"
    reg: float = 0.05
    negatives: int = 4


@dataclass(frozen=True)
class ClientData:
    """One user's training ratings (global item indices)."""

    user: int
    items: np.ndarray
    ratings: np.ndarray


@dataclass
class ClientResult:
    user: int
    items: np.ndarray  # sorted unique global item indices the update touches
    delta: np.ndarray  # values at model.layout().indices_for_items(items)
    num_examples: int
    loss: float


def local_examples(
    model: FederatedModel, data: ClientData, n_items: int, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The items the client trains on, its local item index per example, and the targets.

    Explicit models regress on the ratings. Implicit models add ``negatives``
    unrated items per positive, drawn fresh each round; those items are part
    of the update too, which also blurs which items the user really rated.
    """
    if model.task == "explicit":
        items = np.unique(data.items)
        local = np.searchsorted(items, data.items)
        return items, local, data.ratings.astype(np.float32)
    positives = np.unique(data.items)
    wanted = negatives * len(positives)
    candidates = np.setdiff1d(np.arange(n_items), positives, assume_unique=True)
    neg = rng.choice(candidates, size=min(wanted, len(candidates)), replace=len(candidates) < wanted)
    all_items = np.concatenate([positives, neg])
    targets = np.concatenate([np.ones(len(positives)), np.zeros(len(neg))]).astype(np.float32)
    items = np.unique(all_items)
    return items, np.searchsorted(items, all_items), targets


def num_local_examples(model: FederatedModel, data: ClientData, n_items: int, negatives: int) -> int:
    """How many examples :func:`local_examples` makes for this client (what DP-SGD samples from)."""
    if model.task == "explicit":
        return len(data.items)
    return int(_with_negatives(np.array([len(np.unique(data.items))]), n_items, negatives)[0])


def examples_per_user(model: FederatedModel, users: np.ndarray, items: np.ndarray, n_users: int,
                      n_items: int, negatives: int) -> np.ndarray:
    """:func:`num_local_examples` of every user at once, from a split's (user, item) columns."""
    if model.task == "explicit":
        return np.bincount(users, minlength=n_users)
    pairs = np.unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
    return _with_negatives(np.bincount(pairs // n_items, minlength=n_users), n_items, negatives)


def _with_negatives(positives: np.ndarray, n_items: int, negatives: int) -> np.ndarray:
    """Positives plus the negatives :func:`local_examples` draws (at most every unrated item)."""
    return positives + np.minimum(negatives * positives, n_items - positives)


def make_optimizer(params, cfg: LocalTraining) -> SGD:
    # Not torch.optim: constructing one imports torch._dynamo (training/optimizers.py says why).
    return optimizer_named(params, cfg.optimizer, cfg.lr)


def loss_fn(model: FederatedModel) -> nn.Module:
    return nn.MSELoss(reduction="none") if model.task == "explicit" else nn.BCEWithLogitsLoss(reduction="none")


def train_client(
    model: FederatedModel, data: ClientData, cfg: LocalTraining, rng: np.random.Generator,
    *, epochs: int | None = None, all_items: bool = False,
) -> ClientResult:
    """Train the client's view of ``model`` on its own data and return its shared-parameter delta.

    ``all_items=True`` trains a view of every item row (the view record-level
    DP-SGD trains) instead of the touched rows only; benchmarks use it as the
    same-model non-private reference.

    The private rows the client trained are written back with
    :meth:`FederatedModel.store_private` (the in-process stand-in for the
    client keeping them); only the returned delta ever leaves the client.
    """
    items, local_items, targets = local_examples(model, data, model.n_items, cfg.negatives, rng)  # type: ignore[attr-defined]
    if all_items:
        local_items = items[local_items]
        items = np.arange(model.n_items)  # type: ignore[attr-defined]
    view = model.client_view(data.user, items)
    opt = make_optimizer(view.parameters(), cfg)
    criterion = loss_fn(model)
    users_t = torch.zeros(len(local_items), dtype=torch.long)
    items_t = torch.as_tensor(local_items, dtype=torch.long)
    targets_t = torch.as_tensor(targets)
    n = len(targets)
    batch = n if cfg.batch_size <= 0 else min(cfg.batch_size, n)
    last_loss = 0.0
    for _ in range(cfg.epochs if epochs is None else epochs):
        order = rng.permutation(n) if batch < n else np.arange(n)
        for start in range(0, n, batch):
            idx = torch.as_tensor(order[start:start + batch])
            u, i, y = users_t[idx], items_t[idx], targets_t[idx]
            opt.zero_grad(set_to_none=True)
            data_loss = criterion(view(u, i), y)
            loss = (data_loss + cfg.reg * view.penalty(u, i)).mean()
            loss.backward()
            opt.step()
            last_loss = float(data_loss.detach().mean())
    delta = model.view_delta(view, items)
    model.store_private(data.user, view)
    return ClientResult(user=data.user, items=items, delta=delta, num_examples=n, loss=last_loss)
