"""Rated-item inference from what the server sees: one client's update, or a sum of n.

The deltas are those the clients of one more round would upload from the
trained model (plain local training, or DP-SGD for a record-level run). This
extra round is a measurement and is not charged to the accountant. Under
secure aggregation the server sees only the sum of the cohort's updates
(unweighted here), which is what :class:`attacks.AggregateObservation` models.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from attacks import (
    AggregateObservation,
    ClientUpdateObservation,
    UpdateInferenceAttack,
    evaluate_item_inference,
)

from ..engines.inprocess import FederatedTrainer
from ..training.dpsgd import train_client_dpsgd
from ..training.local import train_client
from ..training.methods import DistributedDpSgd

__all__ = ["update_inference"]


def _item_table(trainer: FederatedTrainer, items: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The client's delta as one row per item (every item-indexed shared parameter side by side)."""
    layout = trainer.layout
    flat = np.zeros(layout.size)
    flat[layout.indices_for_items(items)] = delta
    parts = []
    for name, shape, start in zip(layout.names, layout.shapes, layout.offsets.values()):
        if name in layout.item_rows:
            size = int(np.prod(shape))
            parts.append(flat[start:start + size].reshape(shape[0], -1))
    return np.hstack(parts)


def update_inference(trainer: FederatedTrainer, *, targets: int, cohort_sizes: tuple[int, ...],
                     seed: int) -> dict[str, Any]:
    """Precision/recall/AUC of recovering each target's rated items, per server view."""
    model = copy.deepcopy(trainer.model)  # local training writes private rows; keep the audited model intact
    population = trainer.population
    rng = np.random.default_rng([seed, 0x0BD])
    chosen = rng.choice(population, min(targets, len(population)), replace=False)
    p = trainer.config.privacy
    cache: dict[int, np.ndarray] = {}
    rated: dict[int, np.ndarray] = {}

    def table(user: int) -> np.ndarray:
        if user not in cache:
            data = trainer.client_data(user)
            client_rng = trainer.client_rng(trainer.round_index, user)
            training = trainer.server.client_plan.training
            if isinstance(training, DistributedDpSgd):  # its update: the rounded gradient sum, in units of γ
                result = training.train(model, data, client_rng, state={}).result
                result.delta = result.delta * training.gamma
            elif trainer.privacy.unit == "record":
                result, _ = train_client_dpsgd(
                    model, data, trainer.dpsgd_local, client_rng, noise_multiplier=trainer.privacy.noise_multiplier,
                    max_grad_norm=p.clip_norm, batch_size=p.record_batch_size, grad_sample_mode=p.grad_sample_mode,
                )
            else:
                result = train_client(model, data, trainer.local, client_rng)
            cache[user] = _item_table(trainer, result.items, result.delta)
            mask = np.zeros(model.n_items, dtype=bool)
            mask[np.unique(data.items)] = True
            rated[user] = mask
        return cache[user]

    method = "norm" if model.task == "explicit" else "direction"
    attack = UpdateInferenceAttack(method)
    sizes = sorted({n for n in (cohort_sizes or (2, 10, round(trainer.expected_clients)))
                    if 2 <= n <= len(population)})
    views: dict[str, list] = {"plaintext": [], **{f"aggregate_n={n}": [] for n in sizes}}
    for target in chosen.tolist():
        own = table(target)
        views["plaintext"].append(evaluate_item_inference(attack.score(ClientUpdateObservation(own)), rated[target]))
        others_pool = population[population != target]
        for n in sizes:
            others = rng.choice(others_pool, n - 1, replace=False)
            total = own + sum(table(int(o)) for o in others)
            obs = AggregateObservation(total, n)
            views[f"aggregate_n={n}"].append(evaluate_item_inference(attack.score(obs), rated[target]))
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
        "protocol_views": summary,
        "notes": ("precision/recall of the top-|rated| items, averaged over targets; 'aggregate_n=k' is the sum of "
                  "the target's update and k-1 random other clients' (what secure aggregation reveals); "
                  "one extra round from the trained model, not charged to the accountant"),
    }
