"""HKDF as protocols.keys writes it out (on HMAC) is cryptography's HKDF, byte for byte."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols import keys as kx
from protocols.masking import derivations as d


def _reference(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


@pytest.mark.parametrize("salt_len,label_len,context_len", [
    (16, 31, 12), (16, 0, 0), (0, 5, 3), (64, 200, 70), (65, 1, 1)])
def test_derive_key_is_hkdf_sha256(salt_len, label_len, context_len):
    for _ in range(20):
        secret, salt = secrets.token_bytes(32), secrets.token_bytes(salt_len)
        label, context = secrets.token_bytes(label_len), secrets.token_bytes(context_len)
        want = _reference(secret, salt, label + b"\x00" + context)
        assert kx.derive_key(secret, salt=salt, label=label, context=context) == want
        prk = kx.extract_key(secret, salt=salt)
        assert kx.expand_key(prk, label=label, context=context) == want


def test_rfc5869_case_1_prk():
    # RFC 5869 A.1: the PRK of the test case (its OKM is 42 bytes, ours 32: the prefix).
    ikm = bytes([0x0B] * 22)
    salt = bytes(range(13))
    prk = kx.extract_key(ikm, salt=salt)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = bytes.fromhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                        "34007208d5b887185865")
    # Our info is label || 0x00 || context: the RFC's info f0..f9 has no 0x00, so check the
    # reference there and ours on an info that splits at a zero byte.
    info = bytes(range(0xF0, 0xFA))
    assert _reference(ikm, salt, info)[:32] == okm[:32]
    assert kx.expand_key(prk, label=b"ab", context=b"cd") == _reference(ikm, salt, b"ab\x00cd")


def test_share_keys_from_one_extract_are_the_share_keys():
    secret, session = secrets.token_bytes(32), secrets.token_bytes(16)
    prk = d.share_prk(secret, session)
    for sender, receiver in ((3, 7), (7, 3), (0, 2**32 - 2)):
        assert d.share_key_from_prk(prk, 5, sender, receiver) == d.share_key(
            secret, session, 5, sender, receiver)
    assert d.share_key_from_prk(prk, 5, 3, 7) != d.share_key_from_prk(prk, 5, 7, 3)
    assert d.share_key_from_prk(prk, 5, 3, 7) != d.share_key_from_prk(prk, 6, 3, 7)
