"""Record-level gradient canaries: crafted examples inside the DP-SGD step under secure aggregation,
scored from every released round; the no-noise twin, heavy noise, the one-shot estimate."""

import dataclasses
import math

import numpy as np
import pytest

from secure_fedrec.audit import AuditSpec, run_audit
from secure_fedrec.audit.commands import summary_text
from secure_fedrec.audit.hook import GradientCanaryHook
from secure_fedrec.audit.run import AuditError, resolve_kind
from secure_fedrec.audit.spec import AuditSpecError, spec_from_dict
from secure_fedrec.audit.twin import shares_without_noise
from secure_fedrec.config import config_from_dict
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split


def _config(epsilon: float, rounds: int = 5):
    # many items nobody rated: the canaries' rows carry no crosstalk from real gradients
    return config_from_dict({
        "data": {"synthetic": {"n_users": 200, "n_items": 3000, "mean_ratings_per_user": 15}},
        "model": {"dim": 4},
        "privacy": {"unit": "record", "noise": "distributed", "target_epsilon": epsilon},
        "aggregation": {"protocol": "plaintext"},
        "training": {"rounds": rounds, "checkpoint_every": 0},
        "evaluation": {"every": 100},
    })


def test_a_gradient_canary_moves_the_release_by_the_clip_norm_along_its_direction():
    config = _config(8.0, rounds=1)
    trainer = FederatedTrainer(config, make_split(config, load_data(config)))
    shares_without_noise(trainer)
    server = trainer.server
    members = np.zeros(40, dtype=bool)
    members[::2] = True
    items = np.bincount(trainer.split.train.items, minlength=trainer.model.n_items)
    hook = GradientCanaryHook.design(trainer.layout, items, {int(u): int(server.examples[u]) for u in trainer.population},
                                     included=members, clip_norm=config.privacy.clip_norm,
                                     sample_rate=trainer.privacy.sample_rate, seed=0)
    trainer.canary_gradients = trainer.auditor = hook
    trainer.run_round()
    x, took = hook.projections[0], hook.took_part[0]
    assert took.any() and not took[~members].any()  # only included canaries are ever sampled
    gamma = trainer.privacy.ddg.gamma
    width = hook.coords.shape[1]
    # through clipping, per-example rounding to γ·Z and the ring: C along u_j, nothing elsewhere
    np.testing.assert_allclose(x[took], config.privacy.clip_norm, atol=gamma * math.sqrt(width) + 1e-5)
    np.testing.assert_allclose(x[~took], 0.0, atol=gamma * math.sqrt(width) + 1e-5)


def test_no_noise_twin_is_large_and_the_private_run_is_not_flagged():
    result = run_audit(_config(8.0), AuditSpec(canaries=200, attacks=(), n_bootstrap=10, ceiling_repeats=1))
    canary = result["canary_audit"]
    assert canary["kind"] == "gradients"
    assert set(canary["scores"]) == {"llr", "sum"}
    assert all(s["observer"] == "released rounds" and s["audited"] for s in canary["scores"].values())
    assert canary["epsilon_hat"] <= result["epsilon"] and not result["violation"]
    assert canary["control"]["epsilon_hat"] >= 1.5  # ~2.2: all ~67 visible included canaries found
    assert canary["ceiling"]["rounds"] == 5
    # the estimate sits beside the bounds, labelled, and never decides the verdict
    estimate = canary["estimate"]
    assert "ESTIMATE" in estimate["kind"] and {"fitted", "composed"} <= set(estimate)
    assert canary["control"]["estimate"]["fitted"]["epsilon"] > 8
    assert "ESTIMATE, not a bound" in summary_text(result)
    assert result["violation"] == (canary["epsilon_hat"] > canary["claimed_epsilon"])


def test_an_estimate_above_epsilon_is_never_a_violation():
    """Only the bounds decide: an estimate over ε (sampling error can put it there) leaves the
    verdict and the exit status alone."""
    result = run_audit(_config(0.1), AuditSpec(canaries=200, attacks=(), n_bootstrap=10, ceiling_repeats=0,
                                               control=False))
    for estimate in result["canary_audit"]["estimate"].values():
        if isinstance(estimate, dict):
            estimate["epsilon"], estimate["ratio"] = 50.0, 500.0
    assert not result["violation"]
    text = summary_text(result)
    assert "ε_est/ε = 500.00" in text and "PRIVACY VIOLATION" not in text


def test_user_level_canary_clients_carry_the_estimates_too():
    config = config_from_dict({
        "data": {"synthetic": {"n_users": 200, "n_items": 300, "mean_ratings_per_user": 15}},
        "model": {"dim": 8},
        "privacy": {"unit": "user", "noise": "central", "target_epsilon": 4.0},
        "aggregation": {"protocol": "plaintext"},
        "training": {"rounds": 4, "clients_per_round": 0.5, "local_epochs": 1, "checkpoint_every": 0},
        "evaluation": {"every": 100},
    })
    result = run_audit(config, AuditSpec(canaries=200, attacks=(), n_bootstrap=10, ceiling_repeats=0,
                                         control=False))
    estimate = result["canary_audit"]["estimate"]
    assert result["canary_audit"]["kind"] == "clients"
    # every included canary that took part is known to the auditor, about q·m/2 a round
    assert estimate["composed"]["rounds"] == 4 and estimate["composed"]["participations"] > 100
    assert estimate["fitted"]["num_members"] + estimate["fitted"]["num_nonmembers"] == 200


def test_heavy_noise_finds_nothing_and_never_a_violation():
    result = run_audit(_config(0.1), AuditSpec(canaries=200, attacks=(), n_bootstrap=10, ceiling_repeats=0,
                                               control=False))
    canary = result["canary_audit"]
    assert canary["epsilon_hat"] <= 0.1 and not result["violation"]


def test_kinds_follow_the_mechanism():
    assert resolve_kind("auto", "record", "distributed") == "gradients"
    assert resolve_kind("auto", "record", "local") == "ratings"
    assert resolve_kind("auto", "user", "central") == "clients"
    assert resolve_kind("gradients", "record", "distributed") == "gradients"
    for unit, noise in (("user", "central"), ("record", "local"), ("none", "central")):
        with pytest.raises(AuditError, match="gradients"):
            resolve_kind("gradients", unit, noise)
    assert spec_from_dict({"canary_kind": "gradients"}).canary_kind == "gradients"
    with pytest.raises(AuditSpecError):
        spec_from_dict({"canary_kind": "gradient"})


def test_canaries_are_spread_within_the_encodings_range():
    config = _config(8.0, rounds=1)
    trainer = FederatedTrainer(config, make_split(config, load_data(config)))
    server = trainer.server
    examples = {int(u): int(server.examples[u]) for u in trainer.population}
    items = np.bincount(trainer.split.train.items, minlength=trainer.model.n_items)
    hook = GradientCanaryHook.design(trainer.layout, items, examples, included=np.ones(1000, bool),
                                     clip_norm=1.0, sample_rate=0.2, seed=1)
    per_owner = np.bincount(hook.owners)
    biggest = max(examples.values())
    assert all(examples[int(o)] + per_owner[o] <= biggest for o in np.unique(hook.owners))
    # the least-trained items first, one canary per item while items last
    assert len(np.unique(hook.coords[:, 0])) == 1000
    assert np.allclose(np.linalg.norm(hook.units, axis=1), 1.0)
    again = dataclasses.replace(hook)
    assert np.array_equal(again.coords, hook.coords)
