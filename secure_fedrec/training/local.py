"""Local training on one client's own ratings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..models import FederatedModel
from ..models.objectives import bpr_loss, pair_examples
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
    if model.objective == "ials":
        return n_items
    return int(_with_negatives(np.array([len(np.unique(data.items))]), n_items, negatives)[0])


def examples_per_user(model: FederatedModel, users: np.ndarray, items: np.ndarray, n_users: int,
                      n_items: int, negatives: int) -> np.ndarray:
    """:func:`num_local_examples` of every user at once, from a split's (user, item) columns."""
    if model.task == "explicit":
        return np.bincount(users, minlength=n_users)
    if model.objective == "ials":  # every item is an example of every user who has one
        return np.where(np.bincount(users, minlength=n_users) > 0, n_items, 0)
    pairs = np.unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
    return _with_negatives(np.bincount(pairs // n_items, minlength=n_users), n_items, negatives)


def _with_negatives(positives: np.ndarray, n_items: int, negatives: int) -> np.ndarray:
    """Positives plus the negatives :func:`local_examples` draws (at most every unrated item)."""
    return positives + np.minimum(negatives * positives, n_items - positives)


def minibatches(n: int, batch_size: int, epochs: int, rng: np.random.Generator) -> Iterator[torch.Tensor]:
    """Example indices of each step: ``epochs`` passes, shuffled batches (0 = one full batch)."""
    batch = n if batch_size <= 0 else min(batch_size, n)
    if n == 0:
        return
    for _ in range(epochs):
        order = rng.permutation(n) if batch < n else np.arange(n)
        for start in range(0, n, batch):
            yield torch.as_tensor(order[start:start + batch])


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
    if model.objective == "bpr":  # pairwise: its own examples and loss (models/objectives.py)
        return _train_client_pairs(model, data, cfg, rng, epochs=epochs)
    if model.objective == "ials":  # every item an example: its own loss (models/objectives.py)
        return _train_client_every_item(model, data, cfg, rng, epochs=epochs)
    items, local_items, targets = local_examples(model, data, model.n_items, cfg.negatives, rng)  # type: ignore[attr-defined]
    if all_items:
        local_items = items[local_items]
        items = np.arange(model.n_items)  # type: ignore[attr-defined]
    view = model.client_view(data.user, items)
    if getattr(view, "solves_private_rows", False):
        # Explicit MF: the exact private row, held fixed while the shared rows train (as in
        # ALS). At the minimizer its gradient is ~0, and Adam would turn that rounding noise
        # into a full learning-rate step of random sign on every coordinate of the row.
        view.fit_private_rows(np.zeros(len(local_items), dtype=np.int64), local_items, targets, cfg.reg)
        _freeze_private(view)
    opt = make_optimizer(view.parameters(), cfg)
    criterion = loss_fn(model)
    users_t = torch.zeros(len(local_items), dtype=torch.long)
    items_t = torch.as_tensor(local_items, dtype=torch.long)
    targets_t = torch.as_tensor(targets)
    n = len(targets)
    last_loss = 0.0
    for idx in minibatches(n, cfg.batch_size, cfg.epochs if epochs is None else epochs, rng):
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


def _train_client_pairs(
    model: FederatedModel, data: ClientData, cfg: LocalTraining, rng: np.random.Generator,
    *, epochs: int | None = None,
) -> ClientResult:
    """:func:`train_client` for a pairwise objective (BPR): the client's rated items against
    negatives drawn from its own unrated items."""
    pairs = pair_examples(data.items, model.n_items, cfg.negatives, rng)  # type: ignore[attr-defined]
    view = model.client_view(data.user, pairs.items)
    opt = make_optimizer(view.parameters(), cfg)
    positive, negative = torch.as_tensor(pairs.positive), torch.as_tensor(pairs.negative)
    n = len(pairs)
    users_t = torch.zeros(n, dtype=torch.long)
    last_loss = 0.0
    for idx in minibatches(n, cfg.batch_size, cfg.epochs if epochs is None else epochs, rng):
        opt.zero_grad(set_to_none=True)
        data_loss, loss = bpr_loss(view, users_t[idx], positive[idx], negative[idx], cfg.reg)
        loss.mean().backward()
        opt.step()
        last_loss = float(data_loss.detach().mean())
    delta = model.view_delta(view, pairs.items)
    model.store_private(data.user, view)
    return ClientResult(user=data.user, items=pairs.items, delta=delta, num_examples=n, loss=last_loss)


def _freeze_private(view: FederatedModel) -> None:
    for name in view.private_names:
        view.get_parameter(name).requires_grad_(False)


def _train_client_every_item(
    model: FederatedModel, data: ClientData, cfg: LocalTraining, rng: np.random.Generator,
    *, epochs: int | None = None,
) -> ClientResult:
    """:func:`train_client` for iALS: every item is an example (target 1 for the client's own
    items, weight 1 + α; 0 with weight 1 for the rest), so there are no negatives to sample
    and the update covers every item row. The loss is summed over the items (each row's
    gradient does not depend on the catalogue's size). The private row is solved in closed form and held
    fixed while the item rows take the local steps (federated iALS, as in FCF: Ammad-ud-din
    et al., 2019)."""
    n_items = model.n_items  # type: ignore[attr-defined]
    items = np.arange(n_items)
    positives = np.unique(data.items)
    if getattr(model, "solves_private_rows", False):
        # solved on the model (which holds the same shared parameters as the view, and keeps
        # the sums over every item between the clients of a round), then copied into the view
        model.fit_private_rows(np.full(len(positives), data.user), positives,  # type: ignore[operator]
                               np.ones(len(positives), dtype=np.float32), cfg.reg)
    view = model.client_view(data.user, items)
    if getattr(view, "solves_private_rows", False):
        _freeze_private(view)
    targets = torch.zeros(n_items)
    targets[torch.as_tensor(positives, dtype=torch.long)] = 1.0
    weights = 1.0 + model.positive_weight * targets  # type: ignore[attr-defined]
    items_t = torch.as_tensor(items, dtype=torch.long)
    users_t = torch.zeros(n_items, dtype=torch.long)
    opt = make_optimizer([p for p in view.parameters() if p.requires_grad], cfg)
    last_loss = 0.0
    for idx in minibatches(n_items, cfg.batch_size, cfg.epochs if epochs is None else epochs, rng):
        u, i = users_t[idx], items_t[idx]
        opt.zero_grad(set_to_none=True)
        data_loss = weights[idx] * (view(u, i) - targets[idx]) ** 2
        # the sum, not the mean: a mean over ~10^4 items would shrink each item row's step
        # (and the update the server sees) by the catalogue's size
        (data_loss + cfg.reg * view.penalty(u, i)).sum().backward()
        opt.step()
        last_loss = float(data_loss.detach().mean())
    delta = model.view_delta(view, items)
    model.store_private(data.user, view)
    return ClientResult(user=data.user, items=items, delta=delta, num_examples=n_items, loss=last_loss)
