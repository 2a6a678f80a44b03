"""The cost of one ranking evaluation over all users, next to the per-row loop it replaced.

    OMP_NUM_THREADS=1 python benchmarks/make_datasets.py --out runs/datasets
    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py --data ../shared/data/ml-latest-small --split leave-last-out
    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py --data runs/datasets/implicit-100k --split holdout

Times (CPU and wall, best of ``--repeat``) one pass of
:func:`secure_fedrec.evaluation.ranking_metrics` — every user with a test item
scored once, full ranking alone and full + 1+99 sampled side by side — for an
untrained MF (dim 32) and NeuMF (dim 16, MLP 32), against the previous
implementation (one score row per *test row*, a Python loop per row; kept
verbatim below as the reference, full ranking only), in the same process.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from secure_fedrec.data import holdout_split, leave_last_out, load_ratings
from secure_fedrec.evaluation import _TASKS, ranking_metrics
from secure_fedrec.models import BiasedMF, NeuMF

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def reference_per_row(model, split, *, k: int = 10, batch_users: int = 256) -> dict[str, float]:
    """The evaluation before issue 18 (full ranking), verbatim but for the sampled branch."""
    train, test = split.train, split.test
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
            valid = np.ones(len(s), dtype=bool)
            valid[excluded] = False
            rank = int(np.sum(s[valid] > s[target]))
            hit = rank < k
            hits.append(float(hit))
            ndcgs.append(1.0 / np.log2(rank + 2) if hit else 0.0)
    return {f"hr@{k}": float(np.mean(hits)), f"ndcg@{k}": float(np.mean(ndcgs))}


def best_of(repeat: int, fn) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the fastest of ``repeat`` calls (fresh caches each time)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        _TASKS.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.process_time() - cpu, time.perf_counter() - wall))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/ml-latest-small"))
    parser.add_argument("--split", choices=("leave-last-out", "holdout"), default="leave-last-out")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    data = load_ratings(args.data, implicit=True)
    split = (leave_last_out(data, seed=0, without_timestamps="random") if args.split == "leave-last-out"
             else holdout_split(data, 0.2, seed=0))
    n_test_users = len(np.unique(split.test.users))
    print(f"{data.name}: {data.n_users} users, {data.n_items} items, {len(data)} interactions; "
          f"{args.split}: {len(split.test)} test rows of {n_test_users} users")
    results = []
    for name, model in (("MF dim 32", BiasedMF(n_users=data.n_users, n_items=data.n_items, dim=32,
                                                task="implicit")),
                        ("NeuMF dim 16", NeuMF(n_users=data.n_users, n_items=data.n_items, dim=16, hidden=32))):
        model.eval()
        rows = {
            "full, per user": best_of(args.repeat, lambda m=model: ranking_metrics(m, split, protocol="full")),
            "full + sampled 1+99, per user": best_of(args.repeat, lambda m=model: ranking_metrics(m, split)),
        }
        if not args.skip_reference:
            rows["reference: full, per test row"] = best_of(1, lambda m=model: reference_per_row(m, split))
        for label, (cpu, wall) in rows.items():
            results.append({"model": name, "evaluation": label, "cpu_seconds": cpu, "wall_seconds": wall})
    print("| model | evaluation | CPU s | wall s |\n|---|---|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['evaluation']} | {r['cpu_seconds']:.2f} | {r['wall_seconds']:.2f} |")
    out = ROOT / f"benchmarks/results/eval_cost_{Path(args.data).name}_{args.split}.json"
    out.write_text(json.dumps({"data": args.data, "split": args.split, "n_users": data.n_users,
                               "n_items": data.n_items, "n_interactions": len(data), "test_rows": len(split.test),
                               "test_users": n_test_users, "results": results}, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
