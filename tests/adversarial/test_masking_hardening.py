"""Regression tests for the masking items of issue 19 (each failed on main before the fix).

* item 4 — a session-wide minimum of survivors enforced *inside* the protocol:
  the server refuses to start unmasking and honest clients refuse to reveal
  shares below ``min_survivors``;
* item 5 — every frame is decoded against the session's own sizes before
  anything proportional to its length is allocated (bounded-RSS test);
* item 6 — a low-order X25519 key is refused at advertise time: that client is
  a dropout and the session goes on;
* item 10 — ``FixedPointEncoder.for_sum`` at 62 bits accepts its own result;
  an out-of-range ``round_index`` is a clear ``ValueError``, not ``struct.error``.

docs/security.md §3.5 lists them with their fixes.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import EncodingError, FixedPointEncoder
from protocols.errors import BelowThreshold, MalformedMessage
from protocols.keys import (
    StaticTrustStore,
    binding,
    check_public_key,
    generate_key_pair,
)
from protocols.masking import (
    ClientState,
    MaskingClient,
    MaskingParams,
    MaskingServer,
    SecAgg,
    SecAggPlus,
    SessionTrace,
    UnmaskRequestRefused,
    decode,
    run_session,
)
from protocols.masking import messages as m
from protocols.masking.params import SessionConfig
from protocols.testing import FrameLog, expected_outcome, random_inputs, rewrite
from protocols.wire import SERVER_ID, FrameHeader

ROOT = Path(__file__).resolve().parents[2]
IDS = list(range(8))


def _inputs(params: MaskingParams, ids=IDS, seed: int = 0):
    return random_inputs(ids, params.vector_length, params.bits, np.random.default_rng(seed))


def _plain_sum(inputs, contributors, bits):
    total = np.zeros(len(next(iter(inputs.values()))), dtype=np.uint64)
    for c in contributors:
        total += inputs[c]
    return total & np.uint64((1 << bits) - 1)


# ---------------------------------------------------------------- item 4: min_survivors
def test_min_survivors_is_validated_and_bound_into_the_digest():
    base = {"threshold": 5, "degree": 7, "bits": 16, "vector_length": 3}
    assert MaskingParams(**base).min_survivors == 1  # the default adds no requirement
    for bad in (0, -1, 2**32):
        with pytest.raises(ValueError, match="min_survivors"):
            MaskingParams(**base, min_survivors=bad)
    for bad in (2.0, True, "3"):
        with pytest.raises(TypeError):
            MaskingParams(**base, min_survivors=bad)
    with pytest.raises(ValueError, match="could never release"):
        SessionConfig(MaskingParams(**base, min_survivors=9), tuple(IDS), bytes(32))
    a = SessionConfig(MaskingParams(**base, min_survivors=6), tuple(IDS), bytes(32))
    b = SessionConfig(MaskingParams(**base, min_survivors=7), tuple(IDS), bytes(32))
    assert a.digest(bytes(16), 0) != b.digest(bytes(16), 0)
    # ... and it travels in the announcement, so every client enforces the same floor.
    server = MaskingServer(b.params, IDS)
    start = decode(server.start()[0][1]).message
    assert start.config.params.min_survivors == 7


@pytest.mark.parametrize("active", [False, True], ids=["passive", "active"])
def test_server_refuses_to_start_unmasking_below_min_survivors(active):
    params = MaskingParams(threshold=6 if active else 5, degree=7, bits=16, vector_length=4,
                           active=active, min_survivors=7)
    log = FrameLog()
    with pytest.raises(BelowThreshold) as info:
        run_session(_inputs(params), params, interceptor=log,
                    dropouts={1: "masked_input", 4: "masked_input"})
    assert info.value.stage == "masked_input"
    assert (info.value.survivors, info.value.threshold) == (6, 7)
    # The gate is before the first unmasking request: no client was asked for a share.
    assert not log.find(m.UnmaskRequest) and not log.find(m.ConsistencyRequest)
    # One dropout fewer and the same session releases the exact sum of the 7.
    inputs = _inputs(params)
    result = run_session(inputs, params, dropouts={1: "masked_input"})
    assert len(result.contributors) == 7
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, result.contributors, 16))


def test_secagg_and_secaggplus_take_min_survivors():
    inputs = random_inputs(range(12), 5, 20, np.random.default_rng(1))
    for protocol in (SecAgg(min_survivors=11), SecAggPlus(min_survivors=11, dropout_rate=0.2)):
        assert protocol.params(12, bits=20, vector_length=5).min_survivors == 11
        with pytest.raises(BelowThreshold) as info:
            protocol.run_round(inputs, bits=20, dropouts={0: "share_keys", 5: "masked_input"})
        assert info.value.stage in ("share_keys", "masked_input")
        result = protocol.run_round(inputs, bits=20, dropouts={5: "unmasking"})
        assert len(result.contributors) == 12
    with pytest.raises(BelowThreshold) as info:  # fewer participants than the floor
        SecAgg(min_survivors=13).run_round(inputs, bits=20)
    assert info.value.stage == "advertise_keys"
    with pytest.raises(ValueError):
        SecAgg(min_survivors=0)


@pytest.mark.parametrize("active", [False, True], ids=["passive", "active"])
def test_honest_clients_refuse_to_reveal_when_fewer_survive_than_the_minimum(
        active, monkeypatch):
    """A server that skips its own gate: every honest client refuses, nothing is released."""
    monkeypatch.setattr(MaskingServer, "_require_survivors", lambda self, alive, stage: None)
    params = MaskingParams(threshold=6 if active else 5, degree=7, bits=16, vector_length=4,
                           active=active, min_survivors=7)
    log = FrameLog()
    trace = SessionTrace()
    with pytest.raises(BelowThreshold):
        run_session(_inputs(params), params, trace=trace, interceptor=log,
                    dropouts={1: "masked_input", 4: "masked_input"})
    refusing = {cid for cid, exc in trace.client_errors.items() if isinstance(exc, BelowThreshold)}
    assert refusing == set(IDS) - {1, 4}
    stage = "consistency_check" if active else "unmasking"
    assert {trace.client_errors[c].stage for c in refusing} == {stage}
    assert not log.find(m.UnmaskShares)  # not one share left any client


def test_client_refuses_an_unmask_request_stating_too_few_survivors():
    # SecAgg+: client 0 sees only its 5-member neighbourhood, so the global count is
    # the one thing that tells it how many inputs the sum will hold.
    ids = list(range(10))
    params = MaskingParams(threshold=3, degree=4, bits=16, vector_length=4, min_survivors=9)

    def understate(stage, sender, receiver, frame):
        if receiver == 0 and isinstance(decode(frame).message, m.UnmaskRequest):
            return rewrite(frame, lambda msg: dataclasses.replace(msg, survivor_count=8))
        return frame

    trace = SessionTrace()
    inputs = _inputs(params, ids)
    result = run_session(inputs, params, trace=trace, interceptor=understate)
    assert isinstance(trace.client_errors[0], BelowThreshold)
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, result.contributors, 16))

    def contradict(stage, sender, receiver, frame):  # fewer than the survivors it names
        if receiver == 0 and isinstance(decode(frame).message, m.UnmaskRequest):
            return rewrite(frame, lambda msg: dataclasses.replace(msg, survivor_count=1))
        return frame

    trace = SessionTrace()
    run_session(inputs, params, trace=trace, interceptor=contradict)
    assert isinstance(trace.client_errors[0], UnmaskRequestRefused)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 12), st.integers(1, 12), st.data())
def test_min_survivors_outcome_matches_the_oracle(n, floor, data):
    ids = list(range(n))
    degree = n - 1
    params = MaskingParams(threshold=(degree + 1) // 2 + 1, degree=degree, bits=12,
                           vector_length=3, min_survivors=min(floor, n))
    stages = ("advertise_keys", "share_keys", "masked_input", "unmasking")
    dropouts = {c: data.draw(st.sampled_from(stages)) for c in ids
                if data.draw(st.booleans())}
    graph_seed = bytes(32)
    want = expected_outcome(ids, params, graph_seed, dropouts)
    inputs = _inputs(params, ids)
    if want.below_threshold_stage is not None:
        with pytest.raises(BelowThreshold) as info:
            run_session(inputs, params, dropouts=dropouts, graph_seed=graph_seed)
        assert info.value.stage == want.below_threshold_stage
    else:
        result = run_session(inputs, params, dropouts=dropouts, graph_seed=graph_seed)
        assert result.contributors == want.contributors
        assert len(result.contributors) >= params.min_survivors


# ------------------------------------------------ item 5: decode against the session's sizes
def _frame(kind: int, body_prefix: bytes, payload_len: int, *, session_id: bytes, sender: int,
           receiver: int, round_index: int = 0) -> bytes:
    """A frame whose body is ``body_prefix`` followed by ``payload_len`` zero bytes."""
    header = FrameHeader(m.PROTOCOL_CODE, kind, session_id, round_index, sender, receiver)
    return header.pack(len(body_prefix) + payload_len) + body_prefix + bytes(payload_len)


def _server_collecting_masked(params: MaskingParams, ids=(0, 1, 2, 3)):
    server = MaskingServer(params, ids)
    clients = {cid: MaskingClient(cid) for cid in ids}
    outgoing = server.start()
    for _ in range(2):  # advertise_keys, share_keys
        for cid, frame in outgoing:
            for reply in clients[cid].receive(frame):
                server.receive(reply)
        outgoing = server.advance()
    return server, clients, outgoing


def _huge_masked_input(server: MaskingServer, sender: int, mib: int) -> bytes:
    words = mib << 20
    return _frame(m.MaskedInput.KIND, struct.pack(">BI", 4, words), words,
                  session_id=server.session_id, sender=sender, receiver=SERVER_ID)


def test_a_huge_masked_input_is_refused_before_any_allocation():
    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=4)
    server, clients, outgoing = _server_collecting_masked(params)
    frame = _huge_masked_input(server, 0, 64)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(MalformedMessage, match="exceeds"):
            server.receive(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10, f"rejecting a 64 MiB frame allocated {peak} bytes"
    del frame
    # The sender simply has not answered: the others finish with an exact sum.
    inputs = {cid: np.arange(4, dtype=np.uint64) + cid for cid in clients}
    for cid, frame in outgoing:
        clients[cid].set_input(inputs[cid])
        if cid != 0:
            for reply in clients[cid].receive(frame):
                server.receive(reply)
    for cid, frame in server.advance():
        for reply in clients[cid].receive(frame):
            server.receive(reply)
    server.advance()
    assert server.result.contributors == (1, 2, 3)
    np.testing.assert_array_equal(server.result.total, _plain_sum(inputs, (1, 2, 3), 16))


def test_oversized_server_frames_are_refused_by_a_client_of_a_small_session():
    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=4, active=True)
    trust, signing = StaticTrustStore.generate([0, 1, 2, 3])
    server = MaskingServer(params, [0, 1, 2, 3], trust=trust)
    client = MaskingClient(1, signing_key=signing[1], trust=trust)
    client.set_input(np.arange(4))
    client.receive(dict(server.start())[1])
    # A key directory for 10^6 clients (68 MiB on main's limits) to a 4-client session.
    count = 1 << 20
    body = struct.pack(">I", 4 * count)
    frame = _frame(m.KeyDirectory.KIND, body, 4 * count, session_id=server.session_id,
                   sender=SERVER_ID, receiver=1)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(MalformedMessage, match="exceeds"):
            client.receive(frame)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 10
    assert client.state is ClientState.ABORTED  # a hostile server: the client leaves


def test_a_huge_consistency_request_is_refused_by_its_size():
    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=4, active=True)
    config = SessionConfig(params, (0, 1, 2, 3), bytes(32))
    limits = m.Limits.for_session(config)
    count = 1 << 20  # 4 MiB of client ids
    frame = _frame(m.ConsistencyRequest.KIND, struct.pack(">I", 4 * count), 4 * count,
                   session_id=bytes(16), sender=SERVER_ID, receiver=1)
    with pytest.raises(MalformedMessage, match="exceeds"):
        decode(frame, limits=limits)
    assert m.ConsistencyRequest.max_body(limits) == 4 + 4 * 4


_RSS_PROBE = textwrap.dedent("""
    import gc, struct, sys
    import numpy as np
    from protocols.errors import MalformedMessage
    from protocols.keys import StaticTrustStore
    from protocols.masking import MaskingClient, MaskingParams, MaskingServer
    from protocols.masking import messages as m
    from protocols.wire import SERVER_ID, FrameHeader

    def rss():
        out = {}
        for line in open("/proc/self/status"):
            key, value = line.split(":", 1)
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
        return out

    def frame(kind, prefix, payload, session_id, sender, receiver):
        header = FrameHeader(m.PROTOCOL_CODE, kind, session_id, 0, sender, receiver)
        return header.pack(len(prefix) + payload) + prefix + bytes(payload)

    def growth(call, data):
        gc.collect()
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the high-water mark to the current RSS
        before = rss()["VmRSS"]
        try:
            call(data)
        except MalformedMessage:
            pass
        else:
            raise SystemExit("accepted")
        return rss()["VmHWM"] - before

    ids = [0, 1, 2, 3]
    trust, signing = StaticTrustStore.generate(ids)
    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=4, active=True)
    server = MaskingServer(params, ids, trust=trust)
    clients = {c: MaskingClient(c, signing_key=signing[c], trust=trust) for c in ids}
    for c in ids:
        clients[c].set_input(np.arange(4))
    starts = dict(server.start())
    for c in ids:
        for reply in clients[c].receive(starts[c]):
            server.receive(reply)
    directory = dict(server.advance())
    for c in ids:
        for reply in clients[c].receive(directory[c]):
            server.receive(reply)
    bundles = dict(server.advance())  # the server now collects masked inputs
    sid = server.session_id
    words = 64 << 20  # 256 MiB of 32-bit words
    masked = frame(6, struct.pack(">BI", 4, words * 4), words * 4, sid, 0, SERVER_ID)
    keys = 1 << 20  # a 68 MiB key directory
    directory = frame(3, struct.pack(">I", 4 * keys), 4 * keys + 4 + 64 * keys, sid,
                      SERVER_ID, 1)
    fresh = MaskingClient(1, signing_key=signing[1], trust=trust)
    fresh.receive(starts[1])
    for c in ids:
        clients[c].receive(bundles[c])  # masked: the clients now await a consistency request
    request = frame(7, struct.pack(">I", 4 << 20), 4 << 20, sid, SERVER_ID, 2)
    print(growth(server.receive, masked), growth(fresh.receive, directory),
          growth(clients[2].receive, request))
