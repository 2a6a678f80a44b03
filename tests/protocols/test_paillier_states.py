"""The Paillier transition table against the live parties: every (role, state, event) triple."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from protocols.errors import (
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from protocols.paillier import (
    AggregatorState,
    ClientState,
    KeyHolderState,
    PaillierAggregator,
    PaillierClient,
    PaillierDeployment,
    deal_threshold_keys,
    generate_keypair,
)
from protocols.paillier.messages import (
    KEY_HOLDER_ID_BASE,
    Kind,
    Mode,
    encode_message,
    key_holder_id,
)
from protocols.paillier.states import (
    TRANSITIONS,
    Event,
    Role,
    accepted_kinds,
    next_state,
    received,
)
from protocols.wire import SERVER_ID, decode_frame

SID = bytes(range(16))
LENGTH = 6


@pytest.fixture(scope="module")
def keys():
    return {
        Mode.THRESHOLD: deal_threshold_keys(512, threshold=2, parties=3, insecure_for_tests=True),
        Mode.TWO_PARTY: generate_keypair(512, insecure_for_tests=True)[1],
    }


@pytest.fixture
def deployments(keys):
    """Fresh parties per test (key holders remember the sessions they served)."""
    return {
        Mode.THRESHOLD: PaillierDeployment(threshold_keys=keys[Mode.THRESHOLD]),
        Mode.TWO_PARTY: PaillierDeployment(private_key=keys[Mode.TWO_PARTY]),
    }


class _Round:
    """One session driven step by step, so that each party can be stopped in any state."""

    def __init__(self, deployment: PaillierDeployment, mode: Mode, clients: int = 3) -> None:
        self.deployment = deployment
        self.mode = mode
        ids = range(clients)
        signing_keys = {c: deployment.register_client(c) for c in ids}
        self.aggregator = PaillierAggregator(
            deployment.public_key,
            {c: deployment.registry[c] for c in ids},
            bits=16,
            length=LENGTH,
            min_clients=2,
            threshold_params=deployment.threshold_keys.params if mode is Mode.THRESHOLD else None,
            session_id=SID,
        )
        self.clients = {c: PaillierClient(c, deployment.public_key, signing_keys[c]) for c in ids}
        self.announcements = {decode_frame(f)[0].receiver: f for f in self.aggregator.start()}

    def upload(self, client_id: int) -> bytes:
        client = self.clients[client_id]
        client.receive(self.announcements[client_id])
        return client.upload(np.arange(LENGTH, dtype=np.uint64))


def _empty(kind: Kind, sender: int, receiver: int) -> bytes:
    """A frame whose header is right for the session and whose body is empty."""
    return encode_message(kind, SID, 0, sender, receiver, b"")


def _sender_of(kind: Kind) -> int:
    if kind in (Kind.ROUND_ANNOUNCEMENT, Kind.DECRYPTION_REQUEST):
        return SERVER_ID
    if kind is Kind.ENCRYPTED_UPDATE:
        return 0
    return key_holder_id(1)


# -- the table itself ---------------------------------------------------------------------------
def test_every_state_of_every_role_is_reachable_and_terminal_states_have_no_moves() -> None:
    reachable = {(Role.CLIENT, ClientState.WAITING), (Role.AGGREGATOR, AggregatorState.COLLECTING),
                 (Role.KEY_HOLDER, KeyHolderState.NEW)}
    for t in TRANSITIONS:
        reachable.add((t.role, t.next_state))
    aborted = {(Role.CLIENT, ClientState.ABORTED), (Role.AGGREGATOR, AggregatorState.ABORTED)}
    states = {Role.CLIENT: ClientState, Role.AGGREGATOR: AggregatorState,
              Role.KEY_HOLDER: KeyHolderState}
    every = {(role, s) for role, enum_ in states.items() for s in enum_}
    assert every - reachable == aborted  # reached by errors, not by events
    terminal = {(Role.CLIENT, ClientState.UPLOADED), (Role.AGGREGATOR, AggregatorState.DONE),
                (Role.KEY_HOLDER, KeyHolderState.SERVED), *aborted}
    for role, state in terminal:
        assert all(next_state(role, state, e, m) is None for e in Event for m in Mode)


def test_accepted_kinds_follow_the_mode() -> None:
    assert accepted_kinds(Role.AGGREGATOR, Mode.THRESHOLD) == {
        Kind.ENCRYPTED_UPDATE, Kind.PARTIAL_DECRYPTION}
    assert accepted_kinds(Role.AGGREGATOR, Mode.TWO_PARTY) == {
        Kind.ENCRYPTED_UPDATE, Kind.AGGREGATE_PLAINTEXT}
    assert accepted_kinds(Role.CLIENT, Mode.THRESHOLD) == {Kind.ROUND_ANNOUNCEMENT}
    assert accepted_kinds(Role.KEY_HOLDER, Mode.TWO_PARTY) == {Kind.DECRYPTION_REQUEST}


def test_the_docs_show_the_table() -> None:
    """docs/protocols/paillier.md lists exactly the moves of TRANSITIONS."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "paillier.md"
    rows = set(re.findall(r"^\| `(\w+)` \| `(\w+)` \| `(\w+)` \| `(\w+)` \| (\w+) \|$",
                          docs.read_text(encoding="utf-8"), flags=re.MULTILINE))
    expected = {(t.role.value, t.state.name, t.event.value, t.next_state.name,
                 t.mode.name.lower() if t.mode else "both") for t in TRANSITIONS}
    assert rows == expected


