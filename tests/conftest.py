"""Fixtures every test folder may use."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from protocols import PlaintextSum
from secure_fedrec.aggregation import (
    AggregationPipeline,
    ClientUpdate,
    ServerContext,
    SumOutcome,
)
from secure_fedrec.aggregation.sums import float_sum
from secure_fedrec.rounds.client import (
    ClientPlan,
    RoundBroadcast,
    RoundReports,
    encode_update,
)
from secure_fedrec.training.methods import LocalEpochs


def client_updates(dense: np.ndarray, examples) -> dict[int, ClientUpdate]:
    """Rows of ``dense`` as the sparse updates of clients 10, 11, ... with ``examples`` each."""
    out = {}
    for j, row in enumerate(dense):
        idx = np.flatnonzero(row)
        out[10 + j] = ClientUpdate(indices=idx, values=row[idx], size=row.size, num_examples=int(examples[j]))
    return out


def _run_pipeline(pipeline: AggregationPipeline, dense: np.ndarray, examples, *, states=None,
                  dropouts: Mapping[int, str] | None = None, ring_bits: int | None = None,
                  expected: float | None = None, round_index: int = 0):
    """One round of a pipeline in one process, without training: every client half on the
    rows of ``dense``, the sum (the float sum, or ``PlaintextSum`` over the ring when
    ``ring_bits`` is given), every server half. Returns (aggregate, next states, measurements)."""
    plan = ClientPlan(training=LocalEpochs(), pipeline=pipeline)
    states = pipeline.initial_states() if states is None else states
    broadcast = RoundBroadcast(round_index=round_index, n_clients=len(dense),
                               expected_clients=expected or len(dense), layer_states=states)
    reports = [encode_update(c, u, plan, broadcast) for c, u in client_updates(dense, examples).items()]
    payloads = {r.client: r.payload for r in reports}
    if ring_bits is None:
        outcome = float_sum(payloads, dropouts or {})
    else:
        result = PlaintextSum().run_round(payloads, bits=ring_bits, dropouts=dropouts)
        outcome = SumOutcome(total=result.total, contributors=result.contributors)
    collected = RoundReports.collect(reports)
    ctx = ServerContext(round_index=round_index, n_clients=len(dense), expected_clients=broadcast.expected_clients,
                        reporting_clients=collected.reporting, client_totals=collected.totals,
                        client_diagnostics=collected.diagnostics)
    return pipeline.server(outcome, states, ctx)


@pytest.fixture
def run_pipeline():
    """:func:`_run_pipeline`: one round of an aggregation pipeline in one process, no training."""
    return _run_pipeline


@pytest.fixture(name="client_updates")
def client_updates_fixture():
    return client_updates
