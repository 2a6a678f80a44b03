"""The budget guard stops before ε exceeds the target and never records a trial step."""

from __future__ import annotations

import pytest

from secure_fedrec.privacy.accounting import (
    ClientAccountants,
    PldAccountant,
    RdpAccountant,
)
from secure_fedrec.privacy.budget import BudgetExceededError, PrivacyBudget
from secure_fedrec.privacy.ddg_accounting import DistributedDiscreteGaussianAccountant

DELTA = 1e-5


@pytest.mark.parametrize("accountant_cls", [RdpAccountant, PldAccountant])
def test_guard_stops_before_the_budget_is_exceeded(accountant_cls):
    budget = PrivacyBudget(target_epsilon=2.0, delta=DELTA)
    accountant = accountant_cls()
    step = {"noise_multiplier": 1.5, "sample_rate": 0.05, "steps": 25}
    rounds = 0
    while budget.can_afford(accountant, **step):
        accountant.step(**step)
        rounds += 1
        assert rounds < 1000
    assert rounds > 0
    assert accountant.get_epsilon(DELTA) <= 2.0
    assert accountant.epsilon_after(delta=DELTA, **step) > 2.0
    with pytest.raises(BudgetExceededError):
        budget.require(accountant, **step)
    assert accountant.total_steps == 25 * rounds  # the checks recorded nothing
    status = budget.status(accountant)
    assert not status.exhausted and status.remaining_epsilon >= 0


def test_guard_for_distributed_dp():
    budget = PrivacyBudget(target_epsilon=1.0, delta=DELTA)
    accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=100.0, num_shares=20, dim=1000)
    step = {"noise_multiplier": 20**0.5, "sample_rate": 0.05}  # shares of scale 100 = the sensitivity
    while budget.can_afford(accountant, **step):
        accountant.step(**step)
    assert 0 < accountant.get_epsilon(DELTA) <= 1.0


def test_guard_for_per_client_accountants():
    budget = PrivacyBudget(target_epsilon=3.0, delta=DELTA)
    clients = ClientAccountants(range(4), mechanism="rdp")
    round_index = 0
    while True:
        planned = {cid: (1.0, 0.05, 20) for cid in range(4) if (cid + round_index) % 2 == 0}
        if not budget.can_afford_clients(clients, planned):
            break
        for cid, (sigma, q, steps) in planned.items():
            clients.step(cid, noise_multiplier=sigma, sample_rate=q, steps=steps)
        round_index += 1
    assert round_index > 0
    assert clients.worst_epsilon(DELTA) <= 3.0
    assert budget.status(clients).spent_epsilon == clients.worst_epsilon(DELTA)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_epsilon": 0.0, "delta": DELTA},
        {"target_epsilon": 1.0, "delta": 1.0},
        {"target_epsilon": float("inf"), "delta": DELTA},
    ],
)
def test_budget_validates(kwargs):
    with pytest.raises(ValueError):
        PrivacyBudget(**kwargs)
