"""Whole sessions through the sans-IO parties: results, dropouts, and every rejection path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.api import SecureSum
from protocols.errors import (
    BelowThreshold,
    ConsistencyError,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from protocols.paillier import (
    AggregatorState,
    ClientState,
    ForeignKey,
    InvalidCiphertext,
    PaillierAggregator,
    PaillierClient,
    PaillierDeployment,
    PaillierSecureSum,
    SlotOverflow,
    UnknownParty,
    deal_threshold_keys,
    generate_keypair,
    run_session,
)
from protocols.paillier.messages import (
    KEY_HOLDER_ID_BASE,
    DecryptionRequest,
    EncryptedUpdate,
    Kind,
)
from protocols.paillier.session import _frame
from protocols.plaintext import PlaintextSum
from protocols.wire import SERVER_ID, decode_frame

BITS = 16


@pytest.fixture(scope="module")
def threshold_keys():
    return deal_threshold_keys(512, threshold=2, parties=3, insecure_for_tests=True)


@pytest.fixture(scope="module")
def private_key():
    return generate_keypair(512, insecure_for_tests=True)[1]


def _inputs(clients: int, length: int = 50, bits: int = BITS) -> dict[int, np.ndarray]:
    rng = np.random.default_rng()
    return {cid: rng.integers(0, 1 << bits, size=length, dtype=np.uint64) for cid in range(clients)}


def _expected(inputs, contributors, bits=BITS) -> np.ndarray:
    return PlaintextSum().run_round({c: inputs[c] for c in contributors}, bits=bits).total


class _Session:
    """A hand-wired session, to inject faults between parties."""

    def __init__(
        self,
        deployment: PaillierDeployment,
        clients: int,
        *,
        length: int = 20,
        min_clients: int = 2,
        max_clients: int | None = None,
    ) -> None:
        self.deployment = deployment
        self.inputs = _inputs(clients, length)
        self.clients = {
            cid: PaillierClient(cid, deployment.public_key, deployment.register_client(cid))
            for cid in self.inputs
        }
        self.aggregator = PaillierAggregator(
            deployment.public_key,
            {cid: deployment.registry[cid] for cid in self.inputs},
            bits=BITS,
            length=length,
            min_clients=min_clients,
            max_clients=max_clients,
            threshold_params=deployment.threshold_keys.params
            if deployment.threshold_keys
            else None,
            send_contributions=deployment.require_contributions,
        )
        for frame in self.aggregator.start():
            self.clients[decode_frame(frame)[0].receiver].receive(frame)
        self.uploads = {
            cid: client.upload(self.inputs[cid]) for cid, client in self.clients.items()
        }

    def deliver_all(self) -> None:
        for frame in self.uploads.values():
            self.aggregator.receive(frame)

    def decrypt(self, requests=None) -> np.ndarray:
        requests = self.aggregator.close_collection() if requests is None else requests
        for frame in requests:
            index = decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE
            for answer in self.deployment.key_holders[index].receive(frame):
                if self.aggregator.result is None:
                    self.aggregator.receive(answer)
        return self.aggregator.result.total


# -- happy paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["threshold", "two_party"])
@pytest.mark.parametrize("clients,length", [(2, 1), (3, 7), (10, 200), (33, 64)])
def test_sum_equals_plaintext_sum(threshold_keys, private_key, mode, clients, length) -> None:
    deployment = (
        PaillierDeployment(threshold_keys=threshold_keys)
        if mode == "threshold"
        else PaillierDeployment(private_key=private_key)
    )
    inputs = _inputs(clients, length)
    outcome = run_session(deployment, inputs, bits=BITS)
    assert outcome.contributors == tuple(range(clients))
    assert np.array_equal(outcome.total, _expected(inputs, range(clients)))


@pytest.mark.parametrize("mode", ["threshold", "two_party"])
def test_djn_randomizers_give_the_same_sums(threshold_keys, private_key, mode) -> None:
    deployment = (
        PaillierDeployment(threshold_keys=threshold_keys)
        if mode == "threshold"
        else PaillierDeployment(private_key=private_key)
    )
    inputs = _inputs(5, 70)
    outcome = run_session(deployment, inputs, bits=BITS, randomizers="djn", dropouts={3: "upload"})
    assert np.array_equal(outcome.total, _expected(inputs, (0, 1, 2, 4)))


@pytest.mark.parametrize("bits", [2, 8, 32, 62])
def test_sum_for_many_bit_widths(threshold_keys, bits) -> None:
    inputs = _inputs(6, 30, bits)
    outcome = run_session(PaillierDeployment(threshold_keys=threshold_keys), inputs, bits=bits)
    assert np.array_equal(outcome.total, _expected(inputs, range(6), bits))


def test_dropouts_do_not_contribute_and_are_reported(threshold_keys) -> None:
    inputs = _inputs(8)
    dropouts = {1: "announce", 4: "upload", 6: "upload"}
    outcome = run_session(
        PaillierDeployment(threshold_keys=threshold_keys), inputs, bits=BITS, dropouts=dropouts
    )
    assert outcome.contributors == (0, 2, 3, 5, 7) and outcome.dropped == (1, 4, 6)
    assert np.array_equal(outcome.total, _expected(inputs, outcome.contributors))
    assert outcome.measurements["contributors"] == 5
    assert (
        1 not in outcome.bytes_sent
        and outcome.bytes_received[1] == 0
        and outcome.bytes_received[4] > 0
    )


def test_key_holder_dropouts_tolerated_up_to_threshold(threshold_keys) -> None:
    inputs = _inputs(4)
    deployment = PaillierDeployment(threshold_keys=threshold_keys)
    outcome = run_session(deployment, inputs, bits=BITS, key_holder_dropouts={1})
    assert np.array_equal(outcome.total, _expected(inputs, range(4)))
    with pytest.raises(BelowThreshold):
        run_session(deployment, inputs, bits=BITS, key_holder_dropouts={1, 3})


def test_too_few_contributors_aborts_before_decryption(threshold_keys) -> None:
    deployment = PaillierDeployment(threshold_keys=threshold_keys, min_clients=3)
    with pytest.raises(BelowThreshold):
        run_session(deployment, _inputs(4), bits=BITS, dropouts={0: "upload", 1: "upload"})


def test_secure_sum_interface_matches_plaintext() -> None:
    protocol = PaillierSecureSum(key_bits=512, insecure_for_tests=True, min_clients=2)
    assert isinstance(protocol, SecureSum) and protocol.name == "paillier"
    inputs = _inputs(5, 40, 32)
    for round_index in range(2):  # keys made once, reused
        result = protocol.run_round(
            inputs, bits=32, round_index=round_index, dropouts={2: "upload"}
        )
        assert np.array_equal(result.total, _expected(inputs, (0, 1, 3, 4), 32))
        assert result.dropped == (2,)
        frame_bytes = result.bytes_sent[0]
        assert frame_bytes > int(result.measurements["ciphertexts_per_client"]) * 128
    with pytest.raises(LocalProtocolError):
        protocol.run_round(inputs, bits=32, dropouts={1: "nonsense"})


def test_secure_sum_two_party_and_full_strength_default_refuses_small_keys() -> None:
    protocol = PaillierSecureSum(key_bits=512, mode="two_party", insecure_for_tests=True)
    inputs = _inputs(3, 10, 32)
    assert np.array_equal(
        protocol.run_round(inputs, bits=32).total, _expected(inputs, range(3), 32)
    )
    with pytest.raises(ValueError):
        PaillierSecureSum(key_bits=512).run_round(inputs, bits=32)


# -- malformed, foreign, duplicated, unknown --------------------------------------------------
def _with_body(frame: bytes, body: bytes, **header_changes) -> bytes:
    header, _ = decode_frame(frame)
    header = dataclasses.replace(header, **header_changes)
    return _frame(
        Kind(header.kind), header.session_id, header.round, header.sender, header.receiver, body
    )


def test_rejections_at_the_aggregator(threshold_keys) -> None:
    session = _Session(PaillierDeployment(threshold_keys=threshold_keys), 5)
    aggregator, uploads = session.aggregator, session.uploads
    _header, body = decode_frame(uploads[0])
    update = EncryptedUpdate.parse(body, ciphertexts_size=len(body) - 32 - 64 - 12)

    with pytest.raises(MalformedMessage):
        aggregator.receive(uploads[0][:-1])
    with pytest.raises(MalformedMessage):  # ciphertext blob of the wrong length
        aggregator.receive(
            _with_body(
                uploads[0],
                EncryptedUpdate(
                    update.key_fingerprint, update.ciphertexts[:-1], update.signature
                ).body(),
            )
        )
    with pytest.raises(UnknownParty):
        aggregator.receive(_with_body(uploads[0], body, sender=77))
    with pytest.raises(SessionMismatch):
        aggregator.receive(_with_body(uploads[0], body, session_id=bytes(16)))
    with pytest.raises(SessionMismatch):
        aggregator.receive(_with_body(uploads[0], body, round=5))
    with pytest.raises(ForeignKey):
        aggregator.receive(
            _with_body(
                uploads[0], EncryptedUpdate(bytes(32), update.ciphertexts, update.signature).body()
            )
        )
    with pytest.raises(InvalidSignature):  # client 1 cannot pass off client 0's ciphertexts
        aggregator.receive(_with_body(uploads[0], body, sender=1))
    # A signed update whose ciphertext is outside Z*_{n^2}: the signer is excluded.
    signing_key = session.deployment.register_client(2)
    size = session.deployment.public_key.ciphertext_bytes
    bad_blob = bytes(size) + update.ciphertexts[size:]
    signed = _resign(session, 2, bad_blob, signing_key)
    with pytest.raises(InvalidCiphertext):
        aggregator.receive(signed)
    assert aggregator.rejected == {2: "InvalidCiphertext"}
    with pytest.raises(ReplayedMessage):
        aggregator.receive(uploads[2])
    # Nothing above hurt the honest: they still sum exactly.
    aggregator.receive(uploads[0])
    with pytest.raises(ReplayedMessage):
        aggregator.receive(uploads[0])
    with pytest.raises(
        ReplayedMessage
    ):  # client 3 copying client 0's ciphertexts, signed by itself
        aggregator.receive(
            _resign(session, 3, update.ciphertexts, session.deployment.register_client(3))
        )
    aggregator.receive(uploads[1])
    aggregator.receive(uploads[4])
    assert np.array_equal(session.decrypt(), _expected(session.inputs, (0, 1, 4)))
    assert aggregator.state is AggregatorState.DONE


def _resign(session: _Session, client_id: int, blob: bytes, key: Ed25519PrivateKey) -> bytes:
    import hashlib

    from protocols.paillier.messages import update_statement

    aggregator = session.aggregator
    statement = update_statement(
        aggregator.session_id,
        aggregator.round_index,
        client_id,
        aggregator.params.digest(aggregator.session_id, aggregator.round_index),
        hashlib.sha256(blob).digest(),
    )
    message = EncryptedUpdate(session.deployment.public_key.fingerprint, blob, key.sign(statement))
    return _frame(
        Kind.ENCRYPTED_UPDATE,
        aggregator.session_id,
        aggregator.round_index,
        client_id,
        SERVER_ID,
        message.body(),
    )


def test_update_under_another_key_rejected(threshold_keys) -> None:
    """A client that encrypted under a foreign key (same size) is caught by the key fingerprint."""
    session = _Session(PaillierDeployment(threshold_keys=threshold_keys), 3)
    other = deal_threshold_keys(512, threshold=2, parties=3, insecure_for_tests=True)
    foreign_client = PaillierClient(0, other.public_key, session.deployment.register_client(0))
    announcement = session.aggregator.announcement_for(0)
    with pytest.raises(ForeignKey):
        foreign_client.receive(announcement)
    assert foreign_client.state is ClientState.ABORTED


def test_client_refuses_weaker_min_clients_and_foreign_frames(threshold_keys) -> None:
    deployment = PaillierDeployment(threshold_keys=threshold_keys)
    session = _Session(deployment, 3, min_clients=2)
    strict = PaillierClient(0, deployment.public_key, deployment.register_client(0), min_clients=3)
    with pytest.raises(RemoteProtocolError):
        strict.receive(session.aggregator.announcement_for(0))
    wrong_round = PaillierClient(
        0, deployment.public_key, deployment.register_client(0), round_index=9
    )
    with pytest.raises(SessionMismatch):
        wrong_round.receive(session.aggregator.announcement_for(0))
    misaddressed = PaillierClient(1, deployment.public_key, deployment.register_client(1))
    with pytest.raises(SessionMismatch):
        misaddressed.receive(session.aggregator.announcement_for(0))
    waiting = PaillierClient(2, deployment.public_key, deployment.register_client(2))
    with pytest.raises(LocalProtocolError):
        waiting.upload(session.inputs[2])


def test_client_rejects_out_of_range_input(threshold_keys) -> None:
    deployment = PaillierDeployment(threshold_keys=threshold_keys)
    session = _Session(deployment, 2)
    client = PaillierClient(0, deployment.public_key, deployment.register_client(0))
    client.receive(session.aggregator.announcement_for(0))
    with pytest.raises(LocalProtocolError):
        client.upload(np.full(20, 1 << BITS, dtype=np.uint64))
    assert client.state is ClientState.ABORTED


# -- key holders refuse -------------------------------------------------------------------------
def test_key_holders_refuse_aggregate_below_their_minimum(threshold_keys) -> None:
    """An aggregator announcing min_clients=1 still cannot get one client's update decrypted."""
    deployment = PaillierDeployment(threshold_keys=threshold_keys, min_clients=3)
    session = _Session(deployment, 4, min_clients=1)
    session.aggregator.receive(session.uploads[0])
    requests = session.aggregator.close_collection()
    for index in (1, 2, 3):
        with pytest.raises(BelowThreshold):
            deployment.key_holders[index].receive(requests[index - 1])


