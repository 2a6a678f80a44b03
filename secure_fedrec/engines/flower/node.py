"""What one Flower node does, without Flower: a partition of users, trained and masked locally.

Node ``k`` of ``K`` hosts the users ``u`` with ``u % K == k``. It loads the
same data as the in-process engine (from the same config) and keeps only its
users' ratings; it trains each sampled user with the engine's own
:func:`~secure_fedrec.engine.client.train_client`, and every *user* is one
party of the secure-aggregation protocol (a :class:`protocols.masking.MaskingClient`
per user), so the protocol's population, threshold and quantization are the
in-process engine's. The node returns one protocol frame per user; the
server never sees a user's update in the clear.

Each handler takes the node's state (a dict the Flower ClientApp persists in
``Context.state``) and a request payload, and returns a reply payload. The
handlers are pure Python so the tests can drive them without Flower.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...config import RunConfig, config_from_dict
from ...data.dataset import Split
from ...evaluation import evaluate
from ...models import FederatedModel
from ...runner import load_data, make_split
from .codec import Payload, f64_array, f64_bytes, i64_bytes
from .compat import (
    client_training_rng,
    clip_l2,
    ddg_encode,
    example_weight,
    privacy_session,
    quantize_for_sum,
)
from .paillier import public_identity
from .stages import deliver

if TYPE_CHECKING:  # importing privacy before engine in a fresh process is circular
    from ...privacy.session import PrivacySession

__all__ = ["NodeWorkspace", "handle_evaluate", "handle_train", "users_of", "workspace"]


def users_of(partition: int, num_partitions: int, n_users: int) -> np.ndarray:
    """The users a node hosts: a fixed, data-independent partition."""
    return np.arange(partition, n_users, num_partitions, dtype=np.int64)


@dataclass
class NodeWorkspace:
    """Everything a node derives from the config once per process (data, model, layout)."""

    config: RunConfig
    split: Split
    model: FederatedModel
    initial_private: dict[str, torch.Tensor]
    client_rows: list[np.ndarray]
    #: the run's privacy plan, derived by the node itself (DP-SGD multiplier, noise shares)
    privacy: PrivacySession

    @property
    def paillier_min_clients(self) -> int:
        """The floor this node's Paillier parties enforce: ``secure_sum_protocol``'s."""
        from ...engine.protocols import secure_sum_protocol

        protocol = secure_sum_protocol(self.config, self.privacy.expected_clients,
                                       min_survivors=self.privacy.min_survivors)
        return int(protocol.min_clients)

    def reset_user(self, user: int, stored: dict[str, np.ndarray] | None) -> None:
        """Put the user's private rows (stored, or the seeded initial ones) into the model."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name in self.model.private_names:
                source = (torch.as_tensor(stored[name]) if stored is not None
                          else self.initial_private[name][user])
                params[name][user].copy_(source)

    def private_rows(self, user: int) -> dict[str, np.ndarray]:
        return {n: t.numpy().copy() for n, t in self.model.private_rows(user).items()}

    def load_shared(self, params: np.ndarray) -> None:
        layout = self.model.layout()
        if params.shape != (layout.size,):
            raise ValueError(f"shared parameters have {params.size} entries, the model {layout.size}")
        self.model.load_shared_state(layout.unflatten(params))


@functools.lru_cache(maxsize=2)
def workspace(config_json: str) -> NodeWorkspace:
    """Load data and build the model exactly as the in-process engine does (same seed)."""
    from ...engine.inprocess import build_model_for

    config = config_from_dict(json.loads(config_json))
    split = make_split(config, load_data(config))
    model = build_model_for(config, split)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if n in model.private_names}
    train = split.train
    order = np.argsort(train.users, kind="stable")
    bounds = np.searchsorted(train.users[order], np.arange(train.n_users + 1))
    rows = [order[bounds[u]:bounds[u + 1]] for u in range(train.n_users)]
    return NodeWorkspace(config=config, split=split, model=model, initial_private=initial,
                         client_rows=rows,
                         privacy=privacy_session(config, split, model))


def _check_hosted(users: list[int], partition: int, num_partitions: int) -> None:
    foreign = [u for u in users if u % num_partitions != partition]
    if foreign:
        raise ValueError(f"node {partition}/{num_partitions} does not host users {foreign[:5]}")


