"""How a client trains in a run: plain local epochs, record-level DP-SGD, or its step under secure aggregation.

The privacy plan chooses the method (:mod:`secure_fedrec.plans`); the client step
(:mod:`secure_fedrec.rounds.client`) calls :meth:`train` on whichever it was given,
in-process or on a Flower node. Both are frozen dataclasses of plain numbers and
strings, so the server can send the method to the nodes (:mod:`secure_fedrec.rounds.wire`)
and no node has to re-derive a calibrated noise multiplier.

``state`` is the client's own persistent state between rounds (the engine keeps one
dict per client, beside its private rows, and never sends it anywhere): the DP-SGD step
under secure aggregation keeps its private rows' optimizer moments there.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..models import FederatedModel
from .canaries import StepCanaries
from .dpsgd import DpSgdStep, train_client_dpsgd
from .dpsgd_shares import shares_step
from .local import ClientData, ClientResult, LocalTraining, train_client

__all__ = ["DistributedDpSgd", "DpSgd", "LocalEpochs", "LocalOutcome", "TrainingMethod"]


@dataclass(frozen=True)
class LocalOutcome:
    result: ClientResult
    #: record level: the steps DP-SGD ran (public numbers the server charges to the client's
    #: accountant); None when no record-level mechanism ran
    spent: DpSgdStep | None = None


@dataclass(frozen=True)
class LocalEpochs:
    """Plain local training (:func:`~.local.train_client`): ``local.epochs`` passes of its optimizer."""

    kind: ClassVar[str] = "local_epochs"
    local: LocalTraining = field(default_factory=LocalTraining)

    def train(self, model: FederatedModel, data: ClientData, rng: np.random.Generator, *,
              epochs: int | None = None, state: MutableMapping[str, Any] | None = None,
              canaries: StepCanaries | None = None) -> LocalOutcome:
        return LocalOutcome(train_client(model, data, self.local, rng, epochs=epochs))


@dataclass(frozen=True)
class DpSgd:
    """Record-level DP-SGD on the client (:func:`~.dpsgd.train_client_dpsgd`).

    ``local`` carries DP-SGD's own optimizer and learning rate
    (``privacy.record_optimizer`` / ``privacy.record_lr``); ``noise_multiplier`` is the
    calibrated one, computed once by the server's privacy plan.
    """

    kind: ClassVar[str] = "dpsgd"
    local: LocalTraining
    noise_multiplier: float
    clip_norm: float
    batch_size: int
    grad_sample_mode: str = "auto"

    def __post_init__(self) -> None:
        if not (isinstance(self.noise_multiplier, (int, float)) and math.isfinite(self.noise_multiplier)
                and self.noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier!r}")
        if not (isinstance(self.clip_norm, (int, float)) and math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ValueError(f"clip_norm must be positive and finite, got {self.clip_norm!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.grad_sample_mode not in ("auto", "bookkeeping", "hooks", "ghost"):
            raise ValueError(f"unknown grad_sample_mode {self.grad_sample_mode!r}")

    def train(self, model: FederatedModel, data: ClientData, rng: np.random.Generator, *,
              epochs: int | None = None, state: MutableMapping[str, Any] | None = None,
              canaries: StepCanaries | None = None) -> LocalOutcome:
        result, step = train_client_dpsgd(
            model, data, self.local, rng, noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.clip_norm, batch_size=self.batch_size,
            grad_sample_mode=self.grad_sample_mode, epochs=epochs)
        return LocalOutcome(result, step)


@dataclass(frozen=True)
class DistributedDpSgd:
    """The training method of a record-level round with distributed noise (public numbers only).

    ``noise_stddev`` is the std (model units) of the Gaussian the client adds to its private
    gradient sum: the same as the shared sum's noise at the guaranteed minimum of survivors.
    ``denominator`` is the public expected batch ``q·N``; ``optimizer``/``lr``/``weight_decay``
    the step's optimizer, which the server applies to the shared part and each client to its
    private rows.
    """

    kind: ClassVar[str] = "distributed_dpsgd"
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

    def train(self, model: FederatedModel, data: ClientData, rng: np.random.Generator, *,
              epochs: int | None = None, state: MutableMapping[str, Any] | None = None,
              canaries: StepCanaries | None = None) -> LocalOutcome:
        # One step whatever ``epochs`` says: a straggler of a DP-SGD round still takes its one step.
        return LocalOutcome(shares_step(model, data, self, rng, {} if state is None else state, canaries))


#: every training method a plan may choose (the wire form names them by ``kind``)
TrainingMethod = LocalEpochs | DpSgd | DistributedDpSgd
