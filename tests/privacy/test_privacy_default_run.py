"""The default run is private: user-level DP, distributed noise under SecAgg+ masking, stated in one line."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from secure_fedrec.config import DEFAULT_TARGET_EPSILON, load_config
from secure_fedrec.plans import Population, build_privacy_plan


def test_default_config_is_user_level_distributed_dp_under_masking():
    config = load_config(None)
    assert config.privacy.unit == "user"
    assert config.privacy.noise == "distributed"
    assert config.aggregation.protocol == "secagg+"
    assert config.training.sampling == "poisson"  # what the accountant assumes
    assert config.privacy.target_epsilon == DEFAULT_TARGET_EPSILON


def test_default_summary_states_unit_epsilon_delta_and_placement_in_one_line():
    config = load_config(None, {"training.rounds": 3, "privacy.target_epsilon": 2.0})
    session = build_privacy_plan(config, Population(n_users=500, expected_clients=50.0, dim=200))
    pipeline = session.pipeline
    names = [type(layer).__name__ for layer in (*pipeline.layers, pipeline.encoding)]
    # the noise shares are added by the clients, inside the masking protocol's input
    assert names == ["Mean", "Clip", "DistributedDiscreteGaussianEncoding"]
    for _ in range(3):
        session.after_round()
    summary = session.summary()
    statement = summary["statement"]
    assert "\n" not in statement
    assert statement.startswith("user-level DP")
    assert "SecAgg+ masking" in statement and "distributed" in statement
    epsilon = float(re.search(r"ε=([0-9.]+)", statement).group(1))
    assert 0 < epsilon <= 2.0 and abs(epsilon - summary["epsilon"]) < 0.01
    assert f"δ={session.delta:.2g}" in statement
    assert "target ε=2" in statement


def _plan_after(config, rounds):
    plan = build_privacy_plan(config, Population(n_users=500, expected_clients=50.0, dim=200))
    for _ in range(rounds):
        plan.after_round()
    return plan


def test_with_known_participation_no_amplification_is_claimed():
    """Against an observer who knows which rounds a user took part in (the server under
    distributed noise; anyone with the seed), each of those rounds costs the un-sampled
    mechanism: ε grows with the rounds taken part in and exceeds the amplified claim."""
    import numpy as np

    from secure_fedrec.privacy.accounting import create_accountant

    for noise in ("distributed", "central"):
        config = load_config(None, {"training.rounds": 4, "privacy.noise": noise, "privacy.target_epsilon": 4.0})
        plan = _plan_after(config, 4)
        by_rounds = [plan.epsilon_without_sampling(k) for k in range(1, 5)]
        assert all(a < b for a, b in itertools.pairwise(by_rounds))
        assert by_rounds[-1] > plan.summary()["epsilon"]
        assert plan.epsilon_without_sampling(0) == 0.0
        known = plan.known_participation(np.array([0, 1, 1, 2, 4, 0]))["participation_known"]
        assert known["max_rounds_per_user"] == 4 and known["median_rounds_per_participating_user"] == 1
        assert known["users_never_sampled"] == 2
        assert known["epsilon_worst_user"] == by_rounds[3] and known["epsilon_median_user"] == by_rounds[0]
        if noise == "central":  # the same accountant, stepped at sample rate 1
            z = plan.accountant.history[0][0]
            reference = create_accountant(config.privacy.accountant)
            reference.step(noise_multiplier=z, sample_rate=1.0, steps=2)
            assert plan.epsilon_without_sampling(2) == reference.get_epsilon(plan.delta)


def test_a_run_reports_its_users_participation_and_a_non_private_one_nothing(tmp_path):
    from secure_fedrec.runner import run_job

    base = {"data.synthetic.n_users": 60, "data.synthetic.n_items": 30, "data.synthetic.mean_ratings_per_user": 10.0,
            "training.rounds": 3,
            "training.clients_per_round": 0.3, "evaluation.every": 3}
    private = run_job(load_config(None, {**base, "privacy.noise": "central", "aggregation.protocol": "plaintext"}))
    known = private["privacy"]["participation_known"]
    assert 1 <= known["max_rounds_per_user"] <= 3
    assert set(known["epsilon_by_rounds_taken_part"]) == {str(k) for k in range(1, known["max_rounds_per_user"] + 1)}
    assert known["epsilon_worst_user"] >= private["privacy"]["epsilon"]
    assert "participation_revealed" not in private["privacy"]  # central noise: no share count to read
    plain = run_job(load_config(None, {**base, "privacy.unit": "none", "aggregation.protocol": "plaintext"}))
    assert "participation_known" not in plain["privacy"]


def test_a_server_sampled_distributed_run_reports_the_bound_that_covers_the_share_count():
    """Under server sampling a sampled user adds a noise share an unsampled one does not: the amplified
    ε does not cover that count, the participation-revealed ε does and is reported beside it."""
    config = load_config(None, {"training.rounds": 4, "privacy.noise": "distributed", "privacy.target_epsilon": 4.0,
                                "privacy.calibrate_to": "amplified"})
    plan = _plan_after(config, 4)
    revealed = plan.known_participation(np.array([0, 1, 1, 2, 4, 0]))["participation_revealed"]
    assert revealed["epsilon"] == plan.accountant.epsilon_participation_revealed(plan.delta)
    assert plan.summary()["epsilon"] < revealed["epsilon"] < plan.epsilon_without_sampling(4)
    assert revealed["relation"].startswith("zero-out")
    private = load_config(None, {"training.rounds": 4, "privacy.noise": "distributed", "privacy.target_epsilon": 4.0,
                                 "privacy.private_sampling": True})
    assert "participation_revealed" not in _plan_after(private, 4).known_participation(np.array([1, 2]))


def test_calibrating_to_the_participation_revealed_bound_makes_it_the_runs_epsilon():
    from secure_fedrec.config import ConfigError

    overrides = {"training.rounds": 4, "privacy.noise": "distributed", "privacy.target_epsilon": 4.0}
    amplified = _plan_after(load_config(None, {**overrides, "privacy.calibrate_to": "amplified"}), 4)
    proven = _plan_after(load_config(None, {**overrides, "privacy.calibrate_to": "participation_revealed"}), 4)
    default = _plan_after(load_config(None, overrides), 4)  # "proven": here the participation-revealed figure
    assert default.ddg_plan.model_unit_noise_std == proven.ddg_plan.model_unit_noise_std
    assert "(proven for every observer" in default.summary()["statement"]
    assert "NOT a proven bound" in amplified.summary()["statement"]
    summary = proven.summary()
    assert summary["epsilon"] == pytest.approx(4.0, rel=2e-3)
    assert summary["epsilon"] == proven.accountant.epsilon_participation_revealed(proven.delta)
    assert "zero-out" in summary["assumptions"] and "proven for every observer" in summary["accountant"]
    assert proven.known_participation(np.array([1, 2]))["participation_revealed"]["calibrated_to"] is True
    assert amplified.known_participation(np.array([1, 2]))["participation_revealed"]["calibrated_to"] is False
    assert proven.ddg_plan.model_unit_noise_std > 1.2 * amplified.ddg_plan.model_unit_noise_std
    for refused in ({"privacy.noise": "central", "aggregation.protocol": "plaintext"},
                    {"privacy.private_sampling": True}):
        with pytest.raises(ConfigError, match="calibrate_to"):
            load_config(None, {**overrides, **refused, "privacy.calibrate_to": "participation_revealed"})
        load_config(None, {**overrides, **refused})  # "proven" is the amplified figure there, proven
