"""Paillier keys: size policy, generation through phe, and a documented serialization.

Every key uses ``g = n + 1``, so ``g^m = 1 + m*n (mod n^2)`` costs one
multiplication. phe generates keys of the same form; its private key is the
reference decryptor of the two-party deployment.

Serialized format (UTF-8 JSON, integers as lower-case hex strings without
``0x``)::

    public key   {"format": "secure_fedrec/paillier-public-key", "version": 1,
                  "n": "<hex>"}
    private key  {"format": "secure_fedrec/paillier-private-key", "version": 1,
                  "n": "<hex>", "p": "<hex>", "q": "<hex>"}

The fingerprint of a public key is ``SHA-256("secure_fedrec/paillier/pk/v1" ||
u32 len(n) || n big-endian)``; every protocol message names its key by it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from ._lazy import gmpy2, phe
from .errors import InsecureKeySize

__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_SECURE_KEY_BITS",
    "PaillierPrivateKey",
    "PaillierPublicKey",
    "check_key_size",
    "generate_keypair",
]

DEFAULT_KEY_BITS = 2048
MIN_SECURE_KEY_BITS = 2048  # NIST SP 800-57: 2048-bit factoring moduli give ~112-bit security
_SMALLEST_TEST_KEY_BITS = 256  # below this even the packing layout degenerates
_PUBLIC_FORMAT = "secure_fedrec/paillier-public-key"
_PRIVATE_FORMAT = "secure_fedrec/paillier-private-key"
_FORMAT_VERSION = 1


def check_key_size(bits: int, *, insecure_for_tests: bool = False) -> None:
    """Refuse moduli under 2048 bits unless the caller says, in so many words, it is a test."""
    if not isinstance(bits, int) or bits < _SMALLEST_TEST_KEY_BITS:
        raise ValueError(f"key size must be an integer >= {_SMALLEST_TEST_KEY_BITS}, got {bits!r}")
    if bits < MIN_SECURE_KEY_BITS and not insecure_for_tests:
        raise InsecureKeySize(
            f"{bits}-bit Paillier keys can be factored; use >= {MIN_SECURE_KEY_BITS} bits "
            "(pass insecure_for_tests=True only in tests)"
        )


def _hex(value: int) -> str:
    return format(int(value), "x")


def _unhex(document: dict[str, Any], key: str) -> int:
    value = document.get(key)
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise ValueError(f"field {key!r} must be a non-empty hex string")
    try:
        return int(value, 16)
    except ValueError as exc:
        raise ValueError(f"field {key!r} is not hex") from exc


def _load_document(text: str | bytes, expected_format: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a JSON key document") from exc
    except RecursionError:  # deeply nested arrays (fuzz contract, fuzz/targets.py)
        raise ValueError("not a JSON key document: nested too deeply") from None
    if not isinstance(document, dict) or document.get("format") != expected_format:
        raise ValueError(f"not a {expected_format} document")
    if document.get("version") != _FORMAT_VERSION:
        raise ValueError(f"unsupported key format version {document.get('version')!r}")
    return document


@dataclass(frozen=True)
class PaillierPublicKey:
    """A Paillier public key with ``g = n + 1``."""

    n: int
    insecure_for_tests: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n <= 0 or self.n % 2 == 0:
            raise ValueError("n must be a positive odd integer")
        check_key_size(self.bits, insecure_for_tests=self.insecure_for_tests)

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def nsquare(self) -> int:
        return self.n * self.n

    @property
    def ciphertext_bytes(self) -> int:
        """Every ciphertext travels as exactly this many big-endian bytes."""
        return (self.nsquare.bit_length() + 7) // 8

    @property
    def plaintext_bytes(self) -> int:
        return (self.n.bit_length() + 7) // 8

    @property
    def fingerprint(self) -> bytes:
        raw = self.n.to_bytes(self.plaintext_bytes, "big")
        return hashlib.sha256(
            b"secure_fedrec/paillier/pk/v1" + struct.pack(">I", len(raw)) + raw
        ).digest()

    def to_phe(self) -> Any:
        """The same key as a ``phe.paillier.PaillierPublicKey`` (the reference implementation)."""
        return phe().PaillierPublicKey(self.n)

    def to_json(self) -> str:
        return json.dumps({"format": _PUBLIC_FORMAT, "version": _FORMAT_VERSION, "n": _hex(self.n)})

    @classmethod
    def from_json(cls, text: str | bytes, *, insecure_for_tests: bool = False) -> PaillierPublicKey:
        document = _load_document(text, _PUBLIC_FORMAT)
        return cls(_unhex(document, "n"), insecure_for_tests=insecure_for_tests)


@dataclass(frozen=True, repr=False)
class PaillierPrivateKey:
    """The full private key of the two-party deployment (held by the decryptor only).

    Decryption is delegated to phe, whose CRT decryption is the reference.
    """

    public_key: PaillierPublicKey
    p: int
    q: int

    def __post_init__(self) -> None:
        if self.p * self.q != self.public_key.n or self.p == self.q or min(self.p, self.q) < 3:
            raise ValueError("p and q do not factor the public modulus")

    def __repr__(self) -> str:  # never print the factors
        fingerprint = self.public_key.fingerprint.hex()[:16]
        return f"PaillierPrivateKey(<{self.public_key.bits}-bit, fingerprint {fingerprint}>)"

    def to_phe(self) -> Any:
        return phe().PaillierPrivateKey(self.public_key.to_phe(), self.p, self.q)

    def decrypt_raw(self, ciphertexts: list[int]) -> list[int]:
        """Raw plaintexts in ``[0, n)`` of raw ciphertexts (validated by the caller)."""
        reference = self._reference
        return [int(reference.raw_decrypt(int(c))) for c in ciphertexts]

    @functools.cached_property
    def _reference(self) -> Any:
        # phe precomputes its CRT constants in the constructor: build it once per key.
        return self.to_phe()

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _PRIVATE_FORMAT,
                "version": _FORMAT_VERSION,
                "n": _hex(self.public_key.n),
                "p": _hex(self.p),
                "q": _hex(self.q),
            }
        )

    @classmethod
    def from_json(
        cls, text: str | bytes, *, insecure_for_tests: bool = False
    ) -> PaillierPrivateKey:
        document = _load_document(text, _PRIVATE_FORMAT)
        public = PaillierPublicKey(_unhex(document, "n"), insecure_for_tests=insecure_for_tests)
        return cls(public, _unhex(document, "p"), _unhex(document, "q"))


def generate_keypair(
    bits: int = DEFAULT_KEY_BITS, *, insecure_for_tests: bool = False
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh key pair from phe's generator (primes from ``random.SystemRandom``: os.urandom)."""
    check_key_size(bits, insecure_for_tests=insecure_for_tests)
    if bits % 2:
        raise ValueError("the modulus size must be even (two primes of bits/2 each)")
    gmpy2()  # fail early, and make sure phe takes its gmpy2 code path
    reference_public, reference_private = phe().generate_paillier_keypair(n_length=bits)
    public = PaillierPublicKey(int(reference_public.n), insecure_for_tests=insecure_for_tests)
    return public, PaillierPrivateKey(public, int(reference_private.p), int(reference_private.q))
