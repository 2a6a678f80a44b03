"""Crash soak of checkpointed runs: kill -9 a run again and again, many times while a checkpoint
is being written, resume it each time, and compare the end with an uninterrupted run.

Issue 19's probe killed runs at checkpoint writes; this is that probe as a script. The run
writes a checkpoint every round. Each kill lands either at a random moment or, for every
other kill, as soon as the parent sees a checkpoint's temporary file (``.checkpoint.npz.*.tmp``,
polled every 0.2 ms), i.e. while the file is being written or fsynced. After each kill the
folder must hold either no checkpoint (the run is started again) or one that resumes; at the
end every round's metrics (all but wall time) must equal the uninterrupted run's, and no
temporary file may be left (a kill before the rename leaves one; the next checkpoint removes it)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/crash_soak.py --kills 20 \
        --output benchmarks/results/crash_soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

RUN = ["--set", "aggregation.protocol=plaintext", "--set", "privacy.unit=none", "--set", "training.sampling=fixed",
       "--set", "data.synthetic.n_users=2000", "--set", "data.synthetic.n_items=300", "--set", "model.dim=32",
       "--set", "training.clients_per_round=50", "--set", "training.local_epochs=1",
       "--set", "training.checkpoint_every=1"]
CHECKPOINT = "checkpoint.npz"


def _metrics(folder: Path) -> list[dict]:
    rounds = json.loads((folder / "metrics.json").read_text())["rounds"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rounds]


def _command(folder: Path, rounds: int, resume: bool) -> list[str]:
    if resume:
        return [sys.executable, "-m", "secure_fedrec.cli", "run", "--quiet", "--resume", str(folder)]
    return [sys.executable, "-m", "secure_fedrec.cli", "run", "--quiet", "--out", str(folder),
            "--set", f"training.rounds={rounds}", *RUN]


def _kill_during_a_write(child: subprocess.Popen, folder: Path, deadline: float) -> bool:
    """SIGKILL as soon as a checkpoint's temporary file exists; False if none appeared in time."""
    while time.monotonic() < deadline and child.poll() is None:
        if any(folder.glob(f".{CHECKPOINT}.*.tmp")):
            child.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.0002)
    return False


def soak(kills: int, rounds: int, seed: int) -> dict:
    rng = random.Random(seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as scratch:
        whole, broken = Path(scratch) / "whole", Path(scratch) / "broken"
        started = time.monotonic()
        subprocess.run(_command(whole, rounds, False), env=env, check=True, stdout=subprocess.DEVNULL)
        run_seconds = time.monotonic() - started
        tally = {"kills": 0, "kills_aimed_at_a_write": 0, "kills_that_left_a_new_temporary_file": 0,
                 "resumed_from_a_checkpoint": 0, "started_again_no_checkpoint_yet": 0,
                 "finished_before_the_kill": 0}
        seen_temporaries: set[str] = set()
        with tqdm(total=kills, desc="kills", unit="kill") as bar:
            while True:
                resume = (broken / CHECKPOINT).exists()
                if tally["kills"]:
                    tally["resumed_from_a_checkpoint" if resume else "started_again_no_checkpoint_yet"] += 1
                child = subprocess.Popen(_command(broken, rounds, resume), env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
                if tally["kills"] >= kills:
                    _, err = child.communicate()
                    if child.returncode:
                        raise SystemExit(f"the final run failed: {err.decode()[-2000:]}")
                    break
                if tally["kills"] % 2:
                    hit = _kill_during_a_write(child, broken, time.monotonic() + 4 * run_seconds)
                else:
                    hit = False
                    time.sleep(rng.uniform(0.0, run_seconds))
                    child.send_signal(signal.SIGKILL)
                _, err = child.communicate()
                if child.returncode not in (-signal.SIGKILL, 0):
                    raise SystemExit(f"a run after a kill failed ({child.returncode}): {err.decode()[-2000:]}")
                if child.returncode == 0:  # it finished before the kill: start the whole thing again
                    tally["finished_before_the_kill"] += 1
                    for path in broken.iterdir():
                        path.unlink()
                    continue
                tally["kills"] += 1
                tally["kills_aimed_at_a_write"] += hit
                # the kill landed before the rename: the half-written temporary file is still there
                temporaries = {p.name for p in broken.glob(f".{CHECKPOINT}.*.tmp")}
                tally["kills_that_left_a_new_temporary_file"] += bool(temporaries - seen_temporaries)
                seen_temporaries |= temporaries
                bar.update(1)
        leftovers = sorted(p.name for p in broken.iterdir() if p.name.endswith(".tmp"))
        equal = _metrics(whole) == _metrics(broken)
    return {"rounds": rounds, "seed": seed, **tally, "uninterrupted_run_seconds": run_seconds,
            "every_round_equal_to_the_uninterrupted_run": equal, "temporary_files_left": leftovers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    result = soak(args.kills, args.rounds, args.seed)
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    if not result["every_round_equal_to_the_uninterrupted_run"] or result["temporary_files_left"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
