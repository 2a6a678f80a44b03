"""Accuracy metrics shared by the federated engine and the centralized baseline."""

from __future__ import annotations

import numpy as np
import torch

from .data.dataset import RatingData, Split
from .models import FederatedModel

__all__ = ["evaluate"]


@torch.no_grad()
def rating_metrics(model: FederatedModel, test: RatingData) -> dict[str, float]:
    users = torch.as_tensor(test.users, dtype=torch.long)
    items = torch.as_tensor(test.items, dtype=torch.long)
    low, high = test.rating_scale
    pred = model(users, items).clamp(low, high).numpy().astype(np.float64)
    err = pred - test.ratings.astype(np.float64)
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}


@torch.no_grad()
def ranking_metrics(
    model: FederatedModel, split: Split, *, k: int = 10, protocol: str = "full",
    sampled_negatives: int = 99, seed: int = 0, batch_users: int = 256,
) -> dict[str, float | str]:
    """HR@k and NDCG@k for each test (user, item), ranked against the user's unrated items.

    ``full`` ranks against every item the user has not rated in training (the
    honest default); ``sampled`` against ``sampled_negatives`` random unrated
    items (the 1 + 99 protocol of He et al. 2017, which overstates accuracy).
    """
    train, test = split.train, split.test
    rng = np.random.default_rng(seed)
    seen = [set() for _ in range(train.n_users)]
    for u, i in zip(train.users.tolist(), train.items.tolist()):
        seen[u].add(i)
    hits, ndcgs = [], []
    order = np.argsort(test.users, kind="stable")
    t_users, t_items = test.users[order], test.items[order]
    for start in range(0, len(t_users), batch_users):
        bu, bi = t_users[start:start + batch_users], t_items[start:start + batch_users]
        scores = model.score_all_items(torch.as_tensor(bu, dtype=torch.long)).numpy()
        for row, (u, target) in enumerate(zip(bu.tolist(), bi.tolist())):
            s = scores[row]
            excluded = np.fromiter(seen[u] - {target}, dtype=np.int64)
            if protocol == "full":
                valid = np.ones(len(s), dtype=bool)
                valid[excluded] = False
                rank = int(np.sum(s[valid] > s[target]))
            else:
                pool = np.setdiff1d(np.arange(len(s)), np.append(excluded, target))
                negs = rng.choice(pool, size=min(sampled_negatives, len(pool)), replace=False)
                rank = int(np.sum(s[negs] > s[target]))
            hit = rank < k
            hits.append(float(hit))
            ndcgs.append(1.0 / np.log2(rank + 2) if hit else 0.0)
    return {
        f"hr@{k}": float(np.mean(hits)) if hits else 0.0,
        f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else 0.0,
        "ranking_protocol": "full" if protocol == "full" else f"sampled 1+{sampled_negatives}",
    }


def evaluate(
    model: FederatedModel, split: Split, *, k: int = 10, ranking: str = "full",
    sampled_negatives: int = 99, seed: int = 0,
) -> dict[str, float | str]:
    """RMSE/MAE for explicit models; HR@k/NDCG@k for implicit ones (and leave-last-out splits)."""
    model.eval()
    out: dict[str, float | str] = {}
    if model.task == "explicit":
        out.update(rating_metrics(model, split.test))
    if model.task == "implicit" or split.protocol == "leave-last-out":
        out.update(
            ranking_metrics(model, split, k=k, protocol=ranking,
                            sampled_negatives=sampled_negatives, seed=seed)
        )
    model.train()
    return out
