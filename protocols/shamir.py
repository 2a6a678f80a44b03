"""Shamir secret sharing of 32-byte secrets over the prime field GF(p), p = 2^256 + 297.

Why hand-written: no maintained Python library offers fast Shamir sharing.
pycryptodome's ``Shamir`` works in GF(2^128) on 16-byte blocks with pure-Python
polynomial arithmetic and pads a 32-byte secret to three blocks; Flower's
SecAgg+ spends about a second per client in it at n=100. Here a secret is one
element of a prime field just above 2^256, so a 32-byte seed or X25519 key is
shared as a single field element, and evaluation/interpolation are a few
thousand multiplications of Python ints.

Why this prime: p = 2^256 + 297 is the smallest prime above 2^256 (checked by
``tests/protocols/test_shamir.py`` with Miller-Rabin), so every 32-byte string
is a field element and every share fits in ``SHARE_SIZE = 33`` bytes.

A share is ``(x, y)`` with ``x`` a public non-zero evaluation point (the
masking protocol uses ``holder_id + 1``) and ``y = f(x)``, where ``f`` has
degree ``threshold - 1``, ``f(0)`` is the secret, and the other coefficients
are drawn from :func:`secrets.randbelow` (a CSPRNG). Any ``threshold`` shares
determine the secret; fewer reveal nothing about it (information-theoretically).

Shamir sharing is *not* verifiable: a wrong share yields a wrong secret, not an
error. Callers that need to detect that compare the reconstruction with a
public commitment (the masking protocol checks a reconstructed key against the
advertised public key and a seed against its hash commitment).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence

from .errors import InvalidShare

__all__ = [
    "PRIME",
    "SECRET_SIZE",
    "SHARE_SIZE",
    "decode_share",
    "encode_share",
    "lagrange_coefficients_at_zero",
    "random_elements",
    "reconstruct",
    "split",
    "split_many",
]

PRIME = (1 << 256) + 297
SECRET_SIZE = 32
SHARE_SIZE = 33


def _check_points(xs: Sequence[int]) -> None:
    if len(set(xs)) != len(xs):
        raise ValueError("evaluation points must be distinct")
    for x in xs:
        if not (isinstance(x, int) and 0 < x < PRIME):
            raise ValueError(f"evaluation point must be in [1, p), got {x!r}")


_ELEMENT_BYTES = 33  # 264 bits, of which the low 257 are used (p < 2^257)
_ELEMENT_MASK = (1 << PRIME.bit_length()) - 1


def random_elements(count: int) -> list[int]:
    """``count`` independent uniform elements of GF(p) from :func:`secrets.token_bytes`.

    The algorithm of :func:`secrets.randbelow` — draw ``p.bit_length()`` = 257
    uniform bits, keep the value if it is below p, else draw again — with the
    bits of all draws taken from one call to the operating system's CSPRNG
    instead of one call per draw (about half the draws are rejected, so a
    client sharing two secrets at threshold t made ~4(t - 1) system calls).
    """
    out: list[int] = []
    while len(out) < count:
        # Each draw is kept with probability p / 2^257 > 1/2: ask for twice the
        # missing draws and a few more, and loop in the rare case it is not enough.
        missing = count - len(out)
        pool = secrets.token_bytes(_ELEMENT_BYTES * (2 * missing + 8))
        for offset in range(0, len(pool), _ELEMENT_BYTES):
            value = int.from_bytes(pool[offset:offset + _ELEMENT_BYTES], "big") & _ELEMENT_MASK
            if value < PRIME:
                out.append(value)
                if len(out) == count:
                    break
    return out


def split_many(secrets_: Sequence[bytes], threshold: int, xs: Sequence[int]) -> list[list[int]]:
    """Share several 32-byte secrets at the same points; ``result[s][h] = f_s(xs[h])``.

    Sharing several secrets at once costs the same number of multiplications
    as sharing them one by one, but walks the points once (Horner's rule per
    point), which is what the masking client needs: its self-mask seed and its
    mask key are shared to the same neighbours.
    """
    if not (isinstance(threshold, int) and 1 <= threshold <= len(xs)):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold!r}")
    _check_points(xs)
    polys: list[list[int]] = []
    for secret in secrets_:
        if not (isinstance(secret, (bytes, bytearray)) and len(secret) == SECRET_SIZE):
            raise ValueError(f"a secret must be {SECRET_SIZE} bytes")
        polys.append([int.from_bytes(secret, "big")])
    # Highest-degree coefficient first, for Horner's rule; f(0) = secret.
    randoms = random_elements(len(polys) * (threshold - 1))
    for s, coeffs in enumerate(polys):
        polys[s] = randoms[s * (threshold - 1):(s + 1) * (threshold - 1)] + coeffs
    p = PRIME
    out: list[list[int]] = [[0] * len(xs) for _ in polys]
    for h, x in enumerate(xs):
        # Reducing every 8 steps instead of every step is ~1.5x faster: for the
        # small evaluation points used here (x < 2^32) the accumulator grows by
        # at most 32 bits per step, so it stays below 2^(257 + 8*32).
        for s, coeffs in enumerate(polys):
            acc = 0
            for k, c in enumerate(coeffs):
                acc = acc * x + c
                if k & 7 == 7:
                    acc %= p
            out[s][h] = acc % p
    return out


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[int]:
    """Share one 32-byte secret at the points ``xs``; returns ``f(x)`` for each."""
    return split_many([secret], threshold, xs)[0]


def lagrange_coefficients_at_zero(xs: Sequence[int]) -> list[int]:
    """``λ_j = Π_{m≠j} x_m / (x_m − x_j) mod p``, so that ``f(0) = Σ λ_j f(x_j)``.

    One modular inversion for all ``j`` (Montgomery's batch-inversion trick)
    keeps this at O(t²) multiplications and a single ``pow(·, -1, p)``.
    """
    _check_points(xs)
    p = PRIME
    # Products taken exactly and reduced once: the protocol's points are small (holder
    # id + 1 < 2^32, so ~700 bits at t = 22), and a reduction modulo the 257-bit prime
    # per factor cost 6x more at t = 22.
    numerator = math.prod(xs) % p
    denominators = [xj * math.prod([xm - xj for xm in xs if xm != xj]) % p for xj in xs]
    # Batch inversion: invert the product once, then peel off each factor.
    prefix = [1]
    for d in denominators:
        prefix.append(prefix[-1] * d % p)
    inv = pow(prefix[-1], -1, p)
    inverses = [0] * len(denominators)
    for j in range(len(denominators) - 1, -1, -1):
        inverses[j] = inv * prefix[j] % p
        inv = inv * denominators[j] % p
    # λ_j = (Π x_m) / (x_j · Π_{m≠j}(x_m − x_j))
    return [numerator * inverses[j] % p for j in range(len(xs))]


def reconstruct(
    shares: Iterable[tuple[int, int]],
    *,
    coefficients: Sequence[int] | None = None,
) -> bytes:
    """Recover the 32-byte secret from ``threshold`` shares ``(x, y)``.

    Pass exactly ``threshold`` shares: with more, the interpolation is still
    correct for honest shares, but costs more. ``coefficients`` may carry
    precomputed :func:`lagrange_coefficients_at_zero` for the same ``x``
    order (the server reconstructs many secrets from the same holders).
    Raises :class:`InvalidShare` if the result is not a 32-byte value, which
    happens with overwhelming probability when a share was corrupted.
    """
    pairs = list(shares)
    if not pairs:
        raise ValueError("no shares given")
    xs = [x for x, _ in pairs]
    lambdas = coefficients if coefficients is not None else lagrange_coefficients_at_zero(xs)
    if len(lambdas) != len(pairs):
        raise ValueError("one Lagrange coefficient per share")
    p = PRIME
    acc = 0
    for lam, (_, y) in zip(lambdas, pairs):
        if not (0 <= y < p):
            raise InvalidShare("share value out of range")
        acc += lam * y
    secret = acc % p
    if secret >> (8 * SECRET_SIZE):
        raise InvalidShare("shares do not reconstruct a valid secret")
    return secret.to_bytes(SECRET_SIZE, "big")


def encode_share(y: int) -> bytes:
    """A share value as ``SHARE_SIZE`` big-endian bytes."""
    return y.to_bytes(SHARE_SIZE, "big")


def decode_share(data: bytes) -> int:
    """Inverse of :func:`encode_share`; an out-of-field value is :class:`InvalidShare`."""
    if len(data) != SHARE_SIZE:
        raise InvalidShare("share has the wrong size")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise InvalidShare("share value out of range")
    return y
