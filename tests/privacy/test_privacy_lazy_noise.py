"""Lazy noise for untouched item rows under DP-SGD with plain SGD.

The sparse client (a view of the touched rows, the other rows noised once in
closed form) must give what the dense client (every row noised by Opacus at
every step) gives: the same result without noise, and the same noise law on
the untouched rows with it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from secure_fedrec.models import build_model
from secure_fedrec.training.dpsgd import train_client_dpsgd, untouched_row_noise_std
from secure_fedrec.training.local import ClientData, LocalTraining

N_ITEMS, DIM, BATCH = 400, 6, 8
LR, WEIGHT_DECAY = 0.5, 0.02


def _model(name: str):
    kwargs = {"global_mean": 3.5} if name == "mf" else {"hidden": 8}
    return build_model(name, n_users=3, n_items=N_ITEMS, dim=DIM, init_std=0.1, seed=3, **kwargs)


def _client(name: str) -> ClientData:
    items = np.array([2, 5, 5, 17, 40, 41, 99, 250, 300, 301, 302, 399, 7, 8, 9, 10])
    ratings = np.linspace(1.0, 5.0, len(items)) if name == "mf" else np.ones(len(items))
    return ClientData(user=1, items=items, ratings=ratings.astype(np.float32))


def _train(name: str, *, lazy: bool, noise: float, seed: int = 0):
    model = _model(name)
    local = LocalTraining(epochs=2, lr=LR, optimizer="sgd", reg=WEIGHT_DECAY, negatives=2)
    result, step = train_client_dpsgd(
        model, _client(name), local, np.random.default_rng(seed), noise_multiplier=noise,
        max_grad_norm=0.3, batch_size=BATCH, lazy_noise=lazy, generator=torch.Generator().manual_seed(seed))
    return model, result, step


def _touched(name: str, seed: int = 0) -> np.ndarray:
    from secure_fedrec.training.local import local_examples

    model = _model(name)
    touched, _, _ = local_examples(model, _client(name), N_ITEMS, 2, np.random.default_rng(seed))
    return touched


class ClientResultLike:
    def __init__(self, delta: np.ndarray) -> None:
        self.delta = delta


def _row_values(model, result, rows: np.ndarray) -> np.ndarray:
    """The delta's item-row coordinates for ``rows`` (every item-row parameter)."""
    layout = model.layout()
    full = layout.unflatten(np.zeros(layout.size))
    offsets = layout.offsets
    out = []
    for name in layout.names:
        if name not in layout.item_rows:
            continue
        width = int(np.prod(full[name].shape[1:])) if full[name].dim() > 1 else 1
        block = result.delta[offsets[name]:offsets[name] + N_ITEMS * width].reshape(N_ITEMS, width)
        out.append(block[rows])
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_without_noise_lazy_and_dense_give_the_same_update(name):
    _, dense, dense_step = _train(name, lazy=False, noise=0.0)
    model, lazy, lazy_step = _train(name, lazy=True, noise=0.0)
    assert dense_step.steps == lazy_step.steps > 0
    np.testing.assert_array_equal(dense.items, lazy.items)
    assert len(lazy.items) == N_ITEMS  # the update covers every item row
    np.testing.assert_allclose(lazy.delta, dense.delta, rtol=1e-4, atol=1e-6)
    # untouched rows moved by weight decay alone: (a^T - 1) w_0
    untouched = np.setdiff1d(np.arange(N_ITEMS), _touched(name))
    layout = model.layout()
    initial = ClientResultLike(layout.flatten(model.shared_state()))
    decay = (1 - LR * WEIGHT_DECAY) ** lazy_step.steps - 1
    expected = decay * _row_values(model, initial, untouched)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(_row_values(model, lazy, untouched), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_untouched_rows_carry_the_noise_of_every_step(name):
    noise = 1.3
    untouched = np.setdiff1d(np.arange(N_ITEMS), _touched(name))
    model = _model(name)
    start = _row_values(model, _train(name, lazy=True, noise=0.0)[1], untouched)  # decay term only
    stds = {}
    for lazy in (True, False):
        model, result, step = _train(name, lazy=lazy, noise=noise, seed=0)
        values = _row_values(model, result, untouched) - start
        stds[lazy] = values.std()
        n = values.size
        # the noised sum is divided by the public batch size B (never by the client's n)
        expected = untouched_row_noise_std(steps=step.steps, lr=LR, weight_decay=WEIGHT_DECAY,
                                           gradient_noise_std=noise * 0.3 / BATCH)
        # the sample std of n Gaussians has relative standard error ~ 1/sqrt(2n); allow 5 of them
        tolerance = 5.0 / np.sqrt(2 * n)
        assert values.std() == pytest.approx(expected, rel=tolerance), (lazy, n)
        assert abs(values.mean()) < 5 * expected / np.sqrt(n)
    assert stds[True] == pytest.approx(stds[False], rel=2 * 5.0 / np.sqrt(2 * n))


def test_noise_std_formula_matches_iterating_the_recursion():
    steps, lr, wd, g = 37, 0.7, 0.05, 0.2
    variance, a = 0.0, 1.0 - lr * wd
    for _ in range(steps):
        variance = a * a * variance + (lr * g) ** 2
    assert untouched_row_noise_std(steps=steps, lr=lr, weight_decay=wd, gradient_noise_std=g) == pytest.approx(
        np.sqrt(variance), rel=1e-12)
    assert untouched_row_noise_std(steps=steps, lr=lr, weight_decay=0.0, gradient_noise_std=g) == pytest.approx(
        lr * g * np.sqrt(steps), rel=1e-12)


def test_lazy_client_leaves_the_global_model_and_touched_rows_consistent():
    model = _model("mf")
    before = copy.deepcopy(model.shared_state())
    local = LocalTraining(epochs=1, lr=LR, optimizer="sgd", reg=WEIGHT_DECAY)
    train_client_dpsgd(model, _client("mf"), local, np.random.default_rng(1), noise_multiplier=1.0,
                       max_grad_norm=0.3, batch_size=BATCH)
    after = model.shared_state()
    for name in before:  # a client's training never writes the shared (global) parameters
        assert torch.equal(before[name], after[name])


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_example_counts_match_what_local_training_builds(name):
    from secure_fedrec.training.local import (
        examples_per_user,
        local_examples,
        num_local_examples,
    )

    model = _model(name)
    clients = [_client(name), ClientData(user=2, items=np.arange(N_ITEMS - 5, N_ITEMS),
                                         ratings=np.ones(5, dtype=np.float32))]
    users = np.concatenate([np.full(len(c.items), c.user) for c in clients])
    items = np.concatenate([c.items for c in clients])
    every = examples_per_user(model, users, items, 3, N_ITEMS, negatives=200)  # more negatives than items
    for client in clients:
        _, _, targets = local_examples(model, client, N_ITEMS, 200, np.random.default_rng(0))
        assert num_local_examples(model, client, N_ITEMS, 200) == len(targets) == every[client.user]


@pytest.mark.parametrize("mode", ["hooks", "ghost", "bookkeeping"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_empty_poisson_batches_are_noise_only_steps(monkeypatch, mode, optimizer):
    # 6 examples at batch 1: q = 1/6, so about a third of the 18 steps draw an empty batch
    from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

    noised = []
    for cls in (DPOptimizer, DPOptimizerFastGradientClipping):
        original = cls.add_noise

        def counting(self, _original=original):
            noised.append(1)
            return _original(self)

        monkeypatch.setattr(cls, "add_noise", counting)
    model = build_model("mf", n_users=3, n_items=50, dim=4, init_std=0.1, seed=3, global_mean=3.5)
    data = ClientData(user=1, items=np.arange(6), ratings=np.full(6, 4.0, dtype=np.float32))
    local = LocalTraining(epochs=3, lr=0.5, optimizer=optimizer, reg=0.0)
    result, step = train_client_dpsgd(model, data, local, np.random.default_rng(0), noise_multiplier=1.0,
                                      max_grad_norm=0.3, batch_size=1, grad_sample_mode=mode)
    assert step.steps == 18 and len(noised) == 18  # every step, empty or not, released noise
    assert np.all(np.isfinite(result.delta))


def _of_the_float32_product_form(values: np.ndarray, std: float) -> np.ndarray:
    """Whether each float32 value equals float32(std · z) for some float32 z (searching ±3 ulps)."""
    z = (values.astype(np.float64) / std).astype(np.float32)
    found = np.zeros(len(values), dtype=bool)
    for direction in (np.float32(np.inf), np.float32(-np.inf)):
        candidate = z
        for _ in range(4):
            found |= (torch.from_numpy(candidate) * std).numpy() == values
            candidate = np.nextafter(candidate, direction)
    return found


def test_untouched_rows_do_not_carry_a_float32_fingerprint():
    # Item biases start at exactly 0, so an untouched bias row is just its noise. Drawn and
    # scaled in float32 it would always be float32(std · z32), a form the touched rows often
    # miss, so a server could spot rated items; one rounding of a float64 value has no such form.
    model = build_model("mf", n_users=2, n_items=3000, dim=2, init_std=0.1, seed=3, global_mean=3.5)
    items = np.random.default_rng(0).choice(3000, 200, replace=False)
    data = ClientData(user=1, items=items, ratings=np.full(200, 4.0, dtype=np.float32))
    local = LocalTraining(epochs=2, lr=1.0, optimizer="sgd", reg=0.05)
    result, step = train_client_dpsgd(model, data, local, np.random.default_rng(0), noise_multiplier=1.0,
                                      max_grad_norm=1.0, batch_size=BATCH, generator=torch.Generator().manual_seed(0))
    std = untouched_row_noise_std(steps=step.steps, lr=1.0, weight_decay=0.05, gradient_noise_std=1.0 / BATCH)
    bias = result.delta[3000 * 2:3000 * 3].astype(np.float32)  # item_bias block of the flat layout
    untouched = np.setdiff1d(np.arange(3000), items)
    flagged = ~_of_the_float32_product_form(bias[untouched], std)
    assert flagged.mean() > 0.05  # float32(std · z32) would give exactly 0


@pytest.mark.parametrize("mode", ["bookkeeping", "hooks"])
@pytest.mark.parametrize("n", [5, 8, 9, 93 * 8])
def test_charged_rate_and_steps_are_what_the_sampler_really_ran(monkeypatch, n, mode):
    # The rate the client reports (and the engine charges) must be the one its Poisson sampler
    # was built with, and that must be the rate Opacus' own DP data loader would use.
    from opacus.data_loader import DPDataLoader
    from opacus.utils import uniform_sampler
    from torch.utils.data import DataLoader, TensorDataset

    from secure_fedrec.privacy.record_sampling import client_sample_rate, planned_steps

    opacus_rate = DPDataLoader.from_data_loader(DataLoader(TensorDataset(torch.zeros(n)), batch_size=min(8, n))).sample_rate
    built, batches = [], []
    original_init, original_iter = uniform_sampler.UniformWithReplacementSampler.__init__, \
        uniform_sampler.UniformWithReplacementSampler.__iter__

    def recording_init(self, **kwargs):
        built.append(kwargs["sample_rate"])
        original_init(self, **kwargs)

    def recording_iter(self):
        for batch in original_iter(self):
            batches.append(batch)
            yield batch

    monkeypatch.setattr(uniform_sampler.UniformWithReplacementSampler, "__init__", recording_init)
    monkeypatch.setattr(uniform_sampler.UniformWithReplacementSampler, "__iter__", recording_iter)
    model = build_model("mf", n_users=2, n_items=50, dim=2, init_std=0.1, seed=3, global_mean=3.5)
    data = ClientData(user=1, items=np.arange(n) % 50, ratings=np.full(n, 4.0, dtype=np.float32))
    _, step = train_client_dpsgd(model, data, LocalTraining(epochs=1, lr=0.1, optimizer="sgd", reg=0.0),
                                 np.random.default_rng(0), noise_multiplier=1.0, max_grad_norm=1.0, batch_size=8,
                                 grad_sample_mode=mode)
    assert len(set(built)) == 1 and built[0] == step.sample_rate == opacus_rate == client_sample_rate(n, 8)
    assert step.steps == len(batches) == planned_steps(n, 8, 1)
