"""Where a study keeps its results, and the tidy row made from one run.

Layout of a study folder::

    DIR/study.toml          the study file as given
    DIR/study.json          manifest: every cell, its params and id, the environment
    DIR/cells/<id>.json     one finished run: its tidy row and the full run_job result
    DIR/failed/<id>.json    a run that raised (retried on the next invocation)
    DIR/quarantine/         cell and failure files that could not be read, set aside
    DIR/results.jsonl       one tidy row per finished run, rebuilt from cells/
    DIR/results.csv         the same rows as CSV

Why one file per run instead of appending lines to one table: a run's file is
written to a temporary name, fsync'ed and renamed (``os.replace`` is atomic on
POSIX), so after a crash it either exists whole or not at all; its name is the
cell id, so a run can never be recorded twice, even when several worker
processes finish at once. The two tables are derived data: rebuilt (again by
tmp + rename) from cells/ after every run and at every start, so a crash
between writing a cell and rebuilding loses nothing.

A cell file that cannot be read anyway (truncated or corrupted on disk, by a
full disk, a copy, a hand edit) is moved to quarantine/ when the study starts,
with a warning that names it, and its cell runs again: one bad file must not
stop every later invocation. Nothing is deleted, so the file can be inspected.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..outputs import write_text_atomic
from .cells import Cell

__all__ = ["ResultStore", "result_row", "strict_json"]

log = logging.getLogger(__name__)

#: leading columns of the tidy table, in this order; the rest follow sorted
LEADING_COLUMNS = (
    "study", "cell_id", "group_id", "cell_index", "seed", "status", "mechanism",
    "protocol", "model", "epsilon", "delta",
)


def strict_json(value: Any) -> Any:
    """Replace NaN/inf (not JSON) by None, recursively; numpy scalars by Python ones."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _scalars(prefix: str, table: Any) -> dict[str, Any]:
    """Flatten a nested dict to ``prefix.key`` columns, keeping scalars only."""
    out: dict[str, Any] = {}
    if not isinstance(table, dict):
        return out
    for key, value in table.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(_scalars(name, value))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif hasattr(value, "item"):
            out[name] = value.item()
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_NO_DP = (None, "", "none", "off", False)


def mechanism_label(protocol: str, privacy: dict[str, Any] | None, config: dict[str, Any]) -> str:
    """How the privacy–utility plot groups runs: DP unit/noise when DP is on, else the protocol.

    Reads the run's ``result["privacy"]`` first and the ``privacy`` config section as a
    fallback, so it works whatever the privacy module decides to report.
    """
    section = config.get("privacy") if isinstance(config.get("privacy"), dict) else {}
    privacy = privacy or {}
    unit = privacy.get("unit", section.get("unit"))
    noise = privacy.get("noise", section.get("noise"))
    if unit in _NO_DP:
        return f"no DP ({protocol})"
    return "/".join(str(part) for part in (unit, noise) if part not in _NO_DP) + f" ({protocol})"


