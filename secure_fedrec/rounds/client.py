"""One client's step of a round: train locally, then the aggregation pipeline's client halves.

::

    client_step:  plan.training.train  ->  ClientUpdate  ->  pipeline client halves  ->  payload

The in-process engine calls :func:`client_step` for every sampled client in turn;
a Flower node calls it for each of its users. Everything a client needs comes from
the server: the run's :class:`ClientPlan` (how to train, the pipeline) and the
round's :class:`RoundBroadcast` (round index, encoder range, layer states), plus the
shared parameters already loaded into the model. A client whose update is not
finite hands no payload: it is a dropout, and the others' sum stays exact.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protocols.encoding import csprng_uniform

from ..aggregation import (
    DIAGNOSTIC_KEYS,
    AggregationPipeline,
    ClientContext,
    ClientUpdate,
    Measurements,
    Payload,
)
from ..models import FederatedModel
from ..models.base import ParamLayout
from ..training.canaries import CanaryGradients, StepCanaries
from ..training.dpsgd import DpSgdStep
from ..training.local import ClientData
from ..training.methods import TrainingMethod

__all__ = ["ClientPlan", "ClientReport", "RoundBroadcast", "RoundReports", "client_rng", "client_step",
           "encode_update"]

_CLIENT_STREAM = 1


def client_rng(seed: int, round_index: int, client: int) -> np.random.Generator:
    """The generator a client trains with, derived from (seed, round, client): any engine and a
    resumed run reproduce the same local choices without sharing generator state."""
    return np.random.default_rng([seed, round_index, _CLIENT_STREAM, client])


@dataclass(frozen=True)
class ClientPlan:
    """What every client of a run is told once: how to train and the pipeline's client halves."""

    training: TrainingMethod
    pipeline: AggregationPipeline
    #: no DP: clients report their training loss (under DP it is data no mechanism covers)
    report_loss: bool = False
    #: private sampling: each client takes part with this probability by its own CSPRNG coin and
    #: otherwise uploads a zero update (plus its noise share): the server sees every client upload
    private_sampling_rate: float | None = None


@dataclass(frozen=True)
class RoundBroadcast:
    """What the server sends every client of a round besides the shared parameters."""

    round_index: int
    n_clients: int  # clients asked to train: the fixed-point encoder's range
    expected_clients: float
    layer_states: tuple[Any, ...] = ()

    def context(self) -> ClientContext:
        return ClientContext(round_index=self.round_index, n_clients=self.n_clients,
                             expected_clients=self.expected_clients)


@dataclass
class ClientReport:
    """One client's part of a round: its payload for the sum, and what the server may count."""

    client: int
    payload: Payload | None  # None: the update was not finite, the client does not upload
    measurements: Measurements = field(default_factory=dict)  # counts the server sums
    diagnostics: Measurements = field(default_factory=dict)  # this client's own numbers (simulation)
    loss: float | None = None
    spent: DpSgdStep | None = None  # record level: the DP-SGD steps to charge


def client_step(model: FederatedModel, layout: ParamLayout, data: ClientData, plan: ClientPlan,
                broadcast: RoundBroadcast, rng: np.random.Generator, *, slow: bool = False,
                state: MutableMapping[str, Any] | None = None,
                canaries: CanaryGradients | None = None) -> ClientReport:
    """Train ``data.user`` on ``model`` (which holds the broadcast's shared parameters) and encode
    its update; a straggler (``slow``) finishes one local epoch only. ``state`` is the client's
    own state between rounds (kept by the engine with its private rows, never sent);
    ``canaries`` an audit's gradient canaries (:mod:`secure_fedrec.training.canaries`)."""
    rate = plan.private_sampling_rate
    if rate is not None and not csprng_uniform(1)[0] < rate:
        # Not sampled this round: no training, and an upload the server cannot tell apart.
        return encode_update(data.user, ClientUpdate(indices=np.zeros(0, dtype=np.int64), values=np.zeros(0),
                                                     size=layout.size), plan, broadcast)
    step_canaries = (StepCanaries(canaries, data.user, broadcast.round_index)
                     if canaries is not None else None)
    outcome = plan.training.train(model, data, rng, epochs=1 if slow else None, state=state,
                                  canaries=step_canaries)
    result = outcome.result
    if not np.all(np.isfinite(result.delta)):
        # A diverged client (NaN/inf update) does not upload: it is a dropout, so the
        # other clients' sum stays exact (encoding it would abort everyone's round).
        return ClientReport(data.user, None, spent=outcome.spent)
    update = ClientUpdate(indices=layout.indices_for_items(result.items), values=result.delta,
                          size=layout.size, num_examples=result.num_examples)
    return encode_update(data.user, update, plan, broadcast,
                         loss=result.loss if plan.report_loss else None, spent=outcome.spent)


def encode_update(client: int, update: ClientUpdate, plan: ClientPlan, broadcast: RoundBroadcast, *,
                  loss: float | None = None, spent: DpSgdStep | None = None) -> ClientReport:
    """The pipeline's client halves on an update (however it was made) -> the client's report."""
    payload, measurements = plan.pipeline.client(update, broadcast.layer_states, broadcast.context())
    diagnostics = {key: measurements.pop(key) for key in DIAGNOSTIC_KEYS if key in measurements}
    return ClientReport(client, payload, measurements, diagnostics, loss, spent)


@dataclass
class RoundReports:
    """What the server learns from a round's clients besides the sum.

    ``totals`` add up the client measurements of the ``reporting`` clients (those with a
    finite update); ``diagnostics`` keep individual numbers and are filled only by a
    simulation. A Flower node sends the totals of its users (:meth:`merge` adds nodes up).
    """

    reporting: int = 0
    diverged: int = 0
    totals: Measurements = field(default_factory=dict)
    diagnostics: dict[str, list[float]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    spent: list[tuple[int, DpSgdStep]] = field(default_factory=list)

    @classmethod
    def collect(cls, reports: Iterable[ClientReport], *, diagnostics: bool = True) -> RoundReports:
        out = cls()
        for report in reports:
            if report.spent is not None:
                out.spent.append((report.client, report.spent))
            if report.payload is None:
                out.diverged += 1
                continue
            out.reporting += 1
            for key, value in report.measurements.items():
                out.totals[key] = out.totals.get(key, 0.0) + value
            if diagnostics:
                for key, value in report.diagnostics.items():
                    out.diagnostics.setdefault(key, []).append(value)
            if report.loss is not None:
                out.losses.append(report.loss)
        return out

    def merge(self, other: RoundReports) -> None:
        self.reporting += other.reporting
        self.diverged += other.diverged
        for key, value in other.totals.items():
            self.totals[key] = self.totals.get(key, 0.0) + value
        for key, values in other.diagnostics.items():
            self.diagnostics.setdefault(key, []).extend(values)
        self.losses.extend(other.losses)
        self.spent.extend(other.spent)
