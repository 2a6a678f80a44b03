"""Secure aggregation protocols, transport-agnostic (sans-IO).

Depends only on numpy and cryptography (and, for :mod:`protocols.paillier`
only, on phe/gmpy2, imported lazily). Import it into any federated-learning
code: no torch, no sockets, no threads.
"""

from .api import DropoutSchedule, SecureSum, SecureSumResult
from .encoding import FixedPointEncoder
from .errors import (
    BelowThreshold,
    EncodingError,
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
)
from .masking import SecAgg, SecAggPlus
from .plaintext import PlaintextSum

__all__ = [
    "BelowThreshold",
    "DropoutSchedule",
    "EncodingError",
    "FixedPointEncoder",
    "LocalProtocolError",
    "MalformedMessage",
    "PlaintextSum",
    "ProtocolError",
    "RemoteProtocolError",
    "SecAgg",
    "SecAggPlus",
    "SecureSum",
    "SecureSumResult",
]
