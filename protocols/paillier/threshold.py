"""Threshold Paillier decryption (Shoup 2000, as adapted by Damgård–Jurik 2001 with s = 1).

No single party can decrypt: the decryption exponent ``d`` is Shamir-shared
among ``parties`` key holders over Z_{n*m}, and any ``threshold`` of them turn
an aggregate ciphertext into the aggregate plaintext. Fewer learn nothing.

Key generation uses a **trusted dealer** (this module's :func:`deal_threshold_keys`):
the dealer sees p, q and d and must erase them after handing out the shares.
Python cannot guarantee erasure of integers, so run the dealer in a
short-lived process on a trusted machine. Distributed key generation (e.g.
Hazay–Mikkelsen–Rabin–Toft) is not implemented.

Math (n = p*q with safe primes p = 2p'+1, q = 2q'+1, m = p'q', Δ = parties!)::

    d       ≡ 0 (mod m),  d ≡ 1 (mod n)
    f(X)    = d + a_1 X + ... + a_{t-1} X^{t-1}  (mod n*m), a_k uniform
    s_i     = f(i)                     key share of holder i (1-based)
    v       = a random square mod n^2; v_i = v^(Δ s_i)   verification keys
    c_i     = c^(2 Δ s_i) mod n^2                        partial decryption
    λ_i     = Δ * Π_{j in S, j != i} j / (j - i)         integer Lagrange coefficient
    c'      = Π c_i^(2 λ_i) = c^(4 Δ^2 d) = 1 + 4 Δ^2 M n   (mod n^2)
    M       = L(c') * (4 Δ^2)^-1 mod n,  L(x) = (x - 1) / n

Each partial decryption of a batch of K ciphertexts carries one proof that it
used the same exponent as the holder's verification key. The K statements
are folded into one with the small-exponent batch test (Bellare–Garay–Rabin
1998): 128-bit coefficients e_j derived by hashing every ciphertext and every
partial, C = Π c_j^e_j, C_i = Π c_ij^e_j; then a Fiat–Shamir proof of equal
discrete logarithms, log_{C^4}(C_i^2) = log_v(v_i), as in Shoup's paper.
A holder that sends a wrong partial is caught with probability 1 - 2^-128
and excluded, so any ``threshold`` honest holders still decrypt.

Every exponentiation whose exponent is secret (Δ s_i and 2Δ s_i, the proof
nonce r) goes through :func:`_powmod_secret`, i.e. ``gmpy2.powmod_sec``
(GMP's ``mpz_powm_sec``: its timing and memory access pattern do not depend on
the exponent); public exponents use the faster ``gmpy2.powmod``. This does not
make the rest constant-time (Python integers, the dealer's prime search), see
docs/protocols/paillier.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BelowThreshold, DecryptionError
from ._lazy import gmpy2
from .errors import InvalidPartialDecryption
from .keys import PaillierPublicKey, _hex, _load_document, _unhex, check_key_size

__all__ = [
    "KeyShare",
    "PartialDecryption",
    "ThresholdKeySet",
    "ThresholdParams",
    "combine_partials",
    "deal_threshold_keys",
    "generate_safe_prime",
    "partial_decrypt",
    "verify_partial",
]

_PARAMS_FORMAT = "secure_fedrec/paillier-threshold-params"
_SHARE_FORMAT = "secure_fedrec/paillier-key-share"
_BUNDLE_FORMAT = "secure_fedrec/paillier-threshold-key-set"
_FORMAT_VERSION = 1
_BATCH_COEFFICIENT_BITS = 128
_CHALLENGE_BITS = 256
_ZK_SLACK_BITS = 128  # statistical zero-knowledge of the proof's response
MAX_KEY_HOLDERS = 64


def _powmod_secret(base: Any, exponent: int, modulus: Any) -> Any:
    """``base^exponent mod modulus`` for a secret ``exponent`` and an odd ``modulus`` (n^2).

    ``powmod_sec`` refuses exponent 0 (a share s_i = 0 occurs with probability
    about 1/(n m)); x^0 = 1 needs no exponentiation at all.
    """
    gmp = gmpy2()
    if exponent == 0:
        return gmp.mpz(1) % modulus
    return gmp.powmod_sec(base, exponent, modulus)


# -- safe primes -------------------------------------------------------------------------
def generate_safe_prime(bits: int, *, backend: str = "sieve") -> int:
    """A random ``bits``-bit safe prime p = 2p' + 1 (both p and p' prime).

    Backends:

    ``sieve`` (default)
        Hand-written, because no maintained Python library offers safe primes
        except through Diffie–Hellman parameters (below). A ``secrets``-drawn
        start, a window of 2^16 candidates p' sieved at once (with numpy) for
        small factors of both p' and 2p'+1, then a base-2 Fermat test of p
        and Miller–Rabin (gmpy2.is_prime, 30 rounds) of p' and p. The top two
        bits of p are set, so any two such primes multiply to a full-size
        modulus.
    ``openssl``
        OpenSSL through ``cryptography``'s Diffie–Hellman parameter generator
        (``generator=2``: safe primes ≡ 23 mod 24; needs ``bits >= 512``).
        cryptography has deprecated finite-field DH, so this path may
        disappear with a future release.
    ``next_prime``
        The naive search: ``gmpy2.next_prime`` from a random start, then test
        2p'+1. Kept as the baseline in the benchmark; an order of magnitude
        slower than the sieve.
    """
    if not isinstance(bits, int) or bits < 16:
        raise ValueError("safe primes need at least 16 bits")
    if backend == "openssl":
        if bits < 512:
            raise ValueError("the OpenSSL backend needs bits >= 512")
        import warnings

        from cryptography.hazmat.primitives.asymmetric import dh

        with warnings.catch_warnings():  # the deprecation concerns DH key exchange, not primes
            warnings.simplefilter("ignore")
            parameters = dh.generate_parameters(generator=2, key_size=bits)
        return int(parameters.parameter_numbers().p)
    if backend == "sieve":
        # A window of 2^16 candidates does not fit below ~20 bits; tiny (test) sizes search naively.
        return _sieved_safe_prime(bits) if bits >= 40 else _next_prime_safe_prime(bits)
    if backend == "next_prime":
        return _next_prime_safe_prime(bits)
    raise ValueError(f"unknown safe-prime backend {backend!r}")


_SIEVE_WINDOW = 1 << 16
_SIEVE_LIMIT = 1 << 16


@functools.cache
def _odd_small_primes() -> tuple[int, ...]:
    import numpy as np

    flags = np.ones(_SIEVE_LIMIT, dtype=bool)
    flags[:2] = False
    for k in range(2, int(_SIEVE_LIMIT**0.5) + 1):
        if flags[k]:
            flags[k * k :: k] = False
    return tuple(int(x) for x in np.flatnonzero(flags) if x > 2)


def _sieved_safe_prime(bits: int) -> int:
    import numpy as np

    gmp = gmpy2()
    small = [ell for ell in _odd_small_primes() if ell.bit_length() < bits - 2]
    while True:
        # p' has bits-1 bits with its top two set (so p = 2p'+1 has bits bits, top two set).
        start = secrets.randbits(bits - 1) | (3 << (bits - 3)) | 1
        if (start + 2 * _SIEVE_WINDOW).bit_length() != bits - 1:
            continue
        survivors = np.ones(_SIEVE_WINDOW, dtype=bool)
        for ell in small:
            residue = start % ell
            half = (ell + 1) // 2  # the inverse of 2 modulo ell
            survivors[(-residue * half) % ell :: ell] = False  # ell divides p' = start + 2k
            survivors[(((ell - 1) // 2 - residue) * half) % ell :: ell] = False  # ell divides 2p'+1
        for k in np.flatnonzero(survivors):
            sophie = gmp.mpz(start + 2 * int(k))
            candidate = 2 * sophie + 1
            if gmp.powmod(2, candidate - 1, candidate) != 1:
                continue
            if gmp.is_prime(sophie, 30) and gmp.is_prime(candidate, 30):
                return int(candidate)


def _next_prime_safe_prime(bits: int) -> int:
    gmp = gmpy2()
    while True:
        start = gmp.mpz(secrets.randbits(bits - 1)) | (gmp.mpz(1) << (bits - 2))
        sophie = gmp.next_prime(start)
        if sophie % 3 == 1:  # then 3 divides 2p'+1
            continue
        candidate = 2 * sophie + 1
        if candidate.bit_length() == bits and gmp.is_prime(candidate, 30):
            return int(candidate)


# -- public parameters and shares ---------------------------------------------------------
@dataclass(frozen=True)
class ThresholdParams:
    """Everything public about a threshold key: the Paillier key and the verification keys."""

    public_key: PaillierPublicKey
    threshold: int
    parties: int
    v: int
    verification_keys: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (isinstance(self.parties, int) and 1 <= self.parties <= MAX_KEY_HOLDERS):
            raise ValueError(f"parties must be in [1, {MAX_KEY_HOLDERS}]")
        if not (isinstance(self.threshold, int) and 1 <= self.threshold <= self.parties):
            raise ValueError("threshold must be in [1, parties]")
        if len(self.verification_keys) != self.parties:
            raise ValueError("one verification key per party is required")
        nsquare = self.public_key.nsquare
        for value in (self.v, *self.verification_keys):
            if not (0 < value < nsquare and math.gcd(value, self.public_key.n) == 1):
                raise ValueError("verification keys must lie in Z*_{n^2}")

    @property
    def delta(self) -> int:
        return math.factorial(self.parties)

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.to_json().encode()).digest()

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _PARAMS_FORMAT,
                "version": _FORMAT_VERSION,
                "n": _hex(self.public_key.n),
                "threshold": self.threshold,
                "parties": self.parties,
                "v": _hex(self.v),
                "verification_keys": [_hex(x) for x in self.verification_keys],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, insecure_for_tests: bool = False) -> ThresholdParams:
        return _params_from_document(_load_document(text, _PARAMS_FORMAT), insecure_for_tests)


def _params_from_document(document: dict[str, Any], insecure_for_tests: bool) -> ThresholdParams:
    keys = document.get("verification_keys")
    if not isinstance(keys, list):
        raise ValueError("verification_keys must be a list")  # noqa: TRY004 - key documents: ValueError
    threshold, parties = document.get("threshold"), document.get("parties")
    if not isinstance(threshold, int) or not isinstance(parties, int):
        raise ValueError("threshold and parties must be integers")  # noqa: TRY004 - as above
    return ThresholdParams(
        public_key=PaillierPublicKey(_unhex(document, "n"), insecure_for_tests=insecure_for_tests),
        threshold=threshold,
        parties=parties,
        v=_unhex(document, "v"),
        verification_keys=tuple(_unhex({"k": k}, "k") for k in keys),
    )


@dataclass(frozen=True, repr=False)
class KeyShare:
    """Key holder ``index``'s share s_i of the decryption exponent (secret)."""

    params: ThresholdParams
    index: int  # 1-based, as in the Shamir polynomial
    share: int = field(compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.index, int) and 1 <= self.index <= self.params.parties):
            raise ValueError("share index out of range")
        if not (isinstance(self.share, int) and self.share >= 0):
            raise ValueError("share must be a non-negative integer")
        expected = _powmod_secret(
            self.params.v, self.params.delta * self.share, self.params.public_key.nsquare
        )
        if expected != self.params.verification_keys[self.index - 1]:
            raise ValueError("share does not match its verification key")

    def __repr__(self) -> str:
        return f"KeyShare(index={self.index}, of {self.params.threshold}-of-{self.params.parties})"

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _SHARE_FORMAT,
                "version": _FORMAT_VERSION,
                "params": json.loads(self.params.to_json()),
                "index": self.index,
                "share": _hex(self.share),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, insecure_for_tests: bool = False) -> KeyShare:
        document = _load_document(text, _SHARE_FORMAT)
        params_document = document.get("params")
        if not isinstance(params_document, dict) or params_document.get("format") != _PARAMS_FORMAT:
            raise ValueError("share document lacks its threshold parameters")
        index = document.get("index")
        if not isinstance(index, int):
            raise ValueError("index must be an integer")  # noqa: TRY004 - key documents: ValueError
        params = _params_from_document(params_document, insecure_for_tests)
        return cls(params, index, _unhex(document, "share"))


