"""Accuracy of federated vs centralized MF vs Surprise's SVD on MovieLens ml-latest-small.

Run from the repository root (needs ../shared/data/ml-latest-small and the
``benchmarks`` extra for scikit-surprise)::

    OMP_NUM_THREADS=1 python benchmarks/foundation_accuracy.py --seeds 0 1 2

Explicit: the same per-user 80/20 holdout split for all three models, per seed.
Implicit: federated NeuMF and its centralized twin, leave-last-out, full ranking.
Writes benchmarks/results/foundation_accuracy.json and prints mean ± std tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from secure_fedrec.centralized import train_centralized
from secure_fedrec.config import load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split

ROOT = Path(__file__).resolve().parents[1]


def surprise_rmse(split, seed: int) -> dict[str, float]:
    import pandas as pd
    from surprise import SVD, Dataset, Reader

    train, test = split.train, split.test
    frame = pd.DataFrame({"u": train.users, "i": train.items, "r": train.ratings})
    trainset = Dataset.load_from_df(frame, Reader(rating_scale=train.rating_scale)).build_full_trainset()
    algo = SVD(random_state=seed)
    algo.fit(trainset)
    pred = np.array([algo.predict(u, i).est for u, i in zip(test.users.tolist(), test.items.tolist())])
    err = pred - test.ratings
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err)))}


def run_explicit(seed: int, central_epochs: int) -> dict[str, dict[str, float]]:
    config = load_config(ROOT / "examples/movielens.toml", {"seed": seed, "data.source": str(ROOT.parent / "shared/data/ml-latest-small")})
    split = make_split(config, load_data(config))
    out = {}
    t = time.perf_counter()
    out["surprise_svd"] = {**surprise_rmse(split, seed), "seconds": time.perf_counter() - t}
    t = time.perf_counter()
    central = train_centralized(config, split, epochs=central_epochs)
    out["centralized_mf"] = {**central.metrics, "seconds": time.perf_counter() - t}
    t = time.perf_counter()
    trainer = FederatedTrainer(config, split)
    history = trainer.run()
    out["federated_mf"] = {**history[-1].evaluation, "seconds": time.perf_counter() - t,
                           "bytes_sent_per_client_per_round": float(np.mean(
                               [m.measurements["bytes_sent_per_client"] for m in history]))}
    return out


def run_implicit(seed: int, central_epochs: int) -> dict[str, dict[str, float]]:
    config = load_config(ROOT / "examples/movielens-implicit.toml", {"seed": seed, "data.source": str(ROOT.parent / "shared/data/ml-latest-small")})
    split = make_split(config, load_data(config))
    out = {}
    t = time.perf_counter()
    central = train_centralized(config, split, epochs=central_epochs, lr=0.005)
    out["centralized_neumf"] = {**central.metrics, "seconds": time.perf_counter() - t}
    t = time.perf_counter()
    history = FederatedTrainer(config, split).run()
    out["federated_neumf"] = {**history[-1].evaluation, "seconds": time.perf_counter() - t}
    return out


def summarize(per_seed: list[dict], metric_keys: tuple[str, ...]) -> dict[str, dict[str, str]]:
    table = {}
    for model in per_seed[0]:
        row = {}
        for key in metric_keys:
            values = [s[model][key] for s in per_seed if key in s[model]]
            if values:
                row[key] = f"{np.mean(values):.4f} ± {np.std(values):.4f}"
        table[model] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--central-epochs", type=int, default=20)
    parser.add_argument("--skip-implicit", action="store_true")
    args = parser.parse_args()
    explicit = []
    for seed in args.seeds:
        explicit.append(run_explicit(seed, args.central_epochs))
        print(f"seed {seed} explicit:", json.dumps(explicit[-1]), flush=True)
    implicit = []
    if not args.skip_implicit:
        for seed in args.seeds:
            implicit.append(run_implicit(seed, args.central_epochs))
            print(f"seed {seed} implicit:", json.dumps(implicit[-1]), flush=True)
    result = {
        "seeds": args.seeds,
        "explicit_per_seed": explicit,
        "implicit_per_seed": implicit,
        "explicit_summary": summarize(explicit, ("rmse", "mae", "seconds")),
        "implicit_summary": summarize(implicit, ("hr@10", "ndcg@10", "seconds")) if implicit else {},
    }
    fed = [s["federated_mf"]["rmse"] for s in explicit]
    cen = [s["centralized_mf"]["rmse"] for s in explicit]
    result["federated_over_centralized_rmse"] = float(np.mean(np.array(fed) / np.array(cen)))
    out = ROOT / "benchmarks/results/foundation_accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("\nexplicit (per-user 80/20 holdout), mean ± std over seeds", args.seeds)
    for model, row in result["explicit_summary"].items():
        print(f"  {model:16s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print(f"  federated / centralized RMSE = {result['federated_over_centralized_rmse']:.4f}")
    if implicit:
        print("implicit (leave-last-out, full ranking)")
        for model, row in result["implicit_summary"].items():
            print(f"  {model:18s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
