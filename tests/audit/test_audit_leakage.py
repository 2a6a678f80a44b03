"""The audit measures leakage where there is some, and never claims more than the accountant allows."""

import dataclasses
import math

import numpy as np
import pytest

from secure_fedrec.audit import AuditSpec, run_audit
from secure_fedrec.audit.canaries import insert_canaries
from secure_fedrec.audit.run import partition_users
from secure_fedrec.audit.spec import AuditSpecError, spec_from_dict
from secure_fedrec.config import config_from_dict
from secure_fedrec.runner import load_data, make_split


def _config(**training):
    return config_from_dict({
        "data": {"synthetic": {"n_users": 40, "n_items": 60, "mean_ratings_per_user": 20}},
        "model": {"dim": 16},
        # Pinned: the package defaults (private by default) may change under these tests.
        "privacy": {"unit": "none", "noise": "central", "grad_sample_mode": "bookkeeping"},
        "aggregation": {"protocol": "plaintext"},
        "training": {"rounds": 4, "clients_per_round": 0.999, "sampling": "fixed", "local_epochs": 5,
                     "checkpoint_every": 0, **training},
        "evaluation": {"every": 100},
    })


def test_planted_overfit_is_detected():
    # No regularisation and many local epochs: the model memorises its training ratings.
    config = _config(local_epochs=15, reg=0.0, lr=0.05, server_optimizer="fedadam", server_lr=0.3, rounds=3)
    spec = AuditSpec(canaries=200, canary_kind="ratings", attacks=("loss",), n_bootstrap=50)
    result = run_audit(config, spec)
    loss = result["attacks"]["loss"]
    assert loss["auc_low"] > 0.6, loss
    canary = result["canary_audit"]
    scores = canary["scores"]
    assert scores["private_loss"]["membership"]["auc"] > 0.75
    assert set(scores) == {"private_loss", "displacement", "alignment", "aggregate_rows", "client_rows"}
    # scores through the user's private row are the user's own device: reported, never audited
    assert not scores["private_loss"]["audited"] and scores["private_loss"]["observer"] == "user device"
    assert canary["best_score"] in canary["audited_scores"]
    assert canary["epsilon_hat"] > 0.5 and not canary["violation"]


def test_epsilon_hat_is_below_epsilon_on_a_dp_run():
    config = _config(local_epochs=1, reg=0.0, server_optimizer="fedadam", server_lr=0.1, rounds=2)
    config = dataclasses.replace(config, privacy=dataclasses.replace(
        config.privacy, unit="record", target_epsilon=1.0, delta=1e-5))
    spec = AuditSpec(canaries=200, attacks=(), n_bootstrap=20)
    result = run_audit(config, spec)
    canary = result["canary_audit"]
    assert math.isfinite(result["epsilon"]) and 0 < result["epsilon"] <= 1.0 + 1e-6
    assert canary["delta"] == 1e-5 and not canary["delta_too_large"]
    assert canary["epsilon_hat"] <= result["epsilon"]
    assert canary["violation"] is False and result["violation"] is False
    assert canary["tightness"] == pytest.approx(canary["epsilon_hat"] / result["epsilon"])


def test_canary_ratings_are_new_pairs_and_only_included_ones_are_trained():
    config = _config()
    split = make_split(config, load_data(config))
    members = np.arange(0, 40, 2)
    plan = insert_canaries(split, kind="ratings", count=50, member_users=members, rating=None,
                           items_per_user=1, seed=3)
    c = plan.canaries
    assert set(c.users.tolist()) <= set(members.tolist())
    seen = set(zip(np.r_[split.train.users, split.test.users].tolist(),
                   np.r_[split.train.items, split.test.items].tolist()))
    assert not seen & set(zip(c.users.tolist(), c.items.tolist()))
    assert len(plan.split.train) == len(split.train) + int(c.included.sum())
    assert np.all(c.ratings == split.train.rating_scale[0])
    again = insert_canaries(split, kind="ratings", count=50, member_users=members, rating=None,
                            items_per_user=1, seed=3)
    assert np.array_equal(again.canaries.included, c.included)


