"""Accountants against independent computations (Opacus' accountants), and their state handling."""

from __future__ import annotations

import json
import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from secure_fedrec.privacy.accounting import (
    AccountantStateError,
    ClientAccountants,
    PldAccountant,
    RdpAccountant,
    create_accountant,
)

DELTA = 1e-5
# (noise_multiplier, sample_rate, steps): DP-SGD-like and DP-FedAvg-like regimes.
# Opacus' PRV reports an upper estimate with an absolute error ``eps_error``; it
# is set to 1e-3 so that a 1 % comparison is meaningful for ε >= 0.5.
CASES = [(1.0, 0.01, 1000), (0.8, 0.2, 50), (2.0, 0.05, 200), (1.0, 0.02, 30)]


def _opacus(accountant_cls, history):
    accountant = accountant_cls()
    accountant.history = list(history)
    if accountant_cls is PRVAccountant:
        return accountant.get_epsilon(DELTA, eps_error=1e-3)
    return accountant.get_epsilon(DELTA)


@pytest.mark.parametrize("sigma,q,steps", CASES)
def test_pld_matches_opacus_prv_within_one_percent(sigma, q, steps):
    ours = PldAccountant()
    ours.step(noise_multiplier=sigma, sample_rate=q, steps=steps)
    reference = _opacus(PRVAccountant, [(sigma, q, steps)])
    assert ours.get_epsilon(DELTA) == pytest.approx(reference, rel=0.01)


@pytest.mark.parametrize("sigma,q,steps", CASES)
def test_rdp_matches_opacus_rdp_within_one_percent(sigma, q, steps):
    ours = RdpAccountant()
    ours.step(noise_multiplier=sigma, sample_rate=q, steps=steps)
    reference = _opacus(RDPAccountant, [(sigma, q, steps)])
    assert ours.get_epsilon(DELTA) == pytest.approx(reference, rel=0.01)


def test_mixed_history_matches_opacus_and_order_does_not_matter():
    history = [(1.0, 0.02, 100), (1.5, 0.05, 40), (1.0, 0.02, 60)]
    ours = PldAccountant()
    ours.extend(history)
    assert ours.get_epsilon(DELTA) == pytest.approx(_opacus(PRVAccountant, history), rel=0.01)
    reordered = PldAccountant()
    reordered.extend(reversed(history))
    assert reordered.get_epsilon(DELTA) == pytest.approx(ours.get_epsilon(DELTA), rel=1e-9)


def test_pld_is_tighter_than_rdp_and_both_grow_with_steps():
    pld, rdp = PldAccountant(), RdpAccountant()
    previous = 0.0
    for _ in range(3):
        pld.step(noise_multiplier=1.1, sample_rate=0.05, steps=100)
        rdp.step(noise_multiplier=1.1, sample_rate=0.05, steps=100)
        assert pld.get_epsilon(DELTA) < rdp.get_epsilon(DELTA)
        assert pld.get_epsilon(DELTA) > previous
        previous = pld.get_epsilon(DELTA)


def test_steps_merge_like_opacus_and_count():
    accountant = RdpAccountant()
    accountant.step(noise_multiplier=1.0, sample_rate=0.1)
    accountant.step(noise_multiplier=1.0, sample_rate=0.1, steps=4)
    accountant.step(noise_multiplier=2.0, sample_rate=0.1)
    assert accountant.history == [(1.0, 0.1, 5), (2.0, 0.1, 1)]
    assert accountant.total_steps == 6


def test_edge_mechanisms():
    empty = PldAccountant()
    assert empty.get_epsilon(DELTA) == 0.0
    never_sampled = RdpAccountant()
    never_sampled.step(noise_multiplier=1.0, sample_rate=0.0, steps=10)
    assert never_sampled.get_epsilon(DELTA) == 0.0
    for accountant in (PldAccountant(), RdpAccountant()):
        accountant.step(noise_multiplier=0.0, sample_rate=0.1)
        assert math.isinf(accountant.get_epsilon(DELTA))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": -1.0, "sample_rate": 0.1},
        {"noise_multiplier": float("nan"), "sample_rate": 0.1},
        {"noise_multiplier": 1.0, "sample_rate": 1.5},
        {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": -1},
        {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 1.5},
    ],
)
def test_step_rejects_bad_parameters(kwargs):
    with pytest.raises((ValueError, TypeError)):
        RdpAccountant().step(**kwargs)


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-5, float("nan")])
def test_get_epsilon_rejects_bad_delta(delta):
    accountant = RdpAccountant()
    accountant.step(noise_multiplier=1.0, sample_rate=0.1)
    with pytest.raises(ValueError):
        accountant.get_epsilon(delta)


