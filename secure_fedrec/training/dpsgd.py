"""Record-level DP-SGD on one client, with Opacus.

Each round a client trains its view of the model with Poisson-sampled
batches, per-example gradient clipping and Gaussian noise (Opacus). The
client's *own* accountant (in :class:`~.accounting.ClientAccountants`) is
stepped by the engine with the steps returned here, so ε composes over every
round the client took part in — Opacus' optimizer (and, in the Opacus modes,
its ``PrivacyEngine``) is created per round only as a training wrapper, never
as the source of ε. Re-wrapping every round is cheap (2–5 ms, against a few
hundred milliseconds of steps: ``benchmarks/dp_overhead.py`` reports both), so
no wrapped module is kept between rounds.

Per-example clipping, ``grad_sample_mode``:

* ``"bookkeeping"`` (what ``"auto"``, the default, picks): the per-example
  norms and the clipped sum from one backward pass to the layer outputs
  (:mod:`.bookkeeping`), then Opacus' Poisson sampler, noise and step
  (``DPOptimizerFastGradientClipping``);
* ``"hooks"``: Opacus' per-sample hooks (a batch × rows × dim tensor per
  embedding, clipped parameter by parameter);
* ``"ghost"``: Opacus' ghost clipping (norms without per-example gradients,
  then a second backward pass).

All three give the same clipped gradients on our models
(``tests/privacy/test_privacy_ghost_clipping.py``,
``tests/privacy/test_privacy_bookkeeping.py``); book-keeping is 2–3× faster
than the better Opacus mode here (``benchmarks/dp_overhead.py``). The last two
stay for models with layers book-keeping refuses (anything but Embedding and
Linear) and as the reference.

Every item row is noised at every step, so which rows moved never reveals
which items were rated (a view of the rated rows alone leaked exactly that,
outside the accounted mechanism). How the untouched rows get their noise
depends on the optimizer:

* ``sgd`` (plain SGD, no momentum — the default, ``privacy.record_optimizer``):
  the view holds only the rows this round's examples touch, and every other
  item row receives, once at the end, the closed form of what ``T`` steps of
  the same DP-SGD would have done to it. Such a row gets no gradient, only
  the noise ``ξ_t ~ N(0, (zC/B)²)`` (B = ``batch_size``, the public divisor
  set on Opacus' optimizer below) and weight decay, so
  ``w_T = a^T w_0 − η Σ_t a^(T−1−t) ξ_t`` with ``a = 1 − η·λ``: a Gaussian of
  variance ``η² (zC/B)² Σ_{k<T} a^{2k}``, drawn in one call. That is the
  same output *distribution* as noising the whole table at every step (the
  rows are independent, no other parameter reads them, and a sum of
  independent Gaussians is Gaussian), so the privacy analysis is unchanged,
  at the cost of a sparse client (``tests/privacy/test_privacy_lazy_noise.py``
  checks it against the dense path; the draw is float64, rounded once, see
  :func:`full_table_delta`). No library does this lazy noising for
  Opacus, hence the few lines here.
* ``adam``: Adam's update is not linear in the noise, so no closed form
  exists: the view holds every item row and Opacus noises the whole table at
  every step (slower: ``benchmarks/dp_overhead.py``).

The private user rows are trained under the same DP-SGD step (they are part of
the view), but they never leave the client, so they are outside what the DP
guarantee has to cover for the shared model. The L2 penalty is applied as
optimizer weight decay: data-independent, so it costs no privacy.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..models import FederatedModel
from ..privacy.record_sampling import client_sample_rate
from .bookkeeping import BookkeepingClipping, supports_bookkeeping
from .local import ClientData, ClientResult, LocalTraining, local_examples, loss_fn

__all__ = [
    "DpSgdStep",
    "client_sample_rate",
    "dpsgd_local_training",
    "full_table_delta",
    "train_client_dpsgd",
    "untouched_row_noise_std",
]


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


def dpsgd_local_training(local: LocalTraining, record_optimizer: str, record_lr: float) -> LocalTraining:
    """The client's local-training settings with DP-SGD's optimizer and learning rate
    (``privacy.record_optimizer`` / ``privacy.record_lr``)."""
    return replace(local, optimizer=record_optimizer, lr=record_lr)


def train_client_dpsgd(
    model: FederatedModel, data: ClientData, cfg: LocalTraining, rng: np.random.Generator, *,
    noise_multiplier: float, max_grad_norm: float, batch_size: int, grad_sample_mode: str = "auto",
    epochs: int | None = None, lazy_noise: bool = True, generator: torch.Generator | None = None,
) -> tuple[ClientResult, DpSgdStep]:
    """One client's round of DP-SGD on its data; ``cfg.optimizer`` and ``cfg.lr`` are DP-SGD's
    (see :func:`dpsgd_local_training`). ``lazy_noise=False`` noises the full table at every
    step even under SGD (the reference the closed form is tested and benchmarked against).

    ``generator`` drives the Poisson batches and all the noise. By default it is seeded from
    the OS entropy pool for every call: the server knows the run's seed, and a sampler or
    noise it can replay would void the guarantee. Tests pass a seeded one to compare paths.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(secrets.randbits(63))

    setup_started = time.perf_counter()
    touched, local_items, targets = local_examples(model, data, model.n_items, cfg.negatives, rng)  # type: ignore[attr-defined]
    all_items = np.arange(model.n_items)  # type: ignore[attr-defined]
    lazy = lazy_noise and cfg.optimizer == "sgd"  # plain SGD: untouched rows get their noise in closed form
    if lazy:
        items = touched
    else:  # Adam: the view holds every item row and Opacus noises all of them at every step
        items = all_items
        local_items = touched[local_items]
    view = model.client_view(data.user, items)
    if grad_sample_mode == "auto":  # Opacus' hooks serve models with layers book-keeping refuses
        grad_sample_mode = "bookkeeping" if supports_bookkeeping(view) else "hooks"
    if grad_sample_mode not in ("bookkeeping", "hooks", "ghost"):
        raise ValueError(f"grad_sample_mode must be auto, bookkeeping, hooks or ghost, got {grad_sample_mode!r}")
    n = len(targets)
    examples = (torch.zeros(n, dtype=torch.long), torch.as_tensor(local_items, dtype=torch.long),
                torch.as_tensor(targets, dtype=torch.float32))
    # On the full table every step updates every item row: the fused kernel measured
    # ~15% more steps/s than the default Adam there.
    optimizer = (torch.optim.Adam(view.parameters(), lr=cfg.lr, weight_decay=cfg.reg, fused=True)
                 if cfg.optimizer == "adam"
                 else torch.optim.SGD(view.parameters(), lr=cfg.lr, weight_decay=cfg.reg))
    steps_of = _bookkeeping_steps if grad_sample_mode == "bookkeeping" else _opacus_steps
    run = steps_of(view, optimizer, loss_fn(model), examples, grad_sample_mode=grad_sample_mode,
                   noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, batch_size=batch_size,
                   epochs=cfg.epochs if epochs is None else epochs, generator=generator)
    setup_seconds = run.train_started - setup_started
    if lazy:
        # the noised sum is divided by the public B (never by the client's n): see _public_divisor
        per_step_std = noise_multiplier * max_grad_norm / batch_size
        delta = full_table_delta(model, run.trained, touched, steps=run.steps, lr=cfg.lr, weight_decay=cfg.reg,
                                 gradient_noise_std=per_step_std, generator=generator)
    else:
        delta = model.view_delta(run.trained, all_items)
    model.store_private(data.user, run.trained)
    result = ClientResult(user=data.user, items=all_items, delta=delta, num_examples=n, loss=run.last_loss)
    return result, DpSgdStep(noise_multiplier, run.sample_rate, run.steps,
                             setup_seconds=setup_seconds, train_seconds=run.train_seconds)