def test_key_holders_refuse_forged_contributor_list(threshold_keys) -> None:
    deployment = PaillierDeployment(threshold_keys=threshold_keys)
    session = _Session(deployment, 3)
    session.aggregator.receive(session.uploads[0])
    session.aggregator.receive(session.uploads[1])
    frame = session.aggregator.close_collection()[0]
    _header, body = decode_frame(frame)
    request = DecryptionRequest.parse(body, ciphertext_bytes=deployment.public_key.ciphertext_bytes)
    holder = deployment.key_holders[1]
    padded = dataclasses.replace(
        request,
        contributors=(0, 2),
    )  # claims client 2, with client 1's signature
    with pytest.raises(InvalidSignature):
        holder.receive(_with_body(frame, padded.body()))
    unknown = dataclasses.replace(request, contributors=(0, 99))
    with pytest.raises(UnknownParty):
        holder.receive(_with_body(frame, unknown.body()))
    twice = dataclasses.replace(
        request,
        contributors=(0, 0),
        digests=(request.digests[0],) * 2,
        signatures=(request.signatures[0],) * 2,
    )
    with pytest.raises(ReplayedMessage):
        holder.receive(_with_body(frame, twice.body()))
    holder.receive(frame)
    with pytest.raises(ReplayedMessage):  # one decryption per session
        holder.receive(frame)


