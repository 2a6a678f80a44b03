"""The centralized twin: the same model, loss and evaluation, trained on pooled data."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .config import RunConfig
from .data.dataset import RatingData, Split
from .evaluation import evaluate
from .inputs import build_model_for
from .models import FederatedModel
from .models.objectives import bpr_loss
from .training.local import loss_fn

__all__ = ["CentralizedResult", "train_centralized"]


@dataclass
class CentralizedResult:
    model: FederatedModel
    metrics: dict[str, float | str]
    epochs: int
    seconds: float


def unrated_items(train: RatingData, users: np.ndarray, rng: np.random.Generator,
                  max_tries: int = 20) -> np.ndarray:
    """One item per entry of ``users``, uniform over the items that user has not rated in
    training (as a federated client draws them), by rejection against the training pairs."""
    rated = np.unique(train.users.astype(np.int64) * train.n_items + train.items)
    items = rng.integers(0, train.n_items, size=len(users))
    for _ in range(max_tries):
        keys = users.astype(np.int64) * train.n_items + items
        position = np.minimum(np.searchsorted(rated, keys), len(rated) - 1)
        clash = rated[position] == keys
        if not clash.any():
            break
        items[clash] = rng.integers(0, train.n_items, size=int(clash.sum()))
    return items  # a user who rated almost every item may keep a rare clash after max_tries


def _pointwise_examples(split: Split, negatives: int, rng: np.random.Generator):
    train = split.train
    users = np.repeat(train.users, negatives)
    items = unrated_items(train, users, rng)
    all_users = np.concatenate([train.users, users])
    all_items = np.concatenate([train.items, items])
    targets = np.concatenate([np.ones(len(train)), np.zeros(len(users))]).astype(np.float32)
    return all_users, all_items, targets


def train_centralized(
    config: RunConfig, split: Split, *, epochs: int = 40, batch_size: int = 1024,
    lr: float | None = None,
) -> CentralizedResult:
    """Minibatch Adam over all training ratings, with the federated run's model, loss and penalty.

    Explicit ratings: squared error; implicit feedback: the run's loss (BPR pairs
    or the pointwise logistic loss), with ``training.negatives`` negatives per
    interaction drawn fresh every epoch from the user's unrated items. iALS is
    trained the way it is known centrally: ``epochs`` sweeps of alternating least
    squares (every user's row, then every item's, in closed form), on the loss the
    federated clients minimize.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model_for(config, split)
    t = config.training
    if model.objective == "ials":
        _alternating_least_squares(model, split.train, epochs, t.reg)
        epochs_run = epochs
        cfg = config.evaluation
        metrics = evaluate(model, split, k=cfg.k, ranking=cfg.ranking, recall_k=cfg.recall_k,
                           sampled_negatives=cfg.sampled_negatives, seed=config.seed)
        return CentralizedResult(model=model, metrics=metrics, epochs=epochs_run,
                                 seconds=time.perf_counter() - started)
    opt = torch.optim.Adam(model.parameters(), lr=lr if lr is not None else 0.01)
    train = split.train
    for _ in range(epochs):
        if model.objective == "bpr":
            users = np.repeat(train.users, t.negatives)
            columns = (users, np.repeat(train.items, t.negatives), unrated_items(train, users, rng))
        elif model.task == "explicit":
            columns = (train.users, train.items, train.ratings)
        else:
            columns = _pointwise_examples(split, t.negatives, rng)
        order = rng.permutation(len(columns[0]))
        tensors = [torch.as_tensor(np.asarray(c)[order]) for c in columns]
        for start in range(0, len(order), batch_size):
            u, i, y = (c[start:start + batch_size] for c in tensors)
            opt.zero_grad(set_to_none=True)
            if model.objective == "bpr":
                _, loss = bpr_loss(model, u, i, y, t.reg)
            else:
                loss = loss_fn(model)(model(u, i), y.float()) + t.reg * model.penalty(u, i)
            loss.mean().backward()
            opt.step()
    cfg = config.evaluation
    metrics = evaluate(model, split, k=cfg.k, ranking=cfg.ranking, recall_k=cfg.recall_k,
                       sampled_negatives=cfg.sampled_negatives, seed=config.seed)
    return CentralizedResult(model=model, metrics=metrics, epochs=epochs, seconds=time.perf_counter() - started)


def _alternating_least_squares(model: FederatedModel, train: RatingData, sweeps: int, reg: float) -> None:
    for _ in range(sweeps):
        model.fit_private_rows(train.users, train.items, train.ratings, reg)  # type: ignore[operator]
        model.fit_item_rows(train.users, train.items, reg)  # type: ignore[operator]
