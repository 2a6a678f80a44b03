"""Benchmark: our SecAgg+ against Flower 1.42's SecAgg+ at equal degree/threshold, and the limit.

    python benchmarks/secagg.py                       # the four cells below + the n = 10,000 session
    python benchmarks/secagg.py --cells 100:10:6      # n:degree:threshold, any number of them
    python benchmarks/secagg.py --no-scale --no-flower
    python benchmarks/secagg.py --no-flower --cells 100:10:6 --scale-repeat 3  # scale ratios, median

Cells (issue 22): n = 100 at degree/threshold 10/6, 36/19 and 50/26 and
n = 1,000 at 20/11 (Flower's ``num_shares`` = degree + 1), m = 10^5
coordinates in Z_{2^32}, 10 % of the clients vanish after sharing their keys
(before the masked upload: the only stage Flower's workflow survives, and the
costliest for the server). For each cell, in this invocation, one after the
other on the same machine:

* **ours** — every client's fixed-point encoding of a float vector
  (:meth:`FixedPointEncoder.encode`) plus the whole session
  (:func:`protocols.masking.run_session`: every client and the server, real
  wire frames), each party's CPU measured with :func:`time.process_time`;
* **Flower** — ``benchmarks/flower_secaggplus_ref.py``: Flower's own building
  blocks composed as its ``secaggplus_mod`` and ``SecAggPlusWorkflow`` do, in
  a subprocess, same n, m, degree, threshold and dropouts, quantization
  included;
* **limit** — the work no implementation of this protocol can skip, priced
  with micro-timings measured in the same run: per client two X25519 key
  generations and 2k agreements, one Shamir split of its two secrets to its
  k + 1 holders, one AES-256 keystream expansion (as ``protocols.prg`` computes it:
  GCM's keystream) and one modular add per mask, and
  the encoder's randomness (one AES-CTR pass of 4 bytes per coordinate — the
  32 random bits per coordinate its exact stochastic rounding draws — for
  the clients that upload — Flower's reference quantizes for those only); for
  the server one add per upload, one Shamir reconstruction per survivor's seed
  and per dropped client's key, and for every (dropped, surviving) pair one
  X25519 agreement plus one expansion and add. Not counted: hashing, HKDF,
  AEAD, message encoding, key validation and Python itself — that is our
  overhead, which the ratio ``ours / limit`` shows.

Also, unless ``--no-scale``: one SecAgg+ session of **n = 10,000** clients
(m = 10^5, 10 % dropout, degree and threshold from
:func:`protocols.graph.choose_parameters`) and the same at n = 1,000, each in a
fresh subprocess so that its peak RSS (``ru_maxrss``) is its own.

Writes ``benchmarks/results/secagg.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import secrets
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocols import prg, shamir
from protocols.encoding import FixedPointEncoder
from protocols.graph import choose_parameters, harary_neighbourhoods
from protocols.masking import MaskingParams, run_session

RESULTS = ROOT / "benchmarks" / "results"
BITS = 32
DROPOUT = 0.1
M = 100_000
CELLS = ("100:10:6", "100:36:19", "100:50:26", "1000:20:11")


# ------------------------------------------------------------------------- micro-timings
def _per_call(fn, *, repeat: int, rounds: int = 5) -> float:
    """Best of ``rounds`` averages of ``repeat`` calls, in CPU seconds per call."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeat):
            fn()
        best = min(best, (time.process_time() - start) / repeat)
    return best


def micro_timings(m: int, degree: int, threshold: int) -> dict[str, float]:
    """CPU seconds of each primitive the limit is made of, measured now."""
    seed = secrets.token_bytes(32)
    out = np.empty(m, dtype=np.uint32)
    acc = np.zeros(m, dtype=np.uint32)
    randomness = np.empty(m, dtype=np.uint32)  # 4 bytes per coordinate (encoding.py)
    key = X25519PrivateKey.generate()
    peer = X25519PrivateKey.generate().public_key()
    xs = list(range(1, degree + 2))
    secrets_ = [secrets.token_bytes(32), secrets.token_bytes(32)]
    shares = shamir.split(secrets_[0], threshold, xs)[:threshold]
    lambdas = shamir.lagrange_coefficients_at_zero(xs[:threshold])
    pairs = list(zip(xs[:threshold], shares))
    return {
        # One mask as the protocol applies it: the AES-256 keystream (computed with GCM,
        # protocols/prg.py) written to a work buffer and added in place.
        "mask_expand_and_add_s": _per_call(lambda: prg.add_mask(acc, seed), repeat=50),
        # The same keystream through plain AES-256-CTR, for reference (not in the limit).
        "aes_ctr_expand_s": _per_call(lambda: prg.keystream_into(seed, out), repeat=50),
        "modular_add_s": _per_call(lambda: np.add(acc, out, out=acc), repeat=200),
        "encoder_randomness_s": _per_call(lambda: prg.mask_keystream_into(seed, randomness),
                                          repeat=50),
        "x25519_keygen_s": _per_call(X25519PrivateKey.generate, repeat=500),
        "x25519_agree_s": _per_call(lambda: key.exchange(peer), repeat=500),
        "shamir_split_two_secrets_s": _per_call(
            lambda: shamir.split_many(secrets_, threshold, xs), repeat=50),
        "shamir_reconstruct_s": _per_call(
            lambda: shamir.reconstruct(pairs, coefficients=lambdas), repeat=500),
    }