def test_headroom_exceeded_is_refused(threshold_keys) -> None:
    """More contributors than the slot headroom carries: refused by aggregator and key holders."""
    deployment = PaillierDeployment(threshold_keys=threshold_keys, min_clients=1)
    with pytest.raises(ValueError):  # the aggregator will not even announce such a session
        _Session(deployment, 5, min_clients=1, max_clients=4)
    session = _Session(
        deployment, 3, min_clients=1, max_clients=3
    )  # headroom 2 bits: at most 4 summands
    session.deliver_all()
    frame = session.aggregator.close_collection()[0]
    request = DecryptionRequest.parse(
        decode_frame(frame)[1], ciphertext_bytes=deployment.public_key.ciphertext_bytes
    )
    params = dataclasses.replace(request.params, headroom_bits=1, max_clients=2)
    with pytest.raises((MalformedMessage, SlotOverflow)):
        deployment.key_holders[1].receive(
            _with_body(frame, dataclasses.replace(request, params=params).body())
        )


def test_substituted_aggregate_caught_when_key_holders_recompute(threshold_keys) -> None:
    """A malicious aggregator passing one client's ciphertexts off as the aggregate."""
    deployment = PaillierDeployment(threshold_keys=threshold_keys, require_contributions=True)
    session = _Session(deployment, 3)
    session.deliver_all()
    frame = session.aggregator.close_collection()[0]
    request = DecryptionRequest.parse(
        decode_frame(frame)[1], ciphertext_bytes=deployment.public_key.ciphertext_bytes
    )
    forged = dataclasses.replace(request, aggregate=request.contributions[0])
    with pytest.raises(ConsistencyError):
        deployment.key_holders[1].receive(_with_body(frame, forged.body()))
    without = dataclasses.replace(request, contributions=None)
    with pytest.raises(RemoteProtocolError):
        deployment.key_holders[2].receive(_with_body(frame, without.body()))


