"""Benchmark: a steady-state round of a multi-round session against a full session per round.

    python benchmarks/secagg_multiround.py                  # n = 100 and 1,000, 5 rounds each
    python benchmarks/secagg_multiround.py --ns 100 --rounds 3

For each n: the parameter helper's degree and threshold
(:func:`protocols.graph.choose_parameters`, 10 % dropout, 5 % corrupt),
m = 10^5 coordinates in Z_{2^32}, R rounds, and in every round a fresh 10 %
of the clients vanish before the masked upload (those of the previous round
come back). Side by side, same inputs and dropouts:

* **key reuse** — one :class:`protocols.masking.multiround.MultiRoundSecAgg`
  session of R rounds (setup once; a client back from a missed round re-arms
  first and contributes from the round after);
* **full setup** — R independent single-round sessions
  (:func:`protocols.masking.run_session`), keys, graph and shares from scratch.

Protocol CPU (all clients + server, :func:`time.process_time`; the encoding,
identical on both sides, is left out) per round; the steady state is the mean
of rounds 2..R. Also bytes sent per client and message exchanges per round.
Writes ``benchmarks/results/secagg_multiround.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols.graph import choose_parameters
from protocols.masking import MaskingParams, run_session
from protocols.masking.multiround import MultiRoundSecAgg

RESULTS = ROOT / "benchmarks" / "results"
BITS = 32


def schedules(n: int, rounds: int, rate: float, seed: int) -> list[dict[int, str]]:
    rng = np.random.default_rng(seed)  # workload: who vanishes in which round
    return [{int(c): "masked_input" for c in rng.choice(n, size=round(rate * n), replace=False)}
            for _ in range(rounds)]


def one_n(n: int, m: int, rounds: int, rate: float, seed: int) -> dict:
    chosen = choose_parameters(n, dropout_rate=rate, corrupt_fraction=0.05)
    params = MaskingParams(threshold=chosen.threshold, degree=chosen.degree, bits=BITS,
                           vector_length=m)
    rng = np.random.default_rng(seed + 1)
    vector = rng.integers(0, 1 << BITS, size=m, dtype=np.uint64).astype(np.uint32)
    inputs = {c: vector for c in range(n)}  # one array for all: memory, not the protocol
    plan = schedules(n, rounds, rate, seed)
    reuse, full = [], []
    session = MultiRoundSecAgg(params, list(range(n)), rounds=rounds)
    for r, schedule in enumerate(plan):
        result = session.run_round(inputs, dropouts=schedule)
        want = (vector.astype(np.uint64) * np.uint64(len(result.contributors))) & np.uint64(
            (1 << BITS) - 1)
        reuse.append(_row(result, n, m, np.array_equal(result.total, want)))
        single = run_session(inputs, params, round_index=r, dropouts=schedule)
        want = (vector.astype(np.uint64) * np.uint64(len(single.contributors))) & np.uint64(
            (1 << BITS) - 1)
        full.append(_row(single, n, m, np.array_equal(single.total, want)))
        full[-1]["exchanges"] = 4
        print(f"n={n} round {r}: reuse {reuse[-1]['cpu_seconds']:.2f} s "
              f"({len(result.contributors)} contributors), full {full[-1]['cpu_seconds']:.2f} s "
              f"({len(single.contributors)})", flush=True)
    steady_reuse = float(np.mean([row["cpu_seconds"] for row in reuse[1:]]))
    steady_full = float(np.mean([row["cpu_seconds"] for row in full[1:]]))
    return {"n": n, "m": m, "degree": params.degree, "threshold": params.threshold,
            "rounds": rounds, "dropout": rate, "reuse": reuse, "full": full,
            "steady_reuse_cpu_s": steady_reuse, "steady_full_cpu_s": steady_full,
            "full_over_reuse": steady_full / steady_reuse,
            "first_round_reuse_cpu_s": reuse[0]["cpu_seconds"]}


def _row(result, n: int, m: int, correct: bool) -> dict:
    sent = [result.bytes_sent.get(c, 0) for c in result.contributors]
    return {"cpu_seconds": result.client_seconds + result.server_seconds,
            "client_seconds": result.client_seconds, "server_seconds": result.server_seconds,
            "contributors": len(result.contributors), "correct": bool(correct),
            "bytes_sent_per_contributor": float(np.mean(sent)) if sent else 0.0,
            "exchanges": result.measurements.get("exchanges", 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--m", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "secagg_multiround.json"))
    args = ap.parse_args()
    rows = [one_n(n, args.m, args.rounds, args.dropout, args.seed) for n in args.ns]
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform(), "load_average_at_end": os.getloadavg()},
           "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]),
           "commit": _commit(),
           "bits": BITS, "rows": rows}
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for row in rows:
        print(f"n={row['n']} k/t={row['degree']}/{row['threshold']}: steady round with key reuse "
              f"{row['steady_reuse_cpu_s']:.2f} s, full setup {row['steady_full_cpu_s']:.2f} s, "
              f"ratio {row['full_over_reuse']:.2f}x")
    print(f"wrote {args.out}")


def _commit() -> str:
    """The checkout the numbers belong to (with a mark if it has uncommitted changes)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "protocols"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + (" (protocols/ modified)" if dirty else "")


if __name__ == "__main__":
    main()
