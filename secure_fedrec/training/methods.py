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
from .dpsgd_shares import SharesStep, shares_step
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
class DistributedDpSgd(SharesStep):
    """Record-level DP-SGD under secure aggregation: one step a round (:func:`~.dpsgd_shares.shares_step`),
    with the public numbers of :class:`~.dpsgd_shares.SharesStep`."""

    kind: ClassVar[str] = "distributed_dpsgd"

    def train(self, model: FederatedModel, data: ClientData, rng: np.random.Generator, *,
              epochs: int | None = None, state: MutableMapping[str, Any] | None = None,
              canaries: StepCanaries | None = None) -> LocalOutcome:
        # One step whatever ``epochs`` says: a straggler of a DP-SGD round still takes its one step.
        return LocalOutcome(shares_step(model, data, self, rng, {} if state is None else state, canaries))


#: every training method a plan may choose (the wire form names them by ``kind``)
TrainingMethod = LocalEpochs | DpSgd | DistributedDpSgd
