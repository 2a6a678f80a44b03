"""Why the BPR-MF twin was weak: implicit objectives side by side on one leave-last-out split.

    OMP_NUM_THREADS=1 python benchmarks/implicit_objectives.py --data ../shared/data/ml-latest-small
    OMP_NUM_THREADS=1 python benchmarks/implicit_objectives.py --data runs/datasets/lastfm-like/user_artists.dat

Every model is trained centrally on the same split (seed 0; leave-last-out, the
latest interaction of each user held out) and scored by the same evaluation
(:func:`secure_fedrec.evaluation.ranking_metrics_of`: full ranking over every item
the user has no training interaction with, ties against the test item; and 1 + 99
sampled negatives). Rows:

* most-popular and item-kNN (``secure-fedrec baseline``'s);
* BPR-MF as the twin trains it (``train_centralized``) with one knob changed per row
  (dimension, negatives per positive, regularization, epochs and learning rate),
  and the pointwise logistic loss (BCE) with many negatives;
* MF with a full softmax over every item (multinomial likelihood, Adam, full batch;
  written here, not a library model) — the "sampled softmax" end of the spectrum;
* iALS (``training.loss = "ials"``, alternating least squares) over dimension,
  regularization and α — the objective the implicit preset now trains;
* EASE (Steck, WWW 2019; closed form, written here) — a strong non-factorized
  reference that no federated client could compute (it needs the item–item Gram
  matrix of all users).

Prints a table (HR@10, NDCG@10, Recall@20 full; HR@10 sampled; CPU seconds) and
writes benchmarks/results/implicit_objectives_<data>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secure_fedrec.baselines import evaluate_baseline
from secure_fedrec.centralized import train_centralized
from secure_fedrec.config import load_config
from secure_fedrec.evaluation import ranking_metrics_of
from secure_fedrec.inputs import load_data, make_split, resolve_config

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("hr@10", "ndcg@10", "recall@20", "sampled_hr@10")

#: (row name, config keys, twin epochs, twin learning rate)
BPR_ROWS = [
    ("BPR-MF dim 32, 4 neg., reg 0.001, 20 ep. (the previous preset)", {}, 20, None),
    ("BPR-MF dim 64", {"model.dim": 64}, 20, None),
    ("BPR-MF 16 negatives", {"training.negatives": 16}, 20, None),
    ("BPR-MF reg 0.01", {"training.reg": 0.01}, 20, None),
    ("BPR-MF 40 epochs at lr 0.005", {}, 40, 0.005),
    ("BCE (pointwise), 16 negatives", {"training.loss": "bce", "training.negatives": 16}, 20, None),
]
BPR_BASE = {"training.loss": "bpr", "model.dim": 32, "training.reg": 0.001, "training.negatives": 4}
IALS_ROWS = [(dim, reg, alpha) for dim in (32, 64, 128) for reg in (0.001, 0.003) for alpha in (1.0,)] + [
    (64, 0.003, 0.3), (64, 0.003, 3.0), (64, 0.01, 1.0)]


def timed(fn) -> tuple[Any, float]:
    cpu = time.process_time()
    out = fn()
    return out, time.process_time() - cpu


def softmax_mf(split, *, dim: int = 32, steps: int = 100, lr: float = 0.01, reg: float = 1.0,
               seed: int = 0) -> dict[str, float]:
    """MF trained with the full softmax over every item, full batch (every user at once)."""
    train = split.train
    torch.manual_seed(seed)
    users = torch.nn.Parameter(torch.randn(train.n_users, dim) * 0.1)
    items = torch.nn.Parameter(torch.randn(train.n_items, dim) * 0.1)
    bias = torch.nn.Parameter(torch.zeros(train.n_items))
    x = torch.zeros(train.n_users, train.n_items)
    x[torch.as_tensor(train.users), torch.as_tensor(train.items)] = 1.0
    opt = torch.optim.Adam([users, items, bias], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        log_p = torch.log_softmax(users @ items.T + bias, dim=1)
        loss = -(log_p * x).sum() / train.n_users + reg * (users.pow(2).sum() + items.pow(2).sum()) / train.n_users
        loss.backward()
        opt.step()
    with torch.no_grad():
        scores = (users @ items.T + bias).numpy()
    return ranking_metrics_of(lambda u: scores[u], split)


def ease(split, *, lam: float) -> dict[str, float]:
    train = split.train
    x = np.zeros((train.n_users, train.n_items), dtype=np.float32)
    x[train.users, train.items] = 1.0
    inverse = np.linalg.inv(x.T @ x + lam * np.eye(train.n_items, dtype=np.float32))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return ranking_metrics_of(lambda u: x[u] @ weights, split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/ml-latest-small"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ease", action="store_true", help="skip EASE (a dense items × items inverse)")
    args = parser.parse_args()

    def config_for(keys: dict[str, Any]):
        return resolve_config(load_config(None, {"data.source": args.data, "data.implicit": True,
                                                 "privacy.unit": "none", "seed": args.seed, **keys}))

    split = make_split(config_for({}), load_data(config_for({})))
    rows: dict[str, dict[str, float]] = {}

    def record(name: str, fn) -> None:
        metrics, cpu = timed(fn)
        rows[name] = {**{k: float(metrics[k]) for k in KEYS}, "cpu_seconds": cpu}
        print(f"{name}: " + ", ".join(f"{k} {metrics[k]:.4f}" for k in KEYS) + f"  ({cpu:.0f} s CPU)", flush=True)

    for name in ("most-popular", "item-knn"):
        record(name, lambda name=name: evaluate_baseline(name, split, seed=args.seed))
    for name, keys, epochs, lr in BPR_ROWS:
        config = config_for({**BPR_BASE, **keys})
        record(name, lambda c=config, e=epochs, lr=lr: train_centralized(c, split, epochs=e, lr=lr).metrics)
    record("softmax MF dim 32, full softmax, 100 steps", lambda: softmax_mf(split, seed=args.seed))
    for dim, reg, alpha in IALS_ROWS:
        config = config_for({"training.loss": "ials", "model.dim": dim, "training.reg": reg,
                             "training.positive_weight": alpha})
        record(f"iALS dim {dim}, reg {reg:g}, α {alpha:g}, 8 sweeps",
               lambda c=config: train_centralized(c, split, epochs=8).metrics)
    if not args.no_ease:
        record("EASE λ = 100 (not federated)", lambda: ease(split, lam=100.0))
    out = ROOT / f"benchmarks/results/implicit_objectives_{Path(args.data).stem}.json"
    out.write_text(json.dumps({"data": args.data, "seed": args.seed, "split": split.protocol, "rows": rows},
                              indent=2), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