def test_recomputing_key_holders_still_decrypt(threshold_keys) -> None:
    deployment = PaillierDeployment(threshold_keys=threshold_keys, require_contributions=True)
    inputs = _inputs(4)
    outcome = run_session(deployment, inputs, bits=BITS, dropouts={3: "upload"})
    assert np.array_equal(outcome.total, _expected(inputs, (0, 1, 2)))


def test_two_party_decryptor_never_accepts_individual_ciphertexts(
    threshold_keys, private_key
) -> None:
    with pytest.raises(ValueError):
        PaillierDeployment(private_key=private_key, require_contributions=True)
    deployment = PaillierDeployment(private_key=private_key)
    session = _Session(deployment, 2)
    session.deliver_all()
    frame = session.aggregator.close_collection()[0]
    request = DecryptionRequest.parse(
        decode_frame(frame)[1], ciphertext_bytes=deployment.public_key.ciphertext_bytes
    )
    leaky = dataclasses.replace(
        request,
        aggregate=session_blob(session, 0),
        contributions=(session_blob(session, 0), session_blob(session, 1)),
    )
    with pytest.raises(RemoteProtocolError):
        deployment.key_holders[1].receive(_with_body(frame, leaky.body()))


def session_blob(session: _Session, cid: int) -> bytes:
    body = decode_frame(session.uploads[cid])[1]
    size = session.aggregator.layout.num_plaintexts * session.deployment.public_key.ciphertext_bytes
    return EncryptedUpdate.parse(body, ciphertexts_size=size).ciphertexts


