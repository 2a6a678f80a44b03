import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MalformedMessage
from protocols.wire import (
    SERVER_ID,
    FrameHeader,
    Reader,
    Writer,
    decode_frame,
    encode_frame,
    encode_frame_parts,
)

HEADER = FrameHeader(protocol=1, kind=2, session_id=bytes(range(16)), round=7, sender=3, receiver=0xFFFFFFFF)


def test_round_trip():
    body = Writer().u32(5).blob(b"abc").array(np.arange(4), ">u4").getvalue()
    header, got = decode_frame(encode_frame(HEADER, body))
    assert header == HEADER
    r = Reader(got)
    assert r.u32() == 5 and r.blob() == b"abc"
    assert r.array(">u4", max_items=10).tolist() == [0, 1, 2, 3]
    r.end()


@pytest.mark.parametrize("cut", [0, 10, 39, 41])
def test_truncation_is_malformed(cut):
    frame = encode_frame(HEADER, Writer().blob(b"xy").getvalue())
    with pytest.raises(MalformedMessage):
        decode_frame(frame[:cut])


def test_oversized_field_is_rejected_before_allocation():
    body = Writer().u32(0xFFFFFFF0).getvalue()  # claims a 4 GiB blob
    with pytest.raises(MalformedMessage):
        Reader(body).blob()


def test_trailing_bytes_are_rejected():
    r = Reader(Writer().u8(1).getvalue() + b"\x00")
    r.u8()
    with pytest.raises(MalformedMessage):
        r.end()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_bytes_raise_only_malformed(data):
    try:
        _header, body = decode_frame(data)
        r = Reader(body)
        r.blob(max_len=64)
        r.array(">u4", max_items=8)
        r.end()
    except MalformedMessage:
        pass


def test_short_u32_lists_pack_like_arrays_and_refuse_out_of_range_ids():
    """Session 5: short id lists are packed with struct; same bytes as the numpy path, and
    an id outside [0, 2^32) is a ValueError (numpy wrapped it silently)."""
    assert Writer().u32_list((1, 2, 0xFFFFFFFF)).getvalue() == Writer().array(
        np.array([1, 2, 0xFFFFFFFF]), ">u4").getvalue()
    r = Reader(Writer().u32_list([7, 3]).getvalue())
    assert r.u32_tuple(max_items=2) == (7, 3)
    for bad in ((-1,), (1 << 32,)):
        with pytest.raises(ValueError):
            Writer().u32_list(bad)


@pytest.mark.parametrize("senders", [(1, 1), (1, 0xFFFFFFFF)])
def test_decoded_id_lists_are_still_checked(senders):
    """Session 5: a decoded message skips its constructor's checks, so read checks the ids
    itself — repeated ids or the server's id in a share bundle are MalformedMessage."""
    from protocols.masking import messages as m

    body = Writer().u32_list(senders).blob(bytes(m.SHARE_CIPHERTEXT_SIZE * len(senders)))
    frame = encode_frame_parts(FrameHeader(m.PROTOCOL_CODE, m.ShareBundle.KIND, bytes(16), 0,
                                           SERVER_ID, 2), body)
    with pytest.raises(MalformedMessage):
        m.decode(frame)
