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
10^5-word expansion takes about 50 microseconds here (~8 GB/s).

Hot path: :func:`keystream_into` writes the keystream straight into a
caller-owned array (``update_into`` over a shared read-only zero buffer), so
that a client adding k masks to its vector reuses one scratch array instead
of allocating two buffers per neighbour.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["SEED_SIZE", "add_mask", "expand", "keystream_into", "keystream_words", "wire_dtype", "word_dtype"]

SEED_SIZE = 32
_ZERO_COUNTER = bytes(16)
_CTR_FROM_ZERO = modes.CTR(_ZERO_COUNTER)  # immutable; one object for every expansion
_MAX_BITS = 62
# Plaintext for the keystream: CTR encryption of zeros is the keystream itself. One
# shared read-only buffer, grown on demand, read by every expansion.
_zeros = bytes(1 << 16)


def _zero_source(nbytes: int) -> memoryview:
    global _zeros
    if len(_zeros) < nbytes:
        _zeros = bytes(max(nbytes, 2 * len(_zeros)))
    return memoryview(_zeros)[:nbytes]


def _check_seed(seed: bytes) -> None:
    if not (isinstance(seed, (bytes, bytearray)) and len(seed) == SEED_SIZE):
        raise ValueError(f"a mask seed must be {SEED_SIZE} bytes")


def word_dtype(bits: int) -> np.dtype:
    """The word type masks are computed in: uint32 for bits <= 32, else uint64."""
    if not (isinstance(bits, int) and 1 <= bits <= _MAX_BITS):
        raise ValueError(f"bits must be in [1, {_MAX_BITS}], got {bits!r}")
    return np.dtype("<u4") if bits <= 32 else np.dtype("<u8")


def wire_dtype(bits: int) -> np.dtype:
    """The narrowest little-endian word that holds ``bits``: how a masked vector travels.

    Masks are computed in :func:`word_dtype`; a ring of 8 or 16 bits is sent in 1- or
    2-byte words so that fewer bits per coordinate mean fewer bytes on the wire.
    """
    word_dtype(bits)  # the same range check
    for size in (1, 2, 4):
        if bits <= 8 * size:
            return np.dtype(f"<u{size}")
    return np.dtype("<u8")


def keystream_words(seed: bytes, length: int, dtype: np.dtype) -> np.ndarray:
    """``length`` raw keystream words of ``dtype`` (not reduced modulo 2^bits).

    The hot path of the masking protocol adds these unreduced words modulo the
    word size and reduces once at the end, which gives the same result as
    reducing every mask, since 2^bits divides 2^32 and 2^64.
    """
    if length < 0:
        raise ValueError("length must be non-negative")
    return keystream_into(seed, np.empty(length, dtype=dtype))


def keystream_into(seed: bytes, out: np.ndarray) -> np.ndarray:
    """Fill the C-contiguous array ``out`` with the keystream of ``seed``; returns ``out``.

    The bytes are those of :func:`keystream_words`, read in ``out``'s dtype.
    """
    _check_seed(seed)
    if not (isinstance(out, np.ndarray) and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be a writable C-contiguous array")
    nbytes = out.nbytes
    if nbytes:
        encryptor = Cipher(algorithms.AES(bytes(seed)), _CTR_FROM_ZERO).encryptor()
        encryptor.update_into(_zero_source(nbytes), memoryview(out).cast("B"))
    return out


def add_mask(target: np.ndarray, seed: bytes, scratch: np.ndarray, *, subtract: bool = False,
             ) -> None:
    """``target ±= keystream(seed)`` in place, modulo the word size, through ``scratch``.

    ``scratch`` has ``target``'s shape and dtype and is overwritten; reusing it
    across masks is what keeps a client's masking free of per-neighbour
    allocations.
    """
    keystream_into(seed, scratch)
    if subtract:
        np.subtract(target, scratch, out=target)
    else:
        np.add(target, scratch, out=target)


def expand(seed: bytes, length: int, bits: int) -> np.ndarray:
    """The mask for ``seed``: ``length`` uniform elements of Z_{2^bits}, as uint64."""
    dtype = word_dtype(bits)
    words = keystream_words(seed, length, dtype)
    return (words & dtype.type((1 << bits) - 1)).astype(np.uint64)
