"""Run the doctests of the attacks package (the pure-math functions document themselves)."""

import doctest
import importlib
from pathlib import Path

import pytest

MODULES = [
    "attacks._validation",
    "attacks.metrics",
    "attacks.audit",
    "attacks.fdp",
    "attacks.canary_clients",
    "attacks.membership.base",
    "attacks.membership.recsys",
    "attacks.inference.updates",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0


def test_package_never_imports_torch_or_secure_fedrec():
    import subprocess
    import sys

    code = (
        "import sys, attacks; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'secure_fedrec', 'sklearn', 'matplotlib')]; print(bad); assert not bad"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2]
    )
