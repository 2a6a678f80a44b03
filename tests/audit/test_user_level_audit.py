"""The user-level attack (Zhang et al. 2021) wired to this package's models."""

import numpy as np
import torch

from secure_fedrec.audit.canaries import pair_losses
from secure_fedrec.audit.membership import (
    fit_private_rows,
    recommended_lists,
    user_level_attack,
)
from secure_fedrec.audit.run import partition_users
from secure_fedrec.centralized import train_centralized
from secure_fedrec.config import config_from_dict
from secure_fedrec.data.dataset import Split
from secure_fedrec.runner import load_data, make_split

EVAL = {"fpr_levels": (0.01,), "n_bootstrap": 200, "confidence": 0.95}


def _setup(n_users=240):
    config = config_from_dict({
        "seed": 0,
        "data": {"synthetic": {"n_users": n_users, "n_items": 150, "mean_ratings_per_user": 25}},
        "model": {"name": "mf", "dim": 16},
        "privacy": {"unit": "none"},
        "aggregation": {"protocol": "plaintext"},
        "training": {"rounds": 4, "clients_per_round": 0.999, "sampling": "fixed", "local_epochs": 5,
                     "lr": 0.05, "reg": 0.0, "checkpoint_every": 0},
        "evaluation": {"every": 100},
    })
    split = make_split(config, load_data(config))
    users = np.flatnonzero(split.train.ratings_per_user() > 0)
    return config, split, partition_users(users, user_attack=True, seed=0)


def _central(config, split, users, epochs=30):
    keep = np.isin(split.train.users, users)
    return train_centralized(config, Split(split.train.subset(keep), split.test, split.protocol, split.seed),
                             epochs=epochs).model


def test_members_are_found_when_non_members_get_popular_items():
    config, split, groups = _setup()
    target = _central(config, split, groups["members"])
    out = {o.name: o for o in user_level_attack(
        config, target, split, member_users=groups["members"], nonmember_users=groups["nonmembers"],
        shadow_users=groups["shadow"], k=10, shadow_epochs=30, seed=0, **EVAL)}
    assert set(out) == {"user", "user_popular"}
    assert out["user_popular"].metrics.auc.low > 0.8, out["user_popular"].metrics.summary()


def test_chance_when_members_and_non_members_are_treated_alike():
    # The "members" were never trained on either: the target is trained on other users, so
    # both groups are equally new to it and the attack has nothing to find.
    config, split, groups = _setup(n_users=320)
    outsiders = np.concatenate([groups["members"], groups["nonmembers"]])
    trained, fake = outsiders[: len(outsiders) // 2], outsiders[len(outsiders) // 2:]
    target = _central(config, split, trained)
    fake = np.random.default_rng(0).permutation(fake)
    # Give the fake members fitted rows as well, so their lists are made exactly like a non-member's.
    target = fit_private_rows(target, split.train, fake, steps=20, lr=0.05, reg=0.0, seed=0)
    half = len(fake) // 2
    (outcome,) = user_level_attack(
        config, target, split, member_users=np.sort(fake[:half]), nonmember_users=np.sort(fake[half:]),
        shadow_users=groups["shadow"], k=10, shadow_epochs=30, seed=0, settings=("fitted",),
        **{**EVAL, "confidence": 0.99})
    # A 99 % interval: under the null the AUC of 60 vs 60 users has a standard deviation ≈ 0.05.
    assert 0.5 in outcome.metrics.auc, outcome.metrics.summary()


def test_fitted_rows_fit_their_users_and_touch_nothing_else():
    config, split, groups = _setup()
    model = _central(config, split, groups["members"], epochs=5)
    new = groups["nonmembers"]
    fitted = fit_private_rows(model, split.train, new, steps=50, lr=0.05, reg=0.0, seed=0)
    before, after = dict(model.named_parameters()), dict(fitted.named_parameters())
    for name in model.shared_names:
        assert torch.equal(before[name], after[name])
    others = np.setdiff1d(np.arange(split.train.n_users), new)
    for name in model.private_names:
        assert torch.equal(before[name][others], after[name][others])
    rows = np.isin(split.train.users, new)
    args = (split.train.users[rows], split.train.items[rows], split.train.ratings[rows])
    assert pair_losses(fitted, *args).mean() < 0.5 * pair_losses(model, *args).mean()
    history = [np.unique(split.train.items[split.train.users == u]) for u in new]
    for items, seen in zip(recommended_lists(fitted, new, history, 10), history):
        assert len(items) == 10 and not np.isin(items, seen).any()
