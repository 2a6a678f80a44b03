"""Error types specific to the Paillier protocol.

They subclass the shared hierarchy of :mod:`protocols.errors`, so a caller
that catches ``RemoteProtocolError`` or ``LocalProtocolError`` catches these
too.
"""

from __future__ import annotations

from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ForeignKey",
    "InsecureKeySize",
    "InvalidCiphertext",
    "InvalidPartialDecryption",
    "PoolExhausted",
    "SlotOverflow",
    "UnknownParty",
]


class InsecureKeySize(ValueError):
    """A key size below the 2048-bit floor without the explicit ``insecure_for_tests`` flag."""


class InvalidCiphertext(RemoteProtocolError):
    """A ciphertext outside Z*_{n^2}; says nothing about which check failed."""


class ForeignKey(RemoteProtocolError):
    """A message encrypted under, or naming, a key other than this session's."""


class UnknownParty(RemoteProtocolError):
    """A message from a party that is not registered for this session."""


class SlotOverflow(RemoteProtocolError):
    """A packed slot holds more than the summed inputs could produce.

    Either more ciphertexts were summed than the headroom allows, or a client
    encrypted an out-of-range value. The aggregate is withheld.
    """


class InvalidPartialDecryption(RemoteProtocolError):
    """A key holder's partial decryption whose proof of correctness fails."""


class PoolExhausted(LocalProtocolError):
    """The randomizer pool ran out and on-the-fly randomizers were disallowed."""
