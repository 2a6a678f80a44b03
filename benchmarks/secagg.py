"""Benchmark: our SecAgg / SecAgg+ against Flower 1.42's SecAgg+ building blocks.

    python benchmarks/secagg.py                      # full grid, default budgets
    python benchmarks/secagg.py --quick              # n<=100, m<=1e5 (a few minutes)
    python benchmarks/secagg.py --flower-python /tmp/flwr-venv/bin/python

For every cell (n, m, dropout) it runs, on the same machine and in the same
invocation: our SecAgg (complete graph), our SecAgg+ (Harary graph from
:func:`protocols.graph.choose_parameters`), and Flower's SecAgg+ composition
(``benchmarks/flower_secaggplus_ref.py`` in Flower's own virtualenv, as a
subprocess, run concurrently with ours to save wall time) with the *same*
degree and threshold. It prints a table with the ratios and writes
``benchmarks/results/secagg.json``.

Measured: client CPU (all clients together, and per client) and server CPU,
both :func:`time.process_time` of the process doing the work, and bytes sent
per client from the encoded wire frames (ours) / payload sizes (Flower).
Our side includes the fixed-point encoding of a float vector per client
(:class:`protocols.encoding.FixedPointEncoder`), as Flower's includes
``quantize``; the ring is Z_{2^32} for both.

Dropouts happen before the masked upload (the clients shared their keys, then
vanished) — the only stage at which Flower's workflow survives a dropout, and
the costliest one for the server, which must rebuild the dropped clients'
pairwise masks. (Our protocol survives dropouts at every stage; see the tests.)

Cells predicted to exceed the per-cell CPU budget are skipped and listed with
their prediction; so are reference cells left when the global reference budget
runs out.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
from concurrent import futures

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols.encoding import FixedPointEncoder
from protocols.errors import BelowThreshold
from protocols.graph import choose_parameters
from protocols.masking import MaskingParams, run_session

RESULTS = ROOT / "benchmarks" / "results"
BITS = 32
NS = (10, 100, 1000)
MS = (10_000, 100_000, 1_000_000)
DROPOUTS = (0.0, 0.1, 0.3)


def graph_for(protocol: str, n: int, dropout: float) -> tuple[int, int, bool]:
    """(degree, threshold, targets_met) used by both implementations."""
    if protocol == "secagg":
        return n - 1, n // 2 + 1, True
    try:
        p = choose_parameters(n, dropout_rate=dropout, corrupt_fraction=0.05)
        return p.degree, p.threshold, True
    except ValueError:  # too few clients for the 2^-40 / 2^-20 targets
        return n - 1, n // 2 + 1, False


def predict_ours(n: int, k: int, t: int, m: int) -> float:
    """Rough CPU seconds, calibrated on this machine (mask words, Shamir, key agreement)."""
    return n * (k + 1) * (m * 1.5e-9 + t * 1.5e-6 + 2e-4) + n * m * 2e-8


def predict_flower(n: int, k: int, t: int, m: int) -> float:
    """Rough CPU seconds: pycryptodome Shamir dominates, then MT19937 masks."""
    return n * 0.5 * ((k + 1) * t / 703) + n * (k + 1) * m * 6e-9 + n * m * 5e-8


def dropout_schedule(n: int, rate: float, seed: int) -> dict[int, str]:
    rng = np.random.default_rng(seed)  # workload: which clients vanish
    dead = rng.choice(n, size=round(rate * n), replace=False)
    return {int(c): "masked_input" for c in dead}


def run_ours(n: int, m: int, k: int, t: int, rate: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)  # workload data only
    values = rng.uniform(-1.0, 1.0, size=m)
    encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=n, bits=BITS)
    # Encode once per client on the clock (as each client would), but keep one
    # array: n copies of a 10^6-vector would need 8 GB at n = 1000.
    start, encode_wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        encoded = encoder.encode(values)
    encode_seconds = time.process_time() - start
    encode_wall = time.perf_counter() - encode_wall
    inputs = {cid: encoded for cid in range(n)}
    params = MaskingParams(threshold=t, degree=k, bits=BITS, vector_length=m)
    schedule = dropout_schedule(n, rate, seed)
    wall = time.perf_counter()
    try:
        result = run_session(inputs, params, dropouts=schedule)
    except BelowThreshold as exc:
        return {"completed": False, "error": str(exc)}
    wall = time.perf_counter() - wall
    want = (encoded.astype(np.uint64) * np.uint64(len(result.contributors))) & np.uint64(
        (1 << BITS) - 1)
    correct = bool(np.array_equal(result.total, want))
    alive = result.contributors
    sent = [result.bytes_sent[c] for c in alive]
    received = [result.bytes_received[c] for c in alive]
    client = result.client_seconds + encode_seconds
    return {
        "completed": True, "correct": correct,
        "client_seconds": client, "server_seconds": result.server_seconds,
        "encode_seconds": encode_seconds, "protocol_client_seconds": result.client_seconds,
        "session_wall_seconds": wall, "encode_wall_seconds": encode_wall,
        "client_seconds_per_client": client / n,
        "bytes_sent_per_client": float(np.mean(sent)), "max_bytes_sent": int(max(sent)),
        "bytes_received_per_client": float(np.mean(received)),
        "expansion": max(sent) / (m * BITS / 8),
    }


def run_flower(python: str, n: int, m: int, k: int, t: int, rate: float, seed: int,
               timeout: float) -> dict:
    cmd = [python, str(ROOT / "benchmarks" / "flower_secaggplus_ref.py"), "--n", str(n),
           "--m", str(m), "--num-shares", str(k + 1), "--threshold", str(t),
           "--dropout", str(rate), "--seed", str(seed)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"completed": False, "skipped": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"completed": False, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n <= 100, m <= 1e5")
    ap.add_argument("--flower-python", default=os.environ.get("FLWR_PYTHON",
                                                              "/tmp/flwr-venv/bin/python"))
    ap.add_argument("--cell-budget", type=float, default=150.0,
                    help="skip our cells predicted to need more CPU seconds than this")
    ap.add_argument("--flower-cell-budget", type=float, default=200.0)
    ap.add_argument("--flower-total-budget", type=float, default=1800.0,
                    help="wall seconds for all reference cells together")
    ap.add_argument("--ns", type=int, nargs="+", default=list(NS))
    ap.add_argument("--ms", type=int, nargs="+", default=list(MS))
    ap.add_argument("--dropouts", type=float, nargs="+", default=list(DROPOUTS))
    ap.add_argument("--protocols", nargs="+", default=["secagg", "secagg+"],
                    choices=["secagg", "secagg+"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "secagg.json"))
    args = ap.parse_args()

    ns = tuple(n for n in args.ns if not args.quick or n <= 100)
    ms = tuple(m for m in args.ms if not args.quick or m <= 100_000)
    have_flower = pathlib.Path(args.flower_python).exists()

    cells = [(n, m, d, proto) for n in ns for m in ms for d in args.dropouts
             for proto in args.protocols]
    # Reference cells, most informative first: the headline cell, then cheap ones.
    ref_cells = []
    for n, m, d, proto in cells:
        k, t, _ = graph_for(proto, n, d)
        if proto == "secagg+" or k == n - 1:
            ref_cells.append((n, m, d, proto, k, t))
    ref_cells = list({(c[0], c[1], c[2], c[4], c[5]): c for c in ref_cells}.values())
    ref_cells.sort(key=lambda c: (not (c[0] == 100 and c[1] == 100_000 and c[2] == 0.1),
                                  predict_flower(c[0], c[4], c[5], c[1])))

    pool = futures.ThreadPoolExecutor(max_workers=1)
    ref_started = time.monotonic()
    ref_futures: dict[tuple, futures.Future] = {}
    ref_skipped: dict[tuple, str] = {}

    def submit_refs() -> None:
        for n, m, d, proto, k, t in ref_cells:
            key = (n, m, d, k, t)
            if key in ref_futures or key in ref_skipped:
                continue
            pred = predict_flower(n, k, t, m)
            if not have_flower:
                ref_skipped[key] = "flwr==1.42.0 venv not found"
            elif pred > args.flower_cell_budget:
                ref_skipped[key] = (f"predicted {pred:.0f} s CPU > cell budget "
                                    f"{args.flower_cell_budget:.0f} s")
            else:
                ref_futures[key] = pool.submit(_guarded_flower, args, n, m, k, t, d, ref_started)

    submit_refs()
    rows = []
    for n, m, d, proto in cells:
        k, t, targets_met = graph_for(proto, n, d)
        pred = predict_ours(n, k, t, m)
        row = {"n": n, "m": m, "dropout": d, "protocol": proto, "degree": k, "threshold": t,
               "parameter_targets_met": targets_met, "predicted_seconds": round(pred, 1)}
        if pred > args.cell_budget:
            row["ours"] = {"completed": False,
                           "skipped": (f"predicted {pred:.0f} s CPU > cell budget "
                                       f"{args.cell_budget:.0f} s")}
        else:
            row["ours"] = run_ours(n, m, k, t, d, args.seed)
        rows.append(row)
        _print_ours(row)

    for row in rows:
        key = (row["n"], row["m"], row["dropout"], row["degree"], row["threshold"])
        if key in ref_futures:
            row["flower"] = ref_futures[key].result()
        elif key in ref_skipped:
            row["flower"] = {"completed": False, "skipped": ref_skipped[key]}
        else:
            row["flower"] = None  # no Flower equivalent (e.g. classic SecAgg not run)
    pool.shutdown()

    _print_table(rows)
    headline = _headline(rows)
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "bits": BITS, "dropout_stage": "masked_input", "seed": args.seed,
           "budgets": {"cell": args.cell_budget, "flower_cell": args.flower_cell_budget,
                       "flower_total": args.flower_total_budget},
           "headline": headline, "rows": rows}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    print(json.dumps(headline, indent=1))


def _guarded_flower(args, n, m, k, t, d, started) -> dict:
    left = args.flower_total_budget - (time.monotonic() - started)
    if left <= 0:
        return {"completed": False, "skipped": "global reference time budget exhausted"}
    return run_flower(args.flower_python, n, m, k, t, d, args.seed, timeout=left)


def _fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def _print_ours(row) -> None:
    o = row["ours"]
    status = "ok" if o.get("correct") else o.get("skipped") or o.get("error") or "WRONG SUM"
    print(f"[ours] n={row['n']:5d} m={row['m']:8d} drop={row['dropout']:.1f} "
          f"{row['protocol']:8s} k={row['degree']:4d} t={row['threshold']:4d} "
          f"client={_fmt(o.get('client_seconds'))}s server={_fmt(o.get('server_seconds'))}s "
          f"{status}", flush=True)


def _print_table(rows) -> None:
    head = (f"{'n':>5} {'m':>8} {'drop':>4} {'proto':>8} {'k':>4} {'t':>4} | "
            f"{'ours cli/cl s':>13} {'ours srv s':>10} {'ours tot s':>10} {'ours B/cl':>10} "
            f"{'exp':>5} | {'flwr cli/cl s':>13} {'flwr srv s':>10} {'flwr tot s':>10} "
            f"{'flwr B/cl':>10} | {'CPU ratio':>9}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        o, f = r["ours"], r.get("flower") or {}
        ot = (o["client_seconds"] + o["server_seconds"]) if o.get("completed") else None
        ft = (f["client_seconds"] + f["server_seconds"]) if f.get("completed") else None
        ratio = ft / ot if ot and ft else None
        print(f"{r['n']:5d} {r['m']:8d} {r['dropout']:4.1f} {r['protocol']:>8} "
              f"{r['degree']:4d} {r['threshold']:4d} | "
              f"{_fmt(o.get('client_seconds_per_client'), '.4f'):>13} "
              f"{_fmt(o.get('server_seconds')):>10} {_fmt(ot):>10} "
              f"{_fmt(o.get('bytes_sent_per_client'), '.0f'):>10} "
              f"{_fmt(o.get('expansion'), '.3f'):>5} | "
              f"{_fmt(f.get('client_seconds_per_client'), '.4f'):>13} "
              f"{_fmt(f.get('server_seconds')):>10} {_fmt(ft):>10} "
              f"{_fmt(f.get('bytes_sent_per_client'), '.0f'):>10} | {_fmt(ratio, '.1f'):>9}")
    skipped = [(r, side) for r in rows for side in ("ours", "flower")
               if r.get(side) and r[side].get("skipped")]
    if skipped:
        print("\nskipped cells:")
        for r, side in skipped:
            print(f"  {side:6s} n={r['n']} m={r['m']} drop={r['dropout']} {r['protocol']}: "
                  f"{r[side]['skipped']}")


def _headline(rows) -> dict:
    out = {}
    for r in rows:
        o, f = r["ours"], r.get("flower") or {}
        if (r["n"], r["m"], r["dropout"], r["protocol"]) == (100, 100_000, 0.1, "secagg+"):
            ours = o["client_seconds"] + o["server_seconds"] if o.get("completed") else None
            ref = f["client_seconds"] + f["server_seconds"] if f.get("completed") else None
            out["n100_m1e5_d10_secaggplus"] = {
                "ours_total_cpu_s": ours, "flower_total_cpu_s": ref,
                "cpu_ratio": ref / ours if ours and ref else None, "target_ratio": 20,
                "ours_expansion": o.get("expansion"), "target_expansion": 1.05,
                "flower_expansion": f.get("expansion"),
            }
        if (r["n"], r["m"], r["dropout"], r["protocol"]) == (1000, 100_000, 0.1, "secagg+"):
            out["n1000_m1e5_d10_secaggplus"] = {
                "ours_total_cpu_s": (o["client_seconds"] + o["server_seconds"]
                                     if o.get("completed") else None),
                # Wall time of the whole simulated round: every client's encoding plus
                # the single-threaded session (all clients and the server).
                "ours_round_wall_s": (o["session_wall_seconds"] + o["encode_wall_seconds"]
                                      if o.get("completed") else None),
                "target_wall_s": 30, "correct": o.get("correct")}
    return out


if __name__ == "__main__":
    main()