@dataclass(frozen=True)
class ThresholdKeySet:
    """What the dealer hands out: public parameters and one share per key holder."""

    params: ThresholdParams
    shares: tuple[KeyShare, ...]

    @property
    def public_key(self) -> PaillierPublicKey:
        return self.params.public_key

    def to_json(self) -> str:
        """Every share in one document: for simulations and pre-generated test keys only.

        A real deployment hands each key holder its own :meth:`KeyShare.to_json`.
        """
        return json.dumps(
            {
                "format": _BUNDLE_FORMAT,
                "version": _FORMAT_VERSION,
                "shares": [json.loads(share.to_json()) for share in self.shares],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, insecure_for_tests: bool = False) -> ThresholdKeySet:
        document = _load_document(text, _BUNDLE_FORMAT)
        shares = document.get("shares")
        if not isinstance(shares, list) or not shares:
            raise ValueError("a key set needs its shares")
        loaded = tuple(
            KeyShare.from_json(json.dumps(s), insecure_for_tests=insecure_for_tests) for s in shares
        )
        params = loaded[0].params
        if any(share.params != params for share in loaded) or [s.index for s in loaded] != list(
            range(1, params.parties + 1)
        ):
            raise ValueError("shares of different keys, or missing shares")
        return cls(params, loaded)


def deal_threshold_keys(
    bits: int = 2048,
    *,
    threshold: int,
    parties: int,
    insecure_for_tests: bool = False,
    safe_prime_backend: str = "sieve",
) -> ThresholdKeySet:
    """Trusted-dealer generation of a ``threshold``-of-``parties`` Paillier key.

    Cost is dominated by the safe primes (bits/2 bits each), and the search
    time is heavy-tailed. Measured on the project machine (2 shared cores,
    under load): 2048-bit deals took 4-23 s, once 5 minutes; a 3072-bit deal
    took 34 s. Deal once and reuse (:meth:`ThresholdKeySet.to_json`), or deal
    ahead of time.
    """
    check_key_size(bits, insecure_for_tests=insecure_for_tests)
    if bits % 2:
        raise ValueError("the modulus size must be even")
    if not (isinstance(parties, int) and 1 <= parties <= MAX_KEY_HOLDERS):
        raise ValueError(f"parties must be in [1, {MAX_KEY_HOLDERS}]")
    if not (isinstance(threshold, int) and 1 <= threshold <= parties):
        raise ValueError("threshold must be in [1, parties]")
    gmp = gmpy2()
    p, q = _safe_prime_pair(bits, safe_prime_backend)
    n = p * q
    m = ((p - 1) // 2) * ((q - 1) // 2)
    if math.gcd(n, 4 * m) != 1:  # impossible for distinct equal-size safe primes; cheap to check
        raise RuntimeError("degenerate safe primes")
    nm = n * m
    d = m * int(gmp.invert(m, n))  # d ≡ 0 mod m, d ≡ 1 mod n
    coefficients = [d] + [secrets.randbelow(nm) for _ in range(threshold - 1)]
    shares = [_evaluate(coefficients, i, nm) for i in range(1, parties + 1)]
    nsquare = n * n
    delta = math.factorial(parties)
    while True:
        r = secrets.randbelow(nsquare)
        if r > 1 and math.gcd(r, n) == 1:
            break
    v = int(gmp.powmod(r, 2, nsquare))
    verification = tuple(int(_powmod_secret(v, delta * s, nsquare)) for s in shares)
    public = PaillierPublicKey(n, insecure_for_tests=insecure_for_tests)
    params = ThresholdParams(public, threshold, parties, v, verification)
    key_set = ThresholdKeySet(
        params, tuple(KeyShare(params, i + 1, s) for i, s in enumerate(shares))
    )
    del p, q, m, d, coefficients, shares  # best effort; see the module docstring on erasure
    return key_set


def _safe_prime_pair(bits: int, backend: str) -> tuple[int, int]:
    """Two distinct safe primes of bits/2 bits whose product has exactly ``bits`` bits.

    Two random half-size primes multiply to a full-size modulus only ~39% of
    the time (2 - 2 ln 2), so every new prime is tried against all earlier
    ones instead of being thrown away with its partner.
    """
    found: list[int] = []
    while True:
        candidate = generate_safe_prime(bits // 2, backend=backend)
        for other in found:
            if other != candidate and (other * candidate).bit_length() == bits:
                return other, candidate
        found.append(candidate)


def _evaluate(coefficients: list[int], x: int, modulus: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % modulus
    return result


# -- partial decryption with a batched proof ---------------------------------------------------
@dataclass(frozen=True)
class PartialDecryption:
    """c_ij = c_j^(2 Δ s_i) for every ciphertext c_j of a batch, with one proof."""

    index: int
    values: tuple[int, ...]
    commitment_ciphertexts: int  # a = (C^4)^r
    commitment_generator: int  # b = v^r
    response: int  # z = r + e * Δ * s_i

    def __post_init__(self) -> None:
        if not (isinstance(self.index, int) and 1 <= self.index <= MAX_KEY_HOLDERS):
            raise ValueError("partial decryption index out of range")


def _encode_ints(*values: int) -> bytes:
    parts = []
    for value in values:
        raw = int(value).to_bytes(max(1, (int(value).bit_length() + 7) // 8), "big")
        parts.append(struct.pack(">I", len(raw)) + raw)
    return b"".join(parts)


def _batch_coefficients(
    params: ThresholdParams,
    index: int,
    ciphertexts: Sequence[int],
    values: Sequence[int],
    context: bytes,
) -> list[int]:
    digest = hashlib.sha256(b"secure_fedrec/paillier/threshold/batch/v1")
    digest.update(
        params.fingerprint + _encode_ints(len(context), index, len(ciphertexts)) + context
    )
    for c, ci in zip(ciphertexts, values, strict=True):
        digest.update(_encode_ints(c, ci))
    stream = hashlib.shake_256(digest.digest()).digest(
        len(ciphertexts) * _BATCH_COEFFICIENT_BITS // 8
    )
    width = _BATCH_COEFFICIENT_BITS // 8
    return [
        int.from_bytes(stream[k * width : (k + 1) * width], "big") | 1
        for k in range(len(ciphertexts))
    ]


def _fold(bases: Sequence[int], exponents: Sequence[int], modulus: int) -> Any:
    gmp = gmpy2()
    product = gmp.mpz(1)
    for base, exponent in zip(bases, exponents, strict=True):
        product = product * gmp.powmod(base, exponent, modulus) % modulus
    return product


def _challenge(params: ThresholdParams, index: int, context: bytes, *values: int) -> int:
    digest = hashlib.sha256(b"secure_fedrec/paillier/threshold/proof/v1")
    digest.update(
        params.fingerprint + _encode_ints(len(context), index) + context + _encode_ints(*values)
    )
    return int.from_bytes(digest.digest(), "big") >> (256 - _CHALLENGE_BITS)


def partial_decrypt(
    share: KeyShare, ciphertexts: Sequence[int], *, context: bytes
) -> PartialDecryption:
    """Key holder ``share.index``'s partial decryption of a batch, bound to ``context``.

    ``context`` (the session, round and aggregate digest) goes into every hash,
    so a proof cannot be replayed for another request.
    """
    gmp = gmpy2()
    params = share.params
    nsquare = gmp.mpz(params.public_key.nsquare)
    exponent = 2 * params.delta * share.share
    values = tuple(int(_powmod_secret(c, exponent, nsquare)) for c in ciphertexts)
    coefficients = _batch_coefficients(params, share.index, ciphertexts, values, context)
    folded = gmp.powmod(_fold(ciphertexts, coefficients, nsquare), 4, nsquare)
    folded_partial = gmp.powmod(_fold(values, coefficients, nsquare), 2, nsquare)
    secret = params.delta * share.share
    r_bits = secret.bit_length() + _CHALLENGE_BITS + _ZK_SLACK_BITS
    r = secrets.randbits(r_bits)
    a = _powmod_secret(folded, r, nsquare)
    b = _powmod_secret(params.v, r, nsquare)
    e = _challenge(
        params,
        share.index,
        context,
        folded,
        folded_partial,
        params.verification_keys[share.index - 1],
        a,
        b,
    )
    return PartialDecryption(share.index, values, int(a), int(b), r + e * secret)


def verify_partial(
    params: ThresholdParams,
    ciphertexts: Sequence[int],
    partial: PartialDecryption,
    *,
    context: bytes,
) -> None:
    """Raise :class:`InvalidPartialDecryption` unless ``partial`` is correct for ``ciphertexts``."""
    gmp = gmpy2()
    n, nsquare = params.public_key.n, gmp.mpz(params.public_key.nsquare)
    if not 1 <= partial.index <= params.parties or len(partial.values) != len(ciphertexts):
        raise InvalidPartialDecryption("partial decryption does not match the request")
    for value in (*partial.values, partial.commitment_ciphertexts, partial.commitment_generator):
        if not (0 < value < nsquare and math.gcd(value, n) == 1):
            raise InvalidPartialDecryption("partial decryption is not in Z*_{n^2}")
    if partial.response < 0:
        raise InvalidPartialDecryption("invalid proof")
    coefficients = _batch_coefficients(params, partial.index, ciphertexts, partial.values, context)
    folded = gmp.powmod(_fold(ciphertexts, coefficients, nsquare), 4, nsquare)
    folded_partial = gmp.powmod(_fold(partial.values, coefficients, nsquare), 2, nsquare)
    verification_key = params.verification_keys[partial.index - 1]
    a, b, z = partial.commitment_ciphertexts, partial.commitment_generator, partial.response
    e = _challenge(params, partial.index, context, folded, folded_partial, verification_key, a, b)
    if gmp.powmod(folded, z, nsquare) != a * gmp.powmod(folded_partial, e, nsquare) % nsquare:
        raise InvalidPartialDecryption("invalid proof")
    if gmp.powmod(params.v, z, nsquare) != b * gmp.powmod(verification_key, e, nsquare) % nsquare:
        raise InvalidPartialDecryption("invalid proof")


def combine_partials(params: ThresholdParams, partials: Sequence[PartialDecryption]) -> list[int]:
    """The plaintexts from at least ``threshold`` partial decryptions of distinct key holders.

    The partials must already be verified (:func:`verify_partial`); the
    combination uses the first ``threshold`` distinct indices.
    """
    gmp = gmpy2()
    by_index: dict[int, PartialDecryption] = {}
    for partial in partials:
        by_index.setdefault(partial.index, partial)
    if len(by_index) < params.threshold:
        raise BelowThreshold(len(by_index), params.threshold, "decryption")
    chosen = sorted(by_index)[: params.threshold]
    lengths = {len(by_index[i].values) for i in chosen}
    if len(lengths) != 1:
        raise DecryptionError("partial decryptions of different batches")
    delta = params.delta
    lagrange = {}
    for i in chosen:
        numerator, denominator = delta, 1
        for j in chosen:
            if j != i:
                numerator *= j
                denominator *= j - i
        if numerator % denominator:  # Δ = parties! guarantees an integer
            raise AssertionError("non-integer Lagrange coefficient")
        lagrange[i] = 2 * (numerator // denominator)
    n = gmp.mpz(params.public_key.n)
    nsquare = n * n
    scale_inverse = gmp.invert(4 * delta * delta, n)
    plaintexts = []
    for position in range(lengths.pop()):
        combined = gmp.mpz(1)
        for i in chosen:
            try:
                combined = (
                    combined
                    * gmp.powmod(by_index[i].values[position], lagrange[i], nsquare)
                    % nsquare
                )
            except ZeroDivisionError as exc:  # a non-invertible partial (negative exponent)
                raise DecryptionError("partial decryptions do not combine") from exc
        if combined % n != 1:
            raise DecryptionError("partial decryptions do not combine")
        plaintexts.append(int((combined - 1) // n * scale_inverse % n))
    return plaintexts
