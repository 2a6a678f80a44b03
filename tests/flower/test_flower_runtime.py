"""The job on real Flower: the simulation engine (Ray) and a local deployment with a killed node.

Each scenario runs ``python -m secure_fedrec.engines.flower.launcher`` in a
subprocess — inside a loopback-only network namespace when this machine
allows it (root + ``unshare -n``), which proves nothing reaches beyond
127.0.0.1 — and compares the final parameters with the in-process engine
given the same seed (and the same dropouts). Afterwards no process started
for the run may be left (found by the private FLWR_HOME in its environment).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import (
    DISTRIBUTED_DP,
    PAILLIER_JOB,
    SMALL_JOB,
    reference_params,
    small_config,
)

if os.environ.get("CI") == "true":
    # CI installs the flower extra (.ci/run): there these tests must run, never skip.
    import flwr  # noqa: F401

    assert shutil.which("flower-superlink"), "the flower extra is installed but not its CLI"
pytest.importorskip("flwr")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("flower-superlink") is None, reason="Flower CLI not installed"),
]


def _loopback_only_prefix() -> list[str]:
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        return []
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']


def _leftovers(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                stat = (entry / "stat").read_text()
                if stat[stat.rfind(")") + 2:].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def run_cli(tmp_path: Path, overrides: dict, *args: str, timeout: float) -> dict:
    work = tmp_path / "work"
    out = tmp_path / "out"
    sets = []
    for key, value in overrides.items():
        sets += ["--set", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "SFR_FLOWER_WORK_DIR": str(work)}
    cmd = [*_loopback_only_prefix(), sys.executable, "-m", "secure_fedrec.engines.flower.launcher",
           "flower", "--out", str(out), *sets, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    finally:
        deadline = time.monotonic() + 15
        while _leftovers(str(work)) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _leftovers(str(work))
        for pid in left:  # never leave them running, but fail the test
            os.kill(pid, 9)
        assert not left, f"processes left running after the run: {left}"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((out / "metrics.json").read_text())


def test_simulation_engine_matches_inprocess(tmp_path):
    overrides = {**SMALL_JOB, "aggregation.protocol": "secagg"}
    result = run_cli(tmp_path, overrides, "--mode", "sim", "--nodes", "5", timeout=240)
    assert result["engine"] == "flower-sim"
    assert [r["contributors"] for r in result["rounds"]] == [10, 10]
    expected, trainer = reference_params(small_config(**{"aggregation.protocol": "secagg"}))
    got = np.load(tmp_path / "out" / "final_params.npy")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert result["final"]["rmse"] == pytest.approx(trainer.history[-1].evaluation["rmse"], abs=1e-5)


def test_simulation_runs_distributed_dp_with_inprocess_accounting(tmp_path):
    """User-level DP with distributed discrete Gaussian noise under SecAgg+ (noise shares added
    on the virtual nodes): ε after every round is the in-process engine's."""
    overrides = {**SMALL_JOB, **DISTRIBUTED_DP}
    result = run_cli(tmp_path, overrides, "--mode", "sim", "--nodes", "5", timeout=300)
    assert result["engine"] == "flower-sim" and result["protocol"] == "secagg+"
    _, trainer = reference_params(small_config(**DISTRIBUTED_DP))
    assert [r["epsilon"] for r in result["rounds"]] == [m.measurements["epsilon"] for m in trainer.history]
    assert [r["contributors"] for r in result["rounds"]] == [m.contributors for m in trainer.history]
    assert result["privacy"]["epsilon"] == trainer.privacy.summary()["epsilon"] > 0
    assert result["privacy"]["noise"] == "distributed"


def test_simulation_runs_paillier(tmp_path):
    """Packed threshold Paillier: the launcher deals the keys, key holders live on the nodes."""
    overrides = {**SMALL_JOB, **PAILLIER_JOB}
    result = run_cli(tmp_path, overrides, "--mode", "sim", "--nodes", "3", timeout=300)
    assert result["engine"] == "flower-sim" and result["protocol"] == "paillier"
    expected, trainer = reference_params(small_config(**PAILLIER_JOB))
    assert [r["contributors"] for r in result["rounds"]] == [10, 10]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "final_params.npy"), expected,
                               rtol=0, atol=1e-6)
    assert result["privacy"] == trainer.privacy.summary()  # no DP in either: the same statement


def test_deployment_survives_a_killed_supernode(tmp_path):
    overrides = {**SMALL_JOB, "aggregation.protocol": "secagg", "evaluation.every": 2}
    result = run_cli(tmp_path, overrides, "--mode", "deployment", "--nodes", "3",
                     # SIGTERM: Flower reports the node gone in ~5 s (SIGKILL: ~45 s, so the
                     # stage timeout would decide); the protocol sees a dropout either way.
                     "--kill-node", "2:0:share_keys", "--kill-signal", "TERM",
                     "--stage-timeout", "30",
                     "--train-timeout", "120", timeout=420)
    assert result["engine"] == "flower"
    dead_at = {int(p): (d["round"], d["stage"]) for p, d in result["flower"]["dead_at"].items()}
    assert 2 in dead_at
    rounds = result["rounds"]
    assert len(rounds) == 2 and all(0 < r["contributors"] < r["sampled"] for r in rounds)
    expected, trainer = reference_params(small_config(**{"aggregation.protocol": "secagg",
                                                          "evaluation.every": 2}),
                                         num_partitions=3, dead_at=dead_at)
    assert [r["contributors"] for r in rounds] == [m.contributors for m in trainer.history]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "final_params.npy"), expected,
                               rtol=0, atol=1e-5)


def test_flower_secaggplus_comparison_runs_the_same_job(tmp_path):
    """Flower's own SecAgg+ (nodes as parties, its quantizer): same job, close result."""
    overrides = {**SMALL_JOB, "aggregation.protocol": "plaintext"}
    result = run_cli(tmp_path, overrides, "--mode", "sim", "--nodes", "5",
                     "--aggregation", "flower-secagg+", timeout=240)
    assert result["protocol"] == "flower-secagg+"
    assert [r["contributors"] for r in result["rounds"]] == [10, 10]
    expected, trainer = reference_params(small_config(**{"aggregation.protocol": "plaintext"}))
    got = np.load(tmp_path / "out" / "final_params.npy")
    # Flower quantizes to 2^22 levels over ±clipping_range: far coarser than ours.
    assert np.median(np.abs(got - expected)) < 5e-3
    assert result["final"]["rmse"] == pytest.approx(trainer.history[-1].evaluation["rmse"], abs=5e-3)
