"""Before/after: the same simulated session on two checkouts, interleaved, CPU side by side.

    mkdir /tmp/before && git archive 01b493e | tar -x -C /tmp/before   # main before this work
    python benchmarks/secagg_before_after.py --before /tmp/before --after .

For each cell (n = 100, m = 10^5, 10 % dropout before the masked upload; degree
/ threshold 10/6 and 36/19), runs ``--reps`` times, alternating before and
after in fresh processes so that both see the same machine: the encoding of
every uploading client's vector (``FixedPointEncoder.encode``) and the whole
session (``run_session``: every client and the server). Reports the best of
the repetitions for each and the ratio; writes
``benchmarks/results/secagg_before_after.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

_PROBE = r'''
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from protocols.encoding import FixedPointEncoder
from protocols.masking import MaskingParams, run_session
n, m, k, t = (int(v) for v in sys.argv[2:6])
rng = np.random.default_rng(0)
values = rng.uniform(-1.0, 1.0, size=m)
dead = {int(c) for c in rng.choice(n, size=n // 10, replace=False)}
encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=n, bits=32)
words = {"dtype": np.uint32} if "dtype" in encoder.encode.__code__.co_varnames else {}
start = time.process_time()
for _ in range(n - len(dead)):
    encoded = encoder.encode(values, **words)
encode = time.process_time() - start
params = MaskingParams(threshold=t, degree=k, bits=32, vector_length=m)
result = run_session({c: encoded for c in range(n)}, params,
                     dropouts={c: "masked_input" for c in dead})
print(json.dumps({"encode_s": encode, "client_s": result.client_seconds,
                  "server_s": result.server_seconds,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
'''


def probe(root: str, n: int, m: int, k: int, t: int) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, root, str(n), str(m), str(k), str(t)],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["total_s"] = row["encode_s"] + row["client_s"] + row["server_s"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="checkout of the code before")
    ap.add_argument("--after", default=str(ROOT))
    ap.add_argument("--cells", nargs="+", default=["100:10:6", "100:36:19"])
    ap.add_argument("--m", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/secagg_before_after.json"))
    args = ap.parse_args()
    rows = []
    for cell in args.cells:
        n, k, t = (int(v) for v in cell.split(":"))
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.reps):
            for side in ("before", "after"):
                runs[side].append(probe(getattr(args, side), n, args.m, k, t))
        best = {side: min(r, key=lambda row: row["total_s"]) for side, r in runs.items()}
        rows.append({"n": n, "m": args.m, "degree": k, "threshold": t, "best": best,
                     "runs": runs, "before_over_after": best["before"]["total_s"]
                     / best["after"]["total_s"]})
        b, a = best["before"], best["after"]
        print(f"n={n} k/t={k}/{t}: before {b['total_s']:.3f} s (encode {b['encode_s']:.3f}, "
              f"clients {b['client_s']:.3f}, server {b['server_s']:.3f}); after "
              f"{a['total_s']:.3f} s (encode {a['encode_s']:.3f}, clients {a['client_s']:.3f}, "
              f"server {a['server_s']:.3f}); x{rows[-1]['before_over_after']:.2f}; peak RSS "
              f"{b['peak_rss_bytes'] / 2**20:.0f} -> {a['peak_rss_bytes'] / 2**20:.0f} MiB",
              flush=True)
    pathlib.Path(args.out).write_text(json.dumps(
        {"command": " ".join([pathlib.Path(sys.argv[0]).name, *sys.argv[1:]]), "rows": rows,
         "load_average_at_end": os.getloadavg()}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
