"""Mask expansion: fixed vectors checked by an independent AES path, and uniformity."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from scipy.stats import chisquare

from protocols import prg
from protocols.masking import MaskingClient, MaskingParams, MaskingServer, decode
from protocols.masking import messages as m

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors" / "prg_aes_ctr.json"


def _independent_expand(seed: bytes, length: int, bits: int) -> list[int]:
    """AES-256-ECB over explicit big-endian counter blocks 2, 3, 4, ... (CTR by hand).

    The mask is defined as this keystream (``protocols/prg.py``); it is computed with
    AES-256-GCM (nonce 0^96: counter blocks start at 0^96 || 2), checked here by a
    path that shares nothing with it but AES.
    """
    word = 4 if bits <= 32 else 8
    blocks = (length * word + 15) // 16
    ecb = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    stream = b"".join(ecb.update((i + 2).to_bytes(16, "big")) for i in range(blocks))
    return [int.from_bytes(stream[i * word:(i + 1) * word], "little") % (1 << bits)
            for i in range(length)]


def test_known_answer_zero_key():
    # The zero key's first mask block is AES-256 of counter block 0^96 || 2: checked with the
    # classic known answer of block 0 (so the ECB path itself is right) and ECB of block 2.
    ecb = Cipher(algorithms.AES(bytes(32)), modes.ECB()).encryptor()
    assert ecb.update(bytes(16)) == bytes.fromhex("dc95c078a2408989ad48a21492842087")
    first_block = ecb.update((2).to_bytes(16, "big"))
    words = prg.expand(bytes(32), 4, 32)
    assert words.tolist() == [int.from_bytes(first_block[i:i + 4], "little") for i in (0, 4, 8, 12)]


def test_mask_stream_is_ctr_from_block_two_at_every_length():
    """GCM's ciphertext of zeros is the CTR keystream from counter block 2, whatever the length
    (partial last block included), and add_mask adds exactly that stream."""
    seed = bytes(range(32))
    ctr = Cipher(algorithms.AES(seed), modes.CTR((2).to_bytes(16, "big"))).encryptor()
    want = ctr.update(bytes(4 * 1031))
    for words in (0, 1, 3, 4, 5, 1031):
        got = prg.mask_keystream_into(seed, np.empty(words, dtype=np.uint32))
        assert got.tobytes() == want[:4 * words]
    target = np.zeros(1031, dtype=np.uint32)
    prg.add_mask(target, seed)
    assert target.tobytes() == want
    with pytest.raises(ValueError):
        prg.add_mask(np.zeros(8, dtype=np.uint32)[::2], seed)


def test_add_mask_from_a_source_is_source_plus_or_minus_the_mask():
    """The masked upload's first mask is added while the vector is copied in (steps.mask_input)."""
    seed = bytes(range(1, 33))
    source = np.random.default_rng(3).integers(0, 2**32, 1031, dtype=np.uint64).astype(np.uint32)
    for subtract in (False, True):
        want = source.copy()
        prg.add_mask(want, seed, subtract=subtract)
        target = np.empty_like(source)
        prg.add_mask(target, seed, subtract=subtract, source=source)
        assert np.array_equal(target, want)
    assert np.array_equal(source, np.random.default_rng(3).integers(
        0, 2**32, 1031, dtype=np.uint64).astype(np.uint32))  # the source is left alone
    for bad in (source.astype(np.uint64), source[:-1]):
        with pytest.raises(ValueError):
            prg.add_mask(np.empty_like(source), seed, source=bad)


def test_mask_stream_fallback_without_encrypt_into_gives_the_same_bytes(monkeypatch):
    """cryptography < 45 lacks AESGCM.encrypt_into: the CTR fallback must be byte-identical."""
    seed = bytes(range(1, 33))
    fast = prg.mask_keystream_into(seed, np.empty(1031, dtype=np.uint32)).copy()
    monkeypatch.setattr(prg, "_GCM_INTO", False)
    slow = prg.mask_keystream_into(seed, np.empty(1031, dtype=np.uint32))
    np.testing.assert_array_equal(fast, slow)


def test_fixed_vectors_match_two_implementations():
    data = json.loads(VECTORS.read_text())
    assert len(data["vectors"]) >= 5
    for vec in data["vectors"]:
        seed = bytes.fromhex(vec["seed"])
        assert prg.expand(seed, vec["length"], vec["bits"]).tolist() == vec["words"]
        assert _independent_expand(seed, vec["length"], vec["bits"]) == vec["words"]


def test_expand_rejects_bad_seeds_and_bits():
    with pytest.raises(ValueError):
        prg.expand(b"short", 3, 8)
    with pytest.raises(ValueError):
        prg.expand(bytes(32), 3, 63)


def test_distinct_seeds_give_distinct_masks():
    a = prg.expand(bytes(31) + b"\x01", 64, 32)
    b = prg.expand(bytes(31) + b"\x02", 64, 32)
    assert not np.array_equal(a, b)


def _masked_upload(vector: np.ndarray, bits: int) -> np.ndarray:
    """The masked vector client 0 sends in a 3-client session."""
    params = MaskingParams(threshold=2, degree=2, bits=bits, vector_length=vector.size)
    server = MaskingServer(params, [0, 1, 2])
    clients = {cid: MaskingClient(cid) for cid in range(3)}
    for client in clients.values():
        client.set_input(vector)
    outgoing = server.start()
    for _ in range(2):
        for cid, frame in outgoing:
            for reply in clients[cid].receive(frame):
                server.receive(reply)
        outgoing = server.advance()
    (masked,) = clients[0].receive(dict(outgoing)[0])
    message = decode(masked).message
    assert isinstance(message, m.MaskedInput)
    return message.words.astype(np.uint64)


@pytest.mark.parametrize("bits", [16, 32])
@pytest.mark.parametrize("fill", ["zeros", "max", "ramp"])
def test_masked_vector_looks_uniform(bits, fill):
    length = 1 << 15
    vector = {"zeros": np.zeros(length, dtype=np.uint64),
              "max": np.full(length, (1 << bits) - 1, dtype=np.uint64),
              "ramp": np.arange(length, dtype=np.uint64) % (1 << bits)}[fill]
    masked = _masked_upload(vector, bits)
    assert not np.array_equal(masked, vector)
    top = (masked >> np.uint64(bits - 6)).astype(np.int64)  # top 6 bits: 64 bins
    counts = np.bincount(top, minlength=64)
    assert chisquare(counts).pvalue > 1e-4
    low = (masked & np.uint64(0xFF)).astype(np.int64)  # and the low byte: 256 bins
    assert chisquare(np.bincount(low, minlength=256)).pvalue > 1e-4


def test_uniformity_check_can_fail():
    # The same statistic rejects an unmasked vector, and a "mask" that only
    # covers the low bits (e.g. a PRG folded to 16 bits used in a 32-bit ring).
    plain = np.arange(1 << 15, dtype=np.uint64)
    assert chisquare(np.bincount((plain >> np.uint64(26)).astype(np.int64),
                                 minlength=64)).pvalue < 1e-4
    weak = plain + prg.expand(bytes(32), 1 << 15, 16)
    assert chisquare(np.bincount(((weak % (1 << 32)) >> np.uint64(26)).astype(np.int64),
                                 minlength=64)).pvalue < 1e-4
