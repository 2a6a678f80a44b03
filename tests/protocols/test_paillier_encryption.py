"""Encryption: fresh randomness, the randomizer pool, process spreading, ciphertext validation."""

from __future__ import annotations

import pytest

from protocols.paillier import (
    InvalidCiphertext,
    PoolExhausted,
    RandomizerPool,
    check_ciphertext,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    encrypt_packed,
    generate_keypair,
)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(512, insecure_for_tests=True)


def test_every_ciphertext_is_freshly_randomized(keys) -> None:
    public, private = keys
    first = encrypt_packed(public, [5] * 20)
    second = encrypt_packed(public, [5] * 20)
    assert len(set(first) | set(second)) == 40
    assert private.decrypt_raw(first + second) == [5] * 40


def test_pool_gives_valid_ciphertexts_and_is_consumed(keys) -> None:
    public, private = keys
    pool = RandomizerPool(public)
    pool.fill(10)
    ciphertexts = encrypt_packed(public, list(range(6)), pool=pool)
    assert private.decrypt_raw(ciphertexts) == list(range(6))
    assert len(pool) == 4
    with pytest.raises(PoolExhausted):
        encrypt_packed(public, list(range(5)), pool=pool)
    assert len(pool) == 4  # nothing taken on failure
    assert len(set(encrypt_packed(public, [1] * 4, pool=pool))) == 4


def test_pool_of_another_key_refused(keys) -> None:
    other, _ = generate_keypair(512, insecure_for_tests=True)
    pool = RandomizerPool(other)
    pool.fill(1)
    with pytest.raises(ValueError):
        encrypt_packed(keys[0], [1], pool=pool)


def test_encryption_spread_over_processes(keys) -> None:
    public, private = keys
    plaintexts = list(range(40))
    assert private.decrypt_raw(encrypt_packed(public, plaintexts, processes=2)) == plaintexts
    pool = RandomizerPool(public)
    pool.fill(8, processes=2)
    assert len(pool) == 8
    assert private.decrypt_raw(encrypt_packed(public, [3] * 8, pool=pool)) == [3] * 8


def test_plaintext_out_of_range_refused(keys) -> None:
    with pytest.raises(ValueError):
        encrypt_packed(keys[0], [keys[0].n])


def test_ciphertext_round_trip_and_validation(keys) -> None:
    public, _ = keys
    ciphertexts = encrypt_packed(public, [1, 2, 3])
    blob = ciphertexts_to_bytes(public, ciphertexts)
    assert len(blob) == 3 * public.ciphertext_bytes
    assert ciphertexts_from_bytes(public, blob, 3) == ciphertexts
    with pytest.raises(InvalidCiphertext):
        ciphertexts_from_bytes(public, blob[:-1], 3)
    size = public.ciphertext_bytes
    for bad in (0, public.nsquare, public.nsquare + 5, public.n, 3 * public.n):
        if bad.bit_length() > 8 * size:
            continue
        with pytest.raises(InvalidCiphertext):
            ciphertexts_from_bytes(
                public, blob[:size] + bad.to_bytes(size, "big") + blob[2 * size :], 3
            )
    with pytest.raises(InvalidCiphertext):
        check_ciphertext(public, public.nsquare + 1)


def test_djn_fixed_base_power_matches_a_plain_exponentiation(keys) -> None:
    import secrets

    import gmpy2

    from protocols.paillier import FixedBaseRandomizers

    public, _ = keys
    table = FixedBaseRandomizers(public.n, window_bits=5)
    assert table.exponent_bits == (public.n.bit_length() + 1) // 2
    edge = (1 << table.exponent_bits) - 1
    for alpha in [0, 1, 31, 32, edge, *(secrets.randbits(table.exponent_bits) for _ in range(20))]:
        assert table.power(alpha) == gmpy2.powmod(table.base, alpha, public.nsquare)
    with pytest.raises(ValueError):
        table.power(edge + 1)


def test_djn_randomizers_decrypt_and_are_fresh(keys) -> None:
    public, private = keys
    first = encrypt_packed(public, [7] * 20, randomizers="djn")
    second = encrypt_packed(public, [7] * 20, randomizers="djn")
    assert len(set(first) | set(second)) == 40
    assert private.decrypt_raw(first + second) == [7] * 40
    pool = RandomizerPool(public, randomizers="djn")
    pool.fill(3)
    assert private.decrypt_raw(encrypt_packed(public, [1, 2, 3], pool=pool)) == [1, 2, 3]
    with pytest.raises(ValueError):
        encrypt_packed(public, [1], randomizers="short")


def test_djn_randomizers_spread_over_processes(keys) -> None:
    public, private = keys
    ciphertexts = encrypt_packed(public, list(range(8)), processes=2, randomizers="djn")
    assert private.decrypt_raw(ciphertexts) == list(range(8))
