"""Packing: exact modular sums, headroom enforcement, and agreement with phe per value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.encoding import FixedPointEncoder
from protocols.errors import EncodingError
from protocols.paillier import (
    PackingLayout,
    SlotOverflow,
    add_ciphertexts,
    encrypt_packed,
    generate_keypair,
    headroom_for,
)


def _random_ring(rng: np.random.Generator, bits: int, size: int) -> np.ndarray:
    return rng.integers(0, 1 << bits, size=size, dtype=np.uint64)


@settings(max_examples=60, deadline=None)
@given(
    bits=st.integers(1, 62),
    clients=st.integers(1, 300),
    key_bits=st.sampled_from([256, 512, 1024, 2048, 3072]),
    length=st.integers(1, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_packed_integer_sum_is_the_modular_sum(
    bits: int, clients: int, key_bits: int, length: int, seed: int
) -> None:
    layout = PackingLayout.for_key(key_bits, bits=bits, max_clients=clients, length=length)
    assert layout.fits_key(key_bits)
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, clients + 1))
    vectors = [_random_ring(rng, bits, length) for _ in range(count)]
    # Also the worst case: every value at its maximum.
    vectors[0] = np.full(length, (1 << bits) - 1, dtype=np.uint64)
    packed = [layout.pack(v) for v in vectors]
    assert all(0 <= p < (1 << (key_bits - 1)) for p in packed[0])
    summed = [sum(column) for column in zip(*packed, strict=True)]
    expected = np.zeros(length, dtype=np.uint64)
    for v in vectors:
        expected = (expected + v) & np.uint64((1 << bits) - 1)
    assert np.array_equal(layout.unpack(summed, count=count), expected)


def test_headroom_is_ceil_log2() -> None:
    assert [headroom_for(k) for k in (1, 2, 3, 4, 5, 100, 1024, 1025)] == [0, 1, 2, 2, 3, 7, 10, 11]


def test_more_summands_than_headroom_refused() -> None:
    layout = PackingLayout.for_key(512, bits=8, max_clients=4, length=10)
    vectors = [np.full(10, 255, dtype=np.uint64)] * 5
    summed = [sum(column) for column in zip(*[layout.pack(v) for v in vectors], strict=True)]
    with pytest.raises(SlotOverflow):
        layout.unpack(summed, count=5)
    with pytest.raises(SlotOverflow):
        layout.check_summands(5)


def test_out_of_range_slot_detected() -> None:
    """A client that encrypts a value using the headroom bits is caught at decoding."""
    layout = PackingLayout.for_key(512, bits=8, max_clients=4, length=3)
    honest = layout.pack(np.array([1, 2, 3], dtype=np.uint64))
    in_range = [
        honest[0] + (200 << layout.slot_bits)
    ]  # slot 1 holds 202 <= 255: undetectable, by design
    assert np.array_equal(layout.unpack(in_range, count=1), np.array([1, 202, 3], dtype=np.uint64))
    overflowing = [
        honest[0] + (256 << layout.slot_bits)
    ]  # slot 1 holds 258 > 255 = 1 summand's max
    with pytest.raises(SlotOverflow):
        layout.unpack(overflowing, count=1)
    above_last_slot = [honest[0] + (1 << layout.plaintext_bits)]
    with pytest.raises(SlotOverflow):
        layout.unpack(above_last_slot, count=1)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(9, dtype=np.uint64),
        np.zeros(10, dtype=np.int64),
        np.full(10, 256, dtype=np.uint64),
    ],
)
def test_pack_rejects_wrong_shape_dtype_or_range(bad: np.ndarray) -> None:
    layout = PackingLayout.for_key(512, bits=8, max_clients=2, length=10)
    with pytest.raises(EncodingError):
        layout.pack(bad)


def test_layout_refuses_slots_wider_than_the_key() -> None:
    with pytest.raises(EncodingError):
        PackingLayout.for_key(64, bits=62, max_clients=8, length=1)


@pytest.mark.parametrize("key_bits,bits,clients", [(512, 16, 3), (768, 32, 7), (1024, 24, 10)])
def test_packed_encrypted_sum_matches_phe_per_value(key_bits: int, bits: int, clients: int) -> None:
    """The reference: phe encrypts each value on its own, sums, decrypts; packing agrees."""
    public, private = generate_keypair(key_bits, insecure_for_tests=True)
    reference_public, reference_private = public.to_phe(), private.to_phe()
    rng = np.random.default_rng()
    length = 40
    vectors = [_random_ring(rng, bits, length) for _ in range(clients)]
    layout = PackingLayout.for_key(key_bits, bits=bits, max_clients=clients, length=length)
    aggregate = add_ciphertexts(public, [encrypt_packed(public, layout.pack(v)) for v in vectors])
    packed_sum = layout.unpack(private.decrypt_raw(aggregate), count=clients)

    per_value = [
        sum(
            (reference_public.encrypt(int(v[k])) for v in vectors[1:]),
            reference_public.encrypt(int(vectors[0][k])),
        )
        for k in range(length)
    ]
    reference_sum = np.array(
        [reference_private.decrypt(c) % (1 << bits) for c in per_value], dtype=np.uint64
    )
    assert np.array_equal(packed_sum, reference_sum)


def test_float_pipeline_matches_phe_float_sum() -> None:
    """Floats through the shared encoder and packed Paillier ≈ phe's own float encryption."""
    public, private = generate_keypair(512, insecure_for_tests=True)
    reference_public, reference_private = public.to_phe(), private.to_phe()
    clients, length, bits = 5, 30, 32
    encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=clients, bits=bits)
    rng = np.random.default_rng()
    floats = [rng.uniform(-1, 1, size=length) for _ in range(clients)]
    layout = PackingLayout.for_key(512, bits=bits, max_clients=clients, length=length)
    aggregate = add_ciphertexts(
        public, [encrypt_packed(public, layout.pack(encoder.encode(x))) for x in floats]
    )
    decoded = encoder.decode(layout.unpack(private.decrypt_raw(aggregate), count=clients))
    reference = [
        reference_private.decrypt(
            sum(
                (reference_public.encrypt(float(x[k])) for x in floats[1:]),
                reference_public.encrypt(float(floats[0][k])),
            )
        )
        for k in range(length)
    ]
    assert np.allclose(decoded, reference, atol=clients / encoder.scale)