def limit_seconds(n: int, degree: int, threshold: int, dropped: set[int], graph_seed: bytes,
                  timings: dict[str, float]) -> dict[str, float]:
    """The unavoidable CPU of one session (see the module docstring), from ``timings``."""
    hood = harary_neighbourhoods(list(range(n)), degree, graph_seed)
    alive = set(range(n)) - dropped
    mask = timings["mask_expand_and_add_s"]
    clients = n * (2 * timings["x25519_keygen_s"] + 2 * degree * timings["x25519_agree_s"]
                   + timings["shamir_split_two_secrets_s"])
    clients += len(alive) * timings["encoder_randomness_s"]
    # Dropouts happen after sharing: every survivor masks with itself and all k neighbours.
    clients += len(alive) * (degree + 1) * mask
    broken_pairs = sum(len((hood[j] - {j}) & alive) for j in dropped)
    orphans = sum(1 for j in dropped if (hood[j] - {j}) & alive)
    server = (len(alive) * (timings["modular_add_s"] + mask
                            + timings["shamir_reconstruct_s"])
              + orphans * timings["shamir_reconstruct_s"]
              + broken_pairs * (timings["x25519_agree_s"] + mask))
    return {"limit_client_s": clients, "limit_server_s": server, "limit_total_s": clients + server}


# ------------------------------------------------------------------------------ our side
def dropped_clients(n: int, rate: float, seed: int) -> set[int]:
    rng = np.random.default_rng(seed)  # workload: which clients vanish
    return {int(c) for c in rng.choice(n, size=round(rate * n), replace=False)}


def run_ours(n: int, m: int, degree: int, threshold: int, rate: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)  # workload data only
    values = rng.uniform(-1.0, 1.0, size=m)
    encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=n, bits=BITS)
    dropped = dropped_clients(n, rate, seed)
    # Each uploading client encodes on the clock (as Flower's reference quantizes for the
    # nodes that upload), but one array is kept: n copies would be n * 400 KB.
    start = time.process_time()
    for _ in range(n - len(dropped)):
        encoded = encoder.encode(values, dtype=np.uint32)
    encode_seconds = time.process_time() - start
    params = MaskingParams(threshold=threshold, degree=degree, bits=BITS, vector_length=m)
    graph_seed = secrets.token_bytes(32)
    wall = time.perf_counter()
    result = run_session({cid: encoded for cid in range(n)}, params, graph_seed=graph_seed,
                         dropouts={c: "masked_input" for c in dropped})
    wall = time.perf_counter() - wall
    want = (encoded.astype(np.uint64) * np.uint64(len(result.contributors))) & np.uint64(
        (1 << BITS) - 1)
    sent = [result.bytes_sent[c] for c in result.contributors]
    client = result.client_seconds + encode_seconds
    return {
        "completed": True, "correct": bool(np.array_equal(result.total, want)),
        "client_seconds": client, "server_seconds": result.server_seconds,
        "total_seconds": client + result.server_seconds,
        "encode_seconds": encode_seconds, "protocol_client_seconds": result.client_seconds,
        "client_seconds_per_client": client / n, "session_wall_seconds": wall,
        "bytes_sent_per_client": float(np.mean(sent)), "max_bytes_sent": int(max(sent)),
        "expansion": max(sent) / (m * BITS / 8),
        "graph_seed": graph_seed.hex(), "dropped": sorted(dropped),
    }


