"""Mask expansion: a 256-bit seed -> a vector in Z_{2^bits}, with AES-256 in counter mode.

The mask of a seed is the AES-256 keystream under the seed as key, over the
counter blocks ``0^96 || 2``, ``0^96 || 3``, ... (big-endian), read as
little-endian words: 32-bit words when ``bits <= 32``, 64-bit words otherwise,
each reduced modulo ``2^bits`` (the low ``bits`` bits). Because ``2^bits``
divides the word modulus, a uniform word gives a uniform element of Z_{2^bits}.

It is computed as the ciphertext of AES-256-GCM encrypting zeros under the seed
with the all-zero 96-bit nonce (the tag is discarded): GCM's counter mode starts
at ``nonce || 2`` and increments the low 32 bits, and a mask never reaches 2^32
blocks (GCM refuses such lengths; :data:`MAX_STREAM_BYTES`), so the two
definitions give the same bytes (``tests/protocols/test_prg.py`` checks them
against AES-ECB over explicit counter blocks). Why GCM: on this machine
(AVX-512 VAES/VPCLMULQDQ) OpenSSL's stitched GCM code produces the keystream
~2.5x faster than its CTR code (19 µs against 48 µs for 400 KB, issue 22), the
GHASH included; the keystream — and so the security argument — is that of
AES-256-CTR. (Before issue 22 the counter started at block 0, computed with
CTR; only the counter offset changed.)

A fixed nonce is safe only because every seed is used for exactly one
expansion: pairwise seeds are derived with HKDF bound to (session, round,
pair), and self-mask seeds are fresh from :func:`secrets.token_bytes`.
**Never expand the same seed for two different vectors**: the masks would be
equal and their difference would reveal the difference of the inputs.

Compared with Flower's ``pseudo_rand_gen`` (a 32-bit XOR fold of the seed fed
to numpy's MT19937): the full 256-bit seed keys the cipher, and the output is
computationally indistinguishable from uniform under the standard PRP
assumption on AES.

Two streams live here. :func:`mask_keystream_into`, :func:`add_mask` and
:func:`expand` are the masks (and any other single-use CSPRNG stream that wants
the fast path: the encoder's rounding randomness). :func:`keystream_into` and
:func:`keystream_words` are plain AES-256-CTR from counter block 0, used where
a stream's exact bytes are part of an agreed public computation that predates
this change (the graph order, the discrete Gaussian sampler's draws).

Hot path: :func:`add_mask` writes the keystream into one per-thread work buffer
(``encrypt_into`` over a shared read-only zero buffer) and adds it in place, so
that a client adding k masks to its vector allocates nothing per neighbour.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .scratch import scratch

__all__ = ["MAX_STREAM_BYTES", "SEED_SIZE", "add_mask", "expand", "keystream_into", "keystream_words",
           "mask_keystream_into", "wire_dtype", "word_dtype"]

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


#: GCM's limit on one message (2^39 - 256 bits): below it the 32-bit block counter never wraps
MAX_STREAM_BYTES = (1 << 36) - 32
_GCM_TAG = 16
_ZERO_NONCE = bytes(12)
#: GCM with a 96-bit nonce N encrypts with counter blocks N || 2, N || 3, ... (SP 800-38D)
_CTR_FROM_BLOCK_TWO = modes.CTR((2).to_bytes(16, "big"))
_GCM_INTO = hasattr(AESGCM, "encrypt_into")


def _mask_stream(seed: bytes, nbytes: int) -> np.ndarray:
    """The first ``nbytes`` of the mask keystream of ``seed``, in a per-thread work buffer.

    Valid until the next call on this thread; the buffer has ``nbytes + 16`` bytes
    (GCM writes its tag after the ciphertext).
    """
    _check_seed(seed)
    if not 0 <= nbytes <= MAX_STREAM_BYTES:
        raise ValueError(f"a mask stream is at most {MAX_STREAM_BYTES} bytes")
    work = scratch("prg.mask_stream", nbytes + _GCM_TAG, np.uint8)
    if _GCM_INTO:
        AESGCM(bytes(seed)).encrypt_into(_ZERO_NONCE, _zero_source(nbytes), None, work)
    else:  # cryptography < 45 has no encrypt_into: the same bytes through CTR
        Cipher(algorithms.AES(bytes(seed)), _CTR_FROM_BLOCK_TWO).encryptor().update_into(
            _zero_source(nbytes), memoryview(work))
    return work[:nbytes]


def mask_keystream_into(seed: bytes, out: np.ndarray) -> np.ndarray:
    """Fill the C-contiguous array ``out`` with the mask keystream of ``seed``; returns ``out``."""
    if not (isinstance(out, np.ndarray) and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be a writable C-contiguous array")
    stream = _mask_stream(seed, out.nbytes)
    np.copyto(out.reshape(-1).view(np.uint8), stream)
    return out


def add_mask(target: np.ndarray, seed: bytes, *, subtract: bool = False,
             source: np.ndarray | None = None) -> None:
    """``target ±= mask keystream(seed)`` in place, modulo the word size (``target``'s dtype).

    The keystream goes to a reused per-thread buffer and is added from there: no
    allocation per mask. With ``source`` (same dtype and length as ``target``),
    ``target = source ± mask`` instead: the first mask of a vector is added while
    the vector is copied in, one pass instead of two.
    """
    if not (isinstance(target, np.ndarray) and target.ndim == 1 and target.flags.c_contiguous):
        raise ValueError("target must be a 1-D C-contiguous array")
    if source is None:
        source = target
    elif not (isinstance(source, np.ndarray) and source.dtype == target.dtype
              and source.shape == target.shape):
        raise ValueError("source must be an array of target's dtype and shape")
    stream = _mask_stream(seed, target.nbytes).view(target.dtype)
    if subtract:
        np.subtract(source, stream, out=target)
    else:
        np.add(source, stream, out=target)


def expand(seed: bytes, length: int, bits: int) -> np.ndarray:
    """The mask for ``seed``: ``length`` uniform elements of Z_{2^bits}, as uint64."""
    dtype = word_dtype(bits)
    if length < 0:
        raise ValueError("length must be non-negative")
    words = mask_keystream_into(seed, np.empty(length, dtype=dtype))
    return (words & dtype.type((1 << bits) - 1)).astype(np.uint64)
