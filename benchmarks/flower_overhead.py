"""What Flower adds: round time, exchanges and bytes of one job, in-process vs Flower simulation vs deployment,
beside Flower's own example app on the same kind of federation.

The same job (config, seed, protocol) runs in one invocation as
``inprocess`` (FederatedTrainer), ``flower-sim`` (Flower's simulation engine,
Ray, K virtual nodes) and ``flower`` (a SuperLink and K SuperNode processes
on 127.0.0.1); then ``flower-own-app``: Flower's quickstart-numpy shaped app
(``examples/flower-quickstart-numpy``: Message-API FedAvg, as shipped) on a fresh
SuperLink + K SuperNodes with the same environment (our launcher's, so the
SuperExec poll knob applies to both). With ``--single-sessions`` the deployment is
also run with ``aggregation.key_rounds = 1`` (a new key setup every round: the
engine before key sessions) and reported under ``comparisons``.

Per row: the first round, the mean of the later ones, the steady state (the
median of rounds 2..R-1: no key setup, no final evaluation), message exchanges
per round, job wall time, and CPU seconds of every process of the run (the
benchmark itself for in-process; for Flower, every process carrying the run's
private FLWR_HOME, sampled from /proc every 0.2 s — a lower bound, the last
fraction of a second of each short-lived process is missed), protocol bytes per
round (our frames — identical on every engine) and the payload bytes of every
Flower message per round. Ratios are against the in-process engine, and the
deployment's steady round against Flower's own app's round, measured in the same
run.

    python benchmarks/flower_overhead.py [--nodes 3] [--rounds 5] [--users 60] [--protocol secagg]
                                         [--key-rounds R] [--single-sessions]

Writes benchmarks/results/flower_overhead.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from provenance import git_commit

from secure_fedrec.config import load_config
from secure_fedrec.runner import run_job

OWN_APP = ROOT / "examples" / "flower-quickstart-numpy"
TICKS = os.sysconf("SC_CLK_TCK")


class ProcessCpu:
    """CPU seconds of every process whose environment names ``marker`` (sampled from /proc)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker.encode()
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if self.marker not in (entry / "environ").read_bytes():
                    continue
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
            pid = int(entry.name)
            self.seen[pid] = max(self.seen.get(pid, 0.0), cpu)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.2)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())


def protocol_bytes(round_: dict) -> float:
    """All protocol frames of a round, both directions (in-process byte accounting)."""
    n = round_.get("protocol_n", round_["sampled"])
    uploaders = round_.get("protocol_n", round_["contributors"]) - round_.get("protocol_dropped", 0.0)
    return (uploaders * round_.get("bytes_sent_per_client", 0.0)
            + n * round_.get("bytes_received_per_client", 0.0))


def _round_stats(seconds: list[float]) -> dict:
    steady = seconds[1:-1] if len(seconds) > 2 else seconds[1:] or seconds
    return {
        "round_seconds": seconds,
        "round_seconds_first": seconds[0],
        "round_seconds_later_mean": float(np.mean(seconds[1:])) if len(seconds) > 1 else seconds[0],
        "round_seconds_steady": float(statistics.median(steady)),
    }


def summarize(name: str, result: dict, wall: float, cpu: float) -> dict:
    rounds = result["rounds"]
    flower = [r.get("flower_bytes_down", 0.0) + r.get("flower_bytes_up", 0.0) for r in rounds]
    return {
        "engine": name,
        **_round_stats([r["seconds"] for r in rounds]),
        "exchanges_per_round": [r.get("flower_exchanges", r.get("protocol_exchanges")) for r in rounds],
        "job_wall_seconds": wall,
        "job_cpu_seconds": cpu,
        "protocol_bytes_per_round": float(np.mean([protocol_bytes(r) for r in rounds])),
        "message_bytes_per_round": float(np.mean(flower)) if any(flower) else
        float(np.mean([protocol_bytes(r) for r in rounds])),
        "final": result["final"],
    }


def run_ours(config, mode: str | None, nodes: int) -> dict:
    from secure_fedrec.engines.flower import run_flower

    started, cpu0 = time.perf_counter(), time.process_time()
    if mode is None:
        result = run_job(config)
        return summarize("inprocess", result, time.perf_counter() - started, time.process_time() - cpu0)
    with tempfile.TemporaryDirectory(prefix="sfr-bench-") as work, ProcessCpu(work) as cpu:
        result = run_flower(config, mode=mode, num_nodes=nodes, work_dir=work)
    name = "flower-sim" if mode == "sim" else "flower"
    return summarize(name, result, time.perf_counter() - started, cpu.seconds + time.process_time() - cpu0)


