"""Which checkout a benchmark's numbers belong to."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(root: Path) -> str:
    """HEAD of the checkout at ``root``, marked ``+uncommitted`` when the tree has changes
    (results of earlier benchmarks, under benchmarks/results/, do not count)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)benchmarks/results"],
                           cwd=root, capture_output=True, text=True, check=False).stdout.strip()
    return head + ("+uncommitted" if dirty else "")
