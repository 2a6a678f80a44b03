"""BPR pairs and loss, the closed-form rows of explicit MF and of iALS."""

from __future__ import annotations

import numpy as np
import torch

from secure_fedrec.config import load_config
from secure_fedrec.data import leave_last_out, synthetic_ratings
from secure_fedrec.models import BiasedMF
from secure_fedrec.models.objectives import bpr_loss, pair_examples
from secure_fedrec.training.local import ClientData, LocalTraining, train_client


def test_pair_negatives_are_uniform_over_the_unrated_items():
    rated = np.array([0, 3, 4, 9])
    pairs = pair_examples(rated, n_items=12, negatives=4000, rng=np.random.default_rng(0))
    positive, negative = pairs.items[pairs.positive], pairs.items[pairs.negative]
    assert set(positive.tolist()) == set(rated.tolist())
    assert not set(negative.tolist()) & set(rated.tolist())
    counts = np.bincount(negative, minlength=12)[np.setdiff1d(np.arange(12), rated)]
    assert counts.min() > 0.8 * counts.mean()  # 8 unrated items, ~2000 draws each
    assert len(pair_examples(np.arange(5), n_items=5, negatives=3, rng=np.random.default_rng(0))) == 0


def test_bpr_loss_is_the_logistic_loss_of_the_margin():
    model = BiasedMF(n_users=2, n_items=4, dim=3, task="implicit", objective="bpr")
    u, i, j = torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 0])
    data_loss, total = bpr_loss(model, u, i, j, reg=0.0)
    margin = model(u, i) - model(u, j)
    assert torch.allclose(data_loss, torch.log1p(torch.exp(-margin)))
    assert torch.allclose(total, data_loss)


def test_bpr_client_training_ranks_its_items_above_the_rest():
    model = BiasedMF(n_users=1, n_items=30, dim=4, task="implicit", objective="bpr")
    items = np.array([2, 5, 7, 11])
    data = ClientData(user=0, items=items, ratings=np.ones(4, np.float32))
    cfg = LocalTraining(epochs=10, lr=0.05, reg=0.0, negatives=4)
    for round_index in range(6):  # fresh negatives every round, as in a federated run
        view_before = model.shared_state()
        result = train_client(model, data, cfg, np.random.default_rng(round_index))
        flat = model.layout().flatten(view_before)
        flat[model.layout().indices_for_items(result.items)] += result.delta
        model.load_shared_state(model.layout().unflatten(flat))
    scores = model.score_all_items(torch.tensor([0]))[0].detach().numpy()
    others = np.setdiff1d(np.arange(30), items)
    assert scores[items].min() > np.median(scores[others])
    assert set(items.tolist()) <= set(result.items.tolist())


def test_closed_form_private_row_is_the_minimizer_of_the_local_loss():
    model = BiasedMF(n_users=3, n_items=6, dim=3, global_mean=3.0, private_reg=0.1)
    users = np.array([1, 1, 1, 1, 2])
    items = np.array([0, 2, 3, 5, 1])
    ratings = np.array([4.0, 2.0, 5.0, 3.5, 1.0], dtype=np.float32)
    model.fit_private_rows(users, items, ratings, reg=0.1)
    rows = torch.as_tensor(users[:4])
    p = model.user_factors.weight
    b = model.user_bias.weight
    p.requires_grad_(True)
    b.requires_grad_(True)
    pred = model(rows, torch.as_tensor(items[:4]))
    err = pred - torch.as_tensor(ratings[:4])
    loss = (err ** 2 + 0.1 * (p[rows].pow(2).sum(-1) + b[rows, 0] ** 2)).sum()
    grad_p, grad_b = torch.autograd.grad(loss, [p, b])
    assert grad_p[1].abs().max() < 1e-4 and grad_b[1].abs().max() < 1e-4


def test_default_synthetic_run_is_unchanged_by_presets():
    config = load_config(None)
    from secure_fedrec.presets import apply_preset
    from secure_fedrec.runner import load_data

    resolved = apply_preset(config, load_data(config))
    assert resolved.preset == "synthetic"
    assert resolved.training == config.training and resolved.model == config.model


def test_implicit_mf_with_bpr_beats_popularity_on_structured_data():
    from secure_fedrec.baselines import evaluate_baseline
    from secure_fedrec.centralized import train_centralized

    data = synthetic_ratings(n_users=300, n_items=100, mean_ratings_per_user=20, seed=0, implicit=True)
    split = leave_last_out(data, seed=0)
    config = load_config(None, {"data.implicit": True, "privacy.unit": "none", "model.name": "mf",
                                "model.dim": 8, "training.reg": 0.001})
    twin = train_centralized(config, split, epochs=15, lr=0.02)
    assert twin.model.objective == "bpr"
    popular = evaluate_baseline("most-popular", split)
    assert twin.metrics["hr@10"] > popular["hr@10"]
    assert twin.metrics["sampled_hr@10"] > popular["sampled_hr@10"]


