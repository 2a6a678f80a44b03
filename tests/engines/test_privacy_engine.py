"""Differential privacy wired through the engine: units, noise placement, budget guard."""

import itertools

import pytest

from secure_fedrec.config import load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split

TINY = {
    "aggregation.protocol": "plaintext", "data.synthetic.n_users": 40, "data.synthetic.n_items": 60,
    "training.rounds": 3,
    "training.clients_per_round": 10, "model.dim": 4, "training.local_epochs": 1,
    # pinned: central noise / fixed sampling unless a test asks otherwise (not the private default)
    "privacy.unit": "none", "privacy.noise": "central", "training.sampling": "fixed",
}
USER = {"privacy.unit": "user", "training.sampling": "poisson", "privacy.clip_norm": 0.1}


def _trainer(**extra):
    config = load_config(None, {**TINY, **extra})
    return FederatedTrainer(config, make_split(config, load_data(config)))


def test_user_level_central_noise_reports_growing_epsilon():
    trainer = _trainer(**USER, **{"privacy.noise_multiplier": 1.0})
    history = trainer.run()
    eps = [m.measurements["epsilon"] for m in history]
    assert all(b > a for a, b in itertools.pairwise(eps)) and eps[0] > 0
    assert history[-1].measurements["noise_stddev"] == pytest.approx(0.1)


def test_noised_update_is_dense_so_rated_items_do_not_show():
    trainer = _trainer(**USER, **{"privacy.noise_multiplier": 1.0, "training.rounds": 1,
                                  "training.server_optimizer": "fedavg", "training.server_lr": 1.0})
    before = trainer.params.copy()
    trainer.run()
    changed = trainer.params != before
    # every coordinate moved, including item rows no sampled client rated
    assert changed.mean() == 1.0


def test_budget_guard_stops_before_exceeding_target():
    trainer = _trainer(**USER, **{"privacy.target_epsilon": 2.0, "training.rounds": 3})
    trainer.config.training.rounds = 10  # the noise was calibrated for 3 rounds
    history = trainer.run()
    assert len(history) == 3
    assert history[-1].measurements["epsilon"] <= 2.0 * (1 + 1e-9)
    assert "stopped before the next round" in trainer.privacy.stopped_reason


def test_calibrated_noise_meets_target_after_planned_rounds():
    trainer = _trainer(**USER, **{"privacy.target_epsilon": 4.0, "training.rounds": 4})
    history = trainer.run()
    eps = history[-1].measurements["epsilon"]
    assert 0.97 * 4.0 <= eps <= 4.0 * (1 + 1e-9)


def test_record_level_dp_sgd_accounts_per_client():
    trainer = _trainer(**{"privacy.unit": "record", "privacy.noise": "local", "privacy.noise_multiplier": 1.0,
                          "privacy.record_batch_size": 8, "training.rounds": 2})
    history = trainer.run()
    summary = trainer.privacy.summary()
    assert summary["unit"] == "record" and summary["epsilon"] > 0
    assert history[-1].measurements["epsilon"] == pytest.approx(summary["epsilon"])
    eps = trainer.privacy.client_accountants.epsilons(trainer.privacy.delta)
    assert len(eps) >= 10  # one accountant per client that trained


def test_record_level_clients_abstain_when_their_budget_is_spent():
    trainer = _trainer(**{"privacy.unit": "record", "privacy.noise": "local", "privacy.target_epsilon": 3.0,
                          "privacy.record_batch_size": 8, "training.rounds": 2,
                          "training.clients_per_round": 40})
    trainer.config.training.rounds = 6  # calibrated for 2 rounds of every client
    trainer.run()
    eps = trainer.privacy.client_accountants.epsilons(trainer.privacy.delta)
    assert max(eps.values()) <= 3.0 * (1 + 1e-9)


def test_distributed_noise_requires_a_secure_protocol():
    from secure_fedrec.config import ConfigError

    with pytest.raises(ConfigError, match="secure protocol"):
        load_config(None, {**USER, "aggregation.protocol": "plaintext", "privacy.noise": "distributed",
                           "privacy.target_epsilon": 4.0})


def test_dropouts_under_privacy_use_the_wrapped_protocols_stages():
    trainer = _trainer(**USER, **{"aggregation.protocol": "secagg", "training.dropout_rate": 0.3,
                                  "privacy.noise_multiplier": 1.0, "training.rounds": 1})
    stages = set(trainer.protocol_stages())
    assert "unmasking" in stages
    assert set(trainer.plan_round(0).dropouts.values()) <= stages
    history = trainer.run()
    assert history[-1].contributors <= history[-1].sampled


def test_default_delta_counts_the_privacy_units():
    from secure_fedrec.privacy.calibration import default_delta

    user = _trainer(**USER, **{"privacy.noise_multiplier": 1.0})
    assert user.privacy.delta == pytest.approx(default_delta(len(user.population)))
    record = _trainer(**{"privacy.unit": "record", "privacy.noise": "local", "privacy.noise_multiplier": 1.0})
    assert record.privacy.delta == pytest.approx(default_delta(len(record.split.train.users)))
    assert record.privacy.delta < 1 / record.population_examples().max()


@pytest.mark.parametrize("implicit", [False, True])
def test_record_level_calibration_lets_every_client_train_every_round(implicit):
    # every client in every round: the calibration must leave none of them out of budget
    # (it once planned for the smallest client only, and most implicit-feedback clients abstained)
    trainer = _trainer(**{"privacy.unit": "record", "privacy.noise": "local", "privacy.target_epsilon": 4.0,
                          "privacy.record_batch_size": 16, "training.rounds": 2,
                          "training.clients_per_round": 40, "data.implicit": implicit})
    history = trainer.run()
    assert [m.contributors for m in history] == [len(trainer.population)] * 2
    worst = trainer.privacy.summary()["epsilon"]
    assert 0.9 * 4.0 <= worst <= 4.0 * (1 + 1e-9)
