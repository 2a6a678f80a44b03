"""Book-keeping clipping: per-example clipped sums from one backward pass.

The MF/NeuMF cases against one backward pass per example and against Opacus
are in ``test_privacy_ghost_clipping.py``; here: other layer mixes, frozen and
unused parameters, the unclipped regime, the layers it must refuse, and the
whole DP-SGD client against Opacus' modes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from secure_fedrec.models import build_model
from secure_fedrec.training.bookkeeping import (
    BookkeepingClipping,
    UnsupportedLayerError,
)
from secure_fedrec.training.dpsgd import train_client_dpsgd
from secure_fedrec.training.local import ClientData, LocalTraining


class Tower(nn.Module):
    """Two embeddings feeding a ReLU MLP; one extra layer the forward pass never calls."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.a = nn.Embedding(5, 3)
        self.b = nn.Embedding(4, 2)
        self.hidden = nn.Linear(5, 6)
        self.out = nn.Linear(6, 1)
        self.unused = nn.Linear(2, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.hidden(torch.cat([self.a(x), self.b(y)], dim=-1)))
        return self.out(h).squeeze(-1)


X = torch.tensor([0, 1, 1, 4, 2, 0, 3])
Y = torch.tensor([3, 0, 0, 1, 2, 3, 1])
T = torch.linspace(-1.0, 2.0, 7)


def _per_example_reference(model: nn.Module, clip: float) -> dict[str, torch.Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for k in range(len(X)):
        loss = nn.functional.mse_loss(model(X[k:k + 1], Y[k:k + 1]), T[k:k + 1], reduction="sum")
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params.values())]
        norm = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
        factor = min(1.0, clip / (norm + 1e-6))
        for n, g in zip(params, grads):
            total[n] += factor * g
    return total


def _bookkeeping(model: nn.Module, clip: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    with BookkeepingClipping(model, max_grad_norm=clip) as clipping:
        norms = clipping.backward(nn.functional.mse_loss(model(X, Y), T, reduction="none"))
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, norms


@pytest.mark.parametrize("clip", [0.05, 1e6])  # every example clipped; none clipped
def test_clipped_sum_matches_one_backward_pass_per_example(clip):
    model = Tower()
    got, norms = _bookkeeping(model, clip)
    expected = _per_example_reference(Tower(), clip)
    for name, value in expected.items():  # float32 sums in another order: atol relative to the scale
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6 * max(1.0, float(value.abs().max())),
                                   msg=name)
    assert torch.count_nonzero(got["unused.weight"]) == 0  # not called: zero gradient
    assert bool((norms > 0.05).all())
    if clip > 1e5:  # nothing clipped: the plain gradient of the summed loss
        plain = Tower()
        nn.functional.mse_loss(plain(X, Y), T, reduction="sum").backward()
        torch.testing.assert_close(got["hidden.weight"], plain.hidden.weight.grad, rtol=1e-5, atol=1e-6)


def test_frozen_parameters_are_neither_clipped_over_nor_updated():
    model, reference = Tower(), Tower()
    for m in (model, reference):
        m.hidden.bias.requires_grad_(False)
        m.b.weight.requires_grad_(False)
    got, _ = _bookkeeping(model, 0.05)
    expected = _per_example_reference(reference, 0.05)
    assert set(got) == set(expected) and "hidden.bias" not in got and "b.weight" not in got
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_empty_batch_gives_zero_gradients():
    model = Tower()
    with BookkeepingClipping(model, max_grad_norm=1.0) as clipping:
        norms = clipping.backward(torch.zeros(0))
    assert norms.shape == (0,)
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_hooks_are_removed_on_exit():
    model = Tower()
    with BookkeepingClipping(model, max_grad_norm=1.0):
        assert model.a._forward_hooks
    assert not model.a._forward_hooks and not model.hidden._forward_hooks


class WithNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.norm = nn.Embedding(3, 2), nn.LayerNorm(2)

    def forward(self, x):
        return self.norm(self.emb(x)).sum(-1)


class WithBareParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.scale = nn.Embedding(3, 2), nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.scale * self.emb(x).sum(-1)


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(3, 2)

    def forward(self, x):
        return (self.emb(x) * self.emb((x + 1) % 3)).sum(-1)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(3, 2), nn.Linear(2, 3, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, x):
        return self.out(self.emb(x)).sum(-1)


@pytest.mark.parametrize("model, match", [
    (Tied(), "tied weights"),
    (WithNorm(), "LayerNorm"),
    (WithBareParameter(), "scale"),
    (nn.Embedding(3, 2, padding_idx=0), "padding_idx"),
])
def test_layers_it_cannot_compute_per_example_are_refused(model, match):
    with pytest.raises(UnsupportedLayerError, match=match):
        BookkeepingClipping(model, max_grad_norm=1.0)


class InPlaceRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(inplace=True), nn.Linear(3, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


class ScaledInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(3, 2)

    def forward(self, x):
        return self.emb(x).mul_(2).sum(-1)


class WeightUsedDirectly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.lin = nn.Embedding(3, 2), nn.Linear(2, 1)

    def forward(self, x):
        return self.lin(nn.functional.embedding(x, self.emb.weight)).squeeze(-1) + self.lin.weight.sum()


class OwnLinear(nn.Linear):
    def forward(self, x):
        return super().forward(2 * x)


INPUTS = {InPlaceRelu: torch.randn(4, 2), ScaledInPlace: torch.tensor([0, 1, 2, 1]),
          WeightUsedDirectly: torch.tensor([0, 1, 2, 1])}


@pytest.mark.parametrize("model_type, match", [
    (InPlaceRelu, "in place"), (ScaledInPlace, "in place"), (WeightUsedDirectly, "outside its own layer"),
])
def test_what_would_give_silently_wrong_gradients_is_refused(model_type, match):
    model = model_type()
    with BookkeepingClipping(model, max_grad_norm=1.0) as clipping, pytest.raises(UnsupportedLayerError, match=match):
        clipping.backward(model(INPUTS[model_type]))


def test_layer_subclasses_are_refused():
    with pytest.raises(UnsupportedLayerError, match="OwnLinear"):
        BookkeepingClipping(OwnLinear(2, 1), max_grad_norm=1.0)


def test_forward_passes_without_grad_are_not_recorded_and_hooks_cannot_stack():
    model = Tower()
    clipping = BookkeepingClipping(model, max_grad_norm=0.05)
    with clipping:
        with torch.no_grad():
            model(X, Y)  # e.g. an evaluation inside the training loop
        got = clipping.backward(nn.functional.mse_loss(model(X, Y), T, reduction="none"))
        with pytest.raises(RuntimeError, match="already active"), clipping:
            pass
    assert got.shape == (len(X),)
    torch.testing.assert_close(model.out.weight.grad, _per_example_reference(Tower(), 0.05)["out.weight"],
                               rtol=1e-5, atol=1e-6)


def test_float64_models_keep_float64_norms():
    model = Tower().double()
    with BookkeepingClipping(model, max_grad_norm=0.05) as clipping:
        norms = clipping.backward(nn.functional.mse_loss(model(X, Y), T.double(), reduction="none"))
    assert norms.dtype == torch.float64 and model.out.weight.grad.dtype == torch.float64


def test_a_layer_called_twice_is_refused():
    model = CalledTwice()
    with pytest.raises(UnsupportedLayerError, match="called twice"), BookkeepingClipping(model, max_grad_norm=1.0):
        model(torch.tensor([0, 1]))


def test_inputs_with_a_sequence_axis_are_refused():
    emb = nn.Embedding(5, 2)
    with BookkeepingClipping(emb, max_grad_norm=1.0) as clipping, pytest.raises(UnsupportedLayerError, match="batch"):
        clipping.backward(emb(torch.tensor([[0, 1], [2, 3]])).sum((1, 2)))


@pytest.mark.parametrize("name", ["mf", "neumf"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_whole_client_round_matches_opacus_modes(name, optimizer):
    # batch >= n: the Poisson rate is 1, every step sees every example, so without noise the
    # three modes must take exactly the same steps (2 epochs, weight decay, lazy rows for SGD)
    kwargs = {"global_mean": 3.5} if name == "mf" else {"hidden": 8}
    items = np.array([2, 5, 5, 17, 40, 41, 99, 150])
    ratings = np.linspace(1.0, 5.0, len(items)) if name == "mf" else np.ones(len(items))
    data = ClientData(user=1, items=items, ratings=ratings.astype(np.float32))
    local = LocalTraining(epochs=2, lr=0.5, optimizer=optimizer, reg=0.02, negatives=1)
    deltas = {}
    for mode in ("hooks", "ghost", "bookkeeping"):
        model = build_model(name, n_users=3, n_items=200, dim=4, init_std=0.3, seed=3, **kwargs)
        result, step = train_client_dpsgd(model, data, local, np.random.default_rng(0), noise_multiplier=0.0,
                                          max_grad_norm=0.05, batch_size=64, grad_sample_mode=mode)
        assert step.sample_rate == 1.0 and step.steps == 2
        deltas[mode] = result.delta
    assert np.abs(deltas["hooks"]).max() > 1e-3
    for mode in ("ghost", "bookkeeping"):
        np.testing.assert_allclose(deltas[mode], deltas["hooks"], rtol=1e-4, atol=1e-6, err_msg=mode)