def _ials_local_loss(model: BiasedMF, user: int, positives: np.ndarray, reg: float) -> torch.Tensor:
    """One client's iALS loss as its local training computes it: the sum over every item."""
    items = torch.arange(model.n_items)
    users = torch.full_like(items, user)
    target = torch.zeros(model.n_items)
    target[torch.as_tensor(positives)] = 1.0
    weight = 1.0 + model.positive_weight * target
    return (weight * (model(users, items) - target) ** 2 + reg * model.penalty(users, items)).sum()


def test_ials_closed_form_rows_are_the_minimizers_of_the_losses():
    """The client's row minimizes its local loss over every item; the twin's item step
    minimizes the sum of the clients' losses (duplicates count once)."""
    torch.manual_seed(0)
    model = BiasedMF(n_users=4, n_items=9, dim=3, task="implicit", objective="ials", private_reg=0.05,
                     positive_weight=2.5, global_mean=0.1)
    with torch.no_grad():
        model.item_bias.weight.normal_(0, 0.3)
    users = np.array([0, 0, 0, 2, 2, 3, 3])
    items = np.array([1, 4, 4, 0, 8, 2, 4])
    model.fit_private_rows(users, items, np.ones(len(users), np.float32), reg=0.05)
    for user, positives in ((0, [1, 4]), (2, [0, 8]), (3, [2, 4])):
        loss = _ials_local_loss(model, user, np.array(positives), 0.05)
        grads = torch.autograd.grad(loss, [model.user_factors.weight, model.user_bias.weight])
        assert all(g[user].abs().max() < 1e-5 for g in grads)
    model.fit_item_rows(users, items, reg=0.05)
    total = sum(_ials_local_loss(model, u, np.array(p), 0.05) for u, p in ((0, [1, 4]), (2, [0, 8]), (3, [2, 4])))
    grads = torch.autograd.grad(total, [model.item_factors.weight, model.item_bias.weight])
    assert all(g.abs().max() < 1e-5 for g in grads)  # every item, those nobody chose too


def test_ials_client_update_covers_every_item_and_follows_the_gradient():
    model = BiasedMF(n_users=2, n_items=12, dim=4, task="implicit", objective="ials", private_reg=0.01,
                     positive_weight=1.0, global_mean=0.0)
    data = ClientData(user=1, items=np.array([3, 5, 5, 9]), ratings=np.ones(4, np.float32))
    before = model.layout().flatten(model.shared_state())
    cfg = LocalTraining(epochs=1, lr=1.0, optimizer="sgd", reg=0.01)
    result = train_client(model, data, cfg, np.random.default_rng(0))
    assert result.items.tolist() == list(range(12)) and result.num_examples == 12
    # one full-batch SGD step of size 1: the delta is minus the local loss's gradient at the
    # client's closed-form row
    reference = BiasedMF(n_users=2, n_items=12, dim=4, task="implicit", objective="ials", private_reg=0.01,
                         positive_weight=1.0, global_mean=0.0)
    reference.load_shared_state(model.layout().unflatten(before))
    reference.fit_private_rows(np.array([1, 1, 1]), np.array([3, 5, 9]), np.ones(3, np.float32), reg=0.01)
    loss = _ials_local_loss(reference, 1, np.array([3, 5, 9]), 0.01)
    grads = torch.autograd.grad(loss, [reference.get_parameter(n) for n in reference.shared_names])
    expected = -torch.cat([g.reshape(-1) for g in grads]).double().numpy()
    assert np.allclose(result.delta, expected, atol=1e-6)
    assert torch.allclose(model.user_factors.weight[1], reference.user_factors.weight[1])


def test_ials_twin_beats_popularity_on_structured_data():
    from secure_fedrec.baselines import evaluate_baseline
    from secure_fedrec.centralized import train_centralized

    data = synthetic_ratings(n_users=300, n_items=100, mean_ratings_per_user=20, seed=0, implicit=True)
    split = leave_last_out(data, seed=0)
    config = load_config(None, {"data.implicit": True, "privacy.unit": "none", "training.loss": "ials",
                                "model.dim": 8, "training.reg": 0.01})
    assert config.model_name == "mf"
    twin = train_centralized(config, split, epochs=5)
    popular = evaluate_baseline("most-popular", split)
    assert twin.metrics["hr@10"] > popular["hr@10"]
    assert twin.metrics["sampled_hr@10"] > popular["sampled_hr@10"]