@pytest.mark.parametrize("mechanism", ["pld", "rdp"])
def test_state_dict_round_trips_through_json(mechanism):
    accountant = create_accountant(mechanism)
    accountant.extend([(1.0, 0.02, 100), (1.5, 0.05, 40)])
    restored = create_accountant(mechanism)
    restored.load_state_dict(json.loads(json.dumps(accountant.state_dict())))
    assert restored.history == accountant.history
    assert restored.get_epsilon(DELTA) == accountant.get_epsilon(DELTA)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(mechanism="rdp"),
        lambda s: s.pop("history"),
        lambda s: s.update(version=99),
        lambda s: s.update(history=[[1.0, 0.1]]),
        lambda s: s.update(history=[[1.0, 0.1, -3]]),
        lambda s: s.update(history=[[float("nan"), 0.1, 3]]),
        lambda s: s.update(history=[[1.0, 2.0, 3]]),
        lambda s: s.update(history="not a list"),
        lambda s: s.update(options={"value_discretization_interval": 0.5}),
    ],
)
def test_load_state_dict_rejects_invalid_states_and_keeps_the_old_one(mutate):
    source = PldAccountant()
    source.step(noise_multiplier=1.0, sample_rate=0.1, steps=3)
    state = source.state_dict()
    mutate(state)
    target = PldAccountant()
    target.step(noise_multiplier=2.0, sample_rate=0.5, steps=1)
    with pytest.raises(AccountantStateError):
        target.load_state_dict(state)
    assert target.history == [(2.0, 0.5, 1)]


def test_epsilon_after_and_copy_do_not_mutate():
    accountant = PldAccountant()
    accountant.step(noise_multiplier=1.0, sample_rate=0.05, steps=100)
    before = accountant.get_epsilon(DELTA)
    predicted = accountant.epsilon_after(noise_multiplier=1.0, sample_rate=0.05, steps=50, delta=DELTA)
    assert accountant.history == [(1.0, 0.05, 100)]
    assert predicted > before
    accountant.step(noise_multiplier=1.0, sample_rate=0.05, steps=50)
    assert accountant.get_epsilon(DELTA) == pytest.approx(predicted, rel=1e-12)


class TestClientAccountants:
    def test_worst_and_distribution(self):
        clients = ClientAccountants(range(5), mechanism="rdp")
        for client_id in range(4):
            for _ in range(client_id + 1):  # client k took part in k+1 rounds
                clients.step(client_id, noise_multiplier=1.0, sample_rate=0.1, steps=10)
        eps = clients.epsilons(DELTA)
        assert eps[4] == 0.0  # never trained
        assert eps[0] < eps[1] < eps[2] < eps[3]
        summary = clients.epsilon_distribution(DELTA, percentiles=(0, 50, 100))
        assert summary.worst_client == 3
        assert summary.worst_epsilon == clients.worst_epsilon(DELTA) == eps[3]
        assert summary.percentiles[0.0] == 0.0
        assert summary.percentiles[100.0] == eps[3]
        assert summary.percentiles[50.0] == eps[1]
        assert summary.num_clients == 5

    def test_accountant_persists_across_rounds_cumulatively(self):
        clients = ClientAccountants(mechanism="pld")
        reference = PldAccountant()
        for _ in range(3):
            clients.step(7, noise_multiplier=1.2, sample_rate=0.05, steps=20)
            reference.step(noise_multiplier=1.2, sample_rate=0.05, steps=20)
        assert clients[7].total_steps == 60
        assert clients.worst_epsilon(DELTA) == pytest.approx(reference.get_epsilon(DELTA))

    def test_state_dict_round_trip_and_validation(self):
        clients = ClientAccountants(mechanism="rdp")
        clients.step(1, noise_multiplier=1.0, sample_rate=0.1, steps=5)
        clients.step(2, noise_multiplier=1.0, sample_rate=0.2, steps=5)
        restored = ClientAccountants(mechanism="rdp")
        restored.load_state_dict(json.loads(json.dumps(clients.state_dict())))
        assert restored.epsilons(DELTA) == clients.epsilons(DELTA)
        with pytest.raises(AccountantStateError):
            ClientAccountants(mechanism="pld").load_state_dict(clients.state_dict())
        bad = clients.state_dict()
        bad["clients"]["x"] = bad["clients"]["1"]
        with pytest.raises(AccountantStateError):
            restored.load_state_dict(bad)

    def test_worst_epsilon_after_does_not_record(self):
        clients = ClientAccountants([0, 1], mechanism="rdp")
        clients.step(0, noise_multiplier=1.0, sample_rate=0.1, steps=10)
        predicted = clients.worst_epsilon_after({1: (1.0, 0.1, 30)}, DELTA)
        assert clients[1].history == []
        clients.step(1, noise_multiplier=1.0, sample_rate=0.1, steps=30)
        assert clients.worst_epsilon(DELTA) == pytest.approx(predicted)

    def test_rejects_bad_ids_and_mechanisms(self):
        with pytest.raises(ValueError):
            ClientAccountants(mechanism="gdp")
        with pytest.raises(ValueError):
            ClientAccountants().register(-1)
