"""Reusable per-thread work arrays for the hot loops (encoding, masking, unmasking).

Why: a vector of 10^5 words is 0.4-0.8 MB, above the allocator's threshold for
returning memory to the operating system, so a loop that allocates fresh
temporaries of that size pays a page fault per 4 KiB page on every call — on
this machine that tripled the cost of encoding a vector (0.36 ms with reused
arrays, 1.0 ms without; ``benchmarks/secagg_profile.py``). The hot loops
therefore borrow their temporaries from here.

Rules for callers: a scratch array is valid until the next call that asks for
the same name on the same thread; never return one to a caller, never keep
one across calls. Results handed out are always fresh arrays. Scratch contents
are not wiped (they hold intermediate values such as rounding randomness);
like every temporary in a Python process, they live until overwritten.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["scratch"]


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.by_name: dict[str, np.ndarray] = {}


_buffers = _Buffers()


def scratch(name: str, size: int, dtype: np.dtype | type) -> np.ndarray:
    """A C-contiguous array of exactly ``size`` items of ``dtype``, reused per ``name``."""
    dt = np.dtype(dtype)
    nbytes = size * dt.itemsize
    buf = _buffers.by_name.get(name)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(max(nbytes, 64), dtype=np.uint8)
        _buffers.by_name[name] = buf
    return buf[:nbytes].view(dt)