""")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                    reason="the RSS probe needs Linux's /proc/self/clear_refs")
def test_hostile_frame_sizes_cost_bounded_rss():
    """256 MiB MaskedInput, 68 MiB KeyDirectory, 4 MiB ConsistencyRequest: each refused cheaply.

    On main these cost the server +512 MiB and a client +448 MiB and +106 MiB.
    """
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=False,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                              "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    growth = [int(v) for v in out.stdout.split()]
    assert len(growth) == 3
    for name, grew in zip(("MaskedInput", "KeyDirectory", "ConsistencyRequest"), growth):
        assert grew < 8 << 20, f"rejecting a hostile {name} grew RSS by {grew >> 20} MiB"


# ----------------------------------------------------------- item 6: low-order X25519 keys
_P = 2**255 - 19
_SMALL_ORDER_U = (0, 1, _P - 1, _P, _P + 1,
                  325606250916557431795983626356110631294008115727848805560023387167927233504,
                  39382357235489614581723060781553021112529911719440698176882885853963445705823)
SMALL_ORDER_KEYS = [(u | top).to_bytes(32, "little") for u in _SMALL_ORDER_U
                    for top in (0, 1 << 255)]


def test_check_public_key_refuses_every_small_order_point_and_accepts_real_keys():
    probe = X25519PrivateKey.generate()
    for key in SMALL_ORDER_KEYS:
        with pytest.raises(MalformedMessage):
            check_public_key(key)
        with pytest.raises(ValueError):  # the library agrees: all-zero shared secret
            probe.exchange(X25519PublicKey.from_public_bytes(key))
    for _ in range(20):
        check_public_key(generate_key_pair().public_bytes)
    with pytest.raises(MalformedMessage):
        check_public_key(bytes(31))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_check_public_key_agrees_with_the_library_on_any_bytes(raw):
    probe = X25519PrivateKey.generate()
    try:
        probe.exchange(X25519PublicKey.from_public_bytes(raw))
        library_accepts = True
    except ValueError:
        library_accepts = False
    try:
        check_public_key(raw)
        ours_accepts = True
    except MalformedMessage:
        ours_accepts = False
    assert ours_accepts == library_accepts


@pytest.mark.parametrize("which", ["c_public", "s_public"])
@pytest.mark.parametrize("key", SMALL_ORDER_KEYS, ids=[f"u{i}" for i in range(14)])
def test_low_order_key_makes_its_owner_a_dropout_and_the_session_goes_on(which, key):
    params = MaskingParams(threshold=3, degree=4, bits=16, vector_length=4)
    ids = list(range(6))
    inputs = _inputs(params, ids)

    def poison(stage, sender, receiver, frame):
        if sender == 2 and isinstance(decode(frame).message, m.AdvertiseKeys):
            return rewrite(frame, lambda msg: dataclasses.replace(msg, **{which: key}))
        return frame

    trace = SessionTrace()
    result = run_session(inputs, params, trace=trace, interceptor=poison)
    assert 2 not in result.contributors and len(result.contributors) == 5
    np.testing.assert_array_equal(result.total, _plain_sum(inputs, result.contributors, 16))
    assert [(s, c, type(e)) for s, c, e in trace.rejected_frames] == [
        ("advertise_keys", 2, MalformedMessage)]
    assert not trace.client_errors  # no honest neighbour aborted


def test_a_client_refuses_a_directory_with_a_low_order_key():
    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=4)

    def poison(stage, sender, receiver, frame):
        if receiver == 0 and isinstance(decode(frame).message, m.KeyDirectory):
            def swap(msg):
                bad = dataclasses.replace(msg.entries[1], s_public=SMALL_ORDER_KEYS[0])
                return dataclasses.replace(msg, entries=(msg.entries[0], bad) + msg.entries[2:])
            return rewrite(frame, swap)
        return frame

    trace = SessionTrace()
    log = FrameLog()

    def both(stage, sender, receiver, frame):
        return log(stage, sender, receiver, poison(stage, sender, receiver, frame))

    run_session(_inputs(params, [0, 1, 2, 3]), params, trace=trace, interceptor=both)
    assert isinstance(trace.client_errors[0], MalformedMessage)
    assert not log.find(m.EncryptedShares, sender=0)


# --------------------------------------------------- item 10: encoder bits, round_index range
def test_for_sum_at_62_bits_accepts_its_own_result():
    enc = FixedPointEncoder.for_sum(clip=1.0, max_summands=8, bits=62)
    enc.check_no_wrap(8)
    x = np.array([-1.0, 1.0, 0.25, -0.75])
    total = enc.ring_sum([enc.encode(x, stochastic=False)] * 8)
    np.testing.assert_allclose(enc.decode(total), 8 * x)


@settings(max_examples=300, deadline=None)
@given(bits=st.integers(2, 62), summands=st.integers(1, 1 << 40),
       clip=st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False))
def test_for_sum_refuses_only_what_cannot_fit(bits, summands, clip):
    fits = ((1 << (bits - 1)) - 1) // summands - 1 >= 1
    if not fits:
        with pytest.raises(EncodingError, match="do not fit"):
            FixedPointEncoder.for_sum(clip=clip, max_summands=summands, bits=bits)
        return
    enc = FixedPointEncoder.for_sum(clip=clip, max_summands=summands, bits=bits)
    enc.check_no_wrap(summands)  # the encoder it built never wraps at its own size
    assert summands * enc.max_level <= (1 << (bits - 1)) - 1


@pytest.mark.parametrize(("round_index", "error"), [
    (-1, ValueError), (2**32, ValueError), (2**40, ValueError), (True, TypeError),
    (1.5, TypeError)])
def test_out_of_range_round_index_is_a_clear_error(round_index, error):
    params = MaskingParams(threshold=2, degree=2, bits=8, vector_length=2)
    inputs = {c: np.ones(2, dtype=np.uint64) for c in range(3)}
    with pytest.raises(error, match="round_index"):
        MaskingServer(params, [0, 1, 2], round_index=round_index)
    with pytest.raises(error, match="round_index"):
        run_session(inputs, params, round_index=round_index)
    with pytest.raises(error, match="round_index"):
        SecAgg().run_round(inputs, bits=8, round_index=round_index)
    with pytest.raises(error, match="round_index"):
        binding(round_index, 0, 1)


def test_the_last_round_index_still_works():
    params = MaskingParams(threshold=2, degree=2, bits=8, vector_length=2)
    inputs = {c: np.full(2, c, dtype=np.uint64) for c in range(3)}
    result = run_session(inputs, params, round_index=2**32 - 1)
    np.testing.assert_array_equal(result.total, [3, 3])
