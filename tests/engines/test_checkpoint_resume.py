"""Crash-safe runs: an interrupted-and-resumed run ends with exactly the uninterrupted metrics."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from secure_fedrec.cli import main
from secure_fedrec.engines.checkpoint import (
    read_checkpoint_state,
    write_checkpoint_state,
)

TINY = ["--set", "aggregation.protocol=plaintext", "--set", "data.synthetic.n_users=40", "--set", "data.synthetic.n_items=60",
        "--set", "training.clients_per_round=10", "--set", "model.dim=4",
        "--set", "training.local_epochs=1", "--set", "training.checkpoint_every=1",
        # pinned: these runs test checkpoints of a non-private / central-noise run, not the private default
        "--set", "privacy.unit=none", "--set", "privacy.noise=central", "--set", "training.sampling=fixed"]


def _final(folder):
    m = json.loads((folder / "metrics.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in m["rounds"]]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(["run", "--quiet", "--out", str(whole), "--set", "training.rounds=6", *TINY]) == 0
    cmd = [sys.executable, "-m", "secure_fedrec.cli", "run", "--quiet", "--out", str(broken),
           "--set", "training.rounds=6", *TINY, "--set", "training.local_epochs=1"]
    child = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (broken / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (broken / "checkpoint.npz").exists()
    assert main(["run", "--quiet", "--resume", str(broken)]) == 0
    assert _final(broken) == _final(whole)


def test_resume_refuses_another_configuration(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(out), "--set", "training.rounds=2", *TINY]) == 0
    code = main(["run", "--quiet", "--resume", str(out), "--set", "training.lr=0.5"])
    assert code == 2 and "another configuration" in capsys.readouterr().err


def test_resume_refuses_to_reset_the_privacy_accountant(tmp_path, capsys):
    out = tmp_path / "dp"
    dp = ["--set", "privacy.unit=user", "--set", "training.sampling=poisson",
          "--set", "privacy.noise_multiplier=1.0"]
    assert main(["run", "--quiet", "--out", str(out), "--set", "training.rounds=2", *TINY, *dp]) == 0
    state = read_checkpoint_state(out / "checkpoint.npz")
    state["privacy"] = {}
    write_checkpoint_state(out / "checkpoint.npz", state)
    assert main(["run", "--quiet", "--resume", str(out), "--set", "training.rounds=3"]) == 2
    assert "privacy" in capsys.readouterr().err


def test_resumed_privacy_run_keeps_composing_epsilon(tmp_path):
    out, whole = tmp_path / "dp", tmp_path / "whole"
    dp = [*TINY, "--set", "privacy.unit=user", "--set", "training.sampling=poisson",
          "--set", "privacy.noise_multiplier=1.0"]
    assert main(["run", "--quiet", "--out", str(whole), "--set", "training.rounds=4", *dp]) == 0
    assert main(["run", "--quiet", "--out", str(out), "--set", "training.rounds=2", *dp]) == 0
    assert main(["run", "--quiet", "--resume", str(out), "--set", "training.rounds=4"]) == 0
    eps = lambda f: json.loads((f / "metrics.json").read_text())["privacy"]["epsilon"]
    assert eps(out) == pytest.approx(eps(whole), rel=1e-9)
