"""Library versions and the machine, recorded with every study and shown in its report."""

from __future__ import annotations

import os
import platform
from importlib import metadata

__all__ = ["LIBRARIES", "environment"]

#: distributions whose versions decide a study's numbers
LIBRARIES = (
    "secure-fedrec", "numpy", "scipy", "torch", "opacus", "dp-accounting", "cryptography",
    "phe", "gmpy2", "pandas", "matplotlib", "tqdm",
)


def environment() -> dict[str, dict[str, str]]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    machine = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": str(os.cpu_count()),
    }
    return {"libraries": versions, "machine": machine}
