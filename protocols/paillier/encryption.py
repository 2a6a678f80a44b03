"""Paillier encryption of packed plaintexts, fast: gmpy2, a randomizer pool, processes.

With g = n + 1, ``Enc(m; r) = (1 + m*n) * r^n mod n^2``. The expensive part
is ``r^n`` (a 2048-bit exponentiation modulo a 4096-bit number, ~9 ms), and
it does not depend on m. :class:`RandomizerPool` computes such values ahead
of time (idle time, other cores), so that online encryption is one modular
multiplication per ciphertext.

Randomness: every r is drawn with :func:`secrets.randbelow` (the OS CSPRNG),
in whichever process computes r^n. A pooled randomizer is removed from the
pool when used; no ciphertext ever shares r with another.

Ciphertext wire format: each ciphertext is exactly ``public_key.ciphertext_bytes``
big-endian bytes; a batch is their concatenation.
"""

from __future__ import annotations

import math
import multiprocessing
import secrets
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ._lazy import gmpy2
from .errors import InvalidCiphertext, PoolExhausted
from .keys import PaillierPublicKey

__all__ = [
    "RandomizerPool",
    "encrypt_packed",
    "add_ciphertexts",
    "ciphertexts_to_bytes",
    "ciphertexts_from_bytes",
    "check_ciphertext",
]


def _random_unit(n: int) -> int:
    while True:
        r = secrets.randbelow(n)
        if r > 1 and math.gcd(r, n) == 1:
            return r


def _fresh_randomizers(n: int, count: int) -> list[Any]:
    gmp = gmpy2()
    modulus = gmp.mpz(n)
    nsquare = modulus * modulus
    return [gmp.powmod(_random_unit(n), modulus, nsquare) for _ in range(count)]


def _fresh_randomizers_as_ints(n: int, count: int) -> list[int]:  # process-pool entry point
    return [int(x) for x in _fresh_randomizers(n, count)]


def _encrypt_chunk(n: int, plaintexts: Sequence[int]) -> list[int]:  # process-pool entry point
    gmp = gmpy2()
    modulus = gmp.mpz(n)
    nsquare = modulus * modulus
    return [
        int(_encrypt_one(modulus, nsquare, m, r))
        for m, r in zip(plaintexts, _fresh_randomizers(n, len(plaintexts)), strict=True)
    ]


def _encrypt_one(n: Any, nsquare: Any, plaintext: int, randomizer: Any) -> Any:
    return (1 + plaintext * n) * randomizer % nsquare


