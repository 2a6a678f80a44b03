"""Profile one simulated SecAgg+ session (encoding included), in CPU time.

    python benchmarks/secagg_profile.py --n 100 --m 100000 --degree 10 --threshold 6 \
        --out benchmarks/results/profiles/n100_k10_after.txt
    mkdir /tmp/before && git archive 01b493e | tar -x -C /tmp/before
    python benchmarks/secagg_profile.py --root /tmp/before ... --out ..._before.txt

Prints the split of CPU time between the encoding, the clients' protocol work
and the server, and the functions that take it (``cProfile`` driven by
:func:`time.process_time`, so that a loaded machine does not blur the picture
as a wall-clock sampler would), and writes the same to ``--out``. Used for the
before/after profiles in docs/protocols/masking.md (§ Costs). The profiler
adds its own overhead per Python call; compare the rows, not the total.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
# --root profiles another checkout of the code (the "before" profile) with this script.
_root = sys.argv[sys.argv.index("--root") + 1] if "--root" in sys.argv else str(ROOT)
sys.path.insert(0, _root)

from protocols.encoding import FixedPointEncoder
from protocols.masking import MaskingParams, run_session


def session(n: int, m: int, degree: int, threshold: int, dropout: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)  # workload data only
    values = rng.uniform(-1.0, 1.0, size=m)
    encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=n, bits=32)
    # Every uploading client encodes (as in benchmarks/secagg.py); the word type is the
    # protocol's own where the encoder offers it (older versions: uint64 only).
    words = {"dtype": np.uint32} if "dtype" in encoder.encode.__code__.co_varnames else {}
    uploaders = n - round(dropout * n)
    start = time.process_time()
    for _ in range(uploaders):
        encoded = encoder.encode(values, **words)
    encode = time.process_time() - start
    dead = rng.choice(n, size=round(dropout * n), replace=False)
    params = MaskingParams(threshold=threshold, degree=degree, bits=32, vector_length=m)
    result = run_session({c: encoded for c in range(n)}, params,
                         dropouts={int(c): "masked_input" for c in dead})
    return {"encode_s": encode, "client_protocol_s": result.client_seconds,
            "server_s": result.server_seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--m", type=int, default=100_000)
    ap.add_argument("--degree", type=int, default=10)
    ap.add_argument("--threshold", type=int, default=6)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--root", default=str(ROOT), help="the checkout whose protocols/ to profile")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import cProfile
    import io
    import pstats

    session(10, 1000, min(args.degree, 9), min(args.threshold, 6), 0.0, args.seed)  # warm up
    plain = session(args.n, args.m, args.degree, args.threshold, args.dropout, args.seed)
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    session(args.n, args.m, args.degree, args.threshold, args.dropout, args.seed)
    profiler.disable()
    total = sum(plain.values())
    head = (f"n={args.n} m={args.m} k={args.degree} t={args.threshold} dropout={args.dropout} "
            "(unprofiled run): " + ", ".join(f"{k} {v:.3f}" for k, v in plain.items())
            + f", total {total:.3f} s CPU")
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(args.rows)
    stats.sort_stats("cumulative").print_stats(args.rows)
    tree = "\n".join(line for line in text.getvalue().splitlines() if line.strip())
    if args.out:
        pathlib.Path(args.out).write_text(head + "\n" + tree)
    print(head)
    print(tree)


if __name__ == "__main__":
    main()
