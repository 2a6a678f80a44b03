"""The centralized baseline: the same model, loss and evaluation, trained on pooled data."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .config import RunConfig
from .data.dataset import Split
from .engines.inprocess import build_model_for
from .evaluation import evaluate
from .models import FederatedModel
from .training.local import loss_fn

__all__ = ["CentralizedResult", "train_centralized"]


@dataclass
class CentralizedResult:
    model: FederatedModel
    metrics: dict[str, float | str]
    epochs: int
    seconds: float


def _implicit_examples(split: Split, negatives: int, rng: np.random.Generator):
    train = split.train
    users = np.repeat(train.users, negatives)
    items = rng.integers(0, train.n_items, size=len(users))
    # Sampled negatives may hit a rated item now and then (≈ density); the
    # federated clients exclude them exactly, which matters more for small users.
    all_users = np.concatenate([train.users, users])
    all_items = np.concatenate([train.items, items])
    targets = np.concatenate([np.ones(len(train)), np.zeros(len(users))]).astype(np.float32)
    return all_users, all_items, targets


def train_centralized(
    config: RunConfig, split: Split, *, epochs: int = 40, batch_size: int = 1024,
    lr: float | None = None,
) -> CentralizedResult:
    """Minibatch Adam over all training ratings, with the federated run's loss and penalty."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model_for(config, split)
    t = config.training
    opt = torch.optim.Adam(model.parameters(), lr=lr if lr is not None else 0.01)
    criterion = loss_fn(model)
    for _ in range(epochs):
        if model.task == "explicit":
            users, items, targets = split.train.users, split.train.items, split.train.ratings
        else:
            users, items, targets = _implicit_examples(split, t.negatives, rng)
        order = rng.permutation(len(users))
        u_all = torch.as_tensor(users[order], dtype=torch.long)
        i_all = torch.as_tensor(items[order], dtype=torch.long)
        y_all = torch.as_tensor(np.asarray(targets)[order], dtype=torch.float32)
        for start in range(0, len(order), batch_size):
            u, i, y = u_all[start:start + batch_size], i_all[start:start + batch_size], y_all[start:start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = (criterion(model(u, i), y) + t.reg * model.penalty(u, i)).mean()
            loss.backward()
            opt.step()
    cfg = config.evaluation
    metrics = evaluate(model, split, k=cfg.k, ranking=cfg.ranking,
                       sampled_negatives=cfg.sampled_negatives, seed=config.seed)
    return CentralizedResult(model=model, metrics=metrics, epochs=epochs, seconds=time.perf_counter() - started)
