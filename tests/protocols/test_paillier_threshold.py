"""Threshold decryption: any t of m shares decrypt, fewer cannot, bad partials are caught."""

from __future__ import annotations

import itertools
import secrets

import pytest

from protocols.errors import BelowThreshold
from protocols.paillier import (
    InsecureKeySize,
    InvalidPartialDecryption,
    KeyShare,
    PartialDecryption,
    ThresholdParams,
    combine_partials,
    deal_threshold_keys,
    generate_safe_prime,
    partial_decrypt,
    verify_partial,
)
from protocols.paillier._lazy import gmpy2


@pytest.fixture(scope="module")
def key_set():
    return deal_threshold_keys(512, threshold=3, parties=5, insecure_for_tests=True)


def _encrypt(key_set, plaintexts):
    reference = key_set.public_key.to_phe()
    return [reference.raw_encrypt(m) for m in plaintexts]


def test_safe_primes_are_safe() -> None:
    gmp = gmpy2()
    for backend, bits in (
        ("sieve", 16),
        ("sieve", 40),
        ("sieve", 256),
        ("next_prime", 128),
        ("openssl", 512),
    ):
        p = generate_safe_prime(bits, backend=backend)
        assert p.bit_length() == bits and gmp.is_prime(p) and gmp.is_prime((p - 1) // 2)


def test_sieved_primes_have_their_top_two_bits_set() -> None:
    """So that any two of them multiply to a modulus of the full size."""
    for _ in range(5):
        assert generate_safe_prime(256) >> 254 == 0b11


def test_unknown_backend_refused() -> None:
    with pytest.raises(ValueError):
        generate_safe_prime(256, backend="magic")
    with pytest.raises(ValueError):
        generate_safe_prime(256, backend="openssl")


def test_full_strength_floor_applies_to_threshold_keys() -> None:
    with pytest.raises(InsecureKeySize):
        deal_threshold_keys(1024, threshold=2, parties=3)


@pytest.mark.parametrize("bad", [(0, 3), (4, 3), (2, 0), (2, 100)])
def test_impossible_threshold_parameters(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        deal_threshold_keys(512, threshold=bad[0], parties=bad[1], insecure_for_tests=True)


def test_every_subset_of_t_or_more_decrypts(key_set) -> None:
    n = key_set.public_key.n
    plaintexts = [0, 1, secrets.randbelow(n), n - 1]
    ciphertexts = _encrypt(key_set, plaintexts)
    partials = {s.index: partial_decrypt(s, ciphertexts, context=b"ctx") for s in key_set.shares}
    for size in (3, 4, 5):
        for subset in itertools.combinations(sorted(partials), size):
            chosen = [partials[i] for i in subset]
            assert combine_partials(key_set.params, chosen) == plaintexts


def test_fewer_than_t_fail_cleanly(key_set) -> None:
    ciphertexts = _encrypt(key_set, [42])
    partials = [partial_decrypt(s, ciphertexts, context=b"ctx") for s in key_set.shares[:2]]
    with pytest.raises(BelowThreshold):
        combine_partials(key_set.params, partials)
    with pytest.raises(BelowThreshold):  # the same holder twice is still one holder
        combine_partials(key_set.params, [partials[0], partials[0], partials[1]])


def test_one_of_one_and_t_equals_m() -> None:
    for threshold, parties in ((1, 1), (2, 2), (1, 3)):
        keys = deal_threshold_keys(
            512, threshold=threshold, parties=parties, insecure_for_tests=True
        )
        ciphertexts = _encrypt(keys, [7, 8])
        partials = [partial_decrypt(s, ciphertexts, context=b"") for s in keys.shares[:threshold]]
        assert combine_partials(keys.params, partials) == [7, 8]


def test_proofs_verify_and_bind_to_context(key_set) -> None:
    ciphertexts = _encrypt(key_set, [5, 6, 7])
    partial = partial_decrypt(key_set.shares[0], ciphertexts, context=b"session-1")
    verify_partial(key_set.params, ciphertexts, partial, context=b"session-1")
    with pytest.raises(InvalidPartialDecryption):
        verify_partial(key_set.params, ciphertexts, partial, context=b"session-2")
    with pytest.raises(InvalidPartialDecryption):
        verify_partial(key_set.params, list(reversed(ciphertexts)), partial, context=b"session-1")


def test_tampered_partial_is_caught(key_set) -> None:
    """A key holder shifting the result by multiplying with (1+n)^k cannot pass verification."""
    n, nsquare = key_set.public_key.n, key_set.public_key.nsquare
    ciphertexts = _encrypt(key_set, [5, 6, 7])
    honest = partial_decrypt(key_set.shares[1], ciphertexts, context=b"c")
    shifted = list(honest.values)
    shifted[1] = shifted[1] * (1 + 3 * n) % nsquare
    forged = PartialDecryption(
        honest.index,
        tuple(shifted),
        honest.commitment_ciphertexts,
        honest.commitment_generator,
        honest.response,
    )
    with pytest.raises(InvalidPartialDecryption):
        verify_partial(key_set.params, ciphertexts, forged, context=b"c")
    wrong_index = PartialDecryption(
        3,
        honest.values,
        honest.commitment_ciphertexts,
        honest.commitment_generator,
        honest.response,
    )
    with pytest.raises(InvalidPartialDecryption):
        verify_partial(key_set.params, ciphertexts, wrong_index, context=b"c")
    out_of_group = PartialDecryption(
        honest.index,
        (0, *honest.values[1:]),
        honest.commitment_ciphertexts,
        honest.commitment_generator,
        honest.response,
    )
    with pytest.raises(InvalidPartialDecryption):
        verify_partial(key_set.params, ciphertexts, out_of_group, context=b"c")


def test_share_serialization_round_trip(key_set) -> None:
    share = key_set.shares[2]
    loaded = KeyShare.from_json(share.to_json(), insecure_for_tests=True)
    assert (
        loaded.index == share.index
        and loaded.share == share.share
        and loaded.params == share.params
    )
    params = ThresholdParams.from_json(key_set.params.to_json(), insecure_for_tests=True)
    assert params == key_set.params and params.fingerprint == key_set.params.fingerprint
    assert str(share.share) not in repr(share)


def test_share_not_matching_its_verification_key_refused(key_set) -> None:
    with pytest.raises(ValueError):
        KeyShare(key_set.params, 1, key_set.shares[0].share + 1)


# -- issue 19 item 10: secret exponents go through gmpy2.powmod_sec -----------------------------
class _PowmodSpy:
    """Records the exponents gmpy2.powmod and gmpy2.powmod_sec are called with."""

    def __init__(self, monkeypatch) -> None:
        gmp = gmpy2()
        self.public: list[int] = []
        self.secret: list[int] = []
        powmod, powmod_sec = gmp.powmod, gmp.powmod_sec

        def spy_public(base, exponent, modulus):
            self.public.append(int(exponent))
            return powmod(base, exponent, modulus)

        def spy_secret(base, exponent, modulus):
            self.secret.append(int(exponent))
            return powmod_sec(base, exponent, modulus)

        monkeypatch.setattr(gmp, "powmod", spy_public)
        monkeypatch.setattr(gmp, "powmod_sec", spy_secret)


def test_partial_decryption_results_are_unchanged(key_set) -> None:
    """The constant-time exponentiation gives the textbook c^(2Δs_i), and everything still combines."""
    nsquare = key_set.public_key.nsquare
    ciphertexts = _encrypt(key_set, [0, 1, 12345, key_set.public_key.n - 1])
    partials = [partial_decrypt(s, ciphertexts, context=b"ctx") for s in key_set.shares[:3]]
    for share, partial in zip(key_set.shares, partials, strict=False):
        exponent = 2 * key_set.params.delta * share.share
        assert partial.values == tuple(pow(c, exponent, nsquare) for c in ciphertexts)
        verify_partial(key_set.params, ciphertexts, partial, context=b"ctx")
    assert combine_partials(key_set.params, partials) == [0, 1, 12345, key_set.public_key.n - 1]


def test_secret_exponents_never_reach_the_variable_time_powmod(key_set, monkeypatch) -> None:
    share = key_set.shares[1]
    ciphertexts = _encrypt(key_set, [5, 6, 7])
    spy = _PowmodSpy(monkeypatch)
    partial = partial_decrypt(share, ciphertexts, context=b"ctx")
    secret = 2 * key_set.params.delta * share.share
    # public exponents: 128-bit batch coefficients and the constants 2 and 4
    assert spy.public and max(e.bit_length() for e in spy.public) <= 128
    assert spy.secret[:3] == [secret] * 3
    nonce = spy.secret[3]  # the proof's r, used twice (a = C^4r, b = v^r)
    assert spy.secret[3:] == [nonce, nonce] and nonce.bit_length() > secret.bit_length()
    assert partial.response > nonce  # z = r + e * Δ * s_i
    spy.public.clear()
    spy.secret.clear()
    KeyShare(key_set.params, share.index, share.share)  # checks v^(Δ s_i) against its key
    assert spy.secret == [key_set.params.delta * share.share] and not spy.public


def test_a_zero_exponent_is_handled() -> None:
    from protocols.paillier.threshold import _powmod_secret

    assert _powmod_secret(12345, 0, 77) == 1
    assert _powmod_secret(12345, 5, 77) == pow(12345, 5, 77)
