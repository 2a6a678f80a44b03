"""Multi-round masking sessions (issue 23, item 1, the protocol half).

* exact sums across rounds with dropouts at every stage, held to an
  independent oracle (``protocols.testing.expected_rounds``);
* a client that drops in round r and returns in r + 1 (re-arms, then
  contributes again);
* a reconstructed recovery key is never reused: it opens its own round's
  seeds and nothing else, and no round's masks are another round's;
* steady-state rounds are two exchanges; the refusals of an honest client.
"""

from __future__ import annotations

import dataclasses
import secrets

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import (
    BelowThreshold,
    DecryptionError,
    InvalidShare,
    LocalProtocolError,
    MalformedMessage,
    ReplayedMessage,
    SessionMismatch,
)
from protocols.masking import MaskingParams, UnmaskRequestRefused
from protocols.masking.multiround import (
    MultiRoundClient,
    MultiRoundSecAgg,
    MultiRoundServer,
    RoundUnmaskRequest,
    RoundUpload,
    decode,
    encode,
)
from protocols.masking.multiround import derivations as d
from protocols.testing import expected_rounds, random_inputs
from protocols.wire import SERVER_ID


def _plain_sum(inputs, contributors, bits):
    total = np.zeros(len(next(iter(inputs.values()))), dtype=np.uint64)
    for c in contributors:
        total += inputs[c].astype(np.uint64)
    return total & np.uint64((1 << bits) - 1)


def _run(ids, params, schedules, *, seed=0, graph_seed=None, interceptor=None):
    """Run len(schedules) rounds; returns (session, per-round results, per-round inputs)."""
    rng = np.random.default_rng(seed)
    session = MultiRoundSecAgg(params, ids, rounds=len(schedules), graph_seed=graph_seed,
                               interceptor=interceptor)
    results, inputs = [], []
    for schedule in schedules:
        vectors = random_inputs(ids, params.vector_length, params.bits, rng)
        inputs.append(vectors)
        results.append(session.run_round(vectors, dropouts=schedule))
    return session, results, inputs


# ------------------------------------------------------------------------ exact sums
def test_rounds_are_exact_and_a_client_that_drops_returns():
    ids = list(range(12))
    params = MaskingParams(threshold=4, degree=6, bits=20, vector_length=7)
    schedules = [{}, {3: "masked_input"}, {}, {}, {8: "unmasking"}, {}]
    session, results, inputs = _run(ids, params, schedules)
    for r, (result, vectors) in enumerate(zip(results, inputs)):
        np.testing.assert_array_equal(result.total, _plain_sum(vectors, result.contributors, 20))
    contributed = [3 in result.contributors for result in results]
    # Round 1: client 3 vanished (its masks removed with its round-1 recovery key only).
    # Round 2: it is back, and still armed (clients arm two rounds ahead): it contributes.
    assert contributed == [True, False, True, True, True, True]
    assert results[2].measurements["armed"] == 12
    # Vanishing before the unmasking still counts: client 8's input is in round 4's sum.
    assert 8 in results[4].contributors and 8 in results[5].contributors
    client = session.clients[3]
    assert client.rounds_contributed == [0, 2, 3, 4, 5]


def test_a_client_away_for_two_rounds_rearms_then_contributes():
    ids = list(range(12))
    params = MaskingParams(threshold=4, degree=6, bits=20, vector_length=5)
    schedules = [{}, {3: "masked_input"}, {3: "masked_input"}, {}, {}, {}]
    session, results, inputs = _run(ids, params, schedules)
    for result, vectors in zip(results, inputs):
        np.testing.assert_array_equal(result.total, _plain_sum(vectors, result.contributors, 20))
    # Away in rounds 1 and 2: its arming ran out at round 3, where it re-arms; back in 4.
    assert [3 in r.contributors for r in results] == [True, False, False, False, True, True]
    assert results[3].measurements["armed"] == 11
    assert all(c.state.value == "done" for c in session.clients.values())