def run_flower(n: int, m: int, degree: int, threshold: int, rate: float, seed: int,
               python: str, timeout: float) -> dict:
    cmd = [python, str(ROOT / "benchmarks" / "flower_secaggplus_ref.py"), "--n", str(n),
           "--m", str(m), "--num-shares", str(degree + 1), "--threshold", str(threshold),
           "--dropout", str(rate), "--seed", str(seed)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"completed": False, "skipped": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"completed": False, "error": proc.stderr.strip().splitlines()[-1:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["total_seconds"] = out["client_seconds"] + out["server_seconds"]
    return out


def scale_cell(n: int, m: int, rate: float, seed: int, *, graph_of: int | None = None) -> dict:
    """One session with the parameter helper's degree/threshold, in a fresh process (peak RSS).

    ``graph_of``: use the helper's degree/threshold for that many clients instead of ``n``
    (the equal-degree comparison: n = 1,000 at the n = 10,000 session's degree).
    """
    chosen = choose_parameters(graph_of or n, dropout_rate=rate, corrupt_fraction=0.05)
    code = (
        "import json, resource, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "from secagg import run_ours\n"
        f"out = run_ours({n}, {m}, {chosen.degree}, {chosen.threshold}, {rate}, {seed})\n"
        "out.pop('dropped'); out['peak_rss_bytes'] = resource.getrusage("
        "resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(json.dumps(out))\n"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if proc.returncode != 0:
        return {"n": n, "completed": False, "error": proc.stderr.strip().splitlines()[-3:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(n=n, m=m, dropout=rate, degree=chosen.degree, threshold=chosen.threshold,
               graph_of=graph_of or n, process_wall_seconds=time.perf_counter() - start)
    return out


# ------------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", nargs="+", default=list(CELLS), help="n:degree:threshold")
    ap.add_argument("--m", type=int, default=M)
    ap.add_argument("--dropout", type=float, default=DROPOUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flower-python", default=sys.executable,
                    help="a Python with flwr==1.42.0 (default: this one)")
    ap.add_argument("--flower-timeout", type=float, default=1800.0)
    ap.add_argument("--no-flower", action="store_true")
    ap.add_argument("--no-scale", action="store_true")
    ap.add_argument("--scale-n", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--no-equal-degree", action="store_true",
                    help="skip the smallest scale-n at the largest one's degree")
    ap.add_argument("--repeat", type=int, default=1, help="run every cell this many times")
    ap.add_argument("--scale-repeat", type=int, default=1,
                    help="run the scale sessions this many times (ratios: median over repeats)")
    ap.add_argument("--out", default=str(RESULTS / "secagg.json"))
    args = ap.parse_args()

    rows = []
    for cell in [c for c in args.cells for _ in range(args.repeat)]:
        n, degree, threshold = (int(v) for v in cell.split(":"))
        timings = micro_timings(args.m, degree, threshold)
        ours = run_ours(n, args.m, degree, threshold, args.dropout, args.seed)
        limit = limit_seconds(n, degree, threshold, set(ours.pop("dropped")),
                              bytes.fromhex(ours["graph_seed"]), timings)
        flower = (None if args.no_flower else
                  run_flower(n, args.m, degree, threshold, args.dropout, args.seed,
                             args.flower_python, args.flower_timeout))
        row = {"n": n, "m": args.m, "dropout": args.dropout, "degree": degree,
               "threshold": threshold, "ours": ours, "flower": flower, "limit": limit,
               "micro_timings": timings}
        if flower and flower.get("completed"):
            row["flower_over_ours"] = flower["total_seconds"] / ours["total_seconds"]
        row["ours_over_limit"] = ours["total_seconds"] / limit["limit_total_s"]
        rows.append(row)
        _print_row(row)

    scale: list[dict] = []
    for repeat in range(0 if args.no_scale else args.scale_repeat):
        # One repeat = the scale-n sessions and the equal-degree one, back to back: the
        # ratios are taken within a repeat, and their median across repeats.
        cells = [scale_cell(n, args.m, args.dropout, args.seed) for n in args.scale_n]
        if not args.no_equal_degree:
            # n = 1,000 again, at the largest session's degree: per client and per
            # neighbour, the two must cost the same if nothing grows faster than the degree.
            cells.append(scale_cell(min(args.scale_n), args.m, args.dropout, args.seed,
                                    graph_of=max(args.scale_n)))
        scale.extend(dict(cell, repeat=repeat) for cell in cells)
    for cell in scale:
        print(f"[scale] n={cell['n']} k={cell.get('degree')} t={cell.get('threshold')}: "
              f"total CPU {cell.get('total_seconds', float('nan')):.1f} s, peak RSS "
              f"{cell.get('peak_rss_bytes', 0) / 2**20:.0f} MiB, correct={cell.get('correct')}",
              flush=True)
    summary = _summary(rows, scale)
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform(),
                       "load_average_at_end": os.getloadavg()},
           "command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]),
           "commit": _commit(),
           "bits": BITS, "dropout_stage": "masked_input", "seed": args.seed,
           "summary": summary, "rows": rows, "scale": scale,
           "benchmark_cpu_seconds": resource.getrusage(resource.RUSAGE_SELF).ru_utime}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    print(json.dumps(summary, indent=1))


def _print_row(row: dict) -> None:
    o, f, lim = row["ours"], row["flower"] or {}, row["limit"]
    ft = f.get("total_seconds")
    print(f"n={row['n']:5d} k/t={row['degree']}/{row['threshold']}: ours {o['total_seconds']:.3f} s "
          f"(encode {o['encode_seconds']:.3f}, clients {o['protocol_client_seconds']:.3f}, "
          f"server {o['server_seconds']:.3f}; correct={o['correct']}), "
          f"limit {lim['limit_total_s']:.3f} s (x{row['ours_over_limit']:.2f}), "
          f"Flower {'-' if ft is None else f'{ft:.2f} s'}"
          + (f" (x{row['flower_over_ours']:.1f})" if "flower_over_ours" in row else ""),
          flush=True)


def _summary(rows: list[dict], scale: list[dict]) -> dict:
    out: dict = {"cells": [
        {"n": r["n"], "degree": r["degree"], "threshold": r["threshold"],
         "ours_total_cpu_s": r["ours"]["total_seconds"],
         "flower_total_cpu_s": (r["flower"] or {}).get("total_seconds"),
         "flower_over_ours": r.get("flower_over_ours"), "target_ratio": 20,
         "limit_total_cpu_s": r["limit"]["limit_total_s"],
         "ours_over_limit": r["ours_over_limit"], "target_over_limit": 2,
         "correct": r["ours"]["correct"], "expansion": r["ours"]["expansion"]}
        for r in rows]}
    repeats = sorted({c.get("repeat", 0) for c in scale})
    per_repeat = [_scale_summary([c for c in scale if c.get("repeat", 0) == r]) for r in repeats]
    if per_repeat and per_repeat[0]:
        out["scale"] = dict(per_repeat[0])
        if len(per_repeat) > 1:
            for key in ("cpu_ratio", "equal_degree_cpu_ratio"):
                values = [s[key] for s in per_repeat if key in s]
                out["scale"][f"{key}_repeats"] = values
                out["scale"][f"{key}_median"] = float(np.median(values)) if values else None
    return out


def _scale_summary(scale: list[dict]) -> dict:
    """The n = 10,000 / n = 1,000 ratios of one repeat of the scale sessions."""
    out: dict = {}
    done = [c for c in scale if c.get("completed", True) and "total_seconds" in c]
    by_n = {c["n"]: c for c in done if c.get("graph_of", c["n"]) == c["n"]}
    equal = [c for c in done if c.get("graph_of", c["n"]) != c["n"]]
    if 1000 in by_n and 10_000 in by_n:
        small, big = by_n[1000], by_n[10_000]
        out.update({
            "n1000": {k: small[k] for k in ("degree", "threshold", "total_seconds",
                                            "peak_rss_bytes", "correct")},
            "n10000": {k: big[k] for k in ("degree", "threshold", "total_seconds",
                                           "peak_rss_bytes", "correct", "session_wall_seconds")},
            "cpu_ratio": big["total_seconds"] / small["total_seconds"], "target_cpu_ratio": 10,
            # Per client and per neighbour: flat if the cost grows no faster than the degree.
            "per_client_per_neighbour_ratio": (
                (big["total_seconds"] / (10_000 * big["degree"]))
                / (small["total_seconds"] / (1000 * small["degree"]))),
        })
        if equal:
            same = equal[0]
            out["n1000_at_n10000_degree"] = {
                k: same[k] for k in ("degree", "threshold", "total_seconds", "peak_rss_bytes",
                                     "correct", "encode_seconds", "protocol_client_seconds",
                                     "server_seconds")}
            out["equal_degree_cpu_ratio"] = big["total_seconds"] / same["total_seconds"]
            out["equal_degree_per_client_ratio"] = (
                (big["total_seconds"] / 10_000) / (same["total_seconds"] / 1000))
            # What the helper's degree growth alone predicts: the cost per client at k = 38
            # and at k = 42 measured at the same n, times the 10x more clients.
            out["degree_growth_predicted_cpu_ratio"] = (
                10 * same["total_seconds"] / small["total_seconds"])
    return out


def _commit() -> str:
    """The checkout the numbers belong to (with a mark if it has uncommitted changes)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "protocols"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + (" (protocols/ modified)" if dirty else "")


if __name__ == "__main__":
    main()
