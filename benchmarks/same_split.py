"""Is the split ``secure-fedrec run`` trains on the one ``benchmarks/baselines.py`` scored Surprise on?

    OMP_NUM_THREADS=1 python benchmarks/same_split.py --data ../shared/data/ml-latest-small --seeds 0 1 2

For each seed it builds the configuration the way the CLI does for
``secure-fedrec run --data DATA --set privacy.unit=none --set seed=S`` and the way
``benchmarks/baselines.py explicit`` does, prints a SHA-256 digest of each split's
train and test arrays (they must be equal), and re-fits the cheap baselines on the
CLI's split to compare with the stored per-seed rows of
``benchmarks/results/baselines_explicit_<data>.json`` (they must be equal too: the
stored file was made on this split).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from secure_fedrec.baselines.registry import evaluate_baseline
from secure_fedrec.config import load_config
from secure_fedrec.data.splits import Split
from secure_fedrec.runner import load_data, make_split, resolve_config

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("item-mean", "user-mean", "baseline-only", "svd")


def split_digest(split: Split) -> str:
    digest = hashlib.sha256()
    for part in (split.train, split.test):
        for array in (part.users, part.items, part.ratings):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/ml-latest-small"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    stored_path = ROOT / f"benchmarks/results/baselines_explicit_{Path(args.data).stem}.json"
    stored = json.loads(stored_path.read_text(encoding="utf-8"))
    rows = dict(zip(stored["seeds"], stored["results"]))
    ok = True
    for seed in args.seeds:
        cli = resolve_config(load_config(None, {"data.source": args.data, "privacy.unit": "none", "seed": seed}))
        bench = resolve_config(load_config(None, {"data.source": args.data, "data.implicit": False, "seed": seed,
                                                  "privacy.unit": "none"}))
        split = make_split(cli, load_data(cli))
        same = split_digest(split) == split_digest(make_split(bench, load_data(bench)))
        line = {"seed": seed, "split_sha256": split_digest(split)[:16], "same_split": same}
        for name in CHECKED:
            ours = evaluate_baseline(name, split, seed=seed)["rmse"]
            line[name] = {"now": round(ours, 6), "stored": round(rows[seed][name]["rmse"], 6) if seed in rows else None}
            same = same and seed in rows and abs(ours - rows[seed][name]["rmse"]) < 1e-9
        ok = ok and same
        print(json.dumps(line), flush=True)
    print("same split and same baseline RMSEs on every seed" if ok else "MISMATCH")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