# -- client -------------------------------------------------------------------------------------
def _client_in(state: ClientState, session: _Round) -> PaillierClient:
    client = PaillierClient(0, session.deployment.public_key, session.deployment.register_client(0))
    if state is ClientState.ABORTED:
        with pytest.raises(ProtocolError):
            client.receive(_empty(Kind.ENCRYPTED_UPDATE, SERVER_ID, 0))
    if state in (ClientState.READY, ClientState.UPLOADED):
        client.receive(session.announcements[0])
    if state is ClientState.UPLOADED:
        client.upload(np.arange(LENGTH, dtype=np.uint64))
    assert client.state is state
    return client


@pytest.mark.parametrize("state", list(ClientState))
@pytest.mark.parametrize("event", [received(k) for k in Kind] + [Event.UPLOAD])
def test_client_moves(deployments, state, event) -> None:
    session = _Round(deployments[Mode.THRESHOLD], Mode.THRESHOLD)
    client = _client_in(state, session)
    legal = next_state(Role.CLIENT, state, event)
    if event is Event.UPLOAD:
        call = lambda: client.upload(np.arange(LENGTH, dtype=np.uint64))
    elif event is Event.ROUND_ANNOUNCEMENT:
        call = lambda: client.receive(session.announcements[0])
    else:
        kind = Kind[event.name]
        call = lambda: client.receive(_empty(kind, _sender_of(kind), 0))
    if legal is None:
        with pytest.raises(ProtocolError) as caught:
            call()
        if state is not ClientState.WAITING or event is Event.UPLOAD:
            assert isinstance(caught.value, LocalProtocolError)
        assert client.state is ClientState.ABORTED  # any error aborts a client
    else:
        call()
        assert client.state is legal


# -- aggregator ---------------------------------------------------------------------------------
def _aggregator_in(state: AggregatorState, session: _Round) -> list[bytes]:
    """Drive ``session.aggregator`` into ``state``; the decryption requests if it sent any."""
    aggregator = session.aggregator
    requests: list[bytes] = []
    uploads = 1 if state is AggregatorState.ABORTED else 2
    for client_id in range(uploads):
        aggregator.receive(session.upload(client_id))
    if state is AggregatorState.ABORTED:
        with pytest.raises(ProtocolError):
            aggregator.close_collection()
    elif state is not AggregatorState.COLLECTING:
        requests = aggregator.close_collection()
    if state is AggregatorState.DONE:
        _decrypt(session, requests, stop_after=None)
    assert aggregator.state is state
    return requests