def test_steady_state_rounds_take_two_exchanges():
    ids = list(range(6))
    params = MaskingParams(threshold=4, degree=5, bits=16, vector_length=3)
    _, results, _ = _run(ids, params, [{}, {}, {}])
    assert [r.measurements["exchanges"] for r in results] == [4, 2, 2]
    assert [r.measurements["setup_included"] for r in results] == [1, 0, 0]


@st.composite
def multiround_sessions(draw):
    n = draw(st.integers(3, 14))
    ids = sorted(draw(st.sets(st.integers(0, 500), min_size=n, max_size=n)))
    evens = [k for k in range(2, n - 1, 2)]
    degree = draw(st.sampled_from(evens + [n - 1]) if evens else st.just(n - 1))
    size = degree + 1
    threshold = size // 2 + 1 + draw(st.just(0) | st.integers(0, (size - size // 2 - 1) // 2))
    floor = draw(st.just(1) | st.integers(1, n))
    params = MaskingParams(threshold=threshold, degree=degree, bits=draw(st.sampled_from(
        [1, 16, 32, 33, 62])), vector_length=draw(st.integers(0, 6)), min_survivors=floor)
    rounds = draw(st.integers(1, 5))
    rate = draw(st.sampled_from([0.0, 0.05, 0.1, 0.2]))
    stages = ("advertise_keys", "arming", "masked_input", "unmasking")
    schedules = []
    for r in range(rounds):
        allowed = stages if r == 0 else stages[2:]
        schedules.append({c: draw(st.sampled_from(allowed)) for c in ids
                          if draw(st.floats(0, 1)) < rate})
    return ids, params, schedules, draw(st.integers(0, 2**32 - 1))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(multiround_sessions())
def test_every_round_is_exact_or_the_session_stops_typed(session):
    ids, params, schedules, seed = session
    graph_seed = secrets.token_bytes(32)
    want = expected_rounds(ids, params, graph_seed, schedules)
    rng = np.random.default_rng(seed)
    driver = MultiRoundSecAgg(params, ids, rounds=len(schedules), graph_seed=graph_seed)
    done = 0
    try:
        for schedule in schedules:
            vectors = random_inputs(ids, params.vector_length, params.bits, rng)
            result = driver.run_round(vectors, dropouts=schedule)
            assert result.contributors == want.contributors[done]
            np.testing.assert_array_equal(
                result.total, _plain_sum(vectors, result.contributors, params.bits)
                if params.vector_length else result.total)
            assert len(result.contributors) >= params.min_survivors
            done += 1
    except BelowThreshold as exc:
        assert want.below_threshold_stage == exc.stage, (want, exc)
        assert want.below_threshold_round == done
        assert driver.server.stage.value == "aborted"
        return
    assert want.below_threshold_stage is None and done == len(schedules)
    assert not driver.trace.client_errors and not driver.trace.rejected_frames


# ---------------------------------------------------------- keys are never reused
class _Spy:
    """Records every recovery key the server reconstructs and uses."""

    def __init__(self, monkeypatch):
        self.opened: list[tuple[bytes, int, int]] = []  # (E, round, owner)
        original = d.open_seeds

        def spy(key, ciphertext, session_id, round_index, owner):
            self.opened.append((key, round_index, owner))
            return original(key, ciphertext, session_id, round_index, owner)

        import protocols.masking.multiround.server as server_module
        monkeypatch.setattr(server_module.d, "open_seeds", spy)


