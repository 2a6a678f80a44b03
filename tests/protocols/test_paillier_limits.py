"""Hostile sizes and thin rounds: what a Paillier party refuses before it allocates or decrypts.

Issue 19, items 4 and 5 (the Paillier parts). The memory checks read the
process's peak RSS (``VmHWM``) after resetting it (``/proc/self/clear_refs``),
so they need Linux; elsewhere they skip and say so.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from protocols.errors import (
    BelowThreshold,
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
)
from protocols.paillier import (
    AggregatorState,
    KeyHolderState,
    PaillierAggregator,
    PaillierClient,
    PaillierDeployment,
    PaillierSecureSum,
    deal_threshold_keys,
    generate_keypair,
    run_session,
)
from protocols.paillier.messages import (
    KEY_HOLDER_ID_BASE,
    DecryptionRequest,
    EncryptedUpdate,
    Kind,
    Mode,
    PartialDecryptionMessage,
    encode_message,
)
from protocols.wire import SERVER_ID, Writer, decode_frame

FRAME_BYTES = 64 << 20  # the hostile frame: 64 MiB
ALLOWED_GROWTH_MIB = 8  # what rejecting it may cost (today's main: the whole frame again, or more)
SID = bytes(range(16))


@pytest.fixture(scope="module")
def keys():
    return {
        Mode.THRESHOLD: deal_threshold_keys(512, threshold=2, parties=3, insecure_for_tests=True),
        Mode.TWO_PARTY: generate_keypair(512, insecure_for_tests=True)[1],
    }


def _deployment(keys, mode: Mode, min_clients: int = 2) -> PaillierDeployment:
    if mode is Mode.THRESHOLD:
        return PaillierDeployment(threshold_keys=keys[mode], min_clients=min_clients)
    return PaillierDeployment(private_key=keys[mode], min_clients=min_clients)


def _aggregator(deployment: PaillierDeployment, clients: int = 3, *, min_clients: int = 2,
                length: int = 4) -> PaillierAggregator:
    for c in range(clients):
        deployment.register_client(c)
    threshold = deployment.threshold_keys
    return PaillierAggregator(
        deployment.public_key, {c: deployment.registry[c] for c in range(clients)}, bits=16,
        length=length, min_clients=min_clients,
        threshold_params=threshold.params if threshold else None, session_id=SID)


def _grown(frame: bytes, extra: bytes) -> bytes:
    """``frame`` with ``extra`` appended to its body (the header's length follows)."""
    header, body = decode_frame(frame)
    return encode_message(Kind(header.kind), header.session_id, header.round, header.sender,
                          header.receiver, body + extra)


def _upload(deployment: PaillierDeployment, aggregator: PaillierAggregator, client_id: int) -> bytes:
    client = PaillierClient(client_id, deployment.public_key, deployment.register_client(client_id))
    client.receive(aggregator.announcement_for(client_id))
    return client.upload(np.arange(aggregator.layout.length, dtype=np.uint64))


# -- item 5: every frame is bounded by the session before it is decoded --------------------------
def _peak_rss_mib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) // 1024


def _growth_of(call) -> tuple[int, float, BaseException | None]:
    """Peak-RSS growth (MiB) and CPU seconds of ``call()``, and what it raised."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    before, clock = _peak_rss_mib(), time.process_time()
    raised = None
    try:
        call()
    except ProtocolError as error:
        raised = error
    return _peak_rss_mib() - before, time.process_time() - clock, raised


needs_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not Path("/proc/self/clear_refs").exists(),
    reason="peak-RSS measurement needs Linux /proc/self/clear_refs and VmHWM",
)


def _hostile_frames(deployment: PaillierDeployment, aggregator: PaillierAggregator):
    """(party, frame) pairs: each frame oversized for what its receiver's session allows."""
    filler = b"\x01" * FRAME_BYTES  # non-zero: its pages are really resident
    client = PaillierClient(0, deployment.public_key, deployment.register_client(0))
    holder = deployment.key_holders[1]
    yield "aggregator: EncryptedUpdate", aggregator.receive, encode_message(
        Kind.ENCRYPTED_UPDATE, SID, 0, 1, SERVER_ID, filler)
    yield "client: RoundAnnouncement", client.receive, encode_message(
        Kind.ROUND_ANNOUNCEMENT, SID, 0, SERVER_ID, 0, filler)
    yield "key holder: garbage request", holder.receive, encode_message(
        Kind.DECRYPTION_REQUEST, SID, 0, SERVER_ID, holder.party_id, filler)
    # A real request with the frame's bulk appended: its own parameters say how long it is.
    aggregator.receive(_upload(deployment, aggregator, 0))
    aggregator.receive(_upload(deployment, aggregator, 1))
    request = aggregator.close_collection()[0]
    yield "key holder: valid request + trailing bytes", holder.receive, _grown(request, filler)
    # A request that lists a million contributors (4 MiB of ids) for a session of 3 clients.
    body = decode_frame(request)[1]
    parsed = DecryptionRequest.parse(body, ciphertext_bytes=deployment.public_key.ciphertext_bytes)
    params = dataclasses.replace(parsed.params, headroom_bits=20, max_clients=1 << 20)
    ids = np.arange(1 << 20, dtype=">u4").tobytes()
    body = params.write(Writer()).blob(ids).getvalue()
    yield "key holder: 2^20 contributors", holder.receive, encode_message(
        Kind.DECRYPTION_REQUEST, SID, 0, SERVER_ID, holder.party_id, body + filler)
    if deployment.threshold_keys is not None:  # a decryption share far larger than the session's
        yield "aggregator: PartialDecryption", aggregator.receive, encode_message(
            Kind.PARTIAL_DECRYPTION, SID, 0, KEY_HOLDER_ID_BASE + 1, SERVER_ID, filler)
    else:
        yield "aggregator: AggregatePlaintext", aggregator.receive, encode_message(
            Kind.AGGREGATE_PLAINTEXT, SID, 0, KEY_HOLDER_ID_BASE + 1, SERVER_ID, filler)


