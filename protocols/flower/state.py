"""A node's protocol party, kept between Flower messages: pickled in, and only its own classes out.

Flower 1.42 runs each message in a fresh ClientApp process; what a node must keep
(its party's keys, its pending input) lives in ``Context.state``, which the
SuperNode holds in its own memory and never sends anywhere (the SecAgg+ mod of
Flower keeps its secret keys there too). The bytes are therefore the node's own.
Still, the loader is not a general unpickler: :class:`_PartyUnpickler` resolves
only the classes a party is made of (this package's, numpy's array
reconstruction, and the X25519 key's raw-bytes constructor) and refuses any
other global, so bytes that somehow came from elsewhere cannot name a callable
to run. The X25519 private keys (a Rust type without pickle support) are written
as their raw 32 bytes; the immutable session announcement is rebuilt through its
validating constructor.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..masking.params import SessionConfig

__all__ = ["dump_party", "load_party"]

_RAW = serialization.Encoding.Raw

#: (module, name) of every global a party's pickle may name, outside this package.
_ALLOWED = {
    ("builtins", "getattr"),  # how pickle names X25519PrivateKey.from_private_bytes
    ("cryptography.hazmat.primitives.asymmetric.x25519", "X25519PrivateKey"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
}


def _reduce_x25519(key: X25519PrivateKey):
    raw = key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return X25519PrivateKey.from_private_bytes, (raw,)


def _reduce_session_config(config: SessionConfig):
    return SessionConfig, (config.params, config.ids, config.graph_seed)


class _PartyPickler(pickle.Pickler):
    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[type(X25519PrivateKey.generate())] = _reduce_x25519
    dispatch_table[SessionConfig] = _reduce_session_config


class _PartyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            if module == "builtins" and name == "getattr":
                return _safe_getattr
            return super().find_class(module, name)
        # Only a class defined in that very module of this package: a dotted name walks
        # attributes (``protocols.flower.state`` + ``pickle.loads`` is the real pickle.loads,
        # reached through this module's own import), and a function could do anything.
        if module.split(".")[0] == "protocols" and "." not in name:
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a protocol party's state")


def _safe_getattr(obj: object, name: str) -> Any:
    # Only the raw-bytes constructor of an X25519 key may be looked up on a class.
    if obj is X25519PrivateKey and name == "from_private_bytes":
        return X25519PrivateKey.from_private_bytes
    raise pickle.UnpicklingError(f"getattr({obj!r}, {name!r}) is not part of a protocol party's state")


def dump_party(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    _PartyPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return buffer.getvalue()


def load_party(blob: bytes) -> dict[str, Any]:
    if not blob:
        return {}
    loaded = _PartyUnpickler(io.BytesIO(blob)).load()
    if not isinstance(loaded, dict):
        raise pickle.UnpicklingError("a node's protocol state is a dict")
    return loaded
