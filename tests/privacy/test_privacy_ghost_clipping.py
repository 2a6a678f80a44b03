"""Opacus' ghost clipping, its per-sample hooks and our book-keeping clipping give the same
clipped gradients on our models.

All three are compared with an independent reference: each example's
gradient computed by its own backward pass, clipped to L2 norm C over *all*
parameters jointly, summed and divided by the batch size. The noise is
zero, so one SGD step with learning rate 1 moves the parameters by exactly
minus that clipped mean gradient.
"""

from __future__ import annotations

import copy
import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from secure_fedrec.models import build_model

CLIP = 0.05  # small enough that every example's gradient is clipped
N_ITEMS, DIM, BATCH = 7, 4, 6


def _view(name: str) -> nn.Module:
    kwargs = {"global_mean": 3.5} if name == "mf" else {"hidden": 8}
    model = build_model(name, n_users=3, n_items=N_ITEMS, dim=DIM, init_std=0.3, seed=1, **kwargs)
    return model.client_view(1, np.arange(N_ITEMS))  # the full item table, as DP-SGD trains it


def _batch(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = torch.tensor([0, 3, 3, 5, 6, 0])  # repeated items: embedding rows shared across examples
    targets = (torch.tensor([4.0, 1.0, 5.0, 2.5, 3.0, 0.5]) if name == "mf"
               else torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]))
    return torch.zeros(BATCH, dtype=torch.long), items, targets


def _criterion(name: str, reduction: str) -> nn.Module:
    return nn.MSELoss(reduction=reduction) if name == "mf" else nn.BCEWithLogitsLoss(reduction=reduction)


def _reference_clipped_mean(name: str) -> dict[str, torch.Tensor]:
    view = _view(name)
    users, items, targets = _batch(name)
    total = {n: torch.zeros_like(p) for n, p in view.named_parameters()}
    for k in range(BATCH):
        view.zero_grad(set_to_none=True)
        _criterion(name, "sum")(view(users[k:k + 1], items[k:k + 1]), targets[k:k + 1]).backward()
        grads = {n: p.grad.clone() for n, p in view.named_parameters()}
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values()))
        assert norm > CLIP, "the reference must exercise clipping"
        factor = min(1.0, CLIP / (float(norm) + 1e-6))
        for n in total:
            total[n] += factor * grads[n]
    return {n: t / BATCH for n, t in total.items()}


def _opacus_clipped_mean(name: str, mode: str) -> dict[str, torch.Tensor]:
    from opacus import PrivacyEngine

    view = _view(name)
    before = copy.deepcopy(dict(view.named_parameters()))
    loader = DataLoader(TensorDataset(*_batch(name)), batch_size=BATCH)
    optimizer = torch.optim.SGD(view.parameters(), lr=1.0)
    criterion = _criterion(name, "mean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("opacus").setLevel(logging.ERROR)
        wrapped = PrivacyEngine(accountant="rdp").make_private(
            module=view, optimizer=optimizer, data_loader=loader, noise_multiplier=0.0,
            max_grad_norm=CLIP, poisson_sampling=False, grad_sample_mode=mode,
            **({"criterion": criterion} if mode == "ghost" else {}),
        )
        if mode == "ghost":
            dp_model, dp_optimizer, dp_criterion, dp_loader = wrapped
        else:
            (dp_model, dp_optimizer, dp_loader), dp_criterion = wrapped, criterion
        for users, items, targets in dp_loader:
            dp_optimizer.zero_grad(set_to_none=True)
            dp_criterion(dp_model(users, items), targets).backward()
            dp_optimizer.step()
    after = dict(view.named_parameters())
    return {n: (before[n] - after[n]).detach() for n in before}


def _bookkeeping_clipped_mean(name: str) -> dict[str, torch.Tensor]:
    from secure_fedrec.training.bookkeeping import BookkeepingClipping

    view = _view(name)
    users, items, targets = _batch(name)
    with BookkeepingClipping(view, max_grad_norm=CLIP) as clipping:
        norms = clipping.backward(_criterion(name, "none")(view(users, items), targets))
    assert norms.shape == (BATCH,) and bool((norms > CLIP).all())
    return {n: p.grad / BATCH for n, p in view.named_parameters()}


def _clipped_mean(name: str, mode: str) -> dict[str, torch.Tensor]:
    return _bookkeeping_clipped_mean(name) if mode == "bookkeeping" else _opacus_clipped_mean(name, mode)


@pytest.mark.parametrize("name", ["mf", "neumf"])
@pytest.mark.parametrize("mode", ["hooks", "ghost", "bookkeeping"])
def test_clipped_gradients_match_the_per_example_reference(name: str, mode: str) -> None:
    reference = _reference_clipped_mean(name)
    got = _clipped_mean(name, mode)
    assert set(got) == set(reference)
    for param_name, expected in reference.items():
        assert torch.count_nonzero(expected) > 0 or param_name.startswith("item")
        torch.testing.assert_close(got[param_name], expected, rtol=1e-4, atol=1e-7,
                                   msg=f"{name}/{mode}: {param_name}")


@pytest.mark.parametrize("name", ["mf", "neumf"])
@pytest.mark.parametrize("mode", ["ghost", "bookkeeping"])
def test_modes_agree_with_opacus_hooks(name: str, mode: str) -> None:
    hooks, other = _opacus_clipped_mean(name, "hooks"), _clipped_mean(name, mode)
    for param_name in hooks:
        torch.testing.assert_close(other[param_name], hooks[param_name], rtol=1e-4, atol=1e-7)
