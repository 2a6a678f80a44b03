"""A tiny study end to end: tables, resume, crash (SIGKILL/SIGTERM) and parallel workers."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from secure_fedrec.cli import main
from secure_fedrec.studies import ResultStore, expand_cells, parse_study, run_study

TINY_BASE = """
[base]
model.dim = 4
training.local_epochs = 1
data.synthetic.n_users = 30
data.synthetic.n_items = 40
data.synthetic.mean_ratings_per_user = 15
privacy.unit = "none"  # pinned: these tests are about the study runner, not the private default
training.sampling = "fixed"
"""


def tiny_study(name: str = "tiny", *, rounds: int = 2, seeds=(0, 1), clients=(5, 10), parallel: int = 1,
               extra_grid: str = "") -> str:
    return (f'[study]\nname = "{name}"\nseeds = {list(seeds)}\nparallel = {parallel}\n'
            + TINY_BASE + f"training.rounds = {rounds}\n"
            + f'[grid]\n"aggregation.protocol" = ["plaintext"]\n"training.clients_per_round" = {list(clients)}\n'
            + extra_grid)


def table_ids(root: Path) -> list[str]:
    jsonl = [json.loads(line)["cell_id"] for line in (root / "results.jsonl").read_text().splitlines()]
    with open(root / "results.csv", newline="") as fh:
        from_csv = [row["cell_id"] for row in csv.DictReader(fh)]
    assert jsonl == from_csv
    return jsonl


def test_tiny_study_writes_one_row_per_cell_and_seed(tmp_path):
    spec = parse_study(tiny_study())
    outcome = run_study(spec, tmp_path, progress=False)
    expected = [c.cell_id for c in expand_cells(spec)]
    assert outcome.complete and outcome.ran == 4 and outcome.skipped == 0
    assert table_ids(tmp_path) == expected
    row = outcome.rows[0]
    for column in ("cell_id", "group_id", "seed", "param.training.clients_per_round",
                   "metric.rmse", "epsilon", "delta", "bytes_sent_per_client_mean", "wall_time_seconds"):
        assert column in row, column
    assert row["metric.rmse"] > 0 and row["bytes_sent_per_client_mean"] > 0
    assert row["epsilon"] is None and row["dp"] is False  # no DP in this grid: ε = ∞
    assert {r["param.training.clients_per_round"] for r in outcome.rows} == {5, 10}
    stored = ResultStore(tmp_path).load_cell(row["cell_id"])
    assert stored["result"]["config"]["seed"] == row["seed"]
    manifest = json.loads((tmp_path / "study.json").read_text())
    assert [c["cell_id"] for c in manifest["cells"]] == expected
    assert "torch" in manifest["environment"]["libraries"]

    again = run_study(spec, tmp_path, progress=False)
    assert again.ran == 0 and again.skipped == 4 and again.complete
    assert table_ids(tmp_path) == expected


def test_a_new_grid_value_runs_only_the_new_cells(tmp_path):
    run_study(parse_study(tiny_study(clients=(5,))), tmp_path, progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json")}
    outcome = run_study(parse_study(tiny_study(clients=(5, 10))), tmp_path, progress=False)
    assert outcome.skipped == 2 and outcome.ran == 2
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*.json") if p.name in first} == first


def test_a_failing_cell_is_recorded_and_retried(tmp_path, capsys):
    text = tiny_study(seeds=(0,), clients=(5,), extra_grid='"data.source" = ["synthetic", "/nonexistent/ratings.csv"]\n')
    config = tmp_path / "study.toml"
    config.write_text(text)
    out = tmp_path / "out"
    assert main(["study", "--config", str(config), "--out", str(out), "--quiet", "--no-plots"]) == 1
    failures = ResultStore(out).failures()
    assert len(failures) == 1 and "nonexistent" in failures[0]["error"]
    assert len(table_ids(out)) == 1
    outcome = run_study(parse_study(text), out, progress=False)
    assert outcome.skipped == 1 and len(outcome.failed) == 1  # retried, failed again, still listed once


def test_a_truncated_cell_file_is_quarantined_and_its_cell_runs_again(tmp_path, caplog, capsys):
    """Issue 19 item 8: before, every later invocation exited 1 with a JSONDecodeError traceback."""
    config = tmp_path / "study.toml"
    config.write_text(tiny_study(seeds=(0,), clients=(5, 10)))
    out = tmp_path / "out"
    command = ["study", "--config", str(config), "--out", str(out), "--quiet", "--no-plots"]
    assert main(command) == 0
    victim = min((out / "cells").glob("*.json"))
    truncated = victim.read_text()[:100]
    victim.write_text(truncated)
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="secure_fedrec.studies.store"):
        assert main(command) == 0
    assert "2/2 runs finished (1 from earlier invocations, 1 now, 0 failed)" in capsys.readouterr().out
    assert str(victim) in caplog.text and "will run again" in caplog.text
    (kept,) = (out / "quarantine").glob("*.json")
    assert kept.read_text() == truncated and kept.name.startswith(f"cells-{victim.stem}-")
    assert ResultStore(out).load_cell(victim.stem)["row"]["cell_id"] == victim.stem
    assert len(table_ids(out)) == 2


def test_every_kind_of_unreadable_record_is_set_aside(tmp_path):
    store = ResultStore(tmp_path)
    store.prepare()
    good = {"row": {"cell_id": "good"}, "result": {}}
    files = {
        "cells/good.json": json.dumps(good),
        "cells/empty.json": "",
        "cells/truncated.json": json.dumps(good)[:-3],
        "cells/binary.json": "\udcff",
        "cells/list.json": "[]",
        "cells/renamed.json": json.dumps(good),  # a row of another cell
        "cells/no_result.json": json.dumps({"row": {"cell_id": "no_result"}}),
        "cells/deep.json": "[" * 100_000,
        "failed/bad.json": '{"cell_id": "ba',
        "failed/fine.json": json.dumps({"cell_id": "fine", "error": "x"}),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, errors="surrogateescape")
    assert store.rows(["good", "truncated"]) == [good["row"]]  # a reader skips, moves nothing
    assert [f["cell_id"] for f in store.failures()] == ["fine"]
    moved = store.quarantine_unreadable()
    assert len(moved) == len(files) - 2
    assert store.finished_ids() == {"good"}
    assert [p.name for p in (tmp_path / "failed").glob("*.json")] == ["fine.json"]
    assert store.quarantine_unreadable() == []


def test_leftover_temporary_files_are_ignored_and_cleaned(tmp_path):
    spec = parse_study(tiny_study(seeds=(0,), clients=(5,)))
    (tmp_path / "cells").mkdir(parents=True)
    half = tmp_path / "cells" / ".deadbeef.json.abc.tmp"
    half.write_text('{"row": {"cell_id": "dead')  # what a kill during a write leaves behind
    outcome = run_study(spec, tmp_path, progress=False)
    assert outcome.complete and not half.exists()
    assert len(table_ids(tmp_path)) == 1


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_study_resumes_with_every_cell_exactly_once(tmp_path, sig):
    # enough rounds that one run takes a visible fraction of a second, so the kill lands mid-study
    text = tiny_study(rounds=12, seeds=(0, 1), clients=(5, 10, 15))
    config = tmp_path / "study.toml"
    config.write_text(text)
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, "-m", "secure_fedrec.cli", "study", "--config", str(config), "--out", str(out),
         "--quiet", "--no-plots"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 60
    cells_dir = out / "cells"
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if cells_dir.exists() and any(cells_dir.glob("*.json")):
                break
            time.sleep(0.02)
        assert child.poll() is None, child.stderr.read().decode()
        child.send_signal(sig)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    before = {p.name: p.read_bytes() for p in cells_dir.glob("*.json")}
    spec = parse_study(text)
    expected = [c.cell_id for c in expand_cells(spec)]
    assert 1 <= len(before) < len(expected), "the kill should land after the first run, before the last"
    for payload in before.values():
        json.loads(payload)  # every recorded run is whole

    outcome = run_study(spec, out, progress=False)
    assert outcome.complete and outcome.skipped == len(before) and outcome.ran == len(expected) - len(before)
    ids = table_ids(out)
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    assert {p.name: p.read_bytes() for p in cells_dir.glob("*.json") if p.name in before} == before
    assert not list(out.rglob(".*.tmp"))


def test_parallel_workers_produce_the_same_table(tmp_path):
    spec = parse_study(tiny_study(seeds=(0, 1), clients=(5, 10), parallel=2))
    outcome = run_study(spec, tmp_path, progress=False)
    assert outcome.complete and outcome.ran == 4
    serial = run_study(parse_study(tiny_study()), tmp_path / "serial", parallel=1, progress=False)
    rmse = {r["cell_id"]: r["metric.rmse"] for r in outcome.rows}
    assert rmse == pytest.approx({r["cell_id"]: r["metric.rmse"] for r in serial.rows}, rel=1e-5)


AUDIT_STUDY = """
[study]
name = "tiny-audit"
job = "audit"
seeds = [0]
[base]
training.rounds = 2
training.local_epochs = 1
training.sampling = "poisson"
training.clients_per_round = 10
model.dim = 4
data.synthetic.n_users = 40
data.synthetic.n_items = 40
data.synthetic.mean_ratings_per_user = 15
[audit]
canaries = 40
attacks = ["loss"]
n_bootstrap = 20
member_samples = 50
[[grid]]
"privacy.unit" = ["none"]
[[grid]]
"privacy.unit" = ["record"]
"privacy.noise" = ["local"]
"privacy.noise_multiplier" = [1.0]
"""


def test_an_audit_study_records_attack_metrics_and_epsilon(tmp_path):
    outcome = run_study(parse_study(AUDIT_STUDY), tmp_path, progress=False)
    assert outcome.complete and outcome.ran == 2
    by_unit = {r["param.privacy.unit"]: r for r in outcome.rows}
    assert by_unit["none"]["epsilon"] is None and by_unit["record"]["epsilon"] > 0
    for row in outcome.rows:
        assert 0.0 <= row["attack.auc"] <= 1.0 and row["attack.loss.auc"] == row["attack.auc"]
        assert row["attack.epsilon_lower_bound"] >= 0.0 and row["attack.violation"] is False
        assert row["metric.rmse"] > 0