def test_known_answer_layout() -> None:
    """Slot 0 is least significant; worked by hand: 1 + 2·2^6 + 3·2^12 = 12417 (b=4, h=2)."""
    layout = PackingLayout(bits=4, headroom_bits=2, slots=3, length=5)
    assert layout.pack(np.array([1, 2, 3, 15, 0], dtype=np.uint64)) == [12417, 15]
    assert np.array_equal(layout.unpack([12417 * 4, 15 * 4], count=4), [4, 8, 12, 12, 0])


# -- issue 19 item 10: padding slots are checked like the others ------------------------------
def _padded_layout() -> PackingLayout:
    """bits=4, headroom=2 (6-bit slots), 3 slots, 4 values: the 2nd plaintext has 2 padding slots."""
    layout = PackingLayout(bits=4, headroom_bits=2, slots=3, length=4)
    assert layout.num_plaintexts == 2 and layout.num_plaintexts * layout.slots - layout.length == 2
    return layout


def test_carry_out_of_the_last_real_slot_is_detected() -> None:
    """A client packs 64 + 3 (> 2^6) into the last real slot: the carry lands in padding.

    Before the fix the padding was never read: the last slot's low bits (3) passed
    the range check and the overflowing sum was released.
    """
    layout = _padded_layout()
    honest = layout.pack(np.array([1, 2, 3, 3], dtype=np.uint64))
    assert np.array_equal(layout.unpack(honest, count=1), [1, 2, 3, 3])
    overflowing = [honest[0], honest[1] + (1 << layout.slot_bits)]  # slot 0 of plaintext 2: 67
    with pytest.raises(SlotOverflow, match="padding"):
        layout.unpack(overflowing, count=1)


@pytest.mark.parametrize("padding_slot", [1, 2])
@pytest.mark.parametrize("value", [1, 1 << 4, (1 << 6) - 1])
def test_any_non_zero_padding_slot_is_refused(padding_slot: int, value: int) -> None:
    layout = _padded_layout()
    packed = layout.pack(np.zeros(4, dtype=np.uint64))
    packed[1] += value << (padding_slot * layout.slot_bits)
    with pytest.raises(SlotOverflow, match="padding"):
        layout.unpack(packed, count=4)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 62), clients=st.integers(1, 40), length=st.integers(1, 200),
       seed=st.integers(0, 2**32 - 1))
def test_padding_check_passes_every_honest_sum(bits: int, clients: int, length: int,
                                               seed: int) -> None:
    layout = PackingLayout.for_key(512, bits=bits, max_clients=clients, length=length)
    rng = np.random.default_rng(seed)
    vectors = [_random_ring(rng, bits, length) for _ in range(clients)]
    summed = [sum(column) for column in zip(*(layout.pack(v) for v in vectors), strict=True)]
    expected = np.zeros(length, dtype=np.uint64)
    for vector in vectors:
        expected = (expected + vector) & np.uint64((1 << bits) - 1)
    assert np.array_equal(layout.unpack(summed, count=clients), expected)
