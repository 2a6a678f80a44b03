"""Every privacy and engine module imports on its own, first, in a fresh package state.

An import cycle shows only when the cycle's far end is imported first (e.g.
``privacy.session`` before ``engine``); the Flower node hit exactly that.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, pkgutil, sys
failures = []
names = []
# The packages whose modules import one another (a full walk costs minutes).
for package in ("secure_fedrec.privacy", "secure_fedrec.engine"):
    root = importlib.import_module(package)
    names.append(package)
    names += [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("protocols", "attacks", "secure_fedrec")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:  # report every failure, not just the first
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\\n".join(failures))
"""


def test_every_module_imports_first() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    count, *failures = out.stdout.strip().split("\n")
    assert int(count) > 15
    assert [f for f in failures if f] == []
