"""The canary-client audit on two engine layouts, side by side (issue 21 after the split pipeline).

The audit moved from the first engine (one ``audit_hook`` inside its aggregation)
to the split pipeline (``rounds/auditor.py``: canaries through ``encode_update``,
the release read from ``RoundServer.last_aggregate``). This script runs on
whatever tree is first on ``PYTHONPATH``, so the same command measures both; it
appends one JSON record per run to ``--record`` with the ``--label`` given.

* ``--part cell``: benchmarks/leakage.py's distributed ε = 8 cell (ml-latest-small,
  MF dim 8, 18 rounds at q = 0.1, SecAgg+, 1000 canary clients; no control, no
  ceiling): ε̂, the canary AUCs, RMSE, CPU and wall seconds.
* ``--part sigma``: the same cell cut to 6 rounds; per round, the canaries that
  took part, the robust noise scale σ_t of the projections, and the mean
  projection of participating and of the other canaries: a layout that changed
  the noise or the canaries' signal shows here, with far less run-to-run noise
  than ε̂.

The distributed noise comes from the OS CSPRNG, so two runs of one layout differ;
compare records of the same part. The old layout (the branch before the merge)::

    git archive 8ecef7b | tar -x -C /tmp/attacks_old
    cd /tmp && PYTHONPATH=/tmp/attacks_old OMP_NUM_THREADS=1 nice python \\
        /work/wt/attacks/benchmarks/audit_layouts.py --part cell --label old \\
        --record /work/wt/attacks/benchmarks/results/audit_layouts.json
    cd /work/wt/attacks && PYTHONPATH=. OMP_NUM_THREADS=1 nice python benchmarks/audit_layouts.py \\
        --part cell --label new --record benchmarks/results/audit_layouts.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path("/work/shared/data/ml-latest-small")


def _run_config(rounds: int) -> dict:
    return {"model": {"name": "mf", "dim": 8, "init_std": 0.1},
            "training": {"rounds": rounds, "clients_per_round": 0.1, "sampling": "poisson", "local_epochs": 2,
                         "batch_size": 0, "optimizer": "adam", "lr": 0.05, "reg": 0.05,
                         "server_optimizer": "fedadam", "server_lr": 0.05, "checkpoint_every": 0},
            "evaluation": {"every": 18},
            "privacy": {"unit": "user", "noise": "distributed", "target_epsilon": 8.0, "calibrate_to": "amplified"},
            "aggregation": {"protocol": "secagg+"}, "data": {"source": str(DATA)}, "seed": 0}


def cell() -> dict:
    from secure_fedrec.audit.run import run_audit
    from secure_fedrec.audit.spec import spec_from_dict
    from secure_fedrec.config import config_from_dict

    spec = spec_from_dict({"canaries": 1000, "attacks": [], "n_bootstrap": 100, "control": False,
                           "ceiling_repeats": 0})
    cpu, wall = time.process_time(), time.perf_counter()
    r = run_audit(config_from_dict(copy.deepcopy(_run_config(18))), spec)
    c = r["canary_audit"]
    return {"epsilon": r["epsilon"], "epsilon_hat": c["epsilon_hat"],
            "auc": {n: e["membership"]["auc"] for n, e in c["scores"].items()},
            "rmse": r["training"]["final"].get("rmse"), "cpu_seconds": time.process_time() - cpu,
            "wall_seconds": time.perf_counter() - wall}


def sigma() -> dict:
    import secure_fedrec.audit.run as run_module
    from attacks import robust_scale
    from secure_fedrec.audit.spec import spec_from_dict
    from secure_fedrec.config import config_from_dict

    captured = {}
    original = run_module._canary_audit

    def grab(kind, plan, hook, trainer, *args, **kwargs):  # both layouts pass (kind, plan, hook, trainer, ...)
        captured["hook"], captured["trainer"] = hook, trainer
        return original(kind, plan, hook, trainer, *args, **kwargs)

    run_module._canary_audit = grab
    spec = spec_from_dict({"canaries": 1000, "attacks": [], "n_bootstrap": 10, "control": False,
                           "ceiling_repeats": 0})
    run_module.run_audit(config_from_dict(copy.deepcopy(_run_config(6))), spec)
    hook = captured["hook"]
    rounds = []
    for projection, index in zip(hook.projections, hook.rounds):
        # who took part: the hook's own draw, repeated (the auditor's randomness, not the observer's)
        draw = np.random.default_rng([hook.seed, index, 0xC11E]).random(hook.included.size)
        took_part = hook.included & (draw < hook.sample_rate)
        rounds.append({"round": index, "canaries_in": int(took_part.sum()),
                       "sigma": float(robust_scale(projection)),
                       "mean_projection_in": float(np.mean(projection[took_part])),
                       "mean_projection_out": float(np.mean(projection[~took_part]))})
    return {"rounds": rounds, "contributors": [m.contributors for m in captured["trainer"].history],
            "mean_sigma": float(np.mean([r["sigma"] for r in rounds])),
            "mean_shift": float(np.mean([r["mean_projection_in"] for r in rounds]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("cell", "sigma"), required=True)
    parser.add_argument("--label", required=True, help="the layout measured, e.g. old or new")
    parser.add_argument("--record", type=Path, help="a JSON file to append this run's record to")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"data not found: {DATA}")
    result = cell() if args.part == "cell" else sigma()
    record = {"part": args.part, "label": args.label, "tree": os.environ.get("PYTHONPATH", ""),
              "load_average_1min": os.getloadavg()[0], **result}
    print(json.dumps(record))
    if args.record is not None:
        records = json.loads(args.record.read_text()) if args.record.exists() else []
        records.append(record)
        args.record.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
