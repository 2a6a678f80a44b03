"""Key size policy, generation and the documented serialization."""

from __future__ import annotations

import json

import pytest

from protocols.paillier import (
    InsecureKeySize,
    PaillierPrivateKey,
    PaillierPublicKey,
    check_key_size,
    generate_keypair,
)


@pytest.mark.parametrize("bits", [512, 1024, 2046])
def test_small_keys_refused_without_the_test_flag(bits: int) -> None:
    with pytest.raises(InsecureKeySize):
        check_key_size(bits)
    with pytest.raises(InsecureKeySize):
        generate_keypair(bits)
    check_key_size(bits, insecure_for_tests=True)


def test_full_strength_sizes_accepted() -> None:
    check_key_size(2048)
    check_key_size(3072)


def test_public_key_of_small_modulus_refused() -> None:
    public, _ = generate_keypair(512, insecure_for_tests=True)
    with pytest.raises(InsecureKeySize):
        PaillierPublicKey(public.n)
    with pytest.raises(InsecureKeySize):
        PaillierPublicKey.from_json(public.to_json())


def test_generated_key_has_exact_size_and_decrypts_phe_ciphertexts() -> None:
    public, private = generate_keypair(768, insecure_for_tests=True)
    assert public.n.bit_length() == 768
    reference = public.to_phe()
    assert private.decrypt_raw([reference.raw_encrypt(12345)]) == [12345]


def test_serialization_round_trip_and_format() -> None:
    public, private = generate_keypair(512, insecure_for_tests=True)
    document = json.loads(public.to_json())
    assert document["format"] == "secure_fedrec/paillier-public-key"
    assert int(document["n"], 16) == public.n
    loaded = PaillierPublicKey.from_json(public.to_json(), insecure_for_tests=True)
    assert loaded == public and loaded.fingerprint == public.fingerprint
    loaded_private = PaillierPrivateKey.from_json(private.to_json(), insecure_for_tests=True)
    assert {loaded_private.p, loaded_private.q} == {private.p, private.q}


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"format": "other", "version": 1, "n": "ff"}',
        '{"format": "secure_fedrec/paillier-public-key", "version": 9, "n": "ff"}',
        '{"format": "secure_fedrec/paillier-public-key", "version": 1, "n": "xyz"}',
        '{"format": "secure_fedrec/paillier-public-key", "version": 1}',
    ],
)
def test_bad_documents_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        PaillierPublicKey.from_json(text, insecure_for_tests=True)


def test_fingerprints_differ_between_keys() -> None:
    a, _ = generate_keypair(512, insecure_for_tests=True)
    b, _ = generate_keypair(512, insecure_for_tests=True)
    assert a.fingerprint != b.fingerprint


def test_private_key_repr_hides_factors() -> None:
    _, private = generate_keypair(512, insecure_for_tests=True)
    assert str(private.p) not in repr(private) and str(private.q) not in repr(private)


def test_mismatched_factors_refused() -> None:
    public, private = generate_keypair(512, insecure_for_tests=True)
    with pytest.raises(ValueError):
        PaillierPrivateKey(public, private.p, private.q + 2)
