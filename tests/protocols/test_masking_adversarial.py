"""A curious server, a tampering network, replays, cross-session frames and fuzzed bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import (
    ConsistencyError,
    DecryptionError,
    InvalidSignature,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from protocols.keys import StaticTrustStore
from protocols.masking import (
    ClientState,
    MaskingClient,
    MaskingParams,
    MaskingServer,
    SessionTrace,
    UnmaskRequestRefused,
    decode,
    run_session,
)
from protocols.masking import messages as m
from protocols.testing import FrameLog, random_inputs, rewrite

IDS = list(range(8))
PARAMS = MaskingParams(threshold=5, degree=7, bits=16, vector_length=6)


def _inputs(seed: int = 0):
    return random_inputs(IDS, PARAMS.vector_length, PARAMS.bits, np.random.default_rng(seed))


def _interceptor(kind: type, receiver: int, change):
    def intercept(stage, sender, rcv, frame):
        if rcv == receiver and isinstance(decode(frame).message, kind):
            return rewrite(frame, change)
        return frame
    return intercept


def test_curious_server_asking_for_both_shares_is_refused():
    # Client 0 is told that client 1 both survived and dropped: answering
    # would hand the server b_1's share and s_1's share from the same client.
    def both(msg: m.UnmaskRequest) -> m.UnmaskRequest:
        return dataclasses.replace(msg, dropped=msg.dropped + (1,))

    trace = SessionTrace()
    result = run_session(_inputs(), PARAMS, trace=trace,
                         interceptor=_interceptor(m.UnmaskRequest, 0, both))
    assert isinstance(trace.client_errors[0], UnmaskRequestRefused)
    # The honest others still finish the sum exactly (client 0 counted as silent at unmasking).
    want = sum(_inputs()[c] for c in result.contributors) % (1 << PARAMS.bits)
    np.testing.assert_array_equal(result.total, want)


def test_request_for_shares_the_client_never_received_is_refused():
    trace = SessionTrace()
    run_session(_inputs(), PARAMS, trace=trace, dropouts={3: "share_keys"},
                interceptor=_interceptor(
                    m.UnmaskRequest, 0, lambda msg: dataclasses.replace(
                        msg, dropped=tuple(sorted(msg.dropped + (3,))))))
    assert isinstance(trace.client_errors[0], UnmaskRequestRefused)


def _drive_until_unmask(params=PARAMS):
    """Honest server and clients, stepped by hand up to the unmask requests."""
    server = MaskingServer(params, IDS)
    clients = {cid: MaskingClient(cid) for cid in IDS}
    for cid in IDS:
        clients[cid].set_input(_inputs()[cid])
    outgoing = server.start()
    for _ in range(3):
        for cid, frame in outgoing:
            for reply in clients[cid].receive(frame):
                server.receive(reply)
        outgoing = server.advance()
    return server, clients, dict(outgoing)


def test_second_unmask_request_is_a_replay():
    server, clients, requests = _drive_until_unmask()
    (answer,) = clients[0].receive(requests[0])
    assert clients[0].state is ClientState.DONE
    with pytest.raises(ReplayedMessage):
        clients[0].receive(requests[0])
    assert clients[0].state is ClientState.ABORTED
    server.receive(answer)
    with pytest.raises(ReplayedMessage):
        server.receive(answer)


def test_honest_hand_driven_session_matches_sum():
    server, clients, requests = _drive_until_unmask()
    for cid, frame in requests.items():
        for reply in clients[cid].receive(frame):
            server.receive(reply)
    assert server.advance() == []
    want = sum(_inputs()[c] for c in IDS) % (1 << PARAMS.bits)
    np.testing.assert_array_equal(server.result.total, want)


def test_tampered_share_ciphertext_is_rejected():
    def flip(msg: m.ShareBundle) -> m.ShareBundle:
        bad = bytearray(msg.ciphertexts[0])
        bad[10] ^= 1
        return dataclasses.replace(msg, ciphertexts=(bytes(bad),) + msg.ciphertexts[1:])

    trace = SessionTrace()
    run_session(_inputs(), PARAMS, trace=trace, interceptor=_interceptor(m.ShareBundle, 2, flip))
    assert isinstance(trace.client_errors[2], DecryptionError)


def test_swapped_share_ciphertexts_are_rejected():
    # Relaying A's ciphertext as if it came from B must fail authentication.
    def swap(msg: m.ShareBundle) -> m.ShareBundle:
        cts = list(msg.ciphertexts)
        cts[0], cts[1] = cts[1], cts[0]
        return dataclasses.replace(msg, ciphertexts=tuple(cts))

    trace = SessionTrace()
    run_session(_inputs(), PARAMS, trace=trace, interceptor=_interceptor(m.ShareBundle, 4, swap))
    assert isinstance(trace.client_errors[4], DecryptionError)


def test_a_share_ciphertext_reflected_to_its_sender_is_rejected():
    """Session 5: the two ends of a pair share one AEAD key (one message per direction,
    nonce = direction). A server that hands client 4 its own ciphertext for client 5 in
    place of 5's must fail authentication (other nonce, other associated data)."""
    sent: dict[int, bytes] = {}

    def intercept(stage, sender, receiver, frame):
        msg = decode(frame).message
        if isinstance(msg, m.EncryptedShares) and sender == 4:
            sent.update(zip(msg.receivers, msg.ciphertexts))
        if isinstance(msg, m.ShareBundle) and receiver == 4:
            cts = tuple(sent[5] if s == 5 else ct for s, ct in zip(msg.senders, msg.ciphertexts))
            return rewrite(frame, lambda b: dataclasses.replace(b, ciphertexts=cts))
        return frame

    trace = SessionTrace()
    run_session(_inputs(), PARAMS, trace=trace, interceptor=intercept)
    assert isinstance(trace.client_errors[4], DecryptionError)


