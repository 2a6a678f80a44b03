"""The distributed discrete Gaussian charged at the shares each released sum carried (ex post)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from secure_fedrec.config import load_config
from secure_fedrec.plans import Population, build_privacy_plan
from secure_fedrec.privacy import ddg_realised
from secure_fedrec.privacy.ddg_accounting import DistributedDiscreteGaussianAccountant
from secure_fedrec.privacy.ddg_realised import charge_released_shares

DELTA = 1e-5
SENSITIVITY, DIM = 1000.0, 2000


def _planned(subsampling: str, rounds: int = 12, *, z: float = 0.9, q: float = 0.05,
             num_shares: int = 50) -> DistributedDiscreteGaussianAccountant:
    accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=SENSITIVITY, num_shares=num_shares, dim=DIM,
                                                       subsampling=subsampling)
    for _ in range(rounds):
        accountant.step(noise_multiplier=z, sample_rate=q)
    return accountant


@pytest.mark.parametrize("subsampling", ["revealed", "symmetric"])
def test_released_at_the_guaranteed_minimum_is_the_planned_charge(subsampling):
    planned = _planned(subsampling)
    charge = charge_released_shares(planned, [planned.num_shares] * 12)
    assert charge.get_epsilon(DELTA) == pytest.approx(planned.get_epsilon(DELTA), rel=1e-9)


@pytest.mark.parametrize("subsampling", ["revealed", "symmetric"])
def test_every_sum_with_twice_the_shares_is_the_mechanism_with_twice_the_variance(subsampling):
    """The same share σ summed over 100 shares: exactly the accountant planned for 100 shares."""
    planned = _planned(subsampling)
    charge = charge_released_shares(planned, [100] * 12)
    twice = DistributedDiscreteGaussianAccountant(l2_sensitivity=SENSITIVITY, num_shares=100, dim=DIM,
                                                  subsampling=subsampling)
    twice.step(noise_multiplier=0.9 * math.sqrt(2), sample_rate=0.05, steps=12)
    assert twice.share_sigma(0.9 * math.sqrt(2)) == pytest.approx(planned.share_sigma(0.9))
    assert charge.get_epsilon(DELTA) == pytest.approx(twice.get_epsilon(DELTA), rel=1e-9)
    assert charge.get_epsilon(DELTA) < 0.8 * planned.get_epsilon(DELTA)


def test_the_released_charge_never_exceeds_the_planned_one_and_grows_as_counts_fall():
    planned = _planned("revealed", rounds=18)
    rng = np.random.default_rng(3)
    counts = rng.integers(50, 130, size=18)
    charge = charge_released_shares(planned, counts)
    epsilon = charge.get_epsilon(DELTA)
    assert epsilon <= planned.get_epsilon(DELTA)
    fewer = counts.copy()
    fewer[:6] = 50
    assert charge_released_shares(planned, fewer).get_epsilon(DELTA) >= epsilon - 1e-12
    # below the planned floor (canaries not counted, say) the planned charge is still a bound
    assert charge_released_shares(planned, [10] * 18).get_epsilon(DELTA) == pytest.approx(
        planned.get_epsilon(DELTA), rel=1e-12)


def test_grouping_charges_each_round_at_the_fewest_shares_of_its_group(monkeypatch):
    """Ten rounds fit one group each (2^10 patterns); forcing fewer groups only raises ε."""
    planned = _planned("revealed", rounds=10, q=0.2)
    counts = [60, 140, 75, 90, 130, 55, 100, 120, 70, 110]
    fine = charge_released_shares(planned, counts)
    assert sorted(fine.share_counts) == sorted(counts)
    monkeypatch.setattr(ddg_realised, "MAX_PATTERNS", 40)
    coarse = charge_released_shares(planned, counts)
    assert len(coarse.groups) < len(fine.groups)
    assert all(c in counts for c in coarse.share_counts)
    assert sum(coarse.share_counts) < sum(counts)  # each round at its group's minimum
    assert coarse.get_epsilon(DELTA) >= fine.get_epsilon(DELTA)
    grid = np.linspace(0.5, 6.0, 12)
    assert np.all(coarse.delta_curve(grid) >= fine.delta_curve(grid) - 1e-15)


def test_a_long_run_is_grouped_to_few_patterns():
    planned = _planned("revealed", rounds=400, z=3.0, q=0.02)
    counts = np.random.default_rng(0).integers(50, 80, size=400)
    charge = charge_released_shares(planned, counts)
    assert math.prod(int(g.history[0][2]) + 1 for g in charge.groups) <= ddg_realised.MAX_PATTERNS
    assert 0 < charge.get_epsilon(DELTA) <= planned.get_epsilon(DELTA)


def test_rounds_that_released_nothing_are_not_charged():
    planned = _planned("revealed", rounds=6)
    counts = [80, 0, 80, 0, 80, 80]
    charge = charge_released_shares(planned, counts)
    four = charge_released_shares(_planned("revealed", rounds=4), [80] * 4)
    assert charge.get_epsilon(DELTA) == pytest.approx(four.get_epsilon(DELTA), rel=1e-9)
    assert charge_released_shares(planned, [0] * 6) is None


def test_where_the_released_count_cannot_be_read_there_is_no_released_charge():
    assert charge_released_shares(_planned("general"), [100] * 12) is None  # the amplified charge
    assert charge_released_shares(_planned("revealed"), [100] * 11) is None  # does not line up
    assert charge_released_shares(_planned("revealed"), [100] * 11 + [-1]) is None


def test_the_audit_family_scales_the_share_noise():
    charge = charge_released_shares(_planned("revealed"), [90] * 12)
    assert charge.scaled(1.0).get_epsilon(DELTA) == pytest.approx(charge.get_epsilon(DELTA), rel=1e-12)
    assert charge.scaled(2.0).get_epsilon(DELTA) < charge.get_epsilon(DELTA)
    assert charge.scaled(0.5).get_epsilon(DELTA) > charge.get_epsilon(DELTA)


def _distributed_plan(**overrides):
    config = load_config(None, {"training.rounds": 4, "privacy.target_epsilon": 4.0, **overrides})
    return build_privacy_plan(config, Population(n_users=500, expected_clients=50.0, dim=200))


def test_the_plan_reports_the_charge_at_the_released_shares_beside_the_planned_one():
    plan = _distributed_plan()
    assert plan.min_survivors == 25  # half the expected sample: the noise is sized for it
    for shares in (48, 0, 55, 51):
        plan.record_release(shares)
        plan.after_round()
    summary = plan.summary()
    assert summary["released_shares"] == {"min": 48, "median": 51.0, "max": 55, "rounds_released": 3,
                                          "rounds_charged": 4}
    assert summary["epsilon_at_released_shares"] < 0.8 * summary["epsilon"]
    assert f"ε={summary['epsilon_at_released_shares']:.3g} charged at the noise shares" in summary["statement"]
    revealed = plan.known_participation(np.array([1, 2, 0]))["participation_revealed"]
    assert revealed["epsilon_at_released_shares"] == pytest.approx(summary["epsilon_at_released_shares"])
    # the counts travel with a checkpoint; a hostile one is refused
    other = _distributed_plan()
    other.load_state_dict(plan.state_dict())
    assert other.released_shares == [48, 0, 55, 51]
    for bad in ([-1], [1.5], [True], "48", [10**9]):
        with pytest.raises(ValueError, match="released share counts"):
            other.load_state_dict({**plan.state_dict(), "released_shares": bad})


def test_the_amplified_charge_reports_no_released_figure_but_its_proven_one_does():
    plan = _distributed_plan(**{"privacy.calibrate_to": "amplified"})
    for _ in range(4):
        plan.record_release(50)
        plan.after_round()
    assert "epsilon_at_released_shares" not in plan.summary()
    revealed = plan.known_participation(np.array([1, 2]))["participation_revealed"]
    assert revealed["epsilon_at_released_shares"] < revealed["epsilon"]


def test_a_run_records_the_noise_bearing_contributors_of_every_round():
    from secure_fedrec.config import config_from_dict
    from secure_fedrec.engines.inprocess import FederatedTrainer
    from secure_fedrec.runner import load_data, make_split

    config = config_from_dict({
        "data": {"synthetic": {"n_users": 200, "n_items": 40, "mean_ratings_per_user": 10}},
        "model": {"dim": 4}, "privacy": {"target_epsilon": 8.0},
        "training": {"rounds": 3, "clients_per_round": 0.2, "checkpoint_every": 0},
        "evaluation": {"every": 100}})
    data = load_data(config)
    trainer = FederatedTrainer(config, make_split(config, data))
    history = trainer.run()
    assert trainer.privacy.released_shares == [m.contributors for m in history]
    privacy = trainer.server.privacy_summary()
    assert privacy["epsilon_at_released_shares"] <= privacy["epsilon"]


def test_the_per_count_figure_charges_the_least_noised_released_rounds_at_rate_one():
    """Against an observer who knows who took part: k rounds, the k with the fewest shares, each a
    sure shift at its released count; at most the planned per-count figure, and monotone in k."""
    from secure_fedrec.plans.user import UserLevelPlan

    plan = _distributed_plan(**{"privacy.calibrate_to": "amplified"})
    for shares in (60, 0, 45, 52):
        plan.record_release(shares)
        plan.after_round()
    charge = plan.unsampled_charge(2)
    assert sorted(charge.share_counts) == [45, 52]  # the aborted round is free, the 60-share one less noised
    figures = [plan.epsilon_without_sampling(k) for k in (1, 2, 3, 4)]
    planned = [UserLevelPlan.epsilon_without_sampling(plan, k) for k in (1, 2, 3, 4)]
    assert all(f <= p for f, p in zip(figures, planned, strict=True)) and figures[1] < 0.85 * planned[1]
    assert figures == sorted(figures) and figures[3] == pytest.approx(figures[2])  # three rounds released
    known = plan.known_participation(np.array([1, 2, 0]))["participation_known"]
    assert known["epsilon_by_rounds_taken_part"]["2"] == pytest.approx(figures[1])
