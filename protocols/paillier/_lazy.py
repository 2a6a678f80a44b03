"""Lazy imports of gmpy2 and phe, so that ``import protocols`` never loads them."""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def gmpy2() -> ModuleType:
    try:
        import gmpy2 as module
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "protocols.paillier needs gmpy2: pip install 'secure-fedrec[paillier]'"
        ) from exc
    return module


@functools.cache
def phe() -> ModuleType:
    try:
        from phe import paillier as module
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "protocols.paillier needs phe: pip install 'secure-fedrec[paillier]'"
        ) from exc
    return module
