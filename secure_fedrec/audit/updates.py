"""Rated-item inference from what the server really sees, per protocol and noise placement.

The deltas are those the clients of one more round would upload from the
trained model (plain local training, or DP-SGD for a record-level run); this
extra round is a measurement and is not charged to the accountant. Each
target's update then goes through the run's own aggregation pipeline (its
client halves: weighting, clipping, the distributed discrete Gaussian share or
the fixed-point encoding; the sum; its server halves: decoding, central noise,
the mean), with the layers' current states read but never advanced, so every
view below is the mechanism's output, not the raw update:

==========================  ===================================================================
view                        who sees it
==========================  ===================================================================
``upload``                  the server under the plaintext protocol: the client's update as
                            it leaves the device (DP-SGD-noised at record level; clipped at
                            user level; raw without DP)
``noised_share``            distributed noise only: one client's clipped, rounded and
                            noised input to the secure sum — what masking hides
``clean_sum_n=k``           central noise only: the sum of k clipped updates the server
                            unmasks *before* it adds the noise (a curious server's view)
``released_sum_n=k``        everyone downstream: the sum of the target and k − 1 other
                            clients as released (central noise added, or the shares' noise)
==========================  ===================================================================

The secure protocol itself is replaced by a plaintext sum here: masks and
Paillier ciphertexts cancel in the sum, so the sum released is the same; a
masked upload is uniform and is not a view worth attacking.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np

from attacks import (
    AggregateObservation,
    ClientUpdateObservation,
    UpdateInferenceAttack,
    evaluate_item_inference,
)
from protocols import PlaintextSum

from ..aggregation import (
    AggregationPipeline,
    CentralGaussianNoise,
    ClientUpdate,
    DistributedDiscreteGaussianEncoding,
    ServerContext,
    SumOutcome,
)
from ..aggregation.sums import float_sum
from ..engines.inprocess import FederatedTrainer
from ..rounds.client import RoundBroadcast, RoundReports, encode_update
from .hook import released_sum

__all__ = ["update_inference"]


def _item_table(trainer: FederatedTrainer, flat: np.ndarray) -> np.ndarray:
    """A flat shared-parameter vector as one row per item (item-indexed parameters side by side)."""
    layout = trainer.layout
    parts = []
    for name, shape, start in zip(layout.names, layout.shapes, layout.offsets.values()):
        if name in layout.item_rows:
            size = int(np.prod(shape))
            parts.append(flat[start:start + size].reshape(shape[0], -1))
    return np.hstack(parts)


def _placement(pipeline: AggregationPipeline) -> str:
    """Where the run's noise is added: "central" (a server layer), "distributed" (the clients' shares), "none"."""
    if isinstance(pipeline.encoding, DistributedDiscreteGaussianEncoding):
        return "distributed"
    if any(isinstance(layer, CentralGaussianNoise) for layer in pipeline.layers):
        return "central"
    return "none"


def _broadcast(trainer: FederatedTrainer, clients: int, *, strip_noise: bool = False
               ) -> tuple[AggregationPipeline, RoundBroadcast]:
    """The run's pipeline (without its central noise layer if ``strip_noise``) and an extra
    round's broadcast with the layers' current states (the adaptive clip norm as it is now)."""
    pipeline, states = trainer.server.pipeline, trainer.privacy.layer_states
    if strip_noise:
        kept = [k for k, layer in enumerate(pipeline.layers) if not isinstance(layer, CentralGaussianNoise)]
        pipeline = replace(pipeline, layers=tuple(pipeline.layers[k] for k in kept))
        states = tuple(states[k] for k in kept)
    return pipeline, RoundBroadcast(round_index=trainer.round_index, n_clients=clients,
                                    expected_clients=trainer.expected_clients, layer_states=states)


def _upload(trainer: FederatedTrainer, update: ClientUpdate) -> np.ndarray:
    """What a plaintext server receives from this client: the pipeline's layers on the update
    (weighted; clipped at user level), before any encoding."""
    pipeline, broadcast = _broadcast(trainer, 1)
    ctx = broadcast.context()
    for layer, state in zip(pipeline.layers, broadcast.layer_states, strict=True):
        update, _ = layer.client(update, state, ctx)
    return update.dense()[:trainer.layout.size]  # adaptive clipping appends its bit; scale is irrelevant


def _release(trainer: FederatedTrainer, updates: list[ClientUpdate], *, strip_noise: bool = False) -> np.ndarray:
    """The sum the run's pipeline releases for these updates (a central noise layer skipped if
    ``strip_noise``): every client half, the sum, every server half, times the mean's denominator."""
    pipeline, broadcast = _broadcast(trainer, len(updates), strip_noise=strip_noise)
    plan = replace(trainer.server.client_plan, pipeline=pipeline)
    reports = [encode_update(k, update, plan, broadcast) for k, update in enumerate(updates)]
    payloads = {r.client: r.payload for r in reports}
    if pipeline.bits is None:
        outcome = float_sum(payloads, {})  # type: ignore[arg-type]  # floats: ClientUpdate payloads
    else:
        # Masks and ciphertexts cancel in the sum: the ring sum is what any secure protocol releases.
        summed = PlaintextSum().run_round(payloads, bits=pipeline.bits)  # type: ignore[arg-type]
        outcome = SumOutcome(total=summed.total, contributors=summed.contributors)
    collected = RoundReports.collect(reports)
    ctx = ServerContext(round_index=broadcast.round_index, n_clients=len(updates),
                        expected_clients=broadcast.expected_clients, reporting_clients=collected.reporting,
                        client_totals=collected.totals, client_diagnostics=collected.diagnostics)
    aggregate, _, _ = pipeline.server(outcome, broadcast.layer_states, ctx)
    return released_sum(trainer.server, aggregate)[:trainer.layout.size]


