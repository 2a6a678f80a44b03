"""Run a study: every unfinished cell, serially or in worker processes, with a progress bar."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cells import Cell, expand_cells
from .environment import environment
from .spec import StudySpec
from .store import ResultStore, result_row, strict_json, write_atomic

__all__ = ["StudyOutcome", "run_cell", "run_study"]

log = logging.getLogger(__name__)


@dataclass
class StudyOutcome:
    """What one invocation did; ``rows`` is the whole table (earlier runs included)."""

    total: int
    skipped: int  # finished by an earlier invocation
    ran: int
    failed: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.total


def run_cell(study_name: str, cell: Cell, root: str) -> tuple[str, str, str]:
    """Run one cell and record it; returns ``(cell_id, "ok" | "failed", message)``.

    A top-level function so that worker processes can unpickle it. The worker
    writes the cell's file itself: a run finished by a worker survives even if
    the parent process is killed before it hears about it.
    """
    from ..runner import run_job

    warm_up()
    store = ResultStore(root)
    started = time.perf_counter()
    try:
        if "audit" in cell.job:
            result = _run_audit(cell)
        elif "twin" in cell.job:
            result = _run_twin(cell)
        else:
            result = run_job(cell.run_config())
    except Exception as exc:  # noqa: BLE001 -- any failure of one cell is recorded and retried, not fatal
        store.save_failure(cell, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return cell.cell_id, "failed", f"{type(exc).__name__}: {exc}"
    row = result_row(study_name, cell, result, time.perf_counter() - started)
    store.save_cell(row, result)
    return cell.cell_id, "ok", ""


_warmed_up = False


def warm_up() -> None:
    """Run one minute job once per process, so that no cell's wall time includes
    the one-off cost of torch's first operations (seconds, against ~0.1 s for a tiny cell)."""
    global _warmed_up
    if _warmed_up:
        return
    from ..config import load_config
    from ..runner import run_job

    run_job(load_config(None, {
        "data.synthetic.n_users": 4, "data.synthetic.n_items": 4, "data.synthetic.mean_ratings_per_user": 3.0,
        "training.rounds": 1, "training.clients_per_round": 2, "training.local_epochs": 1, "model.dim": 2,
    }))
    _warmed_up = True


def _run_twin(cell: Cell) -> dict[str, Any]:
    """The centralized DP-SGD twin of the cell's record-level run, shaped like a run_job result."""
    from ..centralized_dpsgd import train_dpsgd_twin, twin_as_run_result
    from ..inputs import load_data, make_split

    config = cell.run_config()
    data = load_data(config)
    noise = {"dpsgd-twin": "same", "dpsgd-twin-own": "own", "dpsgd-twin-nonprivate": "none"}[cell.job["twin"]]
    return twin_as_run_result(config, train_dpsgd_twin(config, make_split(config, data), noise=noise),
                              data.stats())


def _run_audit(cell: Cell) -> dict[str, Any]:
    """``secure_fedrec.audit.run_audit`` on the cell, reshaped like a run_job result."""
    from ..audit.run import run_audit
    from ..audit.spec import spec_from_dict

    audit = run_audit(cell.run_config(), spec_from_dict(dict(cell.job["audit"])))
    return audit_as_run_result(audit)


def audit_as_run_result(audit: dict[str, Any]) -> dict[str, Any]:
    """Map audit.json onto the keys a tidy row reads: final, privacy, attack, wall time.

    ``attack.auc`` is the strongest membership attack's AUC (what a reviewer compares
    with chance), ``attack.epsilon_lower_bound`` the canary audit's ε̂; every attack's
    own metrics follow as ``attack.<name>.<metric>``.
    """
    attacks = audit.get("attacks") or {}
    attack: dict[str, Any] = {}
    aucs = {name: a.get("auc") for name, a in attacks.items() if isinstance(a, dict)
            and isinstance(a.get("auc"), (int, float))}
    if aucs:
        strongest = max(aucs, key=aucs.get)
        attack["auc"] = aucs[strongest]
        attack["strongest"] = strongest
    canary = audit.get("canary_audit") or {}
    if "epsilon_hat" in canary:
        attack["epsilon_lower_bound"] = canary["epsilon_hat"]
    attack["violation"] = bool(audit.get("violation"))
    for name, metrics in attacks.items():
        if isinstance(metrics, dict):
            attack[name] = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
    training = audit.get("training") or {}
    return {**audit, "final": training.get("final", {}), "attack": attack}


