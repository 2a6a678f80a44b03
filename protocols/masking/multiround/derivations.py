"""Keys, share ciphertexts and sealed seeds of the multi-round masking session.

Everything is bound to the session id (HKDF salt, AEAD associated data) and
to the round it belongs to, with a label per purpose, so that nothing made
for one round, owner, holder or purpose opens as another:

* ``seed share`` — a holder's Shamir share of an owner's self-mask seed b_i^r,
  sealed under HKDF(X25519(c_i, c_h), "seed-share", r, i → h);
* ``recovery share`` — a holder's share of the owner's recovery key E_i^q for
  round q, sealed under HKDF(X25519(c_i, c_h), "recovery-share", q, i → h);
* ``sealed seeds`` — the owner's round-q pairwise seeds with each of its
  keyed neighbours, ChaCha20-Poly1305 under E_i^q (fresh from :mod:`secrets`,
  used for this one message, hence a zero nonce). The server opens it only
  after reconstructing E_i^q, which happens only when i vanished in round q.

The pairwise seeds themselves are those of the single-round protocol,
``HKDF(X25519(s_i, s_j), salt = session id, info = pairwise label ‖ r ‖ min ‖ max)``:
one X25519 agreement per pair for the whole session, one HKDF per pair and round.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from ...errors import DecryptionError, InvalidShare
from ...keys import binding, derive_key, open_sealed, seal
from ...shamir import SHARE_SIZE, decode_share, encode_share
from ...wire import SERVER_ID

__all__ = [
    "RECOVERY",
    "SEALED_SEED_SIZE",
    "SEED",
    "SHARE_CIPHERTEXT_SIZE",
    "open_seeds",
    "open_share",
    "recovery_share_key",
    "seal_seeds",
    "seal_share",
    "sealed_seeds_size",
    "seed_share_key",
]

_LABEL_SEED_SHARE = b"sfr-masking multiround v1 seed-share"
_LABEL_RECOVERY_SHARE = b"sfr-masking multiround v1 recovery-share"
_LABEL_SHARE_AD = b"sfr-masking multiround v1 share\x00"
_LABEL_SEEDS_AD = b"sfr-masking multiround v1 sealed-seeds\x00"

#: What a share ciphertext holds, bound into its associated data.
SEED = b"seed\x00"
RECOVERY = b"recovery\x00"

SHARE_PLAINTEXT_SIZE = 4 + 4 + SHARE_SIZE
SHARE_CIPHERTEXT_SIZE = SHARE_PLAINTEXT_SIZE + 16
SEALED_SEED_SIZE = 4 + 32  # u32 neighbour id || 32-byte pairwise seed


def sealed_seeds_size(neighbours: int) -> int:
    return 16 + SEALED_SEED_SIZE * neighbours


def seed_share_key(c_shared: bytes, session_id: bytes, round_index: int, owner: int,
                   holder: int) -> bytes:
    return derive_key(c_shared, salt=session_id, label=_LABEL_SEED_SHARE,
                      context=binding(round_index, owner, holder))


def recovery_share_key(c_shared: bytes, session_id: bytes, round_index: int, owner: int,
                       holder: int) -> bytes:
    return derive_key(c_shared, salt=session_id, label=_LABEL_RECOVERY_SHARE,
                      context=binding(round_index, owner, holder))


def _share_ad(purpose: bytes, session_id: bytes, round_index: int, owner: int,
              holder: int) -> bytes:
    return _LABEL_SHARE_AD + purpose + session_id + binding(round_index, owner, holder)


def seal_share(key: bytes, purpose: bytes, session_id: bytes, round_index: int, owner: int,
               holder: int, share: int) -> bytes:
    """One Shamir share for one holder: ``owner ‖ holder ‖ share`` under a single-use key."""
    plaintext = struct.pack(">II", owner, holder) + encode_share(share)
    return seal(key, plaintext, _share_ad(purpose, session_id, round_index, owner, holder))


def open_share(key: bytes, purpose: bytes, ciphertext: bytes, session_id: bytes,
               round_index: int, owner: int, holder: int) -> int:
    """The share inside ``ciphertext``; any failure is a generic error."""
    plaintext = open_sealed(key, ciphertext,
                            _share_ad(purpose, session_id, round_index, owner, holder))
    if len(plaintext) != SHARE_PLAINTEXT_SIZE:
        raise InvalidShare("share plaintext has the wrong size")
    if struct.unpack_from(">II", plaintext) != (owner, holder):
        raise InvalidShare("share is bound to another pair")
    return decode_share(plaintext[8:])


def _seeds_ad(session_id: bytes, round_index: int, owner: int) -> bytes:
    return _LABEL_SEEDS_AD + session_id + binding(round_index, owner, SERVER_ID)


def seal_seeds(recovery_key: bytes, session_id: bytes, round_index: int, owner: int,
               seeds: Mapping[int, bytes]) -> bytes:
    """The owner's round seeds, for the server to open only after the owner vanished."""
    plaintext = b"".join(struct.pack(">I", peer) + seeds[peer] for peer in sorted(seeds))
    return seal(recovery_key, plaintext, _seeds_ad(session_id, round_index, owner))


def open_seeds(recovery_key: bytes, ciphertext: bytes, session_id: bytes, round_index: int,
               owner: int) -> dict[int, bytes]:
    """Inverse of :func:`seal_seeds`; a wrong key (a bad reconstruction) is :class:`InvalidShare`."""
    try:
        plaintext = open_sealed(recovery_key, ciphertext,
                                _seeds_ad(session_id, round_index, owner))
    except DecryptionError:  # the reconstructed key is not the owner's
        raise InvalidShare("a recovery key does not open its sealed seeds") from None
    if len(plaintext) % SEALED_SEED_SIZE:
        raise InvalidShare("sealed seeds have the wrong size")
    out = {}
    for offset in range(0, len(plaintext), SEALED_SEED_SIZE):
        (peer,) = struct.unpack_from(">I", plaintext, offset)
        out[peer] = plaintext[offset + 4:offset + SEALED_SEED_SIZE]
    return out
