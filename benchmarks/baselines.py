"""Our models next to Surprise, most-popular and item-kNN, on exactly the same split per seed.

Run from the repository root (the ``benchmarks`` extra brings scikit-surprise)::

    OMP_NUM_THREADS=1 python benchmarks/baselines.py explicit --data ../shared/data/ml-latest-small --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/baselines.py implicit --data ../shared/data/ml-latest-small --seeds 0 1 2
    # add --federated to train `secure-fedrec run`'s model too (its preset, non-private),
    # --private for the private default too (its preset at user-level ε = 8), and
    # --set KEY=VALUE to change any config key of the twin and the federated run

Explicit: per-user 80/20 holdout; Surprise's SVD, SVD++ and BaselineOnly fitted in
this process on our training ratings and scored on our test ratings; our means
and biases; the centralized twin (and the federated run). Implicit: leave-last-out;
most-popular, item-kNN, the twin (and the federated run), each under full ranking
and 1 + 99 sampled negatives (docs: secure_fedrec/evaluation.py); for implicit
feedback a second centralized model, BPR-MF with the previous preset's settings
(dim 32, 4 negatives, reg 0.001, 20 epochs of Adam), sits next to the twin (iALS,
ALS sweeps). Every model of a seed sees the same split and the same sampled negatives. Writes
benchmarks/results/baselines_<kind>_<data name>.json and prints mean ± std tables
with CPU (process) and wall seconds per model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from secure_fedrec.baselines import evaluate_baseline
from secure_fedrec.centralized import train_centralized
from secure_fedrec.config import load_config, parse_override
from secure_fedrec.runner import load_data, make_split, resolve_config, run_job

ROOT = Path(__file__).resolve().parents[1]
EXPLICIT = ("global-mean", "item-mean", "item-mean-shrunk", "user-mean", "user-item-bias",
            "baseline-only", "svd", "svd++")
IMPLICIT = ("most-popular", "item-knn")


def timed(fn) -> tuple[dict[str, Any], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


#: the previous implicit preset's model, trained centrally (the comparison of docs/results.md)
BPR_TWIN = {"training.loss": "bpr", "model.dim": 32, "training.reg": 0.001, "training.negatives": 4}


def one_seed(kind: str, data_path: str, seed: int, federated: bool, twin_epochs: int,
             overrides: dict[str, Any], private: bool = False) -> dict[str, dict[str, Any]]:
    base = {"data.source": data_path, "data.implicit": kind == "implicit", "seed": seed}
    config = resolve_config(load_config(None, {**base, "privacy.unit": "none", **overrides}))
    split = make_split(config, load_data(config))
    ev = config.evaluation
    results: dict[str, dict[str, Any]] = {}
    for name in (IMPLICIT if kind == "implicit" else EXPLICIT):
        metrics, wall, cpu = timed(lambda name=name: evaluate_baseline(
            name, split, k=ev.k, recall_k=ev.recall_k, sampled_negatives=ev.sampled_negatives, seed=seed))
        results[name] = {**metrics, "wall_seconds": wall, "cpu_seconds": cpu}
        print(f"  seed {seed} {name}: {_short(metrics)}  ({cpu:.1f} s CPU)", flush=True)
    twin, wall, cpu = timed(lambda: train_centralized(config, split, epochs=twin_epochs).metrics)
    results[f"centralized twin ({config.loss_name})"] = {**twin, "wall_seconds": wall, "cpu_seconds": cpu}
    print(f"  seed {seed} centralized twin: {_short(twin)}  ({cpu:.1f} s CPU)", flush=True)
    if kind == "implicit":
        bpr = resolve_config(load_config(None, {**base, "privacy.unit": "none", **BPR_TWIN}))
        twin, wall, cpu = timed(lambda: train_centralized(bpr, split, epochs=20).metrics)
        results["centralized BPR-MF"] = {**twin, "wall_seconds": wall, "cpu_seconds": cpu}
        print(f"  seed {seed} centralized BPR-MF: {_short(twin)}  ({cpu:.1f} s CPU)", flush=True)
    if federated:
        run, wall, cpu = timed(lambda: run_job(config))
        results["federated (secure-fedrec run)"] = {**run["final"], "wall_seconds": wall, "cpu_seconds": cpu,
                                                    "preset": run["config"]["preset"]}
        print(f"  seed {seed} federated: {_short(run['final'])}  ({cpu:.1f} s CPU)", flush=True)
    if private:
        private_config = resolve_config(load_config(None, {**base, **overrides}))
        run, wall, cpu = timed(lambda: run_job(private_config))
        results["federated, private default"] = {**run["final"], "wall_seconds": wall, "cpu_seconds": cpu,
                                                 "preset": run["config"]["preset"],
                                                 "epsilon": run["privacy"].get("epsilon")}
        print(f"  seed {seed} private: {_short(run['final'])}  ({cpu:.1f} s CPU)", flush=True)
    return results


def _short(metrics: dict[str, Any]) -> str:
    keys = ("rmse", "hr@10", "ndcg@10", "sampled_hr@10")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


def table(per_seed: list[dict[str, dict[str, Any]]], kind: str) -> str:
    columns = (("rmse", "RMSE"), ("mae", "MAE")) if kind == "explicit" else (
        ("hr@10", "HR@10 full"), ("ndcg@10", "NDCG@10 full"), ("recall@20", "Recall@20 full"),
        ("sampled_hr@10", "HR@10 sampled 1+99"), ("sampled_ndcg@10", "NDCG@10 sampled 1+99"))
    lines = ["| model | " + " | ".join(label for _, label in columns) + " | CPU s | wall s |",
             "|---|" + "---:|" * (len(columns) + 2)]
    for model in per_seed[0]:
        cells = []
        for key, _ in columns:
            values = np.array([seed[model][key] for seed in per_seed if key in seed[model]])
            cells.append(f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1
                         else (f"{values[0]:.4f}" if len(values) else ""))
        cpu = np.mean([seed[model]["cpu_seconds"] for seed in per_seed])
        wall = np.mean([seed[model]["wall_seconds"] for seed in per_seed])
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {cpu:.1f} | {wall:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("explicit", "implicit"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/ml-latest-small"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--federated", action="store_true", help="also run the federated job (slow)")
    parser.add_argument("--private", action="store_true", help="also run the private default job")
    parser.add_argument("--twin-epochs", type=int, default=20)
    parser.add_argument("--set", dest="overrides", action="append", default=[], type=parse_override)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    per_seed = []
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        per_seed.append(one_seed(args.kind, args.data, seed, args.federated, args.twin_epochs,
                                 dict(args.overrides), private=args.private))
    protocol = ("per-user 80/20 holdout, RMSE on the held-out ratings" if args.kind == "explicit" else
                "leave-last-out; full ranking over every item without a training interaction, and "
                "the test item against 99 sampled negatives the user never interacted with")
    print(f"\n{args.kind}, {Path(args.data).name}, seeds {args.seeds}: {protocol}\n")
    print(table(per_seed, args.kind))
    out = args.out or ROOT / f"benchmarks/results/baselines_{args.kind}_{Path(args.data).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"kind": args.kind, "data": args.data, "seeds": args.seeds, "protocol": protocol,
                               "overrides": dict(args.overrides), "twin_epochs": args.twin_epochs,
                               "results": per_seed}, indent=2, default=float), encoding="utf-8")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
