"""Canary clients in the server's view: the hook, ε̂ next to ε, the controls and the verdict."""

import dataclasses
import json

import numpy as np
import pytest

from secure_fedrec.aggregation import ClientUpdate
from secure_fedrec.audit import AuditSpec, run_audit
from secure_fedrec.config import config_from_dict
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split


def _config(**privacy):
    return config_from_dict({
        "data": {"synthetic": {"n_users": 200, "n_items": 300, "mean_ratings_per_user": 15}},
        "model": {"dim": 8},
        "privacy": {"unit": "user", "noise": "central", "target_epsilon": 4.0, **privacy},
        "aggregation": {"protocol": "plaintext"},
        "training": {"rounds": 4, "clients_per_round": 0.5, "local_epochs": 1, "checkpoint_every": 0},
        "evaluation": {"every": 100},
    })


class _RecordingAuditor:
    """A RoundAuditor that adds one canary client and keeps what every round released."""

    def __init__(self, vector):
        self.vector, self.seen, self.asked = vector, [], []

    def canary_updates(self, server, plan):
        self.asked.append(plan.round_index)
        return [(10_000, ClientUpdate.from_dense(self.vector))]

    def observe(self, server, plan, released, uploads):
        self.seen.append((plan.round_index, released.total.copy(), 10_000 in released.contributors,
                          uploads[10_000].norm() if 10_000 in uploads else None))


@pytest.mark.parametrize("protocol", ["plaintext", "secagg"])
def test_canaries_go_through_clipping_and_every_release_is_observed(protocol):
    config = _config()
    config = dataclasses.replace(config, privacy=dataclasses.replace(config.privacy, noise_multiplier=0.5,
                                                                     target_epsilon=None),
                                 aggregation=dataclasses.replace(config.aggregation, protocol=protocol),
                                 training=dataclasses.replace(config.training, server_optimizer="fedavg",
                                                              server_lr=1.0))
    split = make_split(config, load_data(config))
    trainer = FederatedTrainer(config, split)
    size = trainer.layout.size
    vector = np.zeros(size)
    vector[0] = 50.0  # far above the clip norm: the pipeline must clip it like any client
    auditor = _RecordingAuditor(vector)
    trainer.auditor = auditor
    before = trainer.params.copy()
    metrics = trainer.run_round()
    assert auditor.asked == [0] and len(auditor.seen) == 1
    round_index, released, took_part, upload_norm = auditor.seen[0]
    assert round_index == 0 and took_part
    assert metrics.contributors == len(trainer.server.last_aggregate.contributors)
    # what was observed is what the server applied
    np.testing.assert_allclose(trainer.params, before + released)
    # clipped, the canary moves coordinate 0 of the released mean by clip / E[clients]; unclipped it
    # would move it 50 times as far (the noise there has std 0.5 · clip / E[clients])
    assert abs(released[0]) <= 5 * config.privacy.clip_norm / trainer.expected_clients
    # a plaintext server sees the (clipped) upload; a secure protocol shows it nothing
    if protocol == "plaintext":
        assert upload_norm == pytest.approx(config.privacy.clip_norm)
    else:
        assert upload_norm is None


def test_canary_clients_widen_the_fixed_point_range_on_both_sides():
    """The encoder's range counts the canaries: the broadcast and the server's decoding agree."""
    from secure_fedrec.rounds.auditor import add_canaries

    config = dataclasses.replace(_config(), aggregation=dataclasses.replace(_config().aggregation,
                                                                             protocol="secagg"))
    trainer = FederatedTrainer(config, make_split(config, load_data(config)))
    plan = trainer.plan_round(0)
    trainers = len(plan.trainers)
    added = add_canaries(_RecordingAuditor(np.zeros(trainer.layout.size)), trainer.server, plan)
    assert [c for c, _ in added] == [10_000] and plan.canaries == (10_000,)
    assert trainer.server.broadcast(plan).n_clients == trainers + 1 == plan.n_asked

    class _Clash(_RecordingAuditor):
        def canary_updates(self, server, plan):
            return [(plan.trainers[0][0], ClientUpdate.from_dense(self.vector))]

    with pytest.raises(ValueError, match="canary client ids"):
        add_canaries(_Clash(np.zeros(trainer.layout.size)), trainer.server, trainer.plan_round(1))