@dataclass(frozen=True)
class _Run:
    trained: FederatedModel
    steps: int
    sample_rate: float
    last_loss: float
    train_started: float
    train_seconds: float


def _bookkeeping_steps(
    view: FederatedModel, optimizer: torch.optim.Optimizer, criterion: torch.nn.Module,
    examples: tuple[torch.Tensor, ...], *, grad_sample_mode: str, noise_multiplier: float,
    max_grad_norm: float, batch_size: int, epochs: int, generator: torch.Generator,
) -> _Run:
    """DP-SGD with book-keeping clipping (:mod:`.bookkeeping`); Opacus samples and noises."""
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    n = len(examples[0])
    sample_rate = client_sample_rate(n, batch_size)
    # Opacus' Poisson loader draws its batches with this very sampler; indexing the tensors
    # with each batch directly saves the loader's per-example fetch and collate.
    sampler = UniformWithReplacementSampler(num_samples=n, sample_rate=sample_rate, generator=generator)
    # It takes p.grad as the clipped sum, adds N(0, (zC)^2) to it and divides by the public B
    # (never by the client's n: see _public_divisor).
    dp_optimizer = DPOptimizerFastGradientClipping(
        optimizer, noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        expected_batch_size=batch_size, loss_reduction="mean", generator=generator)
    criterion.reduction = "none"
    train_started = time.perf_counter()
    steps, last_loss = 0, 0.0
    with BookkeepingClipping(view, max_grad_norm=max_grad_norm) as clipping:
        for _ in range(epochs):
            for batch in sampler:
                # An empty Poisson batch is still a step that must release noise (skipping it
                # would show the batch was empty): noise on a zero clipped sum.
                dp_optimizer.zero_grad(set_to_none=True)
                index = torch.as_tensor(batch, dtype=torch.long)
                users_b, items_b, y_b = (t[index] for t in examples)
                losses = criterion(view(users_b, items_b), y_b) if len(index) else y_b
                clipping.backward(losses)
                if len(index):
                    last_loss = float(losses.detach().mean())
                dp_optimizer.step()
                steps += 1
    return _Run(view, steps, sample_rate, last_loss, train_started, time.perf_counter() - train_started)


