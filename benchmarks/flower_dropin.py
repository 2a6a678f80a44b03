"""Our secure aggregation as a drop-in vs Flower's own SecAgg+, in the same Flower app, side by side.

Runs ``examples/flower-secure-numpy`` (a NumPy linear model, legacy NumPyClient +
FedAvg in Flower's DefaultWorkflow) on one federation per configuration (a SuperLink
and K SuperNodes on 127.0.0.1, or Flower's simulation engine with ``--mode sim``),
with the fit round's aggregation being:

* ``none`` — Flower's default fit workflow (plain FedAvg, no protection);
* ``flower-secagg+`` — Flower's ``secaggplus_mod`` + ``SecAggPlusWorkflow`` (num_shares = K,
  threshold = K // 2 + 1: the complete graph on K nodes);
* ``ours`` — ``protocols.flower``'s mod + workflow, a new session every round
  (the complete graph with a majority threshold on K nodes: the same graph);
* ``ours-keyed`` — the same with one key setup for all rounds.

Per configuration and round: the fit's message exchanges, its wall time, the CPU of
the nodes' mods (their training excluded; each mod call appends its CPU to a file)
and of the ServerApp's fit workflow, the bytes of the fit's records, and the final
parameters' largest difference from plain FedAvg.

    python benchmarks/flower_dropin.py [--nodes 3] [--rounds 4] [--model-size 100000] [--mode deployment]

Writes benchmarks/results/flower_dropin.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import git_commit

APP = ROOT / "examples" / "flower-secure-numpy"
CONFIGS = {"none": ("none", 1), "flower-secagg+": ("flower-secagg+", 1), "ours": ("ours", 1),
           "ours-keyed": ("ours", None)}


def run_one(name: str, mode: str, nodes: int, rounds: int, size: int) -> dict:
    from secure_fedrec.engines.flower.launcher import LocalFederation

    aggregation, key_rounds = CONFIGS[name]
    with tempfile.TemporaryDirectory(prefix="sfr-dropin-") as work:
        costs = Path(work) / "costs.json"
        with LocalFederation(mode, nodes, Path(work) / "federation") as federation:
            run = federation.submit_app(APP, {"aggregation": aggregation, "key-rounds": key_rounds or rounds,
                                              "num-server-rounds": rounds, "model-size": size,
                                              "costs-file": str(costs)})
            code = federation.wait_for_exit(run, 3600)
            if code != 0 or not costs.exists():
                raise RuntimeError(f"{name} did not finish ({code}):\n{federation.logs(60)}")
        result = json.loads(costs.read_text())
        node_cpu: dict[int, float] = defaultdict(float)
        nodes_file = Path(str(costs) + ".nodes")
        if nodes_file.exists():
            for line in nodes_file.read_text().splitlines():
                entry = json.loads(line)
                node_cpu[int(entry["round"])] += float(entry["cpu_seconds"])
    for row in result["rounds"]:
        row["client_cpu_seconds"] = node_cpu.get(row["round"], 0.0)
    return {"name": name, "aggregation": aggregation, "key_rounds": key_rounds or rounds, **result}


def summary(run: dict) -> dict:
    rows = run["rounds"]
    steady = rows[1:] if len(rows) > 1 else rows

    def med(key: str) -> float:
        return float(statistics.median(r.get(key, 0.0) for r in steady))

    return {"exchanges_first": rows[0]["exchanges"], "exchanges_steady": med("exchanges"),
            "fit_seconds_first": rows[0]["fit_seconds"], "fit_seconds_steady": med("fit_seconds"),
            "client_cpu_steady": med("client_cpu_seconds"), "server_cpu_steady": med("fit_server_cpu_seconds"),
            "bytes_down_steady": med("bytes_down"), "bytes_up_steady": med("bytes_up")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--model-size", type=int, default=100_000)
    ap.add_argument("--mode", choices=("deployment", "sim"), default="deployment")
    ap.add_argument("--only", nargs="*", default=list(CONFIGS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/flower_dropin.json"))
    args = ap.parse_args()
    runs = []
    for name in args.only:
        runs.append(run_one(name, args.mode, args.nodes, args.rounds, args.model_size))
        print(f"{name}: done", file=sys.stderr)
    reference = next((r for r in runs if r["name"] == "none"), None)
    print("| aggregation | exchanges (first / later) | fit s (first / later) | nodes' CPU s / round | "
          "server CPU s / round | KB down / up per round | max abs diff vs none |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for run in runs:
        s = run["summary"] = summary(run)
        diff = (float(np.max(np.abs(np.subtract(run["final_parameters"], reference["final_parameters"]))))
                if reference is not None else float("nan"))
        run["max_abs_diff_vs_none"] = diff
        print(f"| {run['name']} | {s['exchanges_first']} / {s['exchanges_steady']:g} | "
              f"{s['fit_seconds_first']:.2f} / {s['fit_seconds_steady']:.2f} | {s['client_cpu_steady']:.3f} | "
              f"{s['server_cpu_steady']:.3f} | {s['bytes_down_steady'] / 1e3:.0f} / {s['bytes_up_steady'] / 1e3:.0f} | "
              f"{diff:.1e} |")
    Path(args.out).write_text(json.dumps({"args": vars(args), "runs": runs, "loadavg_end": os.getloadavg(),
                                          "python": platform.python_version(), "commit": git_commit(ROOT)}, indent=1),
                              encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)



if __name__ == "__main__":
    main()