@needs_linux
@pytest.mark.parametrize("mode", list(Mode))
def test_oversized_frames_are_refused_before_allocation(keys, mode) -> None:
    deployment = _deployment(keys, mode)
    aggregator = _aggregator(deployment)
    costs = {}
    for name, receive, frame in _hostile_frames(deployment, aggregator):
        growth, cpu, raised = _growth_of(lambda receive=receive, frame=frame: receive(frame))
        del frame
        costs[name] = (growth, round(cpu, 3), type(raised).__name__)
        assert isinstance(raised, MalformedMessage), (name, raised)
    assert all(growth <= ALLOWED_GROWTH_MIB for growth, _, _ in costs.values()), costs
    assert all(cpu < 0.5 for _, cpu, _ in costs.values()), costs
    # Nothing above hurt the session: the honest request still decrypts.
    assert deployment.key_holders[1].session_state(SID) is KeyHolderState.NEW
    assert aggregator.state is AggregatorState.DECRYPTING


def test_limits_are_the_session_sizes(keys) -> None:
    """Each bound is the largest frame the session can produce: one byte more is refused unread."""
    deployment = _deployment(keys, Mode.THRESHOLD)
    aggregator = _aggregator(deployment, length=300)
    public = deployment.public_key
    batch = aggregator.layout.num_plaintexts * public.ciphertext_bytes
    # The aggregator accepts updates and decryption shares: the larger of the two bounds both.
    largest = max(EncryptedUpdate.body_size(batch), PartialDecryptionMessage.max_body_size(
        partials_size=batch, key_bytes=public.plaintext_bytes))
    for size, refused_unread in ((largest, False), (largest + 1, True)):
        frame = encode_message(Kind.ENCRYPTED_UPDATE, SID, 0, 1, SERVER_ID, b"\x00" * size)
        with pytest.raises(MalformedMessage) as caught:
            aggregator.receive(frame)
        assert ("exceeds the limit" in str(caught.value)) is refused_unread
    with pytest.raises(MalformedMessage, match="exceeds the limit"):
        PaillierClient(2, public, deployment.register_client(2)).receive(
            _grown(aggregator.announcement_for(2), b"\x00"))
    for client_id in range(3):
        aggregator.receive(_upload(deployment, aggregator, client_id))
    requests = aggregator.close_collection()
    holder = deployment.key_holders[1]
    with pytest.raises(MalformedMessage, match="exceeds the limit"):  # a request has one size
        holder.receive(_grown(requests[0], b"\x00"))
    header, body = decode_frame(requests[0])
    with pytest.raises(MalformedMessage):
        holder.receive(encode_message(Kind.DECRYPTION_REQUEST, header.session_id, header.round,
                                      header.sender, header.receiver, body[:-1]))
    answers = holder.receive(requests[0]) + deployment.key_holders[2].receive(requests[1])
    for answer in answers:
        aggregator.receive(answer)
    assert aggregator.state is AggregatorState.DONE


# -- item 4: no decryption with fewer than the session's minimum of contributors ----------------
# These held before the hardening too (docs/security.md §3.5 says so); they pin it.
@pytest.mark.parametrize("mode", list(Mode))
def test_aggregator_sends_no_request_below_the_minimum(keys, mode) -> None:
    deployment = _deployment(keys, mode, min_clients=3)
    aggregator = _aggregator(deployment, 4, min_clients=3)
    for client_id in (0, 1):
        aggregator.receive(_upload(deployment, aggregator, client_id))
    with pytest.raises(BelowThreshold) as caught:
        aggregator.close_collection()
    assert (caught.value.survivors, caught.value.threshold) == (2, 3)
    assert aggregator.state is AggregatorState.ABORTED
    with pytest.raises(LocalProtocolError):  # and it cannot be talked into one afterwards
        aggregator.close_collection()
    with pytest.raises(ProtocolError):
        aggregator.receive(_upload(deployment, aggregator, 2))


@pytest.mark.parametrize("mode", list(Mode))
def test_key_holders_refuse_below_their_own_minimum(keys, mode) -> None:
    """An aggregator configured with a lower minimum still gets nothing decrypted."""
    deployment = _deployment(keys, mode, min_clients=3)
    aggregator = _aggregator(deployment, 4, min_clients=1)
    for client_id in (0, 1):
        aggregator.receive(_upload(deployment, aggregator, client_id))
    requests = aggregator.close_collection()
    for frame in requests:
        holder = deployment.key_holders[decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE]
        with pytest.raises(BelowThreshold):
            holder.receive(frame)
        assert holder.session_state(SID) is KeyHolderState.NEW


def test_a_thin_round_never_reaches_the_key_holders(keys, monkeypatch) -> None:
    """Through the in-process driver: dropouts below the minimum end before any request."""
    deployment = _deployment(keys, Mode.THRESHOLD, min_clients=4)
    asked = []
    for holder in deployment.key_holders.values():
        monkeypatch.setattr(holder, "receive", lambda frame, asked=asked: asked.append(frame))
    inputs = {c: np.arange(5, dtype=np.uint64) for c in range(5)}
    with pytest.raises(BelowThreshold):
        run_session(deployment, inputs, bits=16, dropouts={0: "upload", 3: "announce"})
    assert asked == []
    protocol = PaillierSecureSum(keys=keys[Mode.THRESHOLD], min_clients=4, insecure_for_tests=True)
    with pytest.raises(BelowThreshold):
        protocol.run_round({c: inputs[c] for c in range(3)}, bits=16)