def _opacus_steps(
    view: FederatedModel, optimizer: torch.optim.Optimizer, criterion: torch.nn.Module,
    examples: tuple[torch.Tensor, ...], *, grad_sample_mode: str, noise_multiplier: float,
    max_grad_norm: float, batch_size: int, epochs: int, generator: torch.Generator,
) -> _Run:
    """DP-SGD wrapped by Opacus' ``make_private`` with its per-sample hooks or ghost clipping."""
    from opacus import PrivacyEngine

    n = len(examples[0])
    loader = DataLoader(TensorDataset(*examples), batch_size=min(batch_size, n), generator=generator)
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
            noise_generator=generator, **kwargs,
        )
    if grad_sample_mode == "ghost":
        dp_model, dp_optimizer, dp_criterion, dp_loader = wrapped
    else:
        dp_model, dp_optimizer, dp_loader = wrapped
        dp_criterion = criterion
    _public_divisor(dp_optimizer, batch_size)
    train_started = time.perf_counter()
    steps, last_loss = 0, 0.0
    # The views' inputs are index tensors (no grad), which makes torch note that
    # Opacus' full backward hooks fire on outputs only — expected here.
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    for _ in range(epochs):
        for users_b, items_b, y_b in dp_loader:
            # An empty Poisson batch is still a step that must release noise (skipping it would
            # show the batch was empty), i.e. noise on a zero clipped sum.
            dp_optimizer.zero_grad(set_to_none=True)
            if len(y_b):
                loss = dp_criterion(dp_model(users_b, items_b), y_b)
                loss.backward()
                last_loss = float(loss.detach())
            elif grad_sample_mode == "hooks":  # zero examples give empty per-example gradients
                dp_criterion(dp_model(users_b, items_b), y_b).backward()
            else:  # ghost clipping cannot take a backward pass on zero examples: the sum is zero
                for param in dp_model.parameters():
                    param.grad = torch.zeros_like(param)
            dp_optimizer.step()
            steps += 1
    trained = dp_model._module if hasattr(dp_model, "_module") else dp_model
    return _Run(trained, steps, dp_loader.sample_rate, last_loss, train_started,
                time.perf_counter() - train_started)


def _public_divisor(dp_optimizer, batch_size: int) -> None:
    """Opacus divides the noised sum by ``int(n / len(loader))``, which is n itself for
    n <= B: the noise scale would publish the client's example count. Divide by the public
    B instead."""
    dp_optimizer.expected_batch_size = batch_size


def untouched_row_noise_std(*, steps: int, lr: float, weight_decay: float, gradient_noise_std: float) -> float:
    """Std of ``w_T − a^T w_0`` for a row that ``steps`` SGD steps moved by noise and decay only.

    ``w_{t+1} = a w_t − lr ξ_t`` with ``a = 1 − lr·weight_decay`` and
    ``ξ_t ~ N(0, gradient_noise_std²)`` i.i.d. gives a Gaussian of variance
    ``lr² gradient_noise_std² Σ_{k<T} a^{2k}``.
    """
    if weight_decay == 0.0:
        return lr * gradient_noise_std * math.sqrt(steps)
    log_a2 = 2.0 * math.log1p(-lr * weight_decay)  # expm1/log1p: a² is close to 1
    geometric = math.expm1(steps * log_a2) / math.expm1(log_a2)
    return lr * gradient_noise_std * math.sqrt(geometric)


def full_table_delta(
    model: FederatedModel, trained: FederatedModel, touched: np.ndarray, *, steps: int, lr: float,
    weight_decay: float, gradient_noise_std: float, generator: torch.Generator,
) -> np.ndarray:
    """The update over every item row (``model.view_delta`` order for all items): the trained
    rows of ``touched`` from the sparse view, and for every other item row the state ``steps``
    steps of noise-only DP-SGD would have left it in (module docstring).

    Computed in float64 and rounded to float32 once: ``float32(std · z32)`` reaches only part of
    the float32 grid (for rows starting at 0, such as item biases, a server could tell rows
    that cannot be of that form — the touched ones — from the others), while the dense
    client's values are sums of many rounded terms with no such pattern. Written straight
    into the delta (no full-table module): ~8 ms less per client round at 9,066 items.
    """
    decay = (1.0 - lr * weight_decay) ** steps
    std = untouched_row_noise_std(steps=steps, lr=lr, weight_decay=weight_decay,
                                  gradient_noise_std=gradient_noise_std)
    source = dict(model.named_parameters())
    got = dict(trained.named_parameters())
    touched_idx = torch.as_tensor(touched, dtype=torch.long)
    parts = []
    with torch.no_grad():
        for name in model.shared_names:
            base = source[name].detach()
            if name in model.item_row_names:
                # every row drawn (cheaper than masking), then the touched ones overwritten
                noise = torch.randn(base.shape, dtype=torch.float64, generator=generator)
                moved = (decay * base.double() + std * noise).to(base.dtype)
                moved[touched_idx] = got[name].detach()
                parts.append((moved - base).reshape(-1))
            else:
                parts.append((got[name].detach() - base).reshape(-1))
    return torch.cat(parts).double().numpy()
