"""What grows per client between an n = 1,000 and an n = 10,000 SecAgg+ session at equal degree.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/secagg_per_client_growth.py [--n 1000 10000] [--degree 42]

Two measured parts of the per-client cost that depend on n (docs/protocols/masking.md,
"n = 10,000"): the announcement a client receives and checks (``SessionConfig`` over all n
ids and its SHA-256 digest) and the client's Harary neighbourhood, timed per client; and
one whole session per n (``benchmarks/secagg.py``'s ``run_ours``, m = 10^5, 10 % dropout)
with Python's garbage collections timed through ``gc.callbacks``. Prints JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from secagg import run_ours

from protocols.graph import closed_neighbourhood
from protocols.masking.params import MaskingParams, SessionConfig


def per_client_microseconds(n: int, degree: int, threshold: int, reps: int = 200) -> dict[str, float]:
    ids = np.arange(n, dtype=np.uint32)
    params = MaskingParams(threshold=threshold, degree=degree, bits=32, vector_length=100_000)
    seed = os.urandom(32)
    start = time.process_time()
    for _ in range(reps):
        SessionConfig(params, ids.copy(), seed).digest(b"s" * 32, 0)
    announcement = (time.process_time() - start) / reps
    start = time.process_time()
    for client in range(reps):
        closed_neighbourhood(ids, degree, seed, client)
    neighbourhood = (time.process_time() - start) / reps
    return {"announcement_check_us": announcement * 1e6, "neighbourhood_us": neighbourhood * 1e6}


def session_with_gc_timing(n: int, degree: int, threshold: int) -> dict[str, float]:
    spent = {"seconds": 0.0, "collections": 0}
    started = [0.0]

    def timer(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.process_time()
        else:
            spent["seconds"] += time.process_time() - started[0]
            spent["collections"] += 1

    gc.callbacks.append(timer)
    try:
        out = run_ours(n, 100_000, degree, threshold, 0.1, 0)
    finally:
        gc.callbacks.remove(timer)
    return {"total_seconds": out["total_seconds"], "client_seconds": out["client_seconds"],
            "server_seconds": out["server_seconds"], "gc_seconds": spent["seconds"],
            "gc_collections": spent["collections"], "correct": out["correct"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--degree", type=int, default=42)
    parser.add_argument("--threshold", type=int, default=22)
    parser.add_argument("--no-session", action="store_true", help="only the per-client micro-timings")
    args = parser.parse_args()
    report = {}
    for n in args.n:
        report[n] = per_client_microseconds(n, args.degree, args.threshold)
        if not args.no_session:
            report[n].update(session_with_gc_timing(n, args.degree, args.threshold))
        print(json.dumps({"n": n, **report[n]}), flush=True)
    if not args.no_session and len(args.n) == 2:
        small, large = (report[n] for n in args.n)
        print(json.dumps({"total_ratio": large["total_seconds"] / small["total_seconds"],
                          "gc_share_of_large": large["gc_seconds"] / large["total_seconds"]}))


if __name__ == "__main__":
    main()
