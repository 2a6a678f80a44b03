"""Key agreement, key derivation, AEAD and signatures for the masking protocol.

Thin wrappers over ``cryptography``'s hazmat primitives, so that the protocol
code reads as the paper does and every derivation carries its domain label:

* X25519 for both key pairs of a client (``c`` for share encryption, ``s``
  for pairwise masks); 32-byte raw keys on the wire.
* HKDF-SHA256 with the session id as salt and an ``info`` string that names
  the purpose and binds (round, sender, receiver) — so a key derived for one
  purpose, session or pair is useless for any other.
* ChaCha20-Poly1305 for the shares relayed by the server: each derived key
  encrypts exactly one message under the zero nonce (:func:`seal`), or — a
  key shared by the two ends of a pair (:func:`seal_for_pair`) — exactly two,
  one per direction, under two distinct nonces; the associated data repeats
  the binding for defence in depth.
* Ed25519 for the active-adversary mode, with a pluggable :class:`TrustStore`
  telling which verification key belongs to which client.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DecryptionError, InvalidSignature, MalformedMessage
from .wire import check_round_index

__all__ = [
    "AEAD_OVERHEAD",
    "KEY_SIZE",
    "SIGNATURE_SIZE",
    "KeyPair",
    "StaticTrustStore",
    "TrustStore",
    "agree",
    "check_public_key",
    "derive_key",
    "generate_key_pair",
    "load_private",
    "open_from_pair",
    "open_sealed",
    "public_from_private",
    "seal",
    "seal_for_pair",
    "sign",
    "verify",
]

KEY_SIZE = 32
SIGNATURE_SIZE = 64
AEAD_OVERHEAD = 16
_ZERO_NONCE = bytes(12)
#: Nonce of each direction of a pair key: the lower id's message, then the higher id's.
_DIRECTION_NONCES = (bytes(12), bytes(11) + b"\x01")
_SHA256 = hashes.SHA256()  # stateless algorithm descriptor, shared by every derivation
_RAW = serialization.Encoding.Raw


class KeyPair:
    """An X25519 key pair with its raw 32-byte encodings."""

    __slots__ = ("_private_bytes", "private", "public_bytes")

    def __init__(self, private: X25519PrivateKey) -> None:
        self.private = private
        self.public_bytes = private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
        self._private_bytes: bytes | None = None

    @property
    def private_bytes(self) -> bytes:
        if self._private_bytes is None:
            self._private_bytes = self.private.private_bytes(
                _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        return self._private_bytes

    def __repr__(self) -> str:  # never print private material
        return f"KeyPair(public={self.public_bytes.hex()[:16]}...)"


def generate_key_pair() -> KeyPair:
    return KeyPair(X25519PrivateKey.generate())


def public_from_private(private_bytes: bytes) -> bytes:
    """The raw public key of a raw X25519 private key (used to check a reconstruction)."""
    return load_private(private_bytes)[1]


def load_private(private_bytes: bytes) -> tuple[X25519PrivateKey, bytes]:
    """A raw X25519 private key as a key object, with its raw public key.

    Loading computes the public key (one scalar multiplication): a party that
    agrees with many peers under one reconstructed key loads it once.
    """
    key = X25519PrivateKey.from_private_bytes(private_bytes)
    return key, key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


_FIELD_PRIME = 2**255 - 19
#: u-coordinates of every point of small order on Curve25519 and its twist, reduced mod p:
#: 0 (order 2), 1 and p - 1 (order 4 on the curve or the twist), and the two of order 8.
_SMALL_ORDER_U = frozenset({
    0, 1, _FIELD_PRIME - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
})


def check_public_key(public: bytes) -> None:
    """Raise :class:`MalformedMessage` unless ``public`` is a usable X25519 public key.

    A point of small order makes every exchange with it produce the all-zero
    secret (RFC 7748 §6.1): ``cryptography`` refuses that inside ``exchange``,
    but only once a neighbour already tries to agree with it, and a key that
    fails every neighbour's agreement would abort the whole session. So the
    server refuses such keys at advertise time, the way libsodium does
    (``has_small_order``): decode the u-coordinate as RFC 7748 §5 does
    (little-endian, top bit ignored), reduce it modulo p (this catches the
    non-canonical encodings p and p + 1), and compare it with the five
    small-order u-coordinates. Every u in GF(p) lies on the curve or its
    twist, whose small-order subgroups (orders 8 and 4) have exactly these
    u-coordinates; ``tests/adversarial/test_masking_hardening.py`` checks the
    list against ``cryptography``'s own refusal. One comparison instead of
    one scalar multiplication per key.
    """
    if not (isinstance(public, (bytes, bytearray)) and len(public) == KEY_SIZE):
        raise MalformedMessage(f"an X25519 public key is {KEY_SIZE} bytes")
    u = int.from_bytes(public, "little") & ((1 << 255) - 1)
    if u % _FIELD_PRIME in _SMALL_ORDER_U:
        raise MalformedMessage("invalid X25519 public key (small-order point)")


def agree(private: X25519PrivateKey | bytes, peer_public: bytes) -> bytes:
    """Raw X25519 shared secret; a malformed or low-order peer key is :class:`MalformedMessage`."""
    if isinstance(private, (bytes, bytearray)):
        private = X25519PrivateKey.from_private_bytes(bytes(private))
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # wrong length, or an all-zero (low-order) result
        raise MalformedMessage("invalid X25519 public key") from exc


def derive_key(shared_secret: bytes, *, salt: bytes, label: bytes, context: bytes) -> bytes:
    """HKDF-SHA256 → 32 bytes; ``info = label || 0x00 || context``."""
    return HKDF(
        algorithm=_SHA256, length=32, salt=salt, info=label + b"\x00" + context
    ).derive(shared_secret)


_BINDING = struct.Struct(">III")


def binding(round_index: int, sender: int, receiver: int) -> bytes:
    """``round || sender || receiver`` as three u32; an out-of-range round is :class:`ValueError`."""
    if type(round_index) is not int or not 0 <= round_index <= 0xFFFFFFFF:
        check_round_index(round_index)  # raises, naming the range
    return _BINDING.pack(round_index, sender, receiver)


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """Encrypt under a single-use key (zero nonce); output is ``len(plaintext) + 16`` bytes."""
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, associated_data)


def open_sealed(key: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, associated_data)
    except InvalidTag:
        raise DecryptionError("ciphertext failed authentication") from None


def _direction_nonce(sender: int, receiver: int) -> bytes:
    if sender == receiver:
        raise ValueError("a pair key binds two distinct ids")
    return _DIRECTION_NONCES[sender > receiver]


def seal_for_pair(key: bytes, sender: int, receiver: int, plaintext: bytes,
                  associated_data: bytes) -> bytes:
    """Encrypt the one message of ``sender -> receiver`` under the key of their pair.

    A pair key (HKDF over the pair's X25519 secret, bound to both ids) encrypts
    exactly two messages, one per direction: the lower id's under nonce 0, the
    higher id's under nonce 1, so it never sees a nonce twice. One derivation then
    serves a client's sealing to a neighbour and its opening of what that neighbour
    sent back (a directional key per message cost one more HKDF per neighbour). The
    caller seals once per direction (the masking client seals its shares once per
    holder); the associated data names sender and receiver, so a message reflected
    back to its sender fails authentication.
    """
    return ChaCha20Poly1305(key).encrypt(_direction_nonce(sender, receiver), plaintext,
                                         associated_data)


def open_from_pair(key: bytes, sender: int, receiver: int, ciphertext: bytes,
                   associated_data: bytes) -> bytes:
    """Decrypt what :func:`seal_for_pair` sealed; any failure is :class:`DecryptionError`."""
    try:
        return ChaCha20Poly1305(key).decrypt(_direction_nonce(sender, receiver), ciphertext,
                                             associated_data)
    except InvalidTag:
        raise DecryptionError("ciphertext failed authentication") from None


def sign(signing_key: Ed25519PrivateKey, message: bytes) -> bytes:
    return signing_key.sign(message)


def verify(verification_key: bytes | Ed25519PublicKey, signature: bytes, message: bytes) -> None:
    """Raise :class:`InvalidSignature` unless ``signature`` is valid for ``message``."""
    try:
        if isinstance(verification_key, (bytes, bytearray)):
            verification_key = Ed25519PublicKey.from_public_bytes(bytes(verification_key))
        verification_key.verify(signature, message)
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature("signature does not verify") from None


@runtime_checkable
class TrustStore(Protocol):
    """Answers "which Ed25519 key speaks for client ``client_id``?".

    In deployment this is a PKI, a device-attestation service or keys pinned
    at enrolment; the protocol only needs the lookup. ``None`` means unknown,
    and an unknown client is treated as an invalid signature.
    """

    def verification_key(self, client_id: int) -> bytes | None: ...


class StaticTrustStore:
    """A fixed mapping client id → raw 32-byte Ed25519 public key."""

    def __init__(self, keys: Mapping[int, bytes | Ed25519PublicKey]) -> None:
        self._keys: dict[int, bytes] = {}
        for cid, key in keys.items():
            if isinstance(key, Ed25519PublicKey):
                key = key.public_bytes(_RAW, serialization.PublicFormat.Raw)
            if len(key) != KEY_SIZE:
                raise ValueError("an Ed25519 verification key is 32 bytes")
            self._keys[int(cid)] = bytes(key)

    def verification_key(self, client_id: int) -> bytes | None:
        return self._keys.get(client_id)

    @classmethod
    def generate(
        cls, client_ids: list[int]
    ) -> tuple[StaticTrustStore, dict[int, Ed25519PrivateKey]]:
        """Fresh signing keys for ``client_ids`` and the store trusting them (simulations)."""
        signing = {cid: Ed25519PrivateKey.generate() for cid in client_ids}
        return cls({cid: key.public_key() for cid, key in signing.items()}), signing