def test_bad_partial_decryption_excluded_and_honest_ones_suffice(threshold_keys) -> None:
    deployment = PaillierDeployment(threshold_keys=threshold_keys)
    session = _Session(deployment, 3)
    session.deliver_all()
    requests = session.aggregator.close_collection()
    answer = deployment.key_holders[1].receive(requests[0])[0]
    _header, body = decode_frame(answer)
    corrupted = bytearray(body)
    corrupted[10] ^= 1  # inside the first partial value
    from protocols.paillier import InvalidPartialDecryption

    with pytest.raises((InvalidPartialDecryption, InvalidCiphertext, MalformedMessage)):
        session.aggregator.receive(_with_body(answer, bytes(corrupted)))
    with pytest.raises(ReplayedMessage):
        session.aggregator.receive(answer)
    for index in (2, 3):
        for frame in deployment.key_holders[index].receive(requests[index - 1]):
            if session.aggregator.result is None:
                session.aggregator.receive(frame)
    assert session.aggregator.result.key_holders_used == (2, 3)
    assert np.array_equal(session.aggregator.result.total, _expected(session.inputs, range(3)))


# -- key sizes, pre-generated keys, dropout schedules, lazy imports ------------------------------
@pytest.mark.parametrize("key_bits", [512, 768, 1024])
@pytest.mark.parametrize("mode", ["threshold", "two_party"])
def test_round_trip_across_key_sizes(key_bits, mode) -> None:
    protocol = PaillierSecureSum(
        key_bits=key_bits, mode=mode, insecure_for_tests=True, threshold=2, key_holders=2
    )
    inputs = _inputs(4, 300, 24)
    result = protocol.run_round(inputs, bits=24)
    assert np.array_equal(result.total, _expected(inputs, range(4), 24))
    assert result.measurements["key_bits"] == key_bits