def run_own_app(nodes: int, rounds: int) -> dict:
    """Flower's quickstart-numpy shaped app on SuperLink + ``nodes`` SuperNodes."""
    from secure_fedrec.engines.flower.launcher import LocalFederation

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sfr-bench-own-") as work, ProcessCpu(work) as cpu:
        times = Path(work) / "times.jsonl"
        with LocalFederation("deployment", nodes, Path(work) / "federation") as federation:
            run = federation.submit_app(OWN_APP, {"num-server-rounds": rounds, "times-file": str(times)})
            code = federation.wait_for_exit(run, 1800)
            stamps = [json.loads(line) for line in times.read_text().splitlines()] if times.exists() else []
            if code != 0 or len(stamps) != rounds + 1:
                raise RuntimeError(f"Flower's own app did not finish ({code}):\n{federation.logs()}")
    seconds = [b["time"] - a["time"] for a, b in itertools.pairwise(stamps)]
    return {"engine": "flower-own-app", **_round_stats(seconds), "exchanges_per_round": [2] * rounds,
            "job_wall_seconds": time.perf_counter() - started, "job_cpu_seconds": cpu.seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--users", type=int, default=60)
    ap.add_argument("--clients", type=float, default=10.0)
    ap.add_argument("--protocol", default="secagg")
    ap.add_argument("--key-rounds", type=int, default=None, help="default: --rounds (one key setup)")
    ap.add_argument("--single-sessions", action="store_true",
                    help="also run the deployment with key_rounds = 1 (reported under comparisons)")
    ap.add_argument("--skip-deployment", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/flower_overhead.json"))
    args = ap.parse_args()

    key_rounds = args.key_rounds or args.rounds

    def job(key_rounds: int):
        return load_config(None, {
            "training.rounds": args.rounds, "aggregation.protocol": args.protocol,
            "data.synthetic.n_users": args.users, "data.synthetic.n_items": 80,
            "training.clients_per_round": args.clients, "training.local_epochs": 2,
            "aggregation.threshold_fraction": 0.6, "aggregation.key_rounds": key_rounds,
            # Pinned, not inherited from the defaults: the job measured must stay the same.
            "privacy.unit": "none", "training.sampling": "fixed", "aggregation.bits": 32,
            "training.dropout_rate": 0.0, "training.straggler_rate": 0.0, "seed": 0,
        })

    config = job(key_rounds)
    rows = [run_ours(config, None, args.nodes), run_ours(config, "sim", args.nodes)]
    comparisons = []
    if not args.skip_deployment:
        rows.append(run_ours(config, "deployment", args.nodes))
        rows.append(run_own_app(args.nodes, args.rounds))
        if args.single_sessions:
            single = run_ours(job(1), "deployment", args.nodes)
            single["engine"] = "flower (key_rounds = 1)"
            comparisons.append(single)
    ref = rows[0]
    own = next((r for r in rows if r["engine"] == "flower-own-app"), None)
    print(f"{'engine':<24} {'round 1 s':>9} {'later s':>8} {'steady s':>8} {'exch/round':>14} "
          f"{'x in-proc':>9} {'x own app':>9} {'job s':>7} {'CPU s':>7} {'message B/round':>15}")
    for row in rows + comparisons:
        row["round_time_ratio"] = row["round_seconds_later_mean"] / ref["round_seconds_later_mean"]
        if own is not None and row is not own:
            row["steady_over_own_app"] = row["round_seconds_steady"] / own["round_seconds_later_mean"]
            row["first_over_own_app"] = row["round_seconds_first"] / own["round_seconds_later_mean"]
        if "message_bytes_per_round" in row:
            row["bytes_ratio"] = row["message_bytes_per_round"] / ref["message_bytes_per_round"]
        print(f"{row['engine']:<24} {row['round_seconds_first']:>9.2f} {row['round_seconds_later_mean']:>8.2f} "
              f"{row['round_seconds_steady']:>8.2f} {row['exchanges_per_round']!s:>14} "
              f"{row['round_time_ratio']:>9.1f} {row.get('steady_over_own_app', float('nan')):>9.2f} "
              f"{row['job_wall_seconds']:>7.1f} {row['job_cpu_seconds']:>7.1f} "
              f"{row.get('message_bytes_per_round', float('nan')):>15.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {**vars(args), "key_rounds": key_rounds}, "rows": rows,
                               "comparisons": comparisons, "loadavg_end": os.getloadavg(),
                               "python": platform.python_version(), "commit": git_commit(ROOT)}, indent=2),
                   encoding="utf-8")
    print(f"wrote {out}")



if __name__ == "__main__":
    main()
