"""A file of plain data and arrays that cannot run code when it is read.

Checkpoints and the trained model are nested dicts of numbers, strings, lists and
arrays (numpy or torch). ``torch.save`` would pickle them, and reading a pickle runs
whatever its author put in it (``torch.load(weights_only=False)``); so they are stored
as a zip of

* ``state.json`` — the tree, every array replaced by a reference ``{"__array__": "a3"}``
  (``"__tensor__"`` for a torch tensor, rebuilt as one), and
* ``a3.npy`` … — each array in numpy's own ``.npy`` format, read with
  ``allow_pickle=False`` (an object array is refused).

Nothing is allocated before it is checked: every member must be stored (not
compressed, so no zip bomb), the declared sizes must fit in the file, and each array's
header (dtype, shape) must describe exactly the bytes its member holds.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["StateFileError", "dump_state", "load_state"]

_STATE_MEMBER = "state.json"
_MARKERS = ("__array__", "__tensor__")
#: zip member flags a plain stored member may carry: a trailing data descriptor, UTF-8 names
_PLAIN_FLAGS = 0x08 | 0x800


class StateFileError(ValueError):
    """A state file that is not one this module wrote (truncated, foreign, hostile)."""


# -- writing -------------------------------------------------------------------------------------
def dump_state(state: Any) -> bytes:
    """The bytes of a state file holding ``state`` (dicts with string keys, lists, tuples (read
    back as lists), numbers, strings, ``None``, numpy arrays and scalars, torch tensors)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _split(state, arrays)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(_STATE_MEMBER, json.dumps(tree, allow_nan=True))
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                npy_format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def _split(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        name = f"a{len(arrays)}"
        arrays[name] = value.detach().cpu().numpy().copy()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot be stored without pickle")
        name = f"a{len(arrays)}"
        arrays[name] = np.ascontiguousarray(value)
        return {"__array__": name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if any(not isinstance(k, str) for k in value):
            raise TypeError(f"state dict keys must be strings, got {[k for k in value if not isinstance(k, str)][:3]}")
        if any(k in _MARKERS for k in value):
            raise TypeError(f"a state dict may not use the reserved keys {_MARKERS}")
        return {k: _split(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, arrays) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a state file")


# -- reading -------------------------------------------------------------------------------------
def load_state(path: str | Path) -> Any:
    """The state :func:`dump_state` wrote to ``path``; :class:`StateFileError` for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename: info for info in archive.infolist()}
            _check_members(members, len(data))
            tree = json.loads(archive.read(_STATE_MEMBER).decode("utf-8"))
            arrays = {name[:-4]: _read_array(archive, info) for name, info in members.items()
                      if name != _STATE_MEMBER}
            return _join(tree, arrays)
    except StateFileError:
        raise
    except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile, UnicodeDecodeError, ValueError, KeyError,
            EOFError, RecursionError, TypeError, OverflowError, MemoryError, NotImplementedError,
            RuntimeError) as exc:
        raise StateFileError(f"{path} is not a readable state file: {type(exc).__name__}: {exc}") from None


def _check_members(members: dict[str, zipfile.ZipInfo], file_size: int) -> None:
    if _STATE_MEMBER not in members:
        raise StateFileError(f"no {_STATE_MEMBER} member")
    for name, info in members.items():
        if info.flag_bits & ~_PLAIN_FLAGS:  # encrypted, patched, ...: nothing this module writes
            raise StateFileError(f"member {name!r} has zip flags {info.flag_bits:#x}")
        if info.compress_type != zipfile.ZIP_STORED:
            raise StateFileError(f"member {name!r} is compressed; this format stores members as they are")
        if info.file_size > file_size or info.compress_size != info.file_size:
            raise StateFileError(f"member {name!r} declares {info.file_size} bytes in a {file_size}-byte file")
        if name != _STATE_MEMBER and not (name.endswith(".npy") and name[:-4].isidentifier()):
            raise StateFileError(f"unexpected member {name!r}")


def _read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(info) as member:
        version = npy_format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = npy_format.read_array_header_2_0(member)
        else:
            raise StateFileError(f"member {info.filename!r}: .npy version {version} is not one this module writes")
        if dtype.hasobject:
            raise StateFileError(f"member {info.filename!r} is an object array (needs pickle): refused")
        header = member.tell()
        expected = dtype.itemsize * math.prod(shape)
        if expected != info.file_size - header:
            raise StateFileError(f"member {info.filename!r}: its header describes {expected} bytes, "
                                 f"it holds {info.file_size - header}")
        raw = member.read(expected)
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return array.copy()  # writable, owns its memory


def _join(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(tree, dict):
        if len(tree) == 1 and next(iter(tree)) in _MARKERS:
            (kind, name), = tree.items()
            if not isinstance(name, str) or name not in arrays:
                raise StateFileError(f"a reference to a missing array {name!r}")
            if kind == "__array__":
                return arrays[name]
            import torch

            return torch.from_numpy(arrays[name])
        return {k: _join(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays) for v in tree]
    return tree