def test_a_reconstructed_recovery_key_opens_its_round_and_nothing_else(monkeypatch):
    ids = list(range(9))
    params = MaskingParams(threshold=3, degree=4, bits=32, vector_length=6)
    sealed: dict[tuple[int, int], bytes] = {}  # (owner, armed round) -> sealed seeds
    uploads: dict[tuple[int, int], np.ndarray] = {}

    def record(stage, sender, receiver, frame):
        if sender != SERVER_ID:
            env = decode(frame)
            msg = env.message
            if isinstance(msg, RoundUpload):
                uploads[(sender, env.header.round)] = msg.words.copy()
            for arming in getattr(msg, "armings", ()):
                sealed[(sender, arming.armed_round)] = arming.sealed_seeds
        return frame

    spy = _Spy(monkeypatch)
    session, results, _ = _run(ids, params, [{}, {5: "masked_input"}, {}, {}],
                                    interceptor=record)
    assert [(r, o) for _, r, o in spy.opened] == [(1, 5)]
    key = spy.opened[0][0]
    # E_5^1 opens the round-1 seeds of client 5 ...
    assert d.open_seeds(key, sealed[(5, 1)], session.server.session_id, 1, 5)
    # ... and no other round's: every round has its own key.
    assert {r for owner, r in sealed if owner == 5} == {0, 1, 2, 3}
    for armed_round in (0, 2, 3):
        with pytest.raises(InvalidShare):
            d.open_seeds(key, sealed[(5, armed_round)], session.server.session_id,
                         armed_round, 5)
    # The round-1 seeds are not the masks of any other round, so client 5's earlier and
    # later uploads stay masked: removing its self mask and the round-1 pairwise masks
    # from its round-0 upload does not give its input.
    client = session.clients[5]
    round1 = d.open_seeds(key, sealed[(5, 1)], session.server.session_id, 1, 5)
    for other in (0, 2, 3):
        seeds = {peer: seed for peer, seed in _seeds_of(client, session, other).items()}
        assert not set(seeds.values()) & set(round1.values())
    assert 5 in results[0].contributors and 5 in results[3].contributors


def _seeds_of(client: MultiRoundClient, session: MultiRoundSecAgg, round_index: int):
    """A test's view of a client's round seeds (its private secrets are still in memory)."""
    from protocols.masking import derivations as d1

    return {peer: d1.pairwise_seed_from_shared(shared, session.server.session_id, round_index,
                                               client.client_id, peer)
            for peer, shared in _shared(client).items()}


def _shared(client):
    # The session is over and the client wiped its secrets: recompute from a fresh run below.
    return client._test_s_shared


@pytest.fixture(autouse=True)
def _keep_s_shared(monkeypatch):
    """Let tests read a client's pairwise secrets after it wiped them (test-only hook)."""
    original = MultiRoundClient._on_key_directory

    def keep(self, msg):
        reply = original(self, msg)
        self._test_s_shared = dict(self._s_shared)
        return reply

    monkeypatch.setattr(MultiRoundClient, "_on_key_directory", keep)


def test_round_masks_are_fresh_every_round():
    ids = list(range(6))
    params = MaskingParams(threshold=4, degree=5, bits=32, vector_length=4)
    session, _, _ = _run(ids, params, [{}, {}, {}])
    client = session.clients[0]
    per_round = [_seeds_of(client, session, r) for r in range(3)]
    seen = [seed for seeds in per_round for seed in seeds.values()]
    assert len(seen) == len(set(seen))  # no seed twice, across pairs and rounds


# ------------------------------------------------------------------------ refusals
def _until_unmask(params, ids, rounds=2):
    server = MultiRoundServer(params, ids, rounds=rounds)
    clients = {c: MultiRoundClient(c) for c in ids}
    for stage_call in (server.start, server.advance):
        for cid, frame in stage_call():
            for reply in clients[cid].receive(frame):
                server.receive(reply)
    server.advance()
    for cid in ids:
        clients[cid].set_input(np.arange(params.vector_length))
    for cid, frame in server.start_round():
        for reply in clients[cid].receive(frame):
            server.receive(reply)
    return server, clients, dict(server.advance())


def test_a_request_for_both_shares_of_one_client_is_refused():
    ids = list(range(6))
    params = MaskingParams(threshold=4, degree=5, bits=16, vector_length=3)
    server, clients, requests = _until_unmask(params, ids)
    env = decode(requests[0])
    msg = env.message
    both = dataclasses.replace(msg, dropped=(1,), recovery_shares=(msg.seed_shares[0],))
    frame = encode(both, session_id=server.session_id, round_index=env.header.round,
                   sender=SERVER_ID, receiver=0)
    with pytest.raises(UnmaskRequestRefused):
        clients[0].receive(frame)
    assert clients[0].state.value == "aborted"


def test_a_second_unmask_request_for_a_round_is_a_replay():
    ids = list(range(6))
    params = MaskingParams(threshold=4, degree=5, bits=16, vector_length=3)
    _, clients, requests = _until_unmask(params, ids)
    assert clients[0].receive(requests[0])  # answered once
    with pytest.raises(ReplayedMessage):
        clients[0].receive(requests[0])