def handle_train(state: dict[str, Any], request: Payload, partition: int,
                 num_partitions: int) -> Payload:
    """Train the sampled users; answer the protocol's first request for each of them.

    Request: ``config``, ``round``, ``params`` (float64 bytes), ``users``,
    ``slow`` (straggler flags), ``n_clients`` (users training this round: the
    quantizer's range depends on it), and for a secure protocol
    ``frame_users``/``frames`` (each user's SessionStart; none for Paillier,
    whose announcement comes in the next stage) and, for Paillier,
    ``paillier_keys`` (the folder with the dealer's public parameters).

    Privacy is applied here, on the node, exactly as the in-process engine's
    client half does it: DP-SGD for ``privacy.unit = "record"``; for
    ``"user"``, L2 clipping and then either quantization (central noise: the
    server adds it) or the distributed discrete Gaussian encoding (this node
    adds each user's noise share before the update is masked or encrypted).
    """
    from ...engine.client import ClientData, LocalTraining, train_client

    ws = workspace(request["config"])
    config = ws.config
    privacy = ws.privacy
    p = config.privacy
    users = [int(u) for u in request["users"]]
    _check_hosted(users, partition, num_partitions)
    round_index = int(request["round"])
    ws.load_shared(f64_array(request["params"]))
    t = config.training
    local = LocalTraining(epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr,
                          optimizer=t.optimizer, reg=t.reg, negatives=t.negatives)
    layout = ws.model.layout()
    private = state.setdefault("private", {})
    state["sessions"] = {}  # a new round: the last round's parties are gone
    reply: Payload = {"users": users, "losses": [], "weights": [], "indices": [], "values": []}
    steps: Payload = {"dp_noise_multipliers": [], "dp_sample_rates": [], "dp_steps": []}
    for user, slow in zip(users, request["slow"]):
        ws.reset_user(user, private.get(user))
        rows = ws.client_rows[user]
        data = ClientData(user=user, items=ws.split.train.items[rows],
                          ratings=ws.split.train.ratings[rows])
        rng = client_training_rng(config, round_index, user)
        epochs = 1 if slow else None
        if p.unit == "record":
            from ...privacy.dpsgd import dpsgd_local_training, train_client_dpsgd

            result, step = train_client_dpsgd(
                ws.model, data, dpsgd_local_training(local, p.record_optimizer, p.record_lr), rng,
                noise_multiplier=privacy.noise_multiplier, max_grad_norm=p.clip_norm, batch_size=p.record_batch_size,
                grad_sample_mode=p.grad_sample_mode, epochs=epochs)
            # The mechanism's public parameters, for the server's per-client accountant.
            steps["dp_noise_multipliers"].append(float(step.noise_multiplier))
            steps["dp_sample_rates"].append(float(step.sample_rate))
            steps["dp_steps"].append(int(step.steps))
        else:
            result = train_client(ws.model, data, local, rng, epochs=epochs)
        private[user] = ws.private_rows(user)
        # under DP the loss is data no mechanism covers: it is not sent (as in-process)
        reply["losses"].append(float(result.loss) if p.unit == "none" else float("nan"))
        reply["weights"].append(example_weight(config, result.num_examples))
        reply["indices"].append(i64_bytes(layout.indices_for_items(result.items)))
        reply["values"].append(f64_bytes(result.delta))
    if p.unit == "record":
        reply.update(steps)
    if config.aggregation.protocol == "plaintext":
        return reply  # the server's pipeline clips and noises (central DP trusts the server)

    n_clients = int(request["n_clients"])
    inputs = {}
    clipped = 0
    l2_clipped = 0
    for j, user in enumerate(users):
        dense = np.zeros(layout.size, dtype=np.float64)
        dense[np.frombuffer(reply["indices"][j], dtype="<i8")] = np.frombuffer(reply["values"][j], dtype="<f8")
        if p.unit == "user":
            dense, was_clipped = clip_l2(dense, p.clip_norm)
            l2_clipped += was_clipped
        if privacy.ddg_plan is not None:
            inputs[user] = ddg_encode(dense, privacy.ddg_plan)
        else:
            inputs[user], n_clipped = quantize_for_sum(config, dense, reply["weights"][j], n_clients)
            clipped += n_clipped
    # Only the masked / encrypted protocol frames leave the node, never the update itself.
    out: Payload = {"users": users, "losses": reply["losses"], "coordinates_clipped": clipped,
                    "l2_clipped": l2_clipped}
    if p.unit == "record":
        out.update(steps)
    sessions = state["sessions"]
    if config.aggregation.protocol == "paillier":
        from .paillier import paillier_uploaders

        identities = state.setdefault("identities", {})
        sessions.update(paillier_uploaders(users, inputs, identities, request["paillier_keys"],
                                           min_clients=ws.paillier_min_clients,
                                           round_index=round_index))
        out["identity_keys"] = [public_identity(identities[u]) for u in users]
        out.update({"frame_users": [], "frames": [], "errors": []})
        return out

    from protocols.masking import MaskingClient

    for user in users:
        client = MaskingClient(user)
        client.set_input(inputs[user])
        sessions[user] = client
    out.update(deliver(sessions, request))
    return out


def handle_evaluate(state: dict[str, Any], request: Payload, partition: int,
                    num_partitions: int) -> Payload:
    """The engine's :func:`evaluate` on this node's users' test ratings, with their counts.

    Every metric is a mean over test rows, so the server recombines the
    nodes' answers exactly by weighting with ``n_test`` (RMSE via its square).
    """
    ws = workspace(request["config"])
    ws.load_shared(f64_array(request["params"]))
    private = state.get("private", {})
    hosted = users_of(partition, num_partitions, ws.split.train.n_users)
    for user in hosted.tolist():
        ws.reset_user(user, private.get(user))
    test = ws.split.test
    mine = np.isin(test.users, hosted)
    n_test = int(mine.sum())
    if n_test == 0:
        return {"n_test": 0, "names": [], "values": [], "labels": [], "label_values": []}
    node_split = Split(train=ws.split.train, test=test.subset(mine), protocol=ws.split.protocol,
                       seed=ws.split.seed)
    cfg = ws.config.evaluation
    metrics = evaluate(ws.model, node_split, k=cfg.k, ranking=cfg.ranking,
                       sampled_negatives=cfg.sampled_negatives, seed=ws.config.seed)
    numbers = {k: float(v) for k, v in metrics.items() if not isinstance(v, str)}
    labels = {k: v for k, v in metrics.items() if isinstance(v, str)}
    return {"n_test": n_test, "names": list(numbers), "values": list(numbers.values()),
            "labels": list(labels), "label_values": list(labels.values())}
