"""What Flower adds: round time and bytes of one job, in-process vs Flower simulation vs deployment.

The same job (config, seed, protocol) runs three ways in one invocation:
``inprocess`` (FederatedTrainer), ``flower-sim`` (Flower's simulation engine,
Ray, K virtual nodes) and ``flower`` (a SuperLink and K SuperNode processes
on 127.0.0.1). Reported per engine: mean round time (first round apart: it
includes Ray/ClientApp warm-up), total job wall time, protocol bytes per
round (our frames — identical on every engine) and, on Flower, the payload
bytes of every message per round (protocol frames plus the model download,
the config and the per-user bookkeeping; a lower bound on the serialized
messages). Ratios are against the in-process engine, measured in the same run.

    python benchmarks/flower_overhead.py [--nodes 3] [--rounds 3] [--users 60] [--protocol secagg]

Writes benchmarks/results/flower_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from secure_fedrec.config import load_config
from secure_fedrec.runner import run_job


def protocol_bytes(round_: dict) -> float:
    """All protocol frames of a round, both directions (in-process byte accounting)."""
    return (round_["contributors"] * round_.get("bytes_sent_per_client", 0.0)
            + round_["sampled"] * round_.get("bytes_received_per_client", 0.0))


def summarize(name: str, result: dict, wall: float) -> dict:
    rounds = result["rounds"]
    seconds = [r["seconds"] for r in rounds]
    flower = [r.get("flower_bytes_down", 0.0) + r.get("flower_bytes_up", 0.0) for r in rounds]
    return {
        "engine": name,
        "round_seconds_first": seconds[0],
        "round_seconds_later_mean": float(np.mean(seconds[1:])) if len(seconds) > 1 else seconds[0],
        "job_wall_seconds": wall,
        "protocol_bytes_per_round": float(np.mean([protocol_bytes(r) for r in rounds])),
        "message_bytes_per_round": float(np.mean(flower)) if any(flower) else
        float(np.mean([protocol_bytes(r) for r in rounds])),
        "final": result["final"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--clients", type=float, default=10.0)
    ap.add_argument("--protocol", default="secagg")
    ap.add_argument("--skip-deployment", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/flower_overhead.json")
    args = ap.parse_args()

    from secure_fedrec.engines.flower import run_flower

    config = load_config(None, {
        "training.rounds": args.rounds, "aggregation.protocol": args.protocol,
        "data.synthetic.n_users": args.users, "data.synthetic.n_items": 80,
        "training.clients_per_round": args.clients, "training.local_epochs": 2,
        "aggregation.threshold_fraction": 0.6,
        # Pinned, not inherited from the defaults: the job measured must stay the same.
        "privacy.unit": "none", "training.sampling": "fixed", "aggregation.bits": 32,
        "training.dropout_rate": 0.0, "training.straggler_rate": 0.0, "seed": 0,
    })
    rows = []
    started = time.perf_counter()
    rows.append(summarize("inprocess", run_job(config), time.perf_counter() - started))
    started = time.perf_counter()
    rows.append(summarize("flower-sim", run_flower(config, mode="sim", num_nodes=args.nodes),
                          time.perf_counter() - started))
    if not args.skip_deployment:
        started = time.perf_counter()
        rows.append(summarize("flower", run_flower(config, mode="deployment", num_nodes=args.nodes),
                              time.perf_counter() - started))
    ref = rows[0]
    print(f"{'engine':<11} {'round 1 s':>9} {'later s':>8} {'x in-proc':>9} {'job s':>7} "
          f"{'protocol B/round':>16} {'message B/round':>15} {'x in-proc':>9}")
    for row in rows:
        row["round_time_ratio"] = row["round_seconds_later_mean"] / ref["round_seconds_later_mean"]
        row["bytes_ratio"] = row["message_bytes_per_round"] / ref["message_bytes_per_round"]
        print(f"{row['engine']:<11} {row['round_seconds_first']:>9.2f} "
              f"{row['round_seconds_later_mean']:>8.2f} {row['round_time_ratio']:>9.1f} "
              f"{row['job_wall_seconds']:>7.1f} {row['protocol_bytes_per_round']:>16.0f} "
              f"{row['message_bytes_per_round']:>15.0f} {row['bytes_ratio']:>9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