def test_pre_generated_keys_are_reused(threshold_keys) -> None:
    from protocols.paillier import ThresholdKeySet

    loaded = ThresholdKeySet.from_json(threshold_keys.to_json(), insecure_for_tests=True)
    protocol = PaillierSecureSum(keys=loaded, insecure_for_tests=True)
    inputs = _inputs(3, 10, 32)
    assert np.array_equal(
        protocol.run_round(inputs, bits=32).total, _expected(inputs, range(3), 32)
    )
    assert protocol.deployment.public_key == threshold_keys.public_key
    with pytest.raises(ValueError):
        PaillierSecureSum(mode="two_party", keys=loaded)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    schedule=st.dictionaries(st.integers(0, 7), st.sampled_from(["announce", "upload"]), max_size=6)
)
def test_random_dropout_schedules(threshold_keys, schedule) -> None:
    inputs = _inputs(8, 12)
    deployment = PaillierDeployment(threshold_keys=threshold_keys)
    survivors = tuple(c for c in range(8) if c not in schedule)
    if len(survivors) < deployment.min_clients:
        with pytest.raises(BelowThreshold):
            run_session(deployment, inputs, bits=BITS, dropouts=schedule)
        return
    outcome = run_session(deployment, inputs, bits=BITS, dropouts=schedule)
    assert outcome.contributors == survivors and outcome.dropped == tuple(sorted(schedule))
    assert np.array_equal(outcome.total, _expected(inputs, survivors))


def test_importing_protocols_loads_neither_phe_nor_gmpy2() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, protocols, protocols.paillier; "
        "print('phe' in sys.modules, 'gmpy2' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.split() == ["False", "False"]


def test_refused_request_does_not_burn_the_session(threshold_keys) -> None:
    """A request rejected for its form can be corrected; only a served session is final."""
    deployment = PaillierDeployment(threshold_keys=threshold_keys, require_contributions=True)
    session = _Session(deployment, 3)
    session.deliver_all()
    frame = session.aggregator.close_collection()[0]
    request = DecryptionRequest.parse(
        decode_frame(frame)[1], ciphertext_bytes=deployment.public_key.ciphertext_bytes
    )
    with pytest.raises(RemoteProtocolError):
        deployment.key_holders[1].receive(
            _with_body(frame, dataclasses.replace(request, contributions=None).body())
        )
    assert deployment.key_holders[1].receive(frame)


def test_round_with_fewer_clients_than_min_clients() -> None:
    protocol = PaillierSecureSum(key_bits=512, insecure_for_tests=True, min_clients=3)
    with pytest.raises(BelowThreshold):
        protocol.run_round(_inputs(2, 5, 32), bits=32)


def test_full_strength_two_party_round() -> None:
    """The default 2048-bit path, without the test flag (phe key generation: about a second)."""
    protocol = PaillierSecureSum(mode="two_party")
    inputs = _inputs(3, 120, 32)
    result = protocol.run_round(inputs, bits=32)
    assert np.array_equal(result.total, _expected(inputs, range(3), 32))
    assert result.measurements["key_bits"] == 2048
    # b=32 plus 2 headroom bits: 60 slots, so 120 values fill 2 ciphertexts of 512 bytes each;
    # the rest is the frame header, the key fingerprint and the signature.
    assert result.measurements["ciphertexts_per_client"] == 2
    assert 2 * 512 < result.bytes_sent[0] < 2 * 512 + 200
