"""Which checkout a benchmark's numbers belong to."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(root: Path) -> str:
    """HEAD of the checkout at ``root``, marked ``+uncommitted`` when the tree has changes."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                          check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                           check=False).stdout.strip()
    return head + ("+uncommitted" if dirty else "")
