"""The committed notebooks are exactly what notebooks/build_notebooks.py writes, outputs stripped.

Executing them is CI's job (``python -m pytest --nbmake notebooks/``); this keeps the
generator and the files from drifting apart, in a fraction of a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOKS / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebooks_match_the_generator_and_have_no_outputs(tmp_path):
    builder = _builder()
    written = builder.build(tmp_path)
    assert {p.name for p in written} == {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    for fresh in written:
        committed = nbformat.read(NOTEBOOKS / fresh.name, as_version=4)
        nbformat.validate(committed)
        expected = nbformat.read(fresh, as_version=4)
        assert [(c.cell_type, c.source) for c in committed.cells] == \
            [(c.cell_type, c.source) for c in expected.cells], f"run notebooks/build_notebooks.py ({fresh.name})"
        for cell in committed.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{fresh.name} has outputs"