def _split(items: Sequence[Any] | int, parts: int) -> list[Any]:
    total = items if isinstance(items, int) else len(items)
    bounds = [total * k // parts for k in range(parts + 1)]
    if isinstance(items, int):
        return [bounds[k + 1] - bounds[k] for k in range(parts) if bounds[k + 1] > bounds[k]]
    return [items[bounds[k] : bounds[k + 1]] for k in range(parts) if bounds[k + 1] > bounds[k]]


def _executor(processes: int) -> ProcessPoolExecutor:
    # spawn, not fork: the caller may be a multi-threaded process (torch), where fork is unsafe.
    return ProcessPoolExecutor(
        max_workers=processes, mp_context=multiprocessing.get_context("spawn")
    )


class RandomizerPool:
    """Precomputed n-th powers r^n mod n^2 of fresh CSPRNG-drawn units r, each used once."""

    def __init__(self, public_key: PaillierPublicKey) -> None:
        self.public_key = public_key
        self._values: list[Any] = []

    def __len__(self) -> int:
        return len(self._values)

    def fill(self, count: int, *, processes: int = 1) -> None:
        """Add ``count`` randomizers, computed on ``processes`` processes."""
        if count < 0 or processes < 1:
            raise ValueError("count must be >= 0 and processes >= 1")
        n = self.public_key.n
        if processes == 1 or count < 2 * processes:
            self._values.extend(_fresh_randomizers(n, count))
            return
        gmp = gmpy2()
        with _executor(processes) as pool:
            for chunk in pool.map(
                _fresh_randomizers_as_ints, [n] * processes, _split(count, processes)
            ):
                self._values.extend(gmp.mpz(x) for x in chunk)

    def take(self, count: int) -> list[Any]:
        """Remove and return ``count`` randomizers; :class:`PoolExhausted` if too few."""
        if count > len(self._values):
            raise PoolExhausted(f"the pool holds {len(self._values)} randomizers, {count} needed")
        taken = self._values[len(self._values) - count :]
        del self._values[len(self._values) - count :]
        return taken


def encrypt_packed(
    public_key: PaillierPublicKey,
    plaintexts: Sequence[int],
    *,
    pool: RandomizerPool | None = None,
    processes: int = 1,
) -> list[Any]:
    """Encrypt integers in ``[0, n)``, each with a fresh randomizer.

    With ``pool`` the randomizers come from it (online cost: one multiplication
    each) and a too-small pool raises :class:`PoolExhausted` before anything is
    encrypted; otherwise r^n is computed here, on ``processes`` processes.
    """
    gmp = gmpy2()
    n = gmp.mpz(public_key.n)
    nsquare = n * n
    for m in plaintexts:
        if not 0 <= m < public_key.n:
            raise ValueError("plaintexts must lie in [0, n)")
    if pool is not None:
        if pool.public_key != public_key:
            raise ValueError("the randomizer pool belongs to another key")
        randomizers = pool.take(len(plaintexts))
        pairs = zip(plaintexts, randomizers, strict=True)
        return [_encrypt_one(n, nsquare, m, r) for m, r in pairs]
    if processes > 1 and len(plaintexts) >= 2 * processes:
        out: list[Any] = []
        with _executor(processes) as executor:
            for chunk in executor.map(
                _encrypt_chunk, [public_key.n] * processes, _split(list(plaintexts), processes)
            ):
                out.extend(gmp.mpz(c) for c in chunk)
        return out
    randomizers = _fresh_randomizers(public_key.n, len(plaintexts))
    return [_encrypt_one(n, nsquare, m, r) for m, r in zip(plaintexts, randomizers, strict=True)]


def add_ciphertexts(public_key: PaillierPublicKey, batches: Sequence[Sequence[Any]]) -> list[Any]:
    """The homomorphic sum: the element-wise product modulo n^2 of equally long batches."""
    gmp = gmpy2()
    if not batches:
        raise ValueError("nothing to add")
    lengths = {len(batch) for batch in batches}
    if len(lengths) != 1:
        raise ValueError("batches of different lengths")
    nsquare = gmp.mpz(public_key.nsquare)
    total = [gmp.mpz(c) for c in batches[0]]
    for batch in batches[1:]:
        for k, c in enumerate(batch):
            total[k] = total[k] * c % nsquare
    return total


def check_ciphertext(public_key: PaillierPublicKey, value: Any) -> None:
    """Raise :class:`InvalidCiphertext` unless ``value`` lies in Z*_{n^2}."""
    if not (0 < value < public_key.nsquare) or gmpy2().gcd(value, public_key.n) != 1:
        raise InvalidCiphertext("ciphertext is not an element of Z*_{n^2}")


def ciphertexts_to_bytes(public_key: PaillierPublicKey, ciphertexts: Sequence[Any]) -> bytes:
    size = public_key.ciphertext_bytes
    return b"".join(int(c).to_bytes(size, "big") for c in ciphertexts)


def ciphertexts_from_bytes(public_key: PaillierPublicKey, blob: bytes, count: int) -> list[Any]:
    """Parse and validate exactly ``count`` ciphertexts; any defect: :class:`InvalidCiphertext`."""
    gmp = gmpy2()
    size = public_key.ciphertext_bytes
    if len(blob) != count * size:
        raise InvalidCiphertext(f"expected {count} ciphertexts of {size} bytes")
    out = []
    for k in range(count):
        value = gmp.mpz(int.from_bytes(blob[k * size : (k + 1) * size], "big"))
        check_ciphertext(public_key, value)
        out.append(value)
    return out