def test_canary_users_get_new_indices():
    config = _config()
    split = make_split(config, load_data(config))
    plan = insert_canaries(split, kind="users", count=10, member_users=np.arange(40), rating=5.0,
                           items_per_user=4, seed=0)
    assert plan.split.train.n_users == split.train.n_users + 10 == plan.split.test.n_users
    trained = set(plan.split.train.users[len(split.train):].tolist())
    assert trained == set(plan.users[plan.canaries.included].tolist())


def test_user_partition_is_disjoint_and_covers_everyone():
    users = np.arange(101)
    groups = partition_users(users, user_attack=True, seed=1)
    joined = np.concatenate(list(groups.values()))
    assert np.array_equal(np.sort(joined), users)
    assert len(groups["members"]) == 50
    assert len(partition_users(users, user_attack=False, seed=1)["nonmembers"]) == 0


def test_guess_counts_and_spec_parsing():
    from secure_fedrec.audit.canary_audit import canary_guess_counts
    assert canary_guess_counts(1000) == ([50, 100, 250], [0, 50])
    assert canary_guess_counts(1000, expected_visible=400) == ([50, 100, 200, 250, 320, 380], [0, 50])
    spec = spec_from_dict({"attacks": "loss, user", "fpr_levels": [0.01], "confidence": 0.9})
    assert spec.attacks == ("loss", "user") and spec.fpr_levels == (0.01,)
    with pytest.raises(AuditSpecError, match="audit.canaries must be an integer"):
        spec_from_dict({"canaries": 1.5})


def test_record_level_dp_moves_rows_independently_of_the_data():
    from secure_fedrec.audit.canaries import item_rows
    from secure_fedrec.engines.inprocess import FederatedTrainer

    config = config_from_dict({
        "data": {"synthetic": {"n_users": 12, "n_items": 200, "mean_ratings_per_user": 6}},
        "model": {"dim": 4},
        "training": {"rounds": 1, "clients_per_round": 0.999, "local_epochs": 1, "checkpoint_every": 0},
        "privacy": {"unit": "record", "noise": "local", "target_epsilon": 1.0, "delta": 1e-5,
                    "grad_sample_mode": "bookkeeping"},
        "aggregation": {"protocol": "plaintext"},
        "evaluation": {"every": 100},
    })
    split = make_split(config, load_data(config))
    trainer = FederatedTrainer(config, split)
    before = item_rows(trainer.model.shared_state(), trainer.model.item_row_names)
    trainer.run()
    after = item_rows(trainer.model.shared_state(), trainer.model.item_row_names)
    unrated = np.setdiff1d(np.arange(split.train.n_items), split.train.items)
    assert unrated.size > 0
    # Under DP every row must be able to move whether or not some client rated its item.
    assert not np.array_equal(after[unrated], before[unrated])


def test_canary_users_audit_runs_on_a_user_level_dp_run():
    config = _config(local_epochs=1, rounds=2, sampling="poisson", clients_per_round=0.5)
    config = dataclasses.replace(config, privacy=dataclasses.replace(
        config.privacy, unit="user", target_epsilon=2.0, delta=1e-5))
    spec = AuditSpec(canaries=20, canary_kind="users", canary_items_per_user=5, attacks=(), n_bootstrap=10)
    result = run_audit(config, spec)
    canary = result["canary_audit"]
    assert canary["kind"] == "users" and canary["num_canaries"] == 20
    assert set(canary["scores"]) == {"loss", "displacement", "aggregate_rows", "client_rows"}
    # a user-level guarantee covers what is released, not a plaintext upload before the central noise
    assert {n for n, e in canary["scores"].items() if e["audited"]} == {"loss", "displacement", "aggregate_rows"}
    assert canary["epsilon_hat"] <= result["epsilon"] <= 2.0 + 1e-6