def test_a_pair_key_seals_each_direction_under_its_own_nonce():
    from protocols.keys import open_from_pair, seal_for_pair

    key = bytes(range(32))
    low_to_high = seal_for_pair(key, 3, 9, b"same plaintext", b"ad")
    high_to_low = seal_for_pair(key, 9, 3, b"same plaintext", b"ad")
    assert low_to_high != high_to_low  # distinct nonces: the key stream is never reused
    assert open_from_pair(key, 3, 9, low_to_high, b"ad") == b"same plaintext"
    with pytest.raises(DecryptionError):
        open_from_pair(key, 9, 3, low_to_high, b"ad")
    with pytest.raises(ValueError):
        seal_for_pair(key, 3, 3, b"x", b"ad")


def test_client_rejects_replay_and_cross_session_frames():
    server_a = MaskingServer(PARAMS, IDS)
    server_b = MaskingServer(PARAMS, IDS)
    clients = {}
    for cid, frame in server_a.start():
        clients[cid] = MaskingClient(cid)
        clients[cid].set_input(_inputs()[cid])
        for reply in clients[cid].receive(frame):
            server_a.receive(reply)
    directory_a = dict(server_a.advance())
    # A frame from session B reaches a client of session A.
    b_start = dict(server_b.start())
    with pytest.raises(RemoteProtocolError):  # a SessionStart in the wrong state
        clients[0].receive(b_start[0])
    assert clients[0].state is ClientState.ABORTED
    b_frame = rewrite(directory_a[1], lambda msg: msg)
    forged = bytearray(b_frame)
    forged[8:24] = server_b.session_id  # header session id (see protocols.wire)
    with pytest.raises(SessionMismatch):
        clients[1].receive(bytes(forged))
    # Addressed to someone else.
    with pytest.raises(SessionMismatch):
        clients[2].receive(directory_a[3])
    # A replayed SessionStart after the client moved on.
    a_start = {cid: f for cid, f in MaskingServer(PARAMS, IDS, session_id=server_a.session_id)
               .start()}
    with pytest.raises(ReplayedMessage):
        clients[4].receive(a_start[4])


def test_server_rejects_replayed_late_and_foreign_frames():
    log = FrameLog()
    run_session(_inputs(), PARAMS, interceptor=log)
    server = MaskingServer(PARAMS, IDS)
    clients = {}
    replies = {}
    for cid, frame in server.start():
        clients[cid] = MaskingClient(cid)
        clients[cid].set_input(_inputs()[cid])
        (replies[cid],) = clients[cid].receive(frame)
        server.receive(replies[cid])
    with pytest.raises(ReplayedMessage):
        server.receive(replies[0])
    # A frame recorded in another session.
    (foreign,) = log.find(m.AdvertiseKeys, sender=0)
    with pytest.raises(SessionMismatch):
        server.receive(foreign)
    directories = dict(server.advance())
    # Late advertise (stage closed) is rejected as a replay of a closed stage.
    with pytest.raises(ReplayedMessage):
        server.receive(replies[1])
    (shares,) = clients[0].receive(directories[0])
    server.receive(shares)
    tampered = rewrite(shares, lambda msg: dataclasses.replace(msg, receivers=msg.receivers[:-1],
                                                                ciphertexts=msg.ciphertexts[:-1]))
    (shares1,) = clients[1].receive(directories[1])
    with pytest.raises(RemoteProtocolError):
        server.receive(rewrite(shares1, lambda msg: dataclasses.replace(
            msg, receivers=msg.receivers[:-1], ciphertexts=msg.ciphertexts[:-1])))
    assert tampered  # built without error: the check is the server's, not the encoder's