def result_row(study: str, cell: Cell, result: dict[str, Any], cell_seconds: float) -> dict[str, Any]:
    """One tidy row: the cell's grid values, its metrics, ε/δ, attack metrics and cost."""
    row: dict[str, Any] = {
        "study": study,
        "cell_id": cell.cell_id,
        "group_id": cell.group_id,
        "cell_index": cell.index,
        "seed": cell.seed,
        "status": "ok",
    }
    for key, value in cell.params:
        row[f"param.{key}"] = value
    config = result.get("config", cell.config)
    protocol = str(result.get("protocol", config.get("aggregation", {}).get("protocol", "")))
    privacy = result.get("privacy") if isinstance(result.get("privacy"), dict) else None
    row["protocol"] = protocol
    row["model"] = result.get("model")
    row["clients_per_round"] = config.get("training", {}).get("clients_per_round")
    row["mechanism"] = mechanism_label(protocol, privacy, config)
    # ε = ∞ when a run has no DP: recorded as None (JSON has no infinity) with dp = False.
    epsilon = _number(privacy.get("epsilon")) if privacy else None
    row["dp"] = epsilon is not None and math.isfinite(epsilon)
    row["epsilon"] = epsilon if row["dp"] else None
    row["delta"] = _number(privacy.get("delta")) if privacy else None
    if privacy:
        row.update({k: v for k, v in _scalars("privacy", privacy).items()
                    if k not in ("privacy.epsilon", "privacy.delta")})
    row.update(_scalars("metric", result.get("final", {})))
    row.update(_scalars("attack", result.get("attack")))
    rounds = result.get("rounds") or []
    evaluation_keys = set(result.get("final", {}))
    numeric_keys = sorted({k for r in rounds for k, v in r.items()
                           if _number(v) is not None and k not in evaluation_keys and k != "round"})
    for key in numeric_keys:
        values = [_number(r.get(key)) for r in rounds]
        values = [v for v in values if v is not None]
        if values:
            row[f"round_mean.{key}"] = sum(values) / len(values)
    row["bytes_sent_per_client_mean"] = _number(result.get("bytes_sent_per_client_mean"))
    row["wall_time_seconds"] = _number(result.get("wall_time_seconds"))
    row["cell_seconds"] = cell_seconds
    dataset = result.get("dataset", {})
    for key in ("n_users", "n_items", "n_ratings"):
        if key in dataset:
            row[f"data.{key}"] = dataset[key]
    row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return strict_json(row)


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()  # mkstemp creates 0600; results are meant to be shared


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, rename over ``path``."""
    write_text_atomic(path, text, mode=_FILE_MODE)


class ResultStore:
    """The files of one study folder (see the module docstring for the layout)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.failed_dir = self.root / "failed"
        self.quarantine_dir = self.root / "quarantine"

    def prepare(self) -> None:
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        for stale in (*self.cells_dir.glob(".*.tmp"), *self.root.glob(".*.tmp")):
            stale.unlink(missing_ok=True)  # left by a run killed mid-write
        self.quarantine_unreadable()

    def quarantine_unreadable(self) -> list[Path]:
        """Move every cell or failure file that does not read back aside; where each went."""
        moved = []
        for folder, check in ((self.cells_dir, _cell_problem), (self.failed_dir, _failure_problem)):
            for path in sorted(folder.glob("*.json")) if folder.exists() else ():
                problem = check(path)
                if problem is not None:
                    moved.append(self._quarantine(path, problem))
        return moved

    def _quarantine(self, path: Path, problem: str) -> Path:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.quarantine_dir / f"{path.parent.name}-{path.stem}-{stamp}.json"
        suffix = 1
        while target.exists():
            target = target.with_name(f"{path.parent.name}-{path.stem}-{stamp}-{suffix}.json")
            suffix += 1
        os.replace(path, target)
        log.warning("study file %s is unreadable (%s): moved to %s; its cell will run again",
                    path, problem, target)
        return target

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def finished_ids(self) -> set[str]:
        return {p.stem for p in self.cells_dir.glob("*.json")} if self.cells_dir.exists() else set()

    def save_cell(self, row: dict[str, Any], result: dict[str, Any]) -> None:
        payload = {"row": row, "result": strict_json(result)}
        write_atomic(self.cell_path(row["cell_id"]), json.dumps(payload, indent=1))
        (self.failed_dir / f"{row['cell_id']}.json").unlink(missing_ok=True)

    def save_failure(self, cell: Cell, error: str, trace: str) -> None:
        payload = {"cell_id": cell.cell_id, "cell_index": cell.index, "seed": cell.seed,
                   "params": dict(cell.params), "error": error, "traceback": trace}
        write_atomic(self.failed_dir / f"{cell.cell_id}.json", json.dumps(strict_json(payload), indent=1))

    def load_cell(self, cell_id: str) -> dict[str, Any]:
        return json.loads(self.cell_path(cell_id).read_text(encoding="utf-8"))

    def failures(self) -> list[dict[str, Any]]:
        """The recorded failures; an unreadable record is skipped with a warning (see prepare)."""
        if not self.failed_dir.exists():
            return []
        records = []
        for path in sorted(self.failed_dir.glob("*.json")):
            document, problem = _failure_document(path)
            if document is None:
                log.warning("skipping unreadable failure record %s (%s)", path, problem)
            else:
                records.append(document)
        return records

    def rows(self, cell_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The tidy rows of finished runs (of ``cell_ids``, in that order, when given).

        A cell file that does not read back is left out with a warning (a
        study run quarantines it first, in :meth:`prepare`, and runs it again).
        """
        ids = list(cell_ids) if cell_ids is not None else sorted(self.finished_ids())
        done = self.finished_ids()
        rows = []
        for cell_id in ids:
            if cell_id not in done:
                continue
            document, problem = _cell_document(self.cell_path(cell_id))
            if document is None:
                log.warning("leaving out unreadable study cell %s (%s)", self.cell_path(cell_id),
                            problem)
                continue
            rows.append(document["row"])
        return rows

    def rebuild_tables(self, cell_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rewrite results.jsonl and results.csv from cells/ (atomically); returns the rows."""
        rows = self.rows(cell_ids)
        columns = _columns(rows)
        jsonl = "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows)
        write_atomic(self.root / "results.jsonl", jsonl)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
        write_atomic(self.root / "results.csv", buffer.getvalue())
        return rows


def _json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in ``path``, or None and what is wrong with the file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except RecursionError:
        return None, "nested too deeply"
    except ValueError as exc:  # json.JSONDecodeError: truncated, empty, corrupted
        return None, f"not JSON: {exc}"
    if not isinstance(document, dict):
        return None, "not a JSON object"
    return document, None


def _cell_document(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The finished run in ``path`` if it is one of the cell its name says; else what is wrong."""
    document, problem = _json_object(path)
    if document is None:
        return None, problem
    row = document.get("row")
    if not isinstance(row, dict) or row.get("cell_id") != path.stem:
        return None, "no tidy row for this cell"
    if not isinstance(document.get("result"), dict):
        return None, "no run result"
    return document, None


def _cell_problem(path: Path) -> str | None:
    return _cell_document(path)[1]


def _failure_document(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    document, problem = _json_object(path)
    if document is not None and document.get("cell_id") != path.stem:
        return None, "not a failure record of this cell"
    return document, problem


def _failure_problem(path: Path) -> str | None:
    return _failure_document(path)[1]


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    leading = [c for c in LEADING_COLUMNS if c in seen]
    params = [c for c in seen if c.startswith("param.")]
    rest = sorted(c for c in seen if c not in leading and c not in params)
    return leading + params + rest
