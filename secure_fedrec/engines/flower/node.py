"""What one Flower node does, without Flower: a partition of users, trained and encoded locally.

Node ``k`` of ``K`` hosts the users ``u`` with ``u % K == k``. It loads the
same data as the in-process engine (from the same config) and keeps only its
users' ratings. For each sampled user it runs the round's client step
(:func:`secure_fedrec.rounds.client.client_step`) with the client plan and the
broadcast the server sent — the very code the in-process engine runs, so the
training method, the clipping, the encoder and the noise shares are the
server's, not re-derived here. Every *user* is one party of the secure-aggregation
protocol (a :class:`protocols.masking.MaskingClient` per user); the node returns
one protocol frame per user, and the server never sees a user's update in the
clear (only under the plaintext "protocol", whose payload is the float update).

Each handler takes the node's state (a dict the Flower ClientApp persists in
``Context.state``) and a request payload, and returns a reply payload. The
handlers are pure Python so the tests can drive them without Flower.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...config import RunConfig, config_from_dict
from ...data.dataset import Split
from ...evaluation import MetricSums, evaluate_sums
from ...inputs import build_model_for, load_data, make_split
from ...models import FederatedModel
from ...models.base import ParamLayout
from ...rounds.client import ClientPlan, RoundReports, client_rng, client_step
from ...rounds.wire import broadcast_from_json, plan_from_json
from ...training.local import ClientData
from .codec import EVALUATION_PREFIX, Payload, f64_bytes, i64_bytes, model_array
from .paillier import public_identity
from .stages import deliver_stage

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

    @property
    def layout(self) -> ParamLayout:
        return self.model.layout()

    def client_data(self, user: int) -> ClientData:
        rows = self.client_rows[user]
        return ClientData(user=user, items=self.split.train.items[rows], ratings=self.split.train.ratings[rows])

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
    config = config_from_dict(json.loads(config_json))
    split = make_split(config, load_data(config))
    model = build_model_for(config, split)
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if n in model.private_names}
    train = split.train
    order = np.argsort(train.users, kind="stable")
    bounds = np.searchsorted(train.users[order], np.arange(train.n_users + 1))
    rows = [order[bounds[u]:bounds[u + 1]] for u in range(train.n_users)]
    return NodeWorkspace(config=config, split=split, model=model, initial_private=initial, client_rows=rows)


def _check_hosted(users: list[int], partition: int, num_partitions: int) -> None:
    foreign = [u for u in users if u % num_partitions != partition]
    if foreign:
        raise ValueError(f"node {partition}/{num_partitions} does not host users {foreign[:5]}")


@functools.lru_cache(maxsize=4)
def _client_plan(text: str) -> ClientPlan:
    return plan_from_json(text)


def handle_train(state: dict[str, Any], request: Payload, partition: int,
                 num_partitions: int) -> Payload:
    """Score the model if an evaluation is due, run the round's client step for the sampled
    users, and answer the protocol's first request.

    Request: ``config``, ``round``, ``params`` (float64 bytes), ``users``, ``slow``
    (straggler flags), ``client_plan`` and ``broadcast`` (JSON,
    :mod:`secure_fedrec.rounds.wire`), ``evaluate`` (score ``params`` on this node's users
    first: the previous round's model), and for a secure protocol the ``stage`` and the
    users' first frames (``frame_users``/``frames``): each trainer's SessionStart and
    ``min_clients`` (the session's floor) for a single session; under a key session
    (``keyed``) each member's announcement or ``RoundStart`` (members that do not train
    upload zeros); for Paillier ``paillier_keys`` (the dealer's public parameters).

    Reply: the evaluation (keys prefixed ``eval.``), the users' losses (none under DP),
    the totals of their client measurements, the DP-SGD steps each ran (record level),
    and their payloads: float rows for plaintext, protocol frames otherwise. A user whose
    update was not finite sends no payload: the server sees a dropout.
    """
    reply: Payload = {}
    if request.get("evaluate"):
        evaluation = handle_evaluate(state, request, partition, num_partitions)
        reply.update({EVALUATION_PREFIX + k: v for k, v in evaluation.items()})
    users = [int(u) for u in request.get("users", [])]
    _check_hosted(users, partition, num_partitions)
    private = state.setdefault("private", {})
    client_states = state.setdefault("client_states", {})  # e.g. the private rows' optimizer moments
    state["sessions"] = {}  # a new round: the last round's single-session parties are gone
    reports = []
    ws = workspace(request["config"]) if users else None
    if ws is not None:
        plan = _client_plan(request["client_plan"])
        broadcast = broadcast_from_json(request["broadcast"])
        ws.load_shared(model_array(request["params"]))
        for user, slow in zip(users, request["slow"]):
            ws.reset_user(user, private.get(user))
            rng = client_rng(ws.config.seed, broadcast.round_index, user)
            reports.append(client_step(ws.model, ws.layout, ws.client_data(user), plan, broadcast, rng,
                                       slow=bool(slow), state=client_states.setdefault(user, {})))
            private[user] = ws.private_rows(user)
    # Only totals leave the node: a deployment's server never sees one user's diagnostics.
    summary = RoundReports.collect(reports, diagnostics=False)
    reply.update({
        "users": users, "losses": summary.losses, "reporting": summary.reporting, "diverged": summary.diverged,
        "total_names": list(summary.totals), "total_values": list(summary.totals.values()),
        "spent_users": [u for u, _ in summary.spent],
        "dp_noise_multipliers": [float(s.noise_multiplier) for _, s in summary.spent],
        "dp_sample_rates": [float(s.sample_rate) for _, s in summary.spent],
        "dp_steps": [int(s.steps) for _, s in summary.spent],
    })
    payloads = {r.client: r.payload for r in reports if r.payload is not None}
    protocol = json.loads(request["config"])["aggregation"]["protocol"]
    if protocol == "plaintext":
        reply.update(float_users=list(payloads), indices=[i64_bytes(u.indices) for u in payloads.values()],
                     values=[f64_bytes(u.values) for u in payloads.values()],
                     weights=[float(u.weight) for u in payloads.values()])
        return reply
    if request.get("keyed"):
        from .stages import start_key_session

        reply["input_users"] = list(payloads)
        state["inputs"] = payloads  # each member's input of the round, given at its RoundStart
        if request.get("stage") == "advertise_keys":
            start_key_session(state, request)
        reply.update(deliver_stage(state, request))
        return reply
    sessions = state["sessions"]
    if "min_clients" not in request:  # the round is too small for a session: train only
        return reply
    if protocol == "paillier":
        from .paillier import paillier_uploaders

        identities = state.setdefault("identities", {})
        sessions.update(paillier_uploaders(list(payloads), payloads, identities, request["paillier_keys"],
                                           min_clients=int(request["min_clients"]),
                                           round_index=int(request["round"])))
        reply["identity_users"] = list(payloads)
        reply["identity_keys"] = [public_identity(identities[u]) for u in payloads]
        return reply

    from protocols.masking import MaskingClient

    for user, payload in payloads.items():
        client = MaskingClient(user)
        client.set_input(payload)
        sessions[user] = client
    reply.update(deliver_stage(state, request))
    return reply


def handle_evaluate(state: dict[str, Any], request: Payload, partition: int,
                    num_partitions: int) -> Payload:
    """The engine's evaluation of this node's users, as sums and counts per metric
    (:class:`~secure_fedrec.evaluation.MetricSums`): the server adds the nodes' sums, which
    is exact for rating metrics (means over test rows) and ranking metrics (means over users)."""
    ws = workspace(request["config"])
    ws.load_shared(model_array(request["params"]))
    private = state.get("private", {})
    hosted = users_of(partition, num_partitions, ws.split.train.n_users)
    for user in hosted.tolist():
        ws.reset_user(user, private.get(user))
    test = ws.split.test
    mine = np.isin(test.users, hosted)
    n_test = int(mine.sum())
    if n_test == 0:
        return {"n_test": 0, **MetricSums({}, {}, {}).to_json()}
    node_split = Split(train=ws.split.train, test=test.subset(mine), protocol=ws.split.protocol,
                       seed=ws.split.seed)
    cfg = ws.config.evaluation
    sums = evaluate_sums(ws.model, node_split, k=cfg.k, ranking=cfg.ranking, recall_k=cfg.recall_k,
                         sampled_negatives=cfg.sampled_negatives, seed=ws.config.seed)
    return {"n_test": n_test, **sums.to_json()}
