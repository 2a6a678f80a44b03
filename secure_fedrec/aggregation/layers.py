"""Aggregation layers, each split by placement into a client half and a server half.

In the spirit of TensorFlow Federated's aggregation factories: a pipeline is built
inside-out, one concern per layer, e.g. ::

    Mean(Clip(CentralGaussianNoise(QuantizedEncoding -> secure sum)))

and every layer says what runs on the clients and what runs on the server::

    client(update, state, ctx) -> (update, measurements)          # on every client, outer to inner
    server(aggregate, state, ctx) -> (aggregate, state, measurements)  # once, inner to outer

``state`` is the layer's own typed state (``None`` for the stateless ones); the server
half returns the next one, and the server sends the current one to the clients with
the round's broadcast (the adaptive clip norm is the one case). Because the halves are
separate functions of frozen, plain-valued layers, the in-process engine and the Flower
engine run the very same code: one calls the client halves in a loop, the other on
each node (:mod:`secure_fedrec.rounds`).

The innermost step, the encoding into what the secure sum adds, is in
:mod:`.encodings` and :mod:`.ddg`.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np

from ..privacy.noise import csprng_normal
from .values import (
    Aggregate,
    ClientContext,
    ClientUpdate,
    Measurements,
    ServerContext,
    check_number,
)

__all__ = [
    "AdaptiveClip",
    "AdaptiveClipState",
    "CentralGaussianNoise",
    "Clip",
    "ExpectedBatchMean",
    "Layer",
    "Mean",
]


class Layer(ABC):
    """One aggregation concern: a client half, a server half and (optionally) a typed state."""

    #: the layer's name in the wire form of a client plan (:mod:`secure_fedrec.rounds.wire`)
    kind: ClassVar[str]

    def initial_state(self) -> Any:
        return None

    def client(self, update: ClientUpdate, state: Any, ctx: ClientContext) -> tuple[ClientUpdate, Measurements]:
        return update, {}

    def server(self, aggregate: Aggregate, state: Any, ctx: ServerContext
               ) -> tuple[Aggregate, Any, Measurements]:
        return aggregate, state, {}

    def client_length(self, length: int) -> int:
        """The length of the vector the client half hands inward, for an input of ``length``."""
        return length


@dataclass(frozen=True)
class Mean(Layer):
    """The sum becomes a mean; the client half sets the weight its update carries.

    ``denominator="weights"`` divides by the (securely summed) total weight;
    ``"expected"`` by the expected number of clients, the fixed denominator
    user-level DP needs (McMahan et al. 2018), because the actual count would add
    sensitivity. ``weighting="examples"`` weighs an update ``min(examples, cap)/cap``;
    ``"uniform"`` weighs every update 1.
    """

    kind: ClassVar[str] = "mean"
    denominator: Literal["weights", "expected"] = "weights"
    weighting: Literal["examples", "uniform"] = "uniform"
    weight_cap: float = 100.0

    def __post_init__(self) -> None:
        if self.denominator not in ("weights", "expected"):
            raise ValueError("denominator must be 'weights' or 'expected'")
        if self.weighting not in ("examples", "uniform"):
            raise ValueError("weighting must be 'examples' or 'uniform'")
        check_number("weight_cap", self.weight_cap)

    def client(self, update: ClientUpdate, state: None, ctx: ClientContext) -> tuple[ClientUpdate, Measurements]:
        if self.weighting == "uniform":
            return replace(update, weight=1.0), {}
        return replace(update, weight=min(update.num_examples, self.weight_cap) / self.weight_cap), {}

    def server(self, aggregate: Aggregate, state: None, ctx: ServerContext) -> tuple[Aggregate, None, Measurements]:
        denominator = aggregate.weight_total if self.denominator == "weights" else ctx.expected_clients
        mean = aggregate.total / denominator if denominator > 0 else np.zeros_like(aggregate.total)
        measurements = {"contributors": float(len(aggregate.contributors)),
                        "weight_total": float(aggregate.weight_total)}
        return replace(aggregate, total=mean), None, measurements


@dataclass(frozen=True)
class ExpectedBatchMean(Layer):
    """Record-level DP-SGD's mean: the noisy sum of per-example gradients divided by the public
    expected batch ``q·N`` (never by the realised batch, whose size depends on the data)."""

    kind: ClassVar[str] = "expected_batch_mean"
    expected_batch: float

    def __post_init__(self) -> None:
        check_number("expected_batch", self.expected_batch)

    def server(self, aggregate: Aggregate, state: None, ctx: ServerContext) -> tuple[Aggregate, None, Measurements]:
        return (replace(aggregate, total=aggregate.total / self.expected_batch), None,
                {"contributors": float(len(aggregate.contributors)), "expected_batch": self.expected_batch})


def _clip_measurements(clip_norm: float, ctx: ServerContext) -> Measurements:
    """What a clip layer reports: the fraction of clients clipped (and, in simulation, the
    median update norm, which a deployment's server never sees)."""
    reporting = ctx.reporting_clients
    out = {"fraction_clipped": ctx.client_totals.get("clipped", 0.0) / reporting if reporting else 0.0}
    norms = ctx.client_diagnostics.get("update_norm")
    if norms is not None:
        out["update_norm_median"] = float(np.median(norms)) if len(norms) else 0.0
    out["clip_norm"] = float(clip_norm)
    return out


@dataclass(frozen=True)
class Clip(Layer):
    """Clip each client's update to L2 norm ``clip_norm`` (user-level sensitivity)."""

    kind: ClassVar[str] = "clip"
    clip_norm: float

    def __post_init__(self) -> None:
        check_number("clip_norm", self.clip_norm)

    def client(self, update: ClientUpdate, state: None, ctx: ClientContext) -> tuple[ClientUpdate, Measurements]:
        norm = update.norm()
        factor = min(1.0, self.clip_norm / max(norm, 1e-300))
        return update.scaled(factor), {"clipped": float(norm > self.clip_norm), "update_norm": norm}

    def server(self, aggregate: Aggregate, state: None, ctx: ServerContext) -> tuple[Aggregate, None, Measurements]:
        return aggregate, None, _clip_measurements(self.clip_norm, ctx)


@dataclass(frozen=True)
class AdaptiveClipState:
    """The adaptive clip norm the clients use this round."""

    clip_norm: float

    def __post_init__(self) -> None:
        check_number("the adaptive clip norm", self.clip_norm)


@dataclass(frozen=True)
class AdaptiveClip(Layer):
    """Clip to the current ``C`` and move ``C`` toward a quantile of the update norms.

    Andrew et al. 2021 (see :mod:`secure_fedrec.privacy.adaptive_clipping`). The
    client divides its update by ``C``, clips it to norm 1 and appends the centred
    bit ``bit_scale·(1[||Δ|| <= C] - 1/2)`` as one more coordinate, so the inner
    layers (noise, secure sum) see unit-scale vectors of norm at most
    ``sqrt(1 + bit_scale²/4)`` and no one sees a single client's bit. The server
    reads the noisy bit sum off the last coordinate, moves ``C`` geometrically, and
    scales the update part back by ``C``.
    """

    kind: ClassVar[str] = "adaptive_clip"
    initial_clip_norm: float
    target_quantile: float
    learning_rate: float
    bit_scale: float

    def __post_init__(self) -> None:
        check_number("initial_clip_norm", self.initial_clip_norm)
        check_number("target_quantile", self.target_quantile, high=1.0)
        check_number("learning_rate", self.learning_rate, low_open=False)
        check_number("bit_scale", self.bit_scale)

    def initial_state(self) -> AdaptiveClipState:
        return AdaptiveClipState(self.initial_clip_norm)

    def client_length(self, length: int) -> int:
        return length + 1

    def client(self, update: ClientUpdate, state: AdaptiveClipState, ctx: ClientContext
               ) -> tuple[ClientUpdate, Measurements]:
        clip = state.clip_norm
        norm = update.norm()
        unclipped = norm <= clip
        # unit scale; a clipped row shrinks by a relative 1e-12 more so rounding never leaves it above 1
        factor = min(1.0 / clip, (1.0 - 1e-12) / max(norm, 1e-300))
        scaled = update.scaled(factor).with_coordinate(self.bit_scale * (float(unclipped) - 0.5))
        return scaled, {"clipped": float(not unclipped), "update_norm": norm}

    def server(self, aggregate: Aggregate, state: AdaptiveClipState, ctx: ServerContext
               ) -> tuple[Aggregate, AdaptiveClipState, Measurements]:
        clip = state.clip_norm
        # Centred bits: Σ(b_i - 1/2) + noise; adding m/2 (not the contributor count, which
        # depends on who took part) gives the noisy unclipped count the paper uses.
        noisy_count = float(aggregate.total[-1]) / self.bit_scale + ctx.expected_clients / 2
        estimate = noisy_count / ctx.expected_clients
        from ..privacy.clipping import (
            AdaptiveClipNorm,  # server side only (scipy): keep nodes light
        )

        rule = AdaptiveClipNorm(clip_norm=clip, target_quantile=self.target_quantile,
                                learning_rate=self.learning_rate)
        next_clip = rule.update(noisy_count, ctx.expected_clients, already_noised=True)
        noise = None if aggregate.noise_stddev is None else aggregate.noise_stddev * clip
        out = replace(aggregate, total=aggregate.total[:-1] * clip, noise_stddev=noise)
        measurements = {"clip_norm": float(clip), "unclipped_fraction_estimate": estimate,
                        "clip_norm_next": next_clip}
        clipped = _clip_measurements(clip, ctx)  # simulation diagnostics from the clients' reports
        measurements["fraction_clipped"] = clipped["fraction_clipped"]
        if "update_norm_median" in clipped:
            measurements["update_norm_median"] = clipped["update_norm_median"]
        return out, AdaptiveClipState(next_clip), measurements


@dataclass(frozen=True)
class CentralGaussianNoise(Layer):
    """Add N(0, stddev²) to every coordinate of the sum, on the server, after the inner sum.

    With a secure protocol inside, the server still sees the clean sum before it
    adds the noise: this is *central* DP, which trusts the server.
    """

    kind: ClassVar[str] = "central_noise"
    stddev: float

    def __post_init__(self) -> None:
        check_number("stddev", self.stddev, low_open=False)

    def server(self, aggregate: Aggregate, state: None, ctx: ServerContext) -> tuple[Aggregate, None, Measurements]:
        noisy = aggregate.total + self.stddev * csprng_normal(aggregate.total.size)
        return replace(aggregate, total=noisy, noise_stddev=float(self.stddev)), None, {}