def test_central_user_level_audit_stays_below_epsilon_with_ceiling_and_control(tmp_path):
    result = run_audit(_config(), AuditSpec(canaries=300, attacks=(), n_bootstrap=10, ceiling_repeats=2), tmp_path)
    assert (tmp_path / "epsilon.png").read_bytes()[:4] == b"\x89PNG" and "epsilon.png" in result["plots"]
    canary = result["canary_audit"]
    assert canary["kind"] == "clients" and canary["rounds_observed"] == 4
    assert set(canary["scores"]) == {"llr", "sum"}
    assert all(e["observer"] == "released rounds" and e["audited"] for e in canary["scores"].values())
    assert {"one_run", "one_run_fdp", "clopper_pearson_heldout"} <= set(canary["scores"]["llr"])
    eps = result["epsilon"]
    assert 0 < eps <= 4.0 + 1e-6 and canary["epsilon_hat"] <= eps and not result["violation"]
    assert canary["ceiling"]["epsilon_hat_median"] <= eps
    control = canary["control"]
    assert control["epsilon_hat"] > canary["epsilon_hat"]
    assert set(control["scores"]) == {"llr", "sum"}


def test_a_mechanism_with_less_noise_than_accounted_is_flagged(monkeypatch, tmp_path, capsys):
    # A planted bug: the server adds a hundredth of the noise the accountant charged for.
    from secure_fedrec.aggregation import layers
    from secure_fedrec.cli import main

    original = layers.CentralGaussianNoise.server

    def quiet_server(self, aggregate, state, ctx):
        return original(dataclasses.replace(self, stddev=self.stddev / 100), aggregate, state, ctx)

    monkeypatch.setattr(layers.CentralGaussianNoise, "server", quiet_server)
    cfg = tmp_path / "audit.toml"
    cfg.write_text("[audit]\ncanaries = 300\nattacks = []\nn_bootstrap = 10\nceiling_repeats = 0\n"
                   "control = false\n")
    args = ["audit", "--quiet", "--config", str(cfg), "--out", str(tmp_path / "out"),
            "--set", "data.synthetic.n_users=200", "--set", "data.synthetic.n_items=300",
            "--set", "data.synthetic.mean_ratings_per_user=15", "--set", "training.rounds=4",
            "--set", "training.clients_per_round=0.5", "--set", "training.local_epochs=1",
            "--set", "training.checkpoint_every=0", "--set", "privacy.unit=user", "--set", "privacy.noise=central",
            "--set", "privacy.target_epsilon=1.0", "--set", "aggregation.protocol=plaintext"]
    with pytest.warns(UserWarning, match="PRIVACY VIOLATION"):
        code = main(args)
    assert code == 3
    result = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert result["violation"] and result["canary_audit"]["epsilon_hat"] > result["epsilon"]
    assert "PRIVACY VIOLATION" in capsys.readouterr().out


