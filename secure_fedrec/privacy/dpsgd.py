"""Record-level DP-SGD on one client, with Opacus.

Each round a client trains its view of the model with Poisson-sampled
batches, per-example gradient clipping and Gaussian noise (Opacus). The
client's *own* accountant (in :class:`~.accounting.ClientAccountants`) is
stepped by the engine with the steps returned here, so ε composes over every
round the client took part in — a fresh Opacus ``PrivacyEngine`` is created
per round only as a training wrapper, never as the source of ε. Re-wrapping
every round is cheap (about a millisecond, against tens of milliseconds of
steps: ``benchmarks/dp_overhead.py`` reports both), so no wrapped module is
kept between rounds.

Per-example gradients: ``grad_sample_mode="ghost"`` (Opacus' ghost clipping,
the default) computes each example's gradient *norm* without materializing the
per-example gradients, then clips with a second backward pass. The view holds
every item row, so ``"hooks"`` materializes a batch × items × dim tensor per
embedding and is 5–7× slower here; both give the same clipped gradients on
our models (``tests/privacy/test_privacy_ghost_clipping.py``).

The private user rows are trained under the same DP-SGD step (they are part of
the view), but they never leave the client, so they are outside what the DP
guarantee has to cover for the shared model. The L2 penalty is applied as
optimizer weight decay: data-independent, so it costs no privacy.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..engine.client import ClientData, ClientResult, LocalTraining, local_examples, loss_fn
from ..models import FederatedModel

__all__ = ["DpSgdStep", "train_client_dpsgd", "client_sample_rate"]


@dataclass(frozen=True)
class DpSgdStep:
    """What one client's round of DP-SGD spent: ``steps`` steps at ``sample_rate``.

    ``setup_seconds`` (building the view and the Opacus wrapping) and
    ``train_seconds`` (the steps) are timings only, never used for accounting.
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    setup_seconds: float = 0.0
    train_seconds: float = 0.0


def client_sample_rate(num_examples: int, batch_size: int) -> float:
    return min(1.0, batch_size / max(1, num_examples))


def planned_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    """Steps of one round: Opacus' Poisson loader runs ⌈1/q⌉ batches per epoch."""
    return epochs * int(np.ceil(1.0 / client_sample_rate(num_examples, batch_size)))


def train_client_dpsgd(
    model: FederatedModel, data: ClientData, cfg: LocalTraining, rng: np.random.Generator, *,
    noise_multiplier: float, max_grad_norm: float, batch_size: int, grad_sample_mode: str = "ghost",
    epochs: int | None = None,
) -> tuple[ClientResult, DpSgdStep]:
    from opacus import PrivacyEngine

    setup_started = time.perf_counter()
    touched, local_items, targets = local_examples(model, data, model.n_items, cfg.negatives, rng)  # type: ignore[attr-defined]
    # The view holds *every* item row, not just the ones this client touches: DP-SGD then
    # noises all rows, so which rows moved no longer depends on which items were rated
    # (a view of the rated rows only leaked exactly that, outside the accounted mechanism).
    items = np.arange(model.n_items)  # type: ignore[attr-defined]
    local_items = touched[local_items]
    view = model.client_view(data.user, items)
    n = len(targets)
    dataset = TensorDataset(
        torch.zeros(n, dtype=torch.long), torch.as_tensor(local_items, dtype=torch.long),
        torch.as_tensor(targets, dtype=torch.float32),
    )
    loader = DataLoader(dataset, batch_size=min(batch_size, n),
                        generator=torch.Generator().manual_seed(int(rng.integers(2**63))))
    # Every step updates every item row (noise lands on all of them): the fused
    # kernel measured ~15% more steps/s than the default Adam on the full table.
    optimizer = (torch.optim.Adam(view.parameters(), lr=cfg.lr, weight_decay=cfg.reg, fused=True)
                 if cfg.optimizer == "adam"
                 else torch.optim.SGD(view.parameters(), lr=cfg.lr, weight_decay=cfg.reg))
    criterion = loss_fn(model)
    criterion.reduction = "mean"
    with warnings.catch_warnings():
        # Opacus warns about secure_mode=False on every call; docs/privacy.md says it once.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        logging.getLogger("opacus").setLevel(logging.ERROR)
        engine = PrivacyEngine(accountant="rdp")
        kwargs = {"criterion": criterion} if grad_sample_mode == "ghost" else {}
        wrapped = engine.make_private(
            module=view, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, poisson_sampling=True, grad_sample_mode=grad_sample_mode,
            **kwargs,
        )
    if grad_sample_mode == "ghost":
        dp_model, dp_optimizer, dp_criterion, dp_loader = wrapped
    else:
        dp_model, dp_optimizer, dp_loader = wrapped
        dp_criterion = criterion
    setup_seconds = time.perf_counter() - setup_started
    train_started = time.perf_counter()
    steps, last_loss = 0, 0.0
    # The views' inputs are index tensors (no grad), which makes torch note that
    # Opacus' full backward hooks fire on outputs only — expected here.
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    for _ in range(cfg.epochs if epochs is None else epochs):
        for users_b, items_b, y_b in dp_loader:
            # An empty Poisson batch still counts as a step: Opacus takes a noise-only step.
            dp_optimizer.zero_grad(set_to_none=True)
            if len(y_b):
                loss = dp_criterion(dp_model(users_b, items_b), y_b)
                loss.backward()
                last_loss = float(loss.detach())
            dp_optimizer.step()
            steps += 1
    train_seconds = time.perf_counter() - train_started
    trained = dp_model._module if hasattr(dp_model, "_module") else dp_model
    delta = model.view_delta(trained, items)
    model.store_private(data.user, trained)
    result = ClientResult(user=data.user, items=items, delta=delta, num_examples=n, loss=last_loss)
    return result, DpSgdStep(noise_multiplier, client_sample_rate(n, batch_size), steps,
                             setup_seconds=setup_seconds, train_seconds=train_seconds)
