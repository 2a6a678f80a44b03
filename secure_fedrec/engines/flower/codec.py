"""What travels in a Flower message: one ConfigRecord of scalars, lists and raw bytes.

Our payloads are plain dicts of ``int | float | str | bytes | bool`` and lists
of those — exactly what a Flower ``ConfigRecord`` carries — so the protocol
frames of :mod:`protocols.masking` ride in Flower messages byte for byte.
Numeric vectors travel as little-endian bytes with a fixed dtype per key;
the receiver rebuilds them with :func:`numpy.frombuffer`, never with pickle.

The one pickle here is :func:`dump_node_state`/:func:`load_node_state`: a
node's *own* state (its users' private model rows and their live protocol
parties), kept in Flower's ``Context.state`` between messages. It never
crosses the network — the SuperNode keeps the Context and hands it only to the
ClientApp process it started — so only bytes the node itself produced are
unpickled, and whoever could change them already runs code on the node. Still,
reading it cannot run code either (defence in depth, and so that a mistake that
ever let a peer's bytes reach it would not be an execution): :class:`_StateUnpickler`
resolves no global but the classes of :mod:`protocols`, the key rebuilders below,
numpy's array rebuilder and the node's own party wrapper; anything else (``os.system``,
``builtins.getattr``, ``eval``) is a :class:`pickle.UnpicklingError`.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocols.masking.params import SessionConfig

__all__ = [
    "EVALUATION_PREFIX",
    "PAYLOAD_KEY",
    "Payload",
    "dump_node_state",
    "f64_array",
    "f64_bytes",
    "i64_array",
    "i64_bytes",
    "load_node_state",
    "model_array",
    "model_bytes",
    "payload_size",
]

#: The name of the ConfigRecord that holds our payload in every message.
PAYLOAD_KEY = "sfr"
#: A node's evaluation inside its ``train`` reply: the keys of ``node.handle_evaluate``'s reply,
#: prefixed.
EVALUATION_PREFIX = "eval."

Payload = dict[str, Any]


def f64_bytes(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f8").tobytes()


def f64_array(data: bytes) -> np.ndarray:
    if len(data) % 8:
        raise ValueError("a float64 vector must be a whole number of 8-byte words")
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


def model_bytes(params: np.ndarray) -> bytes:
    """The shared model as it travels to the nodes: little-endian float32.

    A node's model holds float32 tensors (``ModelLayout.unflatten``), so the server's
    float64 parameters reach local training cast to float32 whatever the wire carries:
    sending float32 halves the download and changes no client's computation.
    """
    return np.ascontiguousarray(params, dtype="<f4").tobytes()


def model_array(data: bytes) -> np.ndarray:
    if len(data) % 4:
        raise ValueError("a float32 model must be a whole number of 4-byte words")
    return np.frombuffer(data, dtype="<f4").astype(np.float64)


def i64_bytes(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<i8").tobytes()


def i64_array(data: bytes) -> np.ndarray:
    if len(data) % 8:
        raise ValueError("an int64 vector must be a whole number of 8-byte words")
    return np.frombuffer(data, dtype="<i8").astype(np.int64)


def payload_size(payload: Payload) -> int:
    """Bytes of the payload's values (bytes and strings by length, numbers as 8 bytes).

    A lower bound on the serialized Flower message; the Flower transport also
    reports the serialized message sizes it measured.
    """
    total = 0
    for value in payload.values():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, (bytes, str)):
                total += len(item)
            else:
                total += 8
    return total


# -- node-local state ----------------------------------------------------------------------
_RAW = serialization.Encoding.Raw
_RAW_PRIVATE = serialization.PrivateFormat.Raw
_NO_ENCRYPTION = serialization.NoEncryption()


def _x25519_private(raw: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(raw)


def _ed25519_private(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def _ed25519_public(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def _reduce_x25519(key: X25519PrivateKey):
    return _x25519_private, (key.private_bytes(_RAW, _RAW_PRIVATE, _NO_ENCRYPTION),)


def _reduce_ed25519(key: Ed25519PrivateKey):
    return _ed25519_private, (key.private_bytes(_RAW, _RAW_PRIVATE, _NO_ENCRYPTION),)


def _reduce_ed25519_public(key: Ed25519PublicKey):
    return _ed25519_public, (key.public_bytes(_RAW, serialization.PublicFormat.Raw),)


def _reduce_session_config(config: SessionConfig):
    # SessionConfig is immutable (its __setattr__ refuses), so pickle's default slot
    # restore would fail: rebuild it through its validating constructor instead.
    return SessionConfig, (config.params, config.ids, config.graph_seed)


class _StatePickler(pickle.Pickler):
    """Pickles the protocol parties' key objects (Rust types with no pickle support)
    by their raw bytes, through this module's rebuilders (a classmethod would be pickled
    as ``getattr``, which the reader refuses), and immutable session announcements through
    their constructor; scoped to this pickler, nothing global is registered."""

    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[type(X25519PrivateKey.generate())] = _reduce_x25519
    dispatch_table[type(Ed25519PrivateKey.generate())] = _reduce_ed25519
    dispatch_table[type(Ed25519PrivateKey.generate().public_key())] = _reduce_ed25519_public
    dispatch_table[SessionConfig] = _reduce_session_config


#: the only globals a node state may name besides the classes of ``protocols``
_ALLOWED_GLOBALS = frozenset({
    (__name__, "_x25519_private"), (__name__, "_ed25519_private"), (__name__, "_ed25519_public"),
    ("numpy", "dtype"), ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("secure_fedrec.engines.flower.paillier", "PaillierUploader"),
})


class _StateUnpickler(pickle.Unpickler):
    """Resolves only the allowed globals (the "restricting globals" recipe of the pickle docs).

    A class of :mod:`protocols` is allowed (the live parties, their messages, params and
    states): a pickle can then only build protocol objects, whose constructors compute and
    never touch files, processes or the network. Functions, modules and every other
    package are refused.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if (module == "protocols" or module.startswith("protocols.")) and "." not in name:
            found = super().find_class(module, name)
            if isinstance(found, type) and found.__module__ == module:
                return found
        raise pickle.UnpicklingError(f"the node state names {module}.{name}, which it may not: refused")


def dump_node_state(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    _StatePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return buffer.getvalue()


def load_node_state(blob: bytes) -> dict[str, Any]:
    if not blob:
        return {}
    state = _StateUnpickler(io.BytesIO(blob)).load()
    if not isinstance(state, dict):
        raise pickle.UnpicklingError("a node state is a dict")
    return state
