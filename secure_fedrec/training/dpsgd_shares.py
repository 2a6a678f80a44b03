"""One client's part of a record-level DP-SGD step under secure aggregation (distributed noise).

A round of :class:`~secure_fedrec.plans.RecordDistributed` is one DP-SGD step of the
whole population: every client Poisson-samples its own examples with the public rate
``q``, computes each sampled example's gradient at the current shared model and its own
private rows, clips that *joint* gradient (shared and private parameters together) to
``C``, and then splits it by placement::

    shared part   each example's vector rounded on its own to the lattice γ·Z (conditional
                  randomized rounding), the client's sum handed to the aggregation pipeline
                  (its discrete Gaussian noise share is added by the encoding, then the
                  secure sum, then the server's optimizer)
    private part  the clipped sum plus the *full* Gaussian noise of one DP-SGD step (it is
                  never summed with anyone's), divided by the public expected batch q·N,
                  then the step's optimizer on the client's own rows

Why each example is rounded on its own: the neighbouring dataset differs in one example,
so the integer vector it changes is that example's rounded gradient, whose norm the
conditional rounding bounds — a bound on the rounded *sum* would say nothing about one
example. The rounding is cheap because an example's shared gradient touches only
:func:`example_dim` coordinates (its item's rows and the dense parameters). The retry
bound is computed from the example's own shared norm ``a``, so that with its private
part ``b`` (``a² + b² <= C²``) the rounded joint vector has norm at most
``γ · conditional_rounding_l2_bound(C, γ, d_e)``, the sensitivity the accountant is
built with (docs/privacy.md §4.4).

The returned update carries the *negative* rounded sum (integers, in units of γ): the
server's optimizer takes the released mean as a descent direction, as it takes every
other plan's mean update. All randomness that the privacy argument relies on — the
Poisson sample, the rounding coins, the private noise — comes from the operating system's
CSPRNG, never from the run's seed, which the server knows.

The client's private rows move only by this clipped, noised step (never by local epochs,
never by a closed form): their optimizer state lives with the client (``state``), like
the rows themselves.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from protocols.encoding import csprng_uniform

from ..models import FederatedModel
from ..models.base import ParamLayout
from ..privacy.noise import csprng_normal
from .adam import adam_step
from .bookkeeping import BookkeepingClipping, PerExampleGradients
from .canaries import StepCanaries
from .local import ClientData, ClientResult, local_examples, loss_fn

__all__ = ["SharesStep", "example_dim", "layout_items", "round_examples", "shares_step"]

#: attempts of the conditional rounding per example before the client gives up (each succeeds
#: with probability >= 1 - β = 0.39 at KLS's β = e^-0.5, so 200 fail with probability < 1e-43)
_MAX_ROUNDING_ATTEMPTS = 200


@dataclass(frozen=True)
class SharesStep:
    """The public numbers of one client's step (what :class:`~.methods.DistributedDpSgd` carries).

    ``noise_stddev`` is the std (model units) of the Gaussian the client adds to its private
    gradient sum: the same as the shared sum's noise at the guaranteed minimum of survivors.
    ``denominator`` is the public expected batch ``q·N``; ``optimizer``/``lr``/``weight_decay``
    the step's optimizer, which the server applies to the shared part and each client to its
    private rows.
    """

    sample_rate: float
    clip_norm: float
    gamma: float
    rounding_beta: float
    example_dim: int
    noise_stddev: float
    denominator: float
    optimizer: str = "adam"
    lr: float = 0.02
    weight_decay: float = 0.0
    negatives: int = 4

    def __post_init__(self) -> None:
        for name, low, high in (("sample_rate", 0.0, 1.0), ("clip_norm", 0.0, math.inf),
                                ("gamma", 0.0, math.inf), ("noise_stddev", 0.0, math.inf),
                                ("denominator", 0.0, math.inf), ("lr", 0.0, math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise ValueError(f"{name} must be a number in ({low:g}, {high:g}], got {value!r}")
        if not (isinstance(self.rounding_beta, (int, float)) and 0 <= self.rounding_beta < 1):
            raise ValueError(f"rounding_beta must be in [0, 1), got {self.rounding_beta!r}")
        if not (isinstance(self.weight_decay, (int, float)) and 0 <= self.weight_decay < math.inf):
            raise ValueError(f"weight_decay must be finite and >= 0, got {self.weight_decay!r}")
        for name in ("example_dim", "negatives"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")


def example_dim(layout: ParamLayout) -> int:
    """How many shared coordinates one example's gradient can touch: one row of every
    item-indexed parameter and every other shared parameter (public: it is the model's shape)."""
    total = 0
    for name, shape in zip(layout.names, layout.shapes):
        size = int(np.prod(shape))
        total += size // shape[0] if name in layout.item_rows else size
    return total


def shares_step(model: FederatedModel, data: ClientData, method: SharesStep, rng: np.random.Generator,
                state: MutableMapping[str, Any], canaries: StepCanaries | None = None) -> ClientResult:
    """The client's step (module docstring): its rounded shared sum as an update, its private
    rows moved in place (``model``) with their optimizer state in ``state``. ``canaries``
    (audits only) are sampled, clipped and rounded like the client's own examples."""
    geometry = _geometry(model)
    layout = geometry.layout
    items, targets = _examples(model, data, method.negatives, rng)
    n = len(targets)
    chosen = np.flatnonzero(csprng_uniform(n) < method.sample_rate)
    private_grads = {name: np.zeros(shape, dtype=np.float64) for name, shape in geometry.private_shapes.items()}
    loss = math.nan
    rows: list[tuple[np.ndarray, np.ndarray]] = []  # (coordinates, clipped values) of the sampled examples
    if chosen.size:
        users_t = torch.full((chosen.size,), data.user, dtype=torch.long)
        items_t = torch.as_tensor(items[chosen], dtype=torch.long)
        with geometry.clipping:
            losses = geometry.criterion(model(users_t, items_t), torch.as_tensor(targets[chosen]))
            parts = geometry.clipping.per_example(losses)
        loss = float(losses.detach().mean())
        rows.append(geometry.shared_rows(parts, method.clip_norm, private_grads))
    if canaries is not None:
        rows.extend(_sampled_canaries(canaries, method))
    coords = np.concatenate([c.ravel() for c, _ in rows]) if rows else np.zeros(0, np.int64)
    levels = np.concatenate([_rounded(v, method).ravel() for _, v in rows]) if rows else np.zeros(0, np.int64)
    unique, inverse = np.unique(coords, return_inverse=True)
    summed = np.bincount(inverse, weights=levels.astype(np.float64), minlength=len(unique))
    touched = np.unique(layout_items(layout, unique))
    indices = layout.indices_for_items(touched)
    delta = np.zeros(len(indices), dtype=np.float64)
    delta[np.searchsorted(indices, unique)] = -summed  # the descent direction, in units of γ
    _private_step(model, data.user, private_grads, method, state)
    return ClientResult(user=data.user, items=touched, delta=delta, num_examples=n, loss=loss)


def _rounded(values: np.ndarray, method: SharesStep) -> np.ndarray:
    scaled = values / method.gamma
    return round_examples(scaled, values_norm=np.sqrt((scaled * scaled).sum(1)), dim=method.example_dim,
                          beta=method.rounding_beta)


def _sampled_canaries(canaries: StepCanaries, method: SharesStep) -> list[tuple[np.ndarray, np.ndarray]]:
    """The step's canaries, each sampled at the examples' rate and clipped like an example."""
    gradients = canaries.gradients()
    sampled = csprng_uniform(len(gradients)) < method.sample_rate
    canaries.report(sampled.copy())
    rows = []
    for canary, taken in zip(gradients, sampled):
        if canary.indices.size > method.example_dim:
            raise ValueError(f"a canary may touch at most {method.example_dim} coordinates (one example's), "
                             f"not {canary.indices.size}")
        if taken:
            values = np.asarray(canary.values, dtype=np.float64)
            norm = float(np.sqrt(values @ values))
            values = values * min(1.0, method.clip_norm / (norm + 1e-6))  # Opacus' clip factor, as for examples
            rows.append((np.asarray(canary.indices, dtype=np.int64)[None, :], values[None, :]))
    return rows


def layout_items(layout: ParamLayout, coords: np.ndarray) -> np.ndarray:
    """The items whose rows the flat coordinates ``coords`` fall in (coordinates of non-item
    parameters name none)."""
    out = []
    for name, shape, start in zip(layout.names, layout.shapes, layout.offsets.values()):
        if name not in layout.item_rows:
            continue
        width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        inside = coords[(coords >= start) & (coords < start + int(np.prod(shape)))]
        out.append((inside - start) // width)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def round_examples(scaled: np.ndarray, *, values_norm: np.ndarray, dim: int, beta: float) -> np.ndarray:
    """Each row of ``scaled`` (one example's shared gradient in units of γ) rounded at random to
    the integers, re-drawn until its norm is within the conditional bound for that row's own
    norm (KLS 2021; ``dim`` = :func:`example_dim`). Rows are independent; coins from the CSPRNG.
    """
    scaled = np.asarray(scaled, dtype=np.float64)
    if not np.all(np.isfinite(scaled)):
        raise ValueError("cannot round non-finite gradients")
    floor = np.floor(scaled)
    fraction = scaled - floor
    unconditional = values_norm + math.sqrt(dim)
    if beta > 0:
        conditional = np.sqrt(values_norm**2 + dim / 4.0
                              + math.sqrt(2.0 * math.log(1.0 / beta)) * (values_norm + math.sqrt(dim) / 2.0))
        bound = np.minimum(unconditional, conditional)
    else:
        bound = unconditional
    # The check is exact: integers squared and summed in int64 against the float bound squared.
    limit = bound * bound
    levels = floor.astype(np.int64)
    pending = np.arange(len(scaled))
    for _ in range(_MAX_ROUNDING_ATTEMPTS):
        coins = csprng_uniform(pending.size * scaled.shape[1]).reshape(pending.size, scaled.shape[1])
        trial = floor[pending].astype(np.int64) + (coins < fraction[pending])
        ok = (trial * trial).sum(1) <= limit[pending]
        levels[pending[ok]] = trial[ok]
        pending = pending[~ok]
        if pending.size == 0:
            return levels
    raise RuntimeError(f"conditional rounding failed {_MAX_ROUNDING_ATTEMPTS} times for {pending.size} examples")


def _private_step(model: FederatedModel, user: int, grads: dict[str, np.ndarray], method: SharesStep,
                  state: MutableMapping[str, Any]) -> None:
    """Noise the private gradient sum at full scale, divide by the public expected batch, and
    apply the step's optimizer to the client's own rows (never released, but every later
    gradient the client releases depends on them: hence the noise)."""
    params = dict(model.named_parameters())
    step = int(state.get("step", 0)) + 1
    moments = state.setdefault("moments", {})
    with torch.no_grad():
        for name, grad in grads.items():
            row = params[name][user]
            current = row.detach().double().numpy()
            noisy = (grad + method.noise_stddev * csprng_normal(grad.size).reshape(grad.shape)) / method.denominator
            noisy = noisy + method.weight_decay * current
            if method.optimizer == "adam":
                m, v = moments.get(name, (np.zeros_like(current), np.zeros_like(current)))
                updated, m, v = adam_step(current, noisy, m, v, step=step, lr=method.lr)
                moments[name] = (m, v)
            else:
                updated = current - method.lr * noisy
            row.copy_(torch.as_tensor(updated, dtype=row.dtype))
    state["step"] = step


def _examples(model: FederatedModel, data: ClientData, negatives: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Every example's global item and target (implicit feedback: with its sampled negatives)."""
    if model.task == "explicit":
        return np.asarray(data.items, dtype=np.int64), np.asarray(data.ratings, dtype=np.float32)
    touched, local, targets = local_examples(model, data, model.n_items, negatives, rng)  # type: ignore[attr-defined]
    return touched[local].astype(np.int64), targets


@dataclass
class _Geometry:
    """What a model's shape says about one example's gradient, computed once per model."""

    layout: ParamLayout
    clipping: BookkeepingClipping
    criterion: nn.Module
    #: per layer: (parameter name, offset in the flat vector, row width, item-indexed?, private?)
    embeddings: dict[nn.Module, tuple[str, int, int, bool]]
    linears: dict[nn.Module, tuple[int, int | None]]  # layer -> (weight offset, bias offset)
    private_embeddings: dict[nn.Module, str]
    private_shapes: dict[str, tuple[int, ...]]

    def shared_rows(self, parts: PerExampleGradients, clip_norm: float,
                    private_grads: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each example's clipped shared gradient as (coordinates, values), ``[batch, d_e]``, in the
        layout's flat order; the clipped private gradients are added to ``private_grads``."""
        factor = parts.clip_factors(clip_norm)
        coords, values = [], []
        for part in parts.layers:
            scaled = (part.delta * factor[:, None]).double()
            layer = part.layer
            if layer in self.private_embeddings:
                name = self.private_embeddings[layer]
                private_grads[name] += scaled.sum(0).numpy()  # every example's row is the client's own
                continue
            if layer in self.embeddings:
                _, offset, width, _ = self.embeddings[layer]
                rows = part.inputs.numpy().astype(np.int64)
                coords.append(offset + rows[:, None] * width + np.arange(width)[None, :])
                values.append(scaled.numpy())
            else:
                weight_offset, bias_offset = self.linears[layer]
                outer = (scaled[:, :, None] * part.inputs.double()[:, None, :]).reshape(parts.batch, -1)
                coords.append(np.broadcast_to(weight_offset + np.arange(outer.shape[1]), outer.shape))
                values.append(outer.numpy())
                if bias_offset is not None:
                    coords.append(np.broadcast_to(bias_offset + np.arange(scaled.shape[1]), scaled.shape))
                    values.append(scaled.numpy())
        return np.concatenate(coords, axis=1), np.concatenate(values, axis=1)


_GEOMETRIES: weakref.WeakKeyDictionary[FederatedModel, _Geometry] = weakref.WeakKeyDictionary()


def _geometry(model: FederatedModel) -> _Geometry:
    cached = _GEOMETRIES.get(model)
    if cached is not None:
        return cached
    layout = model.layout()
    offsets = layout.offsets
    owner = {id(p): (name, layer) for name, layer in model.named_modules()
             for p in layer.parameters(recurse=False)}
    embeddings: dict[nn.Module, tuple[str, int, int, bool]] = {}
    linears: dict[nn.Module, tuple[int, int | None]] = {}
    private_embeddings: dict[nn.Module, str] = {}
    for name, param in model.named_parameters():
        _, layer = owner[id(param)]
        if name in model.private_names:
            if type(layer) is not nn.Embedding:
                raise TypeError(f"private parameter {name} must be an nn.Embedding row per user")
            private_embeddings[layer] = name
        elif isinstance(layer, nn.Embedding):
            embeddings[layer] = (name, offsets[name], int(param.shape[1]), name in layout.item_rows)
        elif isinstance(layer, nn.Linear):
            weight_name = f"{_layer_name(model, layer)}.weight"
            bias_name = f"{_layer_name(model, layer)}.bias"
            linears[layer] = (offsets[weight_name], offsets.get(bias_name) if layer.bias is not None else None)
    private_shapes = {name: tuple(dict(model.named_parameters())[name].shape[1:]) for name in model.private_names}
    geometry = _Geometry(layout=layout, clipping=BookkeepingClipping(model, max_grad_norm=1.0),
                         criterion=loss_fn(model), embeddings=embeddings, linears=linears,
                         private_embeddings=private_embeddings, private_shapes=private_shapes)
    _GEOMETRIES[model] = geometry
    return geometry


def _layer_name(model: nn.Module, layer: nn.Module) -> str:
    return next(name for name, module in model.named_modules() if module is layer)
