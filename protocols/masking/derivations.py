"""Every key, seed, commitment and signed string of the masking protocol.

Client and server must derive these identically, so they live in one module.
Each carries a distinct label and is bound to the session id (HKDF salt) and
to (round, sender, receiver), so nothing derived for one purpose, session,
round or pair can be used for another.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from ..errors import InvalidShare
from ..keys import agree, binding, derive_key, open_from_pair, seal_for_pair
from ..shamir import decode_share, encode_share
from ..wire import SERVER_ID

# v2: one key per pair (two messages, one per direction) replaced v1's directional
# single-use keys; the new label keeps the two derivations apart.
_LABEL_SHARE_KEY = b"sfr-masking v2 pair-share-encryption"
_LABEL_SHARE_AD = b"sfr-masking v1 share"
_LABEL_PAIRWISE = b"sfr-masking v1 pairwise-mask"
_LABEL_COMMIT = b"sfr-masking v1 seed-commitment\x00"
_LABEL_ADVERTISE = b"sfr-masking v1 advertise\x00"
_LABEL_CONSISTENCY = b"sfr-masking v1 consistency\x00"


def share_key(c_shared: bytes, session_id: bytes, round_index: int, a: int, b: int) -> bytes:
    """The AEAD key of the shares ``a`` and ``b`` give each other (symmetric in ``a``, ``b``).

    One key per pair, session and round, HKDF-bound to (round, min, max); it encrypts
    exactly two messages, the lower id's shares under nonce 0 and the higher id's under
    nonce 1 (:func:`~protocols.keys.seal_for_pair`).
    """
    low, high = min(a, b), max(a, b)
    return derive_key(c_shared, salt=session_id, label=_LABEL_SHARE_KEY,
                      context=binding(round_index, low, high))


def _share_ad(session_id: bytes, round_index: int, sender: int, receiver: int) -> bytes:
    return _LABEL_SHARE_AD + session_id + binding(round_index, sender, receiver)


def seal_shares(key: bytes, session_id: bytes, round_index: int, sender: int,
                receiver: int, seed_share: int, key_share: int) -> bytes:
    plaintext = (struct.pack(">II", sender, receiver) + encode_share(seed_share)
                 + encode_share(key_share))
    return seal_for_pair(key, sender, receiver, plaintext,
                         _share_ad(session_id, round_index, sender, receiver))


def open_shares(key: bytes, ciphertext: bytes, session_id: bytes, round_index: int,
                sender: int, receiver: int) -> tuple[int, int]:
    """Decrypt and check the inner binding; any failure is a generic error."""
    plaintext = open_from_pair(key, sender, receiver, ciphertext,
                               _share_ad(session_id, round_index, sender, receiver))
    owner, holder = struct.unpack_from(">II", plaintext)
    if (owner, holder) != (sender, receiver):
        raise InvalidShare("share is bound to another pair")
    return decode_share(plaintext[8:41]), decode_share(plaintext[41:74])


def pairwise_seed(s_private: bytes | object, peer_s_public: bytes, session_id: bytes,
                  round_index: int, a: int, b: int) -> bytes:
    """The 32-byte seed of the pairwise mask between clients ``a`` and ``b`` (symmetric)."""
    shared = agree(s_private, peer_s_public)  # type: ignore[arg-type]
    return pairwise_seed_from_shared(shared, session_id, round_index, a, b)


def pairwise_seed_from_shared(s_shared: bytes, session_id: bytes, round_index: int, a: int,
                              b: int) -> bytes:
    """:func:`pairwise_seed` from the X25519 secret the client agreed on earlier."""
    low, high = min(a, b), max(a, b)
    return derive_key(s_shared, salt=session_id, label=_LABEL_PAIRWISE,
                      context=binding(round_index, low, high))


def seed_commitment(seed: bytes, session_id: bytes, round_index: int, owner: int) -> bytes:
    """Hash commitment to a self-mask seed, so the server can check a reconstruction."""
    return hashlib.sha256(
        _LABEL_COMMIT + session_id + binding(round_index, owner, SERVER_ID) + seed
    ).digest()


def advertise_transcript(config_digest: bytes, client_id: int, c_public: bytes,
                         s_public: bytes) -> bytes:
    return _LABEL_ADVERTISE + config_digest + struct.pack(">I", client_id) + c_public + s_public


def consistency_transcript(config_digest: bytes, survivors: tuple[int, ...]) -> bytes:
    ids = np.asarray(survivors, dtype=">u4").tobytes()
    return _LABEL_CONSISTENCY + config_digest + struct.pack(">I", len(survivors)) + ids
