"""The sans-IO parties of the Paillier protocol, under their original import path.

The parties live one per module, like :mod:`protocols.masking`:
:mod:`.client` (the uploader), :mod:`.aggregator`, :mod:`.key_holder`
(threshold key holders and the two-party decryptor), with their legal moves
in :mod:`.states` and the frame helpers in :mod:`.messages`. This module
re-exports them so that ``from protocols.paillier.session import ...`` keeps
working.

Flow (threshold mode; the two-party mode has one decryptor instead of the key
holders and it answers with the plaintext)::

    aggregator ── RoundAnnouncement ──▶ client            (key, bits, layout, min/max clients)
    client ───── EncryptedUpdate ────▶ aggregator        (ciphertexts + Ed25519 signature)
    aggregator multiplies the accepted ciphertexts
    aggregator ── DecryptionRequest ─▶ key holder i      (aggregate + contributor list,
                                                           digests, signatures[, contributions])
    key holder ── PartialDecryption ─▶ aggregator        (c^(2Δs_i) + batched proof)
    aggregator verifies ≥ t partials, combines, unpacks  → sum mod 2^bits
"""

from __future__ import annotations

from .aggregator import AggregationResult, PaillierAggregator
from .client import PaillierClient
from .key_holder import ThresholdKeyHolder, TwoPartyDecryptor
from .messages import ClientRegistry
from .messages import encode_message as _frame  # noqa: F401  (the name tests and tools import)
from .states import AggregatorState, ClientState

__all__ = [
    "AggregationResult",
    "AggregatorState",
    "ClientRegistry",
    "ClientState",
    "PaillierAggregator",
    "PaillierClient",
    "ThresholdKeyHolder",
    "TwoPartyDecryptor",
]
