"""Adversarial behaviour, in one place (issue 9, point 4).

Each test plays one attacker against honest parties and checks that the
attack is refused with a typed error, and that honest parties still get an
exact sum (or a clean abort). Other test files cover more variants of some
of these; this file holds the list the security review (docs/security.md) cites:

* a curious server asking for both shares of one client;
* a server lying about the survivor set (caught in active mode only);
* a client replaying a previous round's message;
* a client sending a vector of the wrong length, NaN, or values out of range;
* a Paillier ciphertext under another key;
* a key holder asked to decrypt a single client's ciphertext.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from protocols.encoding import FixedPointEncoder
from protocols.errors import (
    BelowThreshold,
    ConsistencyError,
    DecryptionError,
    EncodingError,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessage,
    ReplayedMessage,
    SessionMismatch,
)
from protocols.keys import StaticTrustStore
from protocols.masking import (
    MaskingClient,
    MaskingParams,
    MaskingServer,
    SessionTrace,
    UnmaskRequestRefused,
    decode,
    run_session,
)
from protocols.masking import messages as m
from protocols.paillier import (
    AggregatorState,
    ForeignKey,
    PaillierAggregator,
    PaillierClient,
    PaillierDeployment,
    SlotOverflow,
    ciphertexts_to_bytes,
    deal_threshold_keys,
    encrypt_packed,
    generate_keypair,
)
from protocols.paillier.messages import (
    KEY_HOLDER_ID_BASE,
    DecryptionRequest,
    EncryptedUpdate,
    Kind,
    update_statement,
)
from protocols.testing import FrameLog, random_inputs, rewrite
from protocols.wire import SERVER_ID, FrameHeader, decode_frame, encode_frame

IDS = list(range(7))
BITS = 20
PASSIVE = MaskingParams(threshold=4, degree=6, bits=BITS, vector_length=5)
SPARSE = MaskingParams(threshold=3, degree=4, bits=BITS, vector_length=5)  # SecAgg+ graph
ACTIVE = MaskingParams(threshold=5, degree=6, bits=BITS, vector_length=5, active=True)


def _inputs(params=PASSIVE, seed=0):
    return random_inputs(IDS, params.vector_length, params.bits, np.random.default_rng(seed))


def _sum(inputs, contributors, bits=BITS):
    total = sum(inputs[c].astype(np.uint64) for c in contributors)
    return np.asarray(total, dtype=np.uint64) & np.uint64((1 << bits) - 1)


def _rewrite_to(kind, receiver, change):
    def intercept(stage, sender, rcv, frame):
        if rcv == receiver and isinstance(decode(frame).message, kind):
            return rewrite(frame, change)
        return frame
    return intercept


# ----------------------------------------------------------- curious server: both shares
@pytest.mark.parametrize("params", [PASSIVE, SPARSE], ids=["secagg", "secagg+"])
def test_curious_server_requesting_both_shares_of_one_client_is_refused(params):
    inputs = _inputs(params)
    victim_holder = 0

    def both(msg: m.UnmaskRequest) -> m.UnmaskRequest:
        # Ask for the self-mask seed share AND the mask-key share of a survivor.
        target = next(c for c in msg.survivors if c != victim_holder)
        return dataclasses.replace(msg, dropped=tuple(sorted(msg.dropped + (target,))))

    trace = SessionTrace()
    result = run_session(inputs, params, trace=trace,
                         interceptor=_rewrite_to(m.UnmaskRequest, victim_holder, both))
    assert isinstance(trace.client_errors[victim_holder], UnmaskRequestRefused)
    np.testing.assert_array_equal(result.total, _sum(inputs, result.contributors))


def test_refusing_client_reveals_nothing_more():
    inputs = _inputs()
    log = FrameLog()

    def both(msg):
        return dataclasses.replace(msg, dropped=(1,))

    def intercept(stage, sender, rcv, frame):
        frame = _rewrite_to(m.UnmaskRequest, 0, both)(stage, sender, rcv, frame)
        return log(stage, sender, rcv, frame)

    run_session(inputs, PASSIVE, interceptor=intercept, trace=SessionTrace())
    assert log.find(m.UnmaskShares, sender=0) == []  # client 0 sent no share at all


# ---------------------------------------------------- a server lying about survivors
def _lie(msg: m.UnmaskRequest) -> m.UnmaskRequest:
    # Claim that survivor 1 dropped: its mask key would be revealed while its
    # masked input is in the sum — enough shares of both would unmask x_1.
    return dataclasses.replace(msg, survivors=tuple(c for c in msg.survivors if c != 1),
                               dropped=tuple(sorted(msg.dropped + (1,))))


def test_server_lying_about_the_survivor_set_is_caught_in_active_mode():
    trust, signing = StaticTrustStore.generate(IDS)
    trace = SessionTrace()
    log = FrameLog()

    def intercept(stage, sender, rcv, frame):
        frame = _rewrite_to(m.UnmaskRequest, 4, _lie)(stage, sender, rcv, frame)
        return log(stage, sender, rcv, frame)

    run_session(_inputs(ACTIVE), ACTIVE, signing_keys=signing, trust=trust, trace=trace,
                interceptor=intercept)
    assert isinstance(trace.client_errors[4], ConsistencyError)
    assert log.find(m.UnmaskShares, sender=4) == []


def test_the_same_lie_is_not_detectable_in_passive_mode():
    # Documented limit (docs/security.md): the passive mode trusts the server
    # about who survived; the client still refuses an overlap (test above).
    trace = SessionTrace()
    run_session(_inputs(), PASSIVE, trace=trace, interceptor=_rewrite_to(m.UnmaskRequest, 4, _lie))
    assert 4 not in trace.client_errors


# --------------------------------------------------- replay of a previous round's message
def _first_stage(params, trust=None, signing=None, *, round_index=1):
    server = MaskingServer(params, IDS, round_index=round_index, trust=trust)
    clients = {}
    for cid, frame in server.start():
        clients[cid] = MaskingClient(cid, signing_key=(signing or {}).get(cid),
                                     trust=trust if params.active else None)
        clients[cid].set_input(_inputs(params)[cid])
    return server, clients


def test_client_replaying_a_previous_rounds_message_is_rejected():
    trust, signing = StaticTrustStore.generate(IDS)
    log = FrameLog()
    run_session(_inputs(ACTIVE), ACTIVE, round_index=0, signing_keys=signing, trust=trust,
                interceptor=log)
    old_keys = log.find(m.AdvertiseKeys, sender=3)[0]
    server, _ = _first_stage(ACTIVE, trust, signing, round_index=1)
    with pytest.raises(SessionMismatch):  # as recorded: another session and round
        server.receive(old_keys)
    # Re-stamped into the new session's header: the signature binds the old session.
    header, body = decode_frame(old_keys)
    restamped = encode_frame(dataclasses.replace(header, session_id=server.session_id,
                                                 round=1), body)
    with pytest.raises(InvalidSignature):
        server.receive(restamped)
    assert 3 not in server.answered


def test_replayed_share_ciphertexts_fail_authentication():
    # Shares relayed in round 0 are sealed under keys bound to round 0's session.
    log = FrameLog()
    run_session(_inputs(), PASSIVE, round_index=0, interceptor=log)
    old_bundle = decode(log.find(m.ShareBundle, receiver=2)[0]).message
    trace = SessionTrace()
    result = run_session(_inputs(seed=1), PASSIVE, round_index=1, trace=trace,
                         interceptor=_rewrite_to(m.ShareBundle, 2, lambda msg: old_bundle))
    assert isinstance(trace.client_errors[2], (DecryptionError, MalformedMessage))
    np.testing.assert_array_equal(result.total, _sum(_inputs(seed=1), result.contributors))


def test_a_replayed_message_within_the_round_is_rejected():
    server, clients = _first_stage(PASSIVE)
    starts = dict(MaskingServer(PASSIVE, IDS, round_index=1, session_id=server.session_id)
                  .start())
    (reply,) = clients[0].receive(starts[0])
    server.receive(reply)
    with pytest.raises(ReplayedMessage):
        server.receive(reply)


def test_paillier_client_replaying_a_previous_rounds_update_is_rejected(paillier_keys):
    deployment = PaillierDeployment(threshold_keys=paillier_keys)
    old = _paillier_round(deployment, round_index=0)
    new = _paillier_round(deployment, round_index=1)
    with pytest.raises(SessionMismatch):
        new["aggregator"].receive(old["uploads"][0])
    header, body = decode_frame(old["uploads"][0])
    restamped = encode_frame(dataclasses.replace(
        header, session_id=new["aggregator"].session_id, round=1), body)
    with pytest.raises(InvalidSignature):  # the signature binds session and round
        new["aggregator"].receive(restamped)


# ----------------------------------------------- wrong length, NaN, out of range
def test_masked_vector_of_the_wrong_length_is_rejected():
    trace = SessionTrace()
    inputs = _inputs()

    def shorten(stage, sender, rcv, frame):
        if sender == 5 and isinstance(decode(frame).message, m.MaskedInput):
            return rewrite(frame, lambda msg: m.MaskedInput(msg.words[:-1].copy()))
        return frame

    result = run_session(inputs, PASSIVE, trace=trace, interceptor=shorten)
    rejected = [e for stage, c, e in trace.rejected_frames if c == 5]
    assert rejected and isinstance(rejected[0], MalformedMessage)
    assert 5 not in result.contributors
    np.testing.assert_array_equal(result.total, _sum(inputs, result.contributors))


def test_honest_client_refuses_to_send_a_vector_of_the_wrong_length():
    client = MaskingClient(0)
    client.set_input(np.arange(PASSIVE.vector_length + 1))
    with pytest.raises(LocalProtocolError):
        client.receive(dict(MaskingServer(PASSIVE, IDS).start())[0])


def test_masked_words_out_of_range_are_rejected():
    trace = SessionTrace()
    inputs = _inputs()

    def overflow(stage, sender, rcv, frame):
        if sender == 2 and isinstance(decode(frame).message, m.MaskedInput):
            return rewrite(frame, lambda msg: m.MaskedInput(msg.words | np.uint32(1 << BITS)))
        return frame

    result = run_session(inputs, PASSIVE, trace=trace, interceptor=overflow)
    assert any(c == 2 and isinstance(e, MalformedMessage) for _, c, e in trace.rejected_frames)
    np.testing.assert_array_equal(result.total, _sum(inputs, result.contributors))


def test_nan_cannot_be_encoded():
    encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=4)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(EncodingError):
            encoder.encode(np.array([0.5, bad]))


def test_a_nan_update_aborts_the_pipeline_round_with_a_typed_error():
    # The engine drops a non-finite client before aggregation (see
    # test_a_diverged_client_is_a_dropout_...); handed one anyway, the encoding refuses
    # with a typed error instead of poisoning the sum.
    from secure_fedrec.aggregation import ClientContext, ClientUpdate, QuantizedEncoding

    update = ClientUpdate.from_dense(np.array([0.1, np.nan]))
    with pytest.raises(EncodingError):
        QuantizedEncoding(coordinate_clip=1.0).client(update, ClientContext(0, 3, 3.0))


def test_values_outside_the_clipping_range_are_clipped_and_counted(run_pipeline):
    from secure_fedrec.aggregation import AggregationPipeline, QuantizedEncoding

    dense = np.array([[0.1, 50.0], [0.2, 0.3], [-1e9, -0.7]])
    out, _, measurements = run_pipeline(AggregationPipeline((), QuantizedEncoding(coordinate_clip=1.0)),
                                        dense, np.ones(3), ring_bits=32)
    step = measurements["quantization_step"]
    np.testing.assert_allclose(out.total, np.clip(dense, -1, 1).sum(axis=0), atol=3 * step)
    assert measurements["coordinates_clipped"] == 2


def test_paillier_client_refuses_wrong_length_and_out_of_range(paillier_keys):
    deployment = PaillierDeployment(threshold_keys=paillier_keys)
    for vector in (np.zeros(6, dtype=np.uint64), np.full(5, 1 << 40, dtype=np.uint64)):
        session = _paillier_round(deployment, round_index=0, upload=False)
        with pytest.raises(LocalProtocolError):
            session["clients"][0].upload(vector)


def test_paillier_update_with_the_wrong_number_of_ciphertexts_is_rejected(paillier_keys):
    deployment = PaillierDeployment(threshold_keys=paillier_keys)
    session = _paillier_round(deployment, round_index=0)
    blob = ciphertexts_to_bytes(deployment.public_key, encrypt_packed(deployment.public_key,
                                                                      [1, 2]))
    with pytest.raises(MalformedMessage):
        session["aggregator"].receive(_signed_update(session, deployment, 0, blob))


def test_paillier_slot_overflow_from_a_malicious_client_withholds_the_sum(paillier_keys):
    deployment = PaillierDeployment(threshold_keys=paillier_keys)
    session = _paillier_round(deployment, round_index=0)
    aggregator, layout = session["aggregator"], session["aggregator"].layout
    # A plaintext with every bit set: far beyond what count * (2^bits - 1) allows.
    garbage = (1 << layout.plaintext_bits) - 1
    blob = ciphertexts_to_bytes(deployment.public_key, encrypt_packed(
        deployment.public_key, [garbage] * layout.num_plaintexts))
    aggregator.receive(_signed_update(session, deployment, 0, blob))
    for frame in session["uploads"][1:]:
        aggregator.receive(frame)
    with pytest.raises(SlotOverflow):
        _decrypt(deployment, aggregator)
    assert aggregator.result is None and aggregator.state is AggregatorState.ABORTED


# ------------------------------------------------------------ ciphertext of another key
def test_paillier_ciphertext_of_another_key_is_rejected(paillier_keys, other_keys):
    deployment = PaillierDeployment(threshold_keys=paillier_keys)
    session = _paillier_round(deployment, round_index=0)
    other = other_keys.public_key
    count = session["aggregator"].layout.num_plaintexts
    foreign = ciphertexts_to_bytes(other, encrypt_packed(other, [7] * count))
    # Named by its own key's fingerprint: refused before anything is parsed.
    with pytest.raises(ForeignKey):
        session["aggregator"].receive(_signed_update(session, deployment, 0, foreign,
                                                     fingerprint=other.fingerprint))
    # Passed off under the session key (reduced into Z_{n^2} so that it parses): it
    # decrypts to garbage, which the slot check catches; no sum is released.
    size, nsquare = deployment.public_key.ciphertext_bytes, deployment.public_key.nsquare
    reduced = b"".join(
        (int.from_bytes(foreign[k:k + size], "big") % nsquare).to_bytes(size, "big")
        for k in range(0, len(foreign), size))
    session["aggregator"].receive(_signed_update(session, deployment, 0, reduced))
    for frame in session["uploads"][1:]:
        session["aggregator"].receive(frame)
    with pytest.raises(SlotOverflow):
        _decrypt(deployment, session["aggregator"])


def test_paillier_ciphertext_of_a_key_of_another_size_is_malformed(paillier_keys):
    deployment = PaillierDeployment(threshold_keys=paillier_keys)
    session = _paillier_round(deployment, round_index=0)
    bigger, _ = generate_keypair(640, insecure_for_tests=True)
    count = session["aggregator"].layout.num_plaintexts
    blob = ciphertexts_to_bytes(bigger, encrypt_packed(bigger, [1] * count))
    with pytest.raises(MalformedMessage):
        session["aggregator"].receive(_signed_update(session, deployment, 0, blob))


# ------------------------------------------- decrypting one client's ciphertext
@pytest.mark.parametrize("mode", ["threshold", "two_party"])
def test_key_holder_refuses_to_decrypt_a_single_clients_ciphertext(mode, paillier_keys,
                                                                    two_party_key):
    deployment = (PaillierDeployment(threshold_keys=paillier_keys, min_clients=2)
                  if mode == "threshold"
                  else PaillierDeployment(private_key=two_party_key, min_clients=2))
    # A dishonest aggregator announcing min_clients=1 and forwarding one signed update.
    session = _paillier_round(deployment, round_index=0, announced_min_clients=1)
    session["aggregator"].receive(session["uploads"][0])
    requests = session["aggregator"].close_collection()
    for frame in requests:
        index = decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE
        with pytest.raises(BelowThreshold):
            deployment.key_holders[index].receive(frame)


def test_key_holder_refuses_one_client_listed_twice(paillier_keys):
    deployment = PaillierDeployment(threshold_keys=paillier_keys, min_clients=2)
    session = _paillier_round(deployment, round_index=0, announced_min_clients=1)
    session["aggregator"].receive(session["uploads"][0])
    frame = session["aggregator"].close_collection()[0]
    header, body = decode_frame(frame)
    request = DecryptionRequest.parse(body,
                                      ciphertext_bytes=deployment.public_key.ciphertext_bytes)
    twice = dataclasses.replace(request, contributors=request.contributors * 2,
                                digests=request.digests * 2, signatures=request.signatures * 2)
    with pytest.raises(ReplayedMessage):
        deployment.key_holders[1].receive(encode_frame(header, twice.body()))


# ------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def paillier_keys():
    return deal_threshold_keys(512, threshold=2, parties=3, insecure_for_tests=True)


@pytest.fixture(scope="module")
def other_keys():
    return deal_threshold_keys(512, threshold=2, parties=3, insecure_for_tests=True)


@pytest.fixture(scope="module")
def two_party_key():
    return generate_keypair(512, insecure_for_tests=True)[1]


def _paillier_round(deployment, *, round_index, upload=True, announced_min_clients=2):
    ids = [0, 1, 2]
    inputs = {c: np.arange(5, dtype=np.uint64) + c for c in ids}
    signing = {c: deployment.register_client(c) for c in ids}
    aggregator = PaillierAggregator(
        deployment.public_key, {c: deployment.registry[c] for c in ids}, bits=16, length=5,
        min_clients=announced_min_clients,
        threshold_params=deployment.threshold_keys.params if deployment.threshold_keys else None,
        round_index=round_index)
    clients = {c: PaillierClient(c, deployment.public_key, signing[c], min_clients=1)
               for c in ids}
    for frame in aggregator.start():
        clients[decode_frame(frame)[0].receiver].receive(frame)
    uploads = [clients[c].upload(inputs[c]) for c in ids] if upload else []
    return {"aggregator": aggregator, "clients": clients, "uploads": uploads, "inputs": inputs,
            "signing": signing}


def _signed_update(session, deployment, client_id, blob, *, fingerprint=None):
    aggregator = session["aggregator"]
    statement = update_statement(
        aggregator.session_id, aggregator.round_index, client_id,
        aggregator.params.digest(aggregator.session_id, aggregator.round_index),
        hashlib.sha256(blob).digest())
    message = EncryptedUpdate(fingerprint or deployment.public_key.fingerprint, blob,
                              session["signing"][client_id].sign(statement))
    header = FrameHeader(2, int(Kind.ENCRYPTED_UPDATE), aggregator.session_id,
                         aggregator.round_index, client_id, SERVER_ID)
    return encode_frame(header, message.body())


def _decrypt(deployment, aggregator):
    for frame in aggregator.close_collection():
        index = decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE
        for answer in deployment.key_holders[index].receive(frame):
            if aggregator.result is None:
                aggregator.receive(answer)
    return aggregator.result
