"""Read a study folder into one object: manifest, tidy rows (as a DataFrame), failures."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..studies.store import ResultStore

__all__ = ["ReportError", "StudyData", "load_study_data"]


class ReportError(ValueError):
    """The folder is not a study folder (or has nothing to report)."""


@dataclass
class StudyData:
    root: Path
    manifest: dict[str, Any]
    rows: pd.DataFrame  # one row per finished run
    failures: list[dict[str, Any]] = field(default_factory=list)
    source_text: str = ""

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    @property
    def expected_runs(self) -> int:
        return len(self.manifest.get("cells", []))


def load_study_data(root: str | Path) -> StudyData:
    root = Path(root)
    manifest_path = root / "study.json"
    if not manifest_path.exists():
        if (root / "results.jsonl").exists() and (root / "study.toml").exists():
            return _archived_study(root)
        raise ReportError(f"{root} is not a study folder (no study.json); run `secure-fedrec study` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    store = ResultStore(root)
    ids = [c["cell_id"] for c in manifest.get("cells", [])]
    rows = pd.DataFrame(store.rows(ids))
    done = store.finished_ids()
    failures = [f for f in store.failures() if f.get("cell_id") not in done]
    source = root / "study.toml"
    return StudyData(
        root=root, manifest=manifest, rows=rows, failures=failures,
        source_text=source.read_text(encoding="utf-8") if source.exists() else "",
    )


def _archived_study(root: Path) -> StudyData:
    """A study kept as its study file and result rows only (docs/studies/*): the report is
    rebuilt from the rows; the per-cell resolved configs were not kept, and say so."""
    import tomllib

    source = (root / "study.toml").read_text(encoding="utf-8")
    header = tomllib.loads(source).get("study", {})
    lines = (root / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    manifest = {"name": header.get("name", root.name), "description": header.get("description", ""),
                "seeds": header.get("seeds", []), "cells": [{"cell_id": r.get("cell_id")} for r in rows],
                "archived": True}
    return StudyData(root=root, manifest=manifest, rows=pd.DataFrame(rows), source_text=source)