def _init_worker() -> None:
    # One BLAS/OpenMP thread per worker: n workers on n cores must not oversubscribe.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def write_manifest(spec: StudySpec, cells: list[Cell], store: ResultStore) -> None:
    store.root.mkdir(parents=True, exist_ok=True)
    if spec.source_text:
        write_atomic(store.root / "study.toml", spec.source_text)
    manifest = {
        "name": spec.name,
        "job": spec.job,
        "audit": spec.audit,
        "description": spec.description,
        "seeds": list(spec.seeds),
        "grids": [{key: list(values) for key, values in grid} for grid in spec.grids],
        "base": spec.base,
        "cells": [
            {"cell_id": c.cell_id, "group_id": c.group_id, "cell_index": c.index, "seed": c.seed,
             "params": dict(c.params), "config": c.config}
            for c in cells
        ],
        "environment": environment(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(store.root / "study.json", json.dumps(strict_json(manifest), indent=1))


def run_study(
    spec: StudySpec,
    out_dir: str | Path,
    *,
    parallel: int | None = None,
    progress: bool = True,
    on_cell: Callable[[str, str], None] | None = None,
) -> StudyOutcome:
    """Run every cell of ``spec`` not already in ``out_dir``; rebuild the results tables.

    ``parallel`` overrides ``spec.parallel``; above 1 the cells run in that many
    spawned worker processes (one torch thread each). Cells that raise are
    recorded in ``failed/`` and retried by the next invocation.
    """
    from tqdm import tqdm

    cells = expand_cells(spec)
    store = ResultStore(out_dir)
    store.prepare()
    write_manifest(spec, cells, store)
    ids = [c.cell_id for c in cells]
    done = store.finished_ids()
    stray = done - set(ids)
    if stray:
        log.warning("%d finished run(s) in %s are not in this study's grid; left out of the tables",
                    len(stray), store.root)
    store.rebuild_tables(ids)  # a crash may have come between a cell file and the rebuild
    todo = [c for c in cells if c.cell_id not in done]
    outcome = StudyOutcome(total=len(cells), skipped=len(cells) - len(todo), ran=0)
    workers = max(1, parallel if parallel is not None else spec.parallel)
    bar = tqdm(total=len(cells), initial=outcome.skipped, desc=spec.name, unit="run", disable=not progress)

    def finished(cell_id: str, status: str, message: str) -> None:
        outcome.ran += status == "ok"
        if status != "ok":
            bar.write(f"run {cell_id} failed: {message}")
        store.rebuild_tables(ids)
        bar.update(1)
        if on_cell is not None:
            on_cell(cell_id, status)

    try:
        if workers == 1 or len(todo) <= 1:
            for cell in todo:
                bar.set_postfix_str(cell.label(), refresh=True)
                finished(*run_cell(spec.name, cell, str(store.root)))
        else:
            _run_parallel(spec.name, todo, store, workers, finished)
    finally:
        bar.close()
    outcome.rows = store.rows(ids)
    failed_ids = set(ids) - store.finished_ids()
    outcome.failed = [f for f in store.failures() if f["cell_id"] in failed_ids]
    return outcome


def _run_parallel(study_name: str, todo: list[Cell], store: ResultStore, workers: int,
                  finished: Callable[[str, str, str], None]) -> None:
    # spawn (not fork): torch and its thread pools are not fork-safe.
    context = multiprocessing.get_context("spawn")
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the children before torch loads
    try:
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_init_worker,
        ) as pool:
            futures = {pool.submit(run_cell, study_name, cell, str(store.root)): cell for cell in todo}
            for future in concurrent.futures.as_completed(futures):
                cell = futures[future]
                try:
                    finished(*future.result())
                except concurrent.futures.process.BrokenProcessPool as exc:
                    store.save_failure(cell, f"worker died: {exc}", "")
                    finished(cell.cell_id, "failed", f"worker died: {exc}")
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