def _answers(session: _Round, requests: list[bytes]) -> list[bytes]:
    holders = session.deployment.key_holders
    return [answer for frame in requests
            for answer in holders[decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE].receive(frame)]


def _decrypt(session: _Round, requests: list[bytes], *, stop_after: int | None) -> None:
    for count, answer in enumerate(_answers(session, requests), start=1):
        if session.aggregator.result is not None:
            return
        session.aggregator.receive(answer)
        if count == stop_after:
            return


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("state", list(AggregatorState))
@pytest.mark.parametrize("kind", list(Kind))
def test_aggregator_moves_on_frames(deployments, mode, state, kind) -> None:
    """Illegal frames raise a typed error and leave the aggregator where it was."""
    session = _Round(deployments[mode], mode)
    requests = _aggregator_in(state, session)
    aggregator = session.aggregator
    legal = next_state(Role.AGGREGATOR, state, received(kind), mode)
    if legal is None:
        with pytest.raises(RemoteProtocolError) as caught:
            aggregator.receive(_empty(kind, _sender_of(kind), SERVER_ID))
        never = kind not in accepted_kinds(Role.AGGREGATOR, mode)
        assert isinstance(caught.value, MalformedMessage if never else SessionMismatch)
        assert aggregator.state is state
        return
    if kind is Kind.ENCRYPTED_UPDATE:
        aggregator.receive(session.upload(2))
        assert aggregator.state is legal and aggregator.contributors == (0, 1, 2)
    else:  # the first decryption share: one of t (threshold) or the whole answer (two-party)
        _decrypt(session, requests, stop_after=1)
        done = mode is Mode.TWO_PARTY
        assert aggregator.state is (AggregatorState.DONE if done else legal)
        assert next_state(Role.AGGREGATOR, legal, Event.DECRYPTED, mode) is AggregatorState.DONE


@pytest.mark.parametrize("state", list(AggregatorState))
def test_aggregator_close_collection(deployments, state) -> None:
    session = _Round(deployments[Mode.THRESHOLD], Mode.THRESHOLD)
    _aggregator_in(state, session)
    legal = next_state(Role.AGGREGATOR, state, Event.CLOSE_COLLECTION, Mode.THRESHOLD)
    if legal is None:
        with pytest.raises(LocalProtocolError):
            session.aggregator.close_collection()
        assert session.aggregator.state is state  # a caller's mistake changes nothing
    else:
        assert len(session.aggregator.close_collection()) == 3
        assert session.aggregator.state is legal


# -- key holder ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("state", list(KeyHolderState))
@pytest.mark.parametrize("kind", list(Kind))
def test_key_holder_moves(deployments, mode, state, kind) -> None:
    session = _Round(deployments[mode], mode)
    requests = _aggregator_in(AggregatorState.DECRYPTING, session)
    holder = session.deployment.key_holders[1]
    request = requests[0]
    if state is KeyHolderState.SERVED:
        holder.receive(request)
    assert holder.session_state(SID) is state
    legal = next_state(Role.KEY_HOLDER, state, received(kind), mode)
    if kind is Kind.DECRYPTION_REQUEST and legal is not None:
        assert len(holder.receive(request)) == 1
        assert holder.session_state(SID) is legal
        return
    frame = request if kind is Kind.DECRYPTION_REQUEST else _empty(kind, _sender_of(kind),
                                                                       holder.party_id)
    with pytest.raises(RemoteProtocolError) as caught:
        holder.receive(frame)
    if kind is Kind.DECRYPTION_REQUEST:
        assert isinstance(caught.value, ReplayedMessage)
    assert holder.session_state(SID) is state  # a refused frame never burns a session
