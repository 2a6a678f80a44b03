"""The default run is private: user-level DP, distributed noise under SecAgg+ masking, stated in one line."""

from __future__ import annotations

import re

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
