"""Rated-item inference from what the server really sees, per protocol and noise placement.

The deltas are those the clients of one more round would upload from the
trained model (plain local training, or DP-SGD for a record-level run); this
extra round is a measurement and is not charged to the accountant. Each
target's update then goes through the run's own aggregation layers (a copy:
clipping, central noise or the distributed discrete Gaussian shares, the
fixed-point path), so every view below is the mechanism's output, not the raw
update:

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
from typing import Any

import numpy as np
from scipy import sparse

from attacks import (
    AggregateObservation,
    ClientUpdateObservation,
    UpdateInferenceAttack,
    evaluate_item_inference,
)
from protocols.plaintext import PlaintextSum

from ..engine.aggregators import CentralGaussianNoise, Mean, QuantizedSecureSum
from ..engine.client import train_client
from ..engine.inprocess import FederatedTrainer
from ..engine.updates import ClientUpdates, RoundContext
from ..privacy.dpsgd import train_client_dpsgd

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


def _plaintext_copy(pipeline: Mean) -> tuple[Mean, str]:
    """A copy of the pipeline whose secure sum is a plaintext sum, and the noise placement."""
    pipe = copy.deepcopy(pipeline)  # layers with state (adaptive clipping) must not move
    placement = "none"
    layer: Any = pipe
    while layer is not None:
        if isinstance(layer, CentralGaussianNoise):
            placement = "central"
        if hasattr(layer, "plan") and hasattr(layer, "protocol"):  # the distributed discrete Gaussian sum
            placement = "distributed"
            layer.protocol = PlaintextSum()
        if isinstance(layer, QuantizedSecureSum):
            layer.protocol = PlaintextSum()
        layer = getattr(layer, "inner", None)
    return pipe, placement


def _release(pipe: Mean, trainer: FederatedTrainer, flats: list[np.ndarray], salt: int,
             *, strip_noise: bool = False) -> np.ndarray:
    """The sum ``pipe`` releases for these client updates (noise layers skipped if ``strip_noise``)."""
    if strip_noise:
        pipe = copy.deepcopy(pipe)
        parent: Any = pipe
        while getattr(parent, "inner", None) is not None:
            if isinstance(parent.inner, CentralGaussianNoise):
                parent.inner = parent.inner.inner
            parent = parent.inner
    matrix = sparse.csr_array(np.vstack(flats))
    updates = ClientUpdates(client_ids=np.arange(len(flats), dtype=np.int64), matrix=matrix,
                            weights=np.ones(len(flats)))
    ctx = RoundContext(round_index=10_000_000 + salt, expected_clients=trainer.expected_clients)
    out = pipe.aggregate(updates, ctx)
    denominator = ctx.expected_clients if pipe.denominator == "expected" else out.measurements["weight_total"]
    return out.update * denominator


def _clipped(trainer: FederatedTrainer, flat: np.ndarray) -> np.ndarray:
    """A user-level client's upload: its update clipped to the run's (current) clip norm."""
    adaptive = trainer.privacy.adaptive_clip
    clip = adaptive.clip_norm if adaptive is not None else trainer.config.privacy.clip_norm
    norm = float(np.linalg.norm(flat))
    return flat * min(1.0, clip / norm) if norm > 0 else flat


def update_inference(trainer: FederatedTrainer, *, targets: int, cohort_sizes: tuple[int, ...],
                     seed: int) -> dict[str, Any]:
    """Precision/recall/AUC of recovering each target's rated items, per server view."""
    model = copy.deepcopy(trainer.model)  # local training writes private rows; keep the audited model intact
    population = trainer.population
    rng = np.random.default_rng([seed, 0x0BD])
    chosen = rng.choice(population, min(targets, len(population)), replace=False)
    p = trainer.config.privacy
    flats: dict[int, np.ndarray] = {}
    rated: dict[int, np.ndarray] = {}

    def flat(user: int) -> np.ndarray:
        if user not in flats:
            data = trainer.client_data(user)
            client_rng = trainer.client_rng(trainer.round_index, user)
            if trainer.privacy.unit == "record":
                result, _ = train_client_dpsgd(
                    model, data, trainer.dpsgd_local, client_rng, noise_multiplier=trainer.privacy.noise_multiplier,
                    max_grad_norm=p.clip_norm, batch_size=p.record_batch_size, grad_sample_mode=p.grad_sample_mode,
                )
            else:
                result = train_client(model, data, trainer.local, client_rng)
            vector = np.zeros(trainer.layout.size)
            vector[trainer.layout.indices_for_items(result.items)] = result.delta
            flats[user] = vector
            mask = np.zeros(model.n_items, dtype=bool)
            mask[np.unique(data.items)] = True
            rated[user] = mask
        return flats[user]

    pipe, placement = _plaintext_copy(trainer.pipeline)
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
    user_level = trainer.privacy.unit == "user"
    # The attacker predicts as many items as a typical user rates (public statistics of the
    # service), never the target's own count, which would hand it part of the answer.
    k = max(1, round(float(np.mean([len(np.unique(trainer.client_data(int(u)).items)) for u in population]))))

    def judge(scores: np.ndarray, truth: np.ndarray):
        return evaluate_item_inference(scores, truth, num_predicted=k)

    for t, target in enumerate(chosen.tolist()):
        own = flat(target)
        truth = rated[target]
        upload = _clipped(trainer, own) if user_level else own
        views["upload"].append(judge(
            attack.score(ClientUpdateObservation(_item_table(trainer, upload))), truth))
        if placement == "distributed":
            share = _release(pipe, trainer, [own], t)
            views["noised_share"].append(judge(
                attack.score(AggregateObservation(_item_table(trainer, share), 1)), truth))
        others_pool = population[population != target]
        for n in sizes:
            cohort = [own, *(flat(int(o)) for o in rng.choice(others_pool, n - 1, replace=False))]
            if placement == "central":
                clean = _release(pipe, trainer, cohort, t, strip_noise=True)
                views[f"clean_sum_n={n}"].append(judge(
                    attack.score(AggregateObservation(_item_table(trainer, clean), n)), truth))
            released = _release(pipe, trainer, cohort, t)
            views[f"released_sum_n={n}"].append(judge(
                attack.score(AggregateObservation(_item_table(trainer, released), n)), truth))
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