def test_false_alarm_regression_private_rows_are_not_audited_at_user_level():
    # issue 21: 20 local epochs, no regularisation, user-level ε = 0.1, canary ratings printed
    # ε̂ = 2.358 "PRIVACY VIOLATION" through the canary user's private embedding.
    config = config_from_dict({
        "data": {"synthetic": {"n_users": 120, "n_items": 80, "mean_ratings_per_user": 15}},
        "model": {"dim": 8},
        "privacy": {"unit": "user", "noise": "central", "target_epsilon": 0.1},
        "aggregation": {"protocol": "plaintext"},
        "training": {"rounds": 3, "clients_per_round": 0.5, "local_epochs": 20, "reg": 0.0,
                     "checkpoint_every": 0},
        "evaluation": {"every": 100},
    })
    spec = AuditSpec(canaries=200, canary_kind="ratings", attacks=(), n_bootstrap=10, control=False)
    result = run_audit(config, spec)
    canary = result["canary_audit"]
    assert not result["violation"] and not canary["violation"]
    scores = canary["scores"]
    assert scores["private_loss"]["observer"] == "user device" and not scores["private_loss"]["audited"]
    assert scores["alignment"]["observer"] == "user device" and not scores["alignment"]["audited"]
    assert set(canary["audited_scores"]) == {"displacement", "aggregate_rows"}
    # one rating of a user present either way: held to group privacy over two steps
    assert canary["claimed_epsilon"] == pytest.approx(2 * result["epsilon"])
    assert canary["epsilon_hat"] <= canary["claimed_epsilon"]


def test_canary_clients_are_refused_on_a_record_level_run():
    from secure_fedrec.audit.run import AuditError

    config = dataclasses.replace(_config(), privacy=dataclasses.replace(
        _config().privacy, unit="record", target_epsilon=2.0, grad_sample_mode="bookkeeping"))
    with pytest.raises(AuditError, match="record-level guarantee"):
        run_audit(config, AuditSpec(canaries=50, canary_kind="clients", attacks=()))


def test_a_run_that_cannot_afford_one_round_is_a_clear_error():
    from secure_fedrec.audit.run import AuditError

    config = _config(noise_multiplier=0.01, target_epsilon=1.0, accountant="rdp")
    with pytest.raises(AuditError, match="cannot afford one round"):
        run_audit(config, AuditSpec(canaries=50, attacks=()))


@pytest.mark.parametrize("noise, protocol", [("central", "plaintext"), ("distributed", "secagg")])
def test_the_mechanism_family_at_scale_one_is_the_accountants_claim(noise, protocol):
    """families.py rebuilds the run's accounted mechanism from its accountant: at noise scale 1
    it reports the run's own ε, and more noise claims less."""
    from secure_fedrec.audit.families import mechanism_family

    config = _config()
    config = dataclasses.replace(config, privacy=dataclasses.replace(config.privacy, noise=noise, delta=1e-5),
                                 aggregation=dataclasses.replace(config.aggregation, protocol=protocol),
                                 training=dataclasses.replace(config.training, rounds=2))
    trainer = FederatedTrainer(config, make_split(config, load_data(config)))
    assert mechanism_family(trainer.privacy, 1e-5) is None  # nothing charged yet
    trainer.run()
    family = mechanism_family(trainer.privacy, 1e-5)
    assert family is not None
    assert family.epsilon(1.0) == pytest.approx(trainer.privacy.accountant.get_epsilon(1e-5), rel=1e-3)
    assert family.epsilon(2.0) < family.epsilon(1.0) < family.epsilon(0.5)


def test_distributed_canary_clients_go_through_the_shares_and_the_secure_sum():
    config = _config()
    config = dataclasses.replace(config, privacy=dataclasses.replace(config.privacy, noise="distributed"),
                                 aggregation=dataclasses.replace(config.aggregation, protocol="secagg"),
                                 training=dataclasses.replace(config.training, rounds=2))
    result = run_audit(config, AuditSpec(canaries=100, attacks=(), n_bootstrap=10, ceiling_repeats=1,
                                         control=False))
    canary = result["canary_audit"]
    assert canary["kind"] == "clients" and canary["rounds_observed"] == 2
    assert canary["canary_norm"] == pytest.approx(config.privacy.clip_norm)
    assert canary["epsilon_hat"] <= result["epsilon"] and not result["violation"]
    assert canary["ceiling"]["epsilon_hat_median"] <= result["epsilon"]
