"""Error types of the secure-aggregation protocols.

The split follows h11: a :class:`LocalProtocolError` means *this* party was
asked to do something the protocol forbids (caller misuse, or an illegal state
transition); a :class:`RemoteProtocolError` means a peer sent something wrong.
Any protocol error moves the party that raised it to its terminal ``ABORTED``
state; a party never continues half-alive.

Cryptographic failures (:class:`InvalidShare`, :class:`DecryptionError`) say
nothing about *which* check failed, like ``cryptography.fernet.InvalidToken``:
the message would only help an attacker.

``ValueError``/``TypeError`` are reserved for programming errors of the caller
(wrong argument types, impossible parameters).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error a protocol party raises on purpose."""


class LocalProtocolError(ProtocolError):
    """This party was asked to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """A peer sent a message that violates the protocol."""


class MalformedMessage(RemoteProtocolError):
    """Bytes that do not decode to a valid message (truncated, oversized, bad field)."""


class SessionMismatch(RemoteProtocolError):
    """A message bound to another session, round, sender or receiver."""


class ReplayedMessage(RemoteProtocolError):
    """A message that was already accepted once in this session."""


class InvalidShare(RemoteProtocolError):
    """A secret share that fails authentication or reconstruction."""


class DecryptionError(RemoteProtocolError):
    """A ciphertext that fails authentication or decryption."""


class InvalidSignature(RemoteProtocolError):
    """A signature that does not verify (active-adversary mode)."""


class ConsistencyError(RemoteProtocolError):
    """Parties disagree on the survivor set (active-adversary mode)."""


class BelowThreshold(ProtocolError):
    """Fewer than the threshold of parties survived; no partial result is released."""

    def __init__(self, survivors: int, threshold: int, stage: str) -> None:
        super().__init__(
            f"only {survivors} parties survived {stage}, fewer than the threshold {threshold}; "
            "the protocol aborted without releasing any partial sum"
        )
        self.survivors = survivors
        self.threshold = threshold
        self.stage = stage


class EncodingError(ValueError):
    """A value or parameter the fixed-point encoder cannot represent safely."""
