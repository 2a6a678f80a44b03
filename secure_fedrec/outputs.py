"""What a run writes: JSON files written atomically, and the environment it ran in."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

__all__ = ["environment", "write_json_atomic", "write_text_atomic"]


def write_text_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync, rename over ``path``: readers
    never see half a file. The file is created 0600 (``mkstemp``) unless ``mode`` says otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """``payload`` as indented JSON, written atomically (:func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def environment() -> dict[str, str]:
    import torch

    return {
        "secure_fedrec": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": str(os.cpu_count()),
    }
