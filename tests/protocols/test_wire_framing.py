import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import MalformedMessage
from protocols.wire import FrameHeader, Reader, Writer, decode_frame, encode_frame

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
        header, body = decode_frame(data)
        r = Reader(body)
        r.blob(max_len=64)
        r.array(">u4", max_items=8)
        r.end()
    except MalformedMessage:
        pass
