"""What the pickle-free checkpoint format costs: a checkpoint written and read back, the
former ``torch.save`` / ``torch.load(weights_only=False)`` against :mod:`secure_fedrec.state_file`.

Both sides store the same state (a biased MF's tables, the shared vector, FedAdam's two
moments, an accountant history, torch's RNG state, 10 rounds of metrics), written to a
file and read back, alternating the two ``--repeats`` times in one process; the best
CPU time (``time.process_time``) and wall time of each, and the file sizes. fsync is left
out on both sides (the old and the new writer both fsync)::

    OMP_NUM_THREADS=1 python benchmarks/checkpoint_format.py --output benchmarks/results/checkpoint_format.json

(The reference reads a file this script has just written: ``weights_only=False`` is the
code that was replaced, never something to run on a file of unknown origin.)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from secure_fedrec.state_file import dump_state, load_state

SIZES = {"default synthetic (2000 users x 200 items, dim 8)": (2000, 200, 8),
         "ml-latest-small sized (610 x 9724, dim 16)": (610, 9724, 16),
         "10x that (6100 x 97240, dim 16)": (6100, 97240, 16)}


def checkpoint_like(n_users: int, n_items: int, dim: int) -> dict:
    rng = np.random.default_rng(0)
    shared = n_items * (dim + 1)
    return {"version": 2, "round_index": 10, "params": rng.normal(size=shared),
            "model": {"user": torch.randn(n_users, dim), "item": torch.randn(n_items, dim),
                      "user_bias": torch.randn(n_users), "item_bias": torch.randn(n_items)},
            "server_optimizer": {"m": rng.normal(size=shared), "v": rng.normal(size=shared)},
            "privacy": {"accountant": {"history": [[1.0, 0.1, 10]]}}, "torch_rng": torch.get_rng_state(),
            "history": [{"round": i + 1, "train_loss": 0.5, "measurements": {"epsilon": 1.0}} for i in range(10)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    folder = tempfile.mkdtemp()
    old_path, new_path = os.path.join(folder, "c.pt"), os.path.join(folder, "c.npz")
    rows = []
    for label, sizes in SIZES.items():
        state = checkpoint_like(*sizes)

        def old(state=state):
            torch.save(state, old_path)
            torch.load(old_path, weights_only=False)

        def new(state=state):
            Path(new_path).write_bytes(dump_state(state))
            load_state(new_path)

        best = {"old": [float("inf")] * 2, "new": [float("inf")] * 2}
        for _ in range(args.repeats):
            for name, run in (("old", old), ("new", new)):
                cpu, wall = time.process_time(), time.perf_counter()
                run()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                best[name] = [min(best[name][0], cpu), min(best[name][1], wall)]
        row = {"state": label, "old_cpu_ms": 1e3 * best["old"][0], "new_cpu_ms": 1e3 * best["new"][0],
               "old_wall_ms": 1e3 * best["old"][1], "new_wall_ms": 1e3 * best["new"][1],
               "cpu_ratio_new_over_old": best["new"][0] / best["old"][0],
               "wall_ratio_new_over_old": best["new"][1] / best["old"][1],
               "old_bytes": os.path.getsize(old_path), "new_bytes": os.path.getsize(new_path)}
        rows.append(row)
        print(f"{label:50s} CPU {row['old_cpu_ms']:8.1f} -> {row['new_cpu_ms']:7.1f} ms "
              f"({row['cpu_ratio_new_over_old']:.2f}x)  wall {row['old_wall_ms']:8.1f} -> {row['new_wall_ms']:7.1f} ms "
              f"({row['wall_ratio_new_over_old']:.2f}x)  {row['old_bytes']:,} -> {row['new_bytes']:,} bytes")
    if args.output:
        args.output.write_text(json.dumps({"command": "python benchmarks/checkpoint_format.py", "rows": rows},
                                          indent=2) + "\n")


if __name__ == "__main__":
    main()
