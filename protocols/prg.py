"""Mask expansion: a 256-bit seed -> a vector in Z_{2^bits}, with AES-256-CTR.

The keystream of AES-256 in counter mode, with the seed as the key and an
all-zero initial counter block, is read as little-endian words: 32-bit words
when ``bits <= 32``, 64-bit words otherwise, each reduced modulo ``2^bits``
(the low ``bits`` bits). Because ``2^bits`` divides the word modulus, a
uniform word gives a uniform element of Z_{2^bits}.

A fixed counter block is safe only because every seed is used for exactly one
expansion: pairwise seeds are derived with HKDF bound to (session, round,
pair), and self-mask seeds are fresh from :func:`secrets.token_bytes`.
**Never expand the same seed for two different vectors**: the masks would be
equal and their difference would reveal the difference of the inputs.

Compared with Flower's ``pseudo_rand_gen`` (a 32-bit XOR fold of the seed fed
to numpy's MT19937): the full 256-bit seed keys the cipher, and the output is
computationally indistinguishable from uniform under the standard PRP
assumption on AES. ``cryptography``'s AES uses AES-NI when present; one
10^5-word expansion takes tens of microseconds.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["SEED_SIZE", "expand", "keystream_words", "word_dtype"]

SEED_SIZE = 32
_ZERO_COUNTER = bytes(16)
_MAX_BITS = 62


def word_dtype(bits: int) -> np.dtype:
    """The word type masks are computed in: uint32 for bits <= 32, else uint64."""
    if not (isinstance(bits, int) and 1 <= bits <= _MAX_BITS):
        raise ValueError(f"bits must be in [1, {_MAX_BITS}], got {bits!r}")
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


def keystream_words(seed: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """``length`` raw keystream words of ``dtype`` (not reduced modulo 2^bits).

    The hot path of the masking protocol adds these unreduced words modulo the
    word size and reduces once at the end, which gives the same result as
    reducing every mask, since 2^bits divides 2^32 and 2^64.
    """
    if not (isinstance(seed, (bytes, bytearray)) and len(seed) == SEED_SIZE):
        raise ValueError(f"a mask seed must be {SEED_SIZE} bytes")
    if length < 0:
        raise ValueError("length must be non-negative")
    encryptor = Cipher(algorithms.AES(bytes(seed)), modes.CTR(_ZERO_COUNTER)).encryptor()
    raw = encryptor.update(bytes(length * dtype.itemsize)) + encryptor.finalize()
    return np.frombuffer(raw, dtype=dtype)


def expand(seed: bytes, length: int, bits: int) -> np.ndarray:
    """The mask for ``seed``: ``length`` uniform elements of Z_{2^bits}, as uint64."""
    dtype = word_dtype(bits)
    words = keystream_words(seed, length, dtype)
    return (words & dtype.type((1 << bits) - 1)).astype(np.uint64)