def test_server_rejects_out_of_range_masked_input():
    params = MaskingParams(threshold=2, degree=2, bits=7, vector_length=3)
    server = MaskingServer(params, [0, 1, 2])
    clients = {cid: MaskingClient(cid) for cid in range(3)}
    outgoing = server.start()
    for _ in range(2):
        for cid, frame in outgoing:
            clients[cid].set_input(np.array([1, 2, 3]))
            for reply in clients[cid].receive(frame):
                server.receive(reply)
        outgoing = server.advance()
    cid, frame = outgoing[0]
    (masked,) = clients[cid].receive(frame)
    bad = rewrite(masked, lambda msg: m.MaskedInput(np.array([200, 1, 1], dtype="<u4")))
    with pytest.raises(MalformedMessage):
        server.receive(bad)
    server.receive(masked)


def test_active_mode_rejects_forged_keys():
    trust, signing = StaticTrustStore.generate(IDS)
    impostor, _ = StaticTrustStore.generate(IDS)  # the server trusts other keys for client 3
    params = dataclasses.replace(PARAMS, threshold=6, active=True)
    mixed = StaticTrustStore({cid: (impostor if cid == 3 else trust).verification_key(cid)
                              for cid in IDS})
    trace = SessionTrace()
    result = run_session(_inputs(), params, signing_keys=signing, trust=mixed, trace=trace)
    # The server drops client 3's advertisement; the sum is over the others.
    assert any(isinstance(e, InvalidSignature) for _, c, e in trace.rejected_frames if c == 3)
    assert 3 not in result.contributors


def test_active_mode_detects_inconsistent_survivor_sets():
    trust, signing = StaticTrustStore.generate(IDS)
    params = dataclasses.replace(PARAMS, threshold=6, active=True)

    def lie(msg: m.UnmaskRequest) -> m.UnmaskRequest:
        return dataclasses.replace(msg, survivors=msg.survivors[1:],
                                   dropped=tuple(sorted(msg.dropped + msg.survivors[:1])))

    trace = SessionTrace()
    run_session(_inputs(), params, signing_keys=signing, trust=trust, trace=trace,
                interceptor=_interceptor(m.UnmaskRequest, 5, lie))
    assert isinstance(trace.client_errors[5], ConsistencyError)


def test_active_client_refuses_downgrade():
    trust, signing = StaticTrustStore.generate(IDS)
    client = MaskingClient(0, signing_key=signing[0], trust=trust)
    (_, frame), *_ = MaskingServer(PARAMS, IDS).start()
    with pytest.raises(RemoteProtocolError):
        client.receive(frame)


def _valid_frames() -> list[bytes]:
    log = FrameLog()
    params = dataclasses.replace(PARAMS, threshold=6, active=True)
    trust, signing = StaticTrustStore.generate(IDS)
    run_session(_inputs(), params, signing_keys=signing, trust=trust, interceptor=log,
                dropouts={7: "masked_input"})
    seen, frames = set(), []
    for _, _, _, frame in log.frames:
        kind = frame[6]
        if kind not in seen:
            seen.add(kind)
            frames.append(frame)
    assert len(seen) == 10
    return frames


VALID_FRAMES = _valid_frames()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_decoding_random_bytes_raises_only_malformed(data):
    try:
        decode(data)
    except MalformedMessage:
        pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_FRAMES), st.data())
def test_decoding_mutated_frames_raises_only_protocol_errors(frame, data):
    mutation = data.draw(st.sampled_from(["truncate", "extend", "flip", "splice"]))
    buf = bytearray(frame)
    if mutation == "truncate":
        buf = buf[:data.draw(st.integers(0, len(buf) - 1))]
    elif mutation == "extend":
        buf += data.draw(st.binary(min_size=1, max_size=16))
    elif mutation == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            pos = data.draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    else:
        pos = data.draw(st.integers(0, len(buf)))
        buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        decode(bytes(buf))
    except MalformedMessage:
        pass
    # A client fed the mutated frame fails only with a protocol error.
    client = MaskingClient(decode(frame).header.receiver if frame[6] % 2 == 1 else 0)
    try:
        client.receive(bytes(buf))
    except ProtocolError:
        pass


def test_oversized_fields_are_rejected_before_allocation():
    limits = m.Limits(max_participants=4, max_vector_length=10)
    start = next(f for f in VALID_FRAMES if f[6] == m.SessionStart.KIND)
    with pytest.raises(MalformedMessage):
        decode(start, limits=limits)
    masked = next(f for f in VALID_FRAMES if f[6] == m.MaskedInput.KIND)
    with pytest.raises(MalformedMessage):
        decode(masked, limits=m.Limits(max_vector_length=2))