def test_audit_chooses_a_delta_small_against_the_number_of_canaries():
    from attacks import audit_delta
    from secure_fedrec.audit.run import AuditDeltaWarning, audit_config

    spec = AuditSpec(canaries=1000)
    dp = config_from_dict({"privacy": {"unit": "record", "noise": "local", "target_epsilon": 1.0}})
    trained, delta = audit_config(dp, spec, num_users=610)
    # Unset δ: train and audit at min(default_delta(N), audit_delta(m)), which the accountant uses.
    assert delta == trained.privacy.delta == audit_delta(1000, 0.95) < 610 ** -1.1
    assert dp.privacy.delta is None  # the caller's config is not mutated
    tiny = config_from_dict({"privacy": {"unit": "record", "noise": "local", "target_epsilon": 1.0}})
    assert audit_config(tiny, AuditSpec(canaries=10), num_users=10**7)[1] == pytest.approx(1e-8)
    # An explicit δ is respected, with a warning when it is too large to audit.
    explicit = config_from_dict({"privacy": {"unit": "record", "noise": "local", "target_epsilon": 1.0,
                                             "delta": 1e-3}})
    with pytest.warns(AuditDeltaWarning):
        kept, delta = audit_config(explicit, spec, num_users=610)
    assert delta == kept.privacy.delta == 1e-3
    # Without DP there is nothing to train with; the bound uses audit_delta(m).
    plain = config_from_dict({"privacy": {"unit": "none"}})
    assert audit_config(plain, spec, num_users=610) == (plain, audit_delta(1000, 0.95))


def test_unset_delta_is_trained_and_audited_at_the_audit_delta():
    from attacks import audit_delta

    config = _config(local_epochs=1, reg=0.0, rounds=1)
    config = dataclasses.replace(config, privacy=dataclasses.replace(
        config.privacy, unit="record", target_epsilon=2.0, delta=None, grad_sample_mode="bookkeeping"))
    result = run_audit(config, AuditSpec(canaries=100, attacks=(), n_bootstrap=10))
    canary = result["canary_audit"]
    assert result["privacy"]["delta"] == canary["delta"] == pytest.approx(audit_delta(100, 0.95))
    assert not canary["delta_too_large"] and canary["epsilon_hat"] <= result["epsilon"]


def test_update_inference_goes_through_the_real_mechanism():
    from secure_fedrec.audit.updates import update_inference
    from secure_fedrec.engines.inprocess import FederatedTrainer

    base = _config(local_epochs=1, rounds=1, sampling="poisson", clients_per_round=0.5)
    views = {}
    for noise, protocol in (("central", "plaintext"), ("distributed", "secagg")):
        config = dataclasses.replace(base, privacy=dataclasses.replace(
            base.privacy, unit="user", noise=noise, target_epsilon=1.0, delta=1e-5),
            aggregation=dataclasses.replace(base.aggregation, protocol=protocol))
        trainer = FederatedTrainer(config, make_split(config, load_data(config)))
        out = update_inference(trainer, targets=4, cohort_sizes=(2,), seed=0)
        views[noise] = out
        assert out["placement"] == noise
    central, distributed = views["central"]["protocol_views"], views["distributed"]["protocol_views"]
    assert set(central) == {"upload", "clean_sum_n=2", "released_sum_n=2"}
    assert set(distributed) == {"upload", "noised_share", "released_sum_n=2"}
    # a server adding central noise still sees the clipped upload and the clean sum in the clear
    assert central["upload"]["auc"] == 1.0 and central["clean_sum_n=2"]["auc"] > 0.9
    # the noise the accountant charged drowns the released sum, and each client's own share
    assert central["released_sum_n=2"]["auc"] < 0.8 and distributed["noised_share"]["auc"] < 0.8
