"""Do the record-level distributed-noise defaults hold on data they were not tuned on? (issue 20)

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/record_level_defaults.py            # every data set below
    OMP_NUM_THREADS=1 python benchmarks/record_level_defaults.py --data synthetic

The defaults (``config.RECORD_DISTRIBUTED_DEFAULTS``: q = 0.2, 50 steps, Adam at 0.02,
C = 1, dim 8) were chosen on ml-latest-small. Here they run, unchanged, on

* ``synthetic`` — the package's default synthetic data (2000 users, 200 items);
* ``ml-half`` — a MovieLens-100K-sized subsample of ml-latest-small: every other user
  (seeded), written to a temporary CSV, so users and their ratings differ from the
  tuning run's;
* ``implicit`` — the synthetic data read as implicit feedback (NeuMF, HR@10/NDCG@10),

each at ε = 1 and 8 (seed 0, the plaintext simulation of the secure sum: the same
released sums as SecAgg+, docs/privacy.md §4.4), beside the untrained model and, for
ratings, the centralized DP-SGD twin (same noise, same accountant) and the twin's
schedule without clipping or noise. Writes
``benchmarks/results/record_level_defaults.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from secure_fedrec.centralized_dpsgd import train_dpsgd_twin
from secure_fedrec.config import load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small"
RECORD = {"privacy.unit": "record", "privacy.noise": "distributed", "aggregation.protocol": "plaintext"}


def half_of_movielens(folder: Path) -> Path:
    """Every other user of ml-latest-small (a seeded half), as a CSV of its own."""
    import pandas as pd

    ratings = pd.read_csv(MOVIELENS / "ratings.csv")
    users = np.sort(ratings["userId"].unique())
    keep = np.random.default_rng(20).permutation(users)[: len(users) // 2]
    path = folder / "ml-half.csv"
    ratings[ratings["userId"].isin(keep)].to_csv(path, index=False)
    return path


def measure(name: str, overrides: dict, epsilons: tuple[float, ...], twin: bool) -> dict:
    out: dict = {"overrides": overrides}
    config = load_config(None, {**RECORD, **overrides, "privacy.target_epsilon": epsilons[0]})
    split = make_split(config, load_data(config))
    out["untrained"] = {k: v for k, v in FederatedTrainer(config, split).evaluate().items()
                        if isinstance(v, float)}
    for epsilon in epsilons:
        config = load_config(None, {**RECORD, **overrides, "privacy.target_epsilon": epsilon})
        started = time.process_time()
        trainer = FederatedTrainer(config, split)
        history = trainer.run()
        cell = {"final": {k: v for k, v in history[-1].evaluation.items() if isinstance(v, float)},
                "epsilon": trainer.privacy.summary()["epsilon"], "cpu_seconds": time.process_time() - started,
                "clients": len(trainer.population)}
        if twin:
            cell["twin"] = train_dpsgd_twin(config, split, noise="same").metrics
            cell["twin_without_privacy"] = train_dpsgd_twin(config, split, noise="none").metrics
        out[f"epsilon={epsilon:g}"] = cell
        print(name, epsilon, json.dumps(cell), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="*", default=["synthetic", "ml-half", "implicit"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "record_level_defaults.json")
    args = parser.parse_args()
    results: dict = {"command": "OMP_NUM_THREADS=1 python benchmarks/record_level_defaults.py --data "
                                + " ".join(args.data)}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.data:
            if name == "synthetic":
                results[name] = measure(name, {}, (1.0, 8.0), twin=True)
            elif name == "ml-half":
                if not MOVIELENS.exists():
                    results[name] = {"skipped": f"{MOVIELENS} is absent"}
                    continue
                results[name] = measure(name, {"data.source": str(half_of_movielens(Path(tmp)))}, (1.0, 8.0),
                                        twin=True)
            elif name == "implicit":
                results[name] = measure(name, {"data.implicit": True}, (1.0, 8.0), twin=False)
            else:
                raise SystemExit(f"unknown data set {name!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