def test_shares_are_bound_to_their_round_owner_holder_and_purpose():
    key, session = secrets.token_bytes(32), secrets.token_bytes(16)
    sealed = d.seal_share(key, d.SEED, session, 4, 1, 2, 12345)
    assert d.open_share(key, d.SEED, sealed, session, 4, 1, 2) == 12345
    for purpose, rnd, owner, holder in [(d.RECOVERY, 4, 1, 2), (d.SEED, 5, 1, 2),
                                        (d.SEED, 4, 2, 1), (d.SEED, 4, 1, 3)]:
        with pytest.raises(DecryptionError):
            d.open_share(key, purpose, sealed, session, rnd, owner, holder)


def test_old_rounds_and_foreign_sessions_are_refused():
    ids = list(range(6))
    params = MaskingParams(threshold=4, degree=5, bits=16, vector_length=3)
    server, clients, requests = _until_unmask(params, ids, rounds=3)
    for cid, frame in requests.items():
        for reply in clients[cid].receive(frame):
            server.receive(reply)
    server.advance()
    starts = dict(server.start_round())  # round 1
    for cid in ids:
        clients[cid].set_input(np.zeros(3, dtype=np.uint64))
    clients[1].receive(starts[1])
    with pytest.raises(ReplayedMessage):
        clients[1].receive(starts[1])  # a round that already started
    foreign = bytearray(starts[2])
    foreign[8] ^= 1  # another session id
    with pytest.raises(SessionMismatch):
        clients[2].receive(bytes(foreign))
    with pytest.raises(MalformedMessage):  # a single-round frame is not a multi-round frame
        clients[3].receive(bytes([*starts[3][:5], 1, *starts[3][6:]]))


def test_a_round_needs_an_input_and_inputs_of_the_right_size():
    ids = list(range(4))
    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=3)
    server = MultiRoundServer(params, ids, rounds=2)
    clients = {c: MultiRoundClient(c) for c in ids}
    for stage_call in (server.start, server.advance):
        for cid, frame in stage_call():
            for reply in clients[cid].receive(frame):
                server.receive(reply)
    server.advance()
    with pytest.raises(LocalProtocolError):
        clients[0].set_input(np.zeros(4, dtype=np.uint64))
    with pytest.raises(LocalProtocolError):
        clients[0].receive(dict(server.start_round())[0])  # no input set


def test_min_survivors_holds_in_every_round():
    ids = list(range(10))
    params = MaskingParams(threshold=4, degree=6, bits=16, vector_length=3, min_survivors=9)
    session = MultiRoundSecAgg(params, ids, rounds=3)
    rng = np.random.default_rng(2)
    first = session.run_round(random_inputs(ids, 3, 16, rng), dropouts={4: "masked_input"})
    assert len(first.contributors) == 9
    with pytest.raises(BelowThreshold) as info:  # 4 and 7 vanish: 8 uploads < 9
        session.run_round(random_inputs(ids, 3, 16, rng),
                          dropouts={4: "masked_input", 7: "masked_input"})
    assert (info.value.stage, info.value.survivors, info.value.threshold) == ("masked_input", 8, 9)
    assert session.server.stage.value == "aborted"


def test_active_mode_and_bad_round_ranges_are_refused():
    active = MaskingParams(threshold=3, degree=3, bits=8, vector_length=1, active=True)
    with pytest.raises(ValueError, match="passive"):
        MultiRoundServer(active, range(4), rounds=2)
    passive = MaskingParams(threshold=3, degree=3, bits=8, vector_length=1)
    with pytest.raises(ValueError):
        MultiRoundServer(passive, range(4), rounds=0)
    with pytest.raises(ValueError):
        MultiRoundServer(passive, range(4), rounds=3, first_round=2**32 - 2)


def test_the_unmask_request_carries_one_seed_share_per_other_survivor():
    with pytest.raises(ValueError):
        RoundUnmaskRequest(survivors=(0, 1), seed_shares=(), dropped=(), recovery_shares=(),
                           survivor_count=2)
