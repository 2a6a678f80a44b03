"""What a run writes: files written atomically and privately, and the environment it ran in."""

from __future__ import annotations

import json
import os
import platform
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

__all__ = ["PRIVATE_MODE", "environment", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]

#: files that may hold private data (checkpoints with every client's rows, key shares)
PRIVATE_MODE = 0o600

_CREATE_FRESH = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def write_bytes_atomic(path: str | Path, data: bytes, *, mode: int = PRIVATE_MODE) -> None:
    """Write ``data`` to ``path`` so that a reader or a crash never sees half a file, and
    nobody but the owner ever sees a private one.

    The bytes go to a fresh temporary name beside ``path`` (random, created with
    ``O_EXCL | O_NOFOLLOW``: an existing file or a planted symlink there is an error,
    never followed), created with ``mode`` from the first byte (no ``O_TRUNC`` of an old
    file that keeps its old mode), fsynced, renamed over ``path`` (a rename replaces a
    symlink at ``path`` itself, it never writes through it), and the folder is fsynced so
    the rename survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, _CREATE_FRESH, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have cleared bits of a public mode (0644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a platform that cannot open folders: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; nothing more can be done
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str, *, mode: int = PRIVATE_MODE) -> None:
    """``text`` as UTF-8, written atomically (:func:`write_bytes_atomic`); 0600 unless
    ``mode`` says otherwise."""
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


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