def update_inference(trainer: FederatedTrainer, *, targets: int, cohort_sizes: tuple[int, ...],
                     seed: int) -> dict[str, Any]:
    """Precision/recall/AUC of recovering each target's rated items, per server view."""
    model = copy.deepcopy(trainer.model)  # local training writes private rows; keep the audited model intact
    population = trainer.population
    rng = np.random.default_rng([seed, 0x0BD])
    chosen = rng.choice(population, min(targets, len(population)), replace=False)
    training = trainer.server.client_plan.training  # the run's own local training (DP-SGD at record level)
    updates: dict[int, ClientUpdate] = {}
    rated: dict[int, np.ndarray] = {}

    def update_of(user: int) -> ClientUpdate:
        if user not in updates:
            data = trainer.client_data(user)
            result = training.train(model, data, trainer.client_rng(trainer.round_index, user)).result
            updates[user] = ClientUpdate(indices=trainer.layout.indices_for_items(result.items),
                                         values=result.delta, size=trainer.layout.size,
                                         num_examples=result.num_examples)
            mask = np.zeros(model.n_items, dtype=bool)
            mask[np.unique(data.items)] = True
            rated[user] = mask
        return updates[user]

    placement = _placement(trainer.server.pipeline)
    method = "norm" if model.task == "explicit" else "direction"
    attack = UpdateInferenceAttack(method)
    sizes = sorted({n for n in (cohort_sizes or (2, 10, round(trainer.expected_clients)))
                    if 2 <= n <= len(population)})
    views: dict[str, list] = {"upload": []}
    if placement == "distributed":
        views["noised_share"] = []
    for n in sizes:
        if placement == "central":
            views[f"clean_sum_n={n}"] = []
        views[f"released_sum_n={n}"] = []
    # The attacker predicts as many items as a typical user rates (public statistics of the
    # service), never the target's own count, which would hand it part of the answer.
    k = max(1, round(float(np.mean([len(np.unique(trainer.client_data(int(u)).items)) for u in population]))))

    def judge(flat: np.ndarray, truth: np.ndarray, observation: type, *args: int):
        scores = attack.score(observation(_item_table(trainer, flat), *args))
        return evaluate_item_inference(scores, truth, num_predicted=k)

    for target in chosen.tolist():
        own = update_of(target)
        truth = rated[target]
        views["upload"].append(judge(_upload(trainer, own), truth, ClientUpdateObservation))
        if placement == "distributed":
            views["noised_share"].append(judge(_release(trainer, [own]), truth, AggregateObservation, 1))
        others_pool = population[population != target]
        for n in sizes:
            cohort = [own, *(update_of(int(o)) for o in rng.choice(others_pool, n - 1, replace=False))]
            if placement == "central":
                views[f"clean_sum_n={n}"].append(
                    judge(_release(trainer, cohort, strip_noise=True), truth, AggregateObservation, n))
            views[f"released_sum_n={n}"].append(judge(_release(trainer, cohort), truth, AggregateObservation, n))
    summary = {}
    for name, results in views.items():
        summary[name] = {
            "precision": float(np.mean([r.precision for r in results])),
            "precision_min": float(np.min([r.precision for r in results])),
            "recall": float(np.mean([r.recall for r in results])),
            "auc": float(np.nanmean([r.auc for r in results])),
            "targets": len(results),
        }
    return {
        "method": method,
        "num_predicted": k,
        "placement": placement,
        "protocol_views": summary,
        "notes": ("each view is the target's update after the run's own aggregation layers (see "
                  "secure_fedrec/audit/updates.py): upload = what a plaintext server receives, noised_share = one "
                  "client's input to the secure sum under distributed noise, clean_sum = what a server adding "
                  "central noise unmasks before adding it, released_sum = the sum as released; precision/recall of "
                  "the top-k items, k = the mean number of items a user rates (not the target's own count), "
                  "averaged over targets; one extra round from the "
                  "trained model, not charged to the accountant"),
    }
