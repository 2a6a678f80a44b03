"""For comparison: the same job with Flower's own SecAgg+ (``secaggplus_mod`` + ``SecAggPlusWorkflow``).

Flower's SecAgg+ aggregates one vector per *node*, so here each node is the
protocol party and holds the sum of its sampled users' updates,
``[Σ delta_u, Σ weight_u]``; the workflow returns the nodes' mean, which the
server scales back by the number of surviving nodes to get the same
``Σ delta / Σ weight`` the in-process ``Mean`` computes, then steps the same
server optimizer. Everything else — sampling, local training, evaluation —
is the code the main Flower App runs. Differences from our protocol, by
design of Flower's: parties are nodes (the server learns per-node sums), the
masks come from a non-cryptographic PRG, quantization is Flower's (range
``clipping_range``, ``quantization_range`` levels), and simulated dropouts
(``training.dropout_rate``) are not applied.

Uses Flower's legacy Strategy/NumPyClient API, which its SecAgg+ requires.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import (
    EvaluateIns,
    FitIns,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from ...config import config_to_dict
from ...rounds.metrics import RoundMetrics
from ...rounds.wire import broadcast_to_json
from .codec import (
    dump_node_state,
    f64_array,
    i64_array,
    i64_bytes,
    load_node_state,
    model_bytes,
)
from .coordinator import FlowerCoordinator, combine_evaluations

__all__ = ["SecAggPlusStrategy", "client_app", "server_app"]

STATE_KEY = "sfr-node"


class SecAggPlusStrategy(Strategy):
    """Our round plan and server step, as the Strategy Flower's SecAgg+ workflow drives."""

    def __init__(self, coordinator: FlowerCoordinator) -> None:
        if coordinator.config.aggregation.protocol != "plaintext":
            raise ValueError("the comparison's coordinator runs the plaintext pipeline: its nodes return "
                             "per-user float updates that Flower's SecAgg+ then sums")
        self.co = coordinator
        self.round_started = 0.0
        self.pending: RoundMetrics | None = None
        self.server = coordinator.server

    def _partitions(self, client_manager) -> list[tuple[int, Any]]:
        proxies = sorted(client_manager.all().values(), key=lambda p: int(p.node_id))
        return list(enumerate(proxies))

    def initialize_parameters(self, client_manager):
        return ndarrays_to_parameters([np.zeros(1)])  # our parameters travel in the config

    def configure_fit(self, server_round, parameters, client_manager):
        self.round_started = time.perf_counter()
        plan = self.server.plan_round(server_round - 1)
        partitions = self._partitions(client_manager)
        k = len(partitions)
        out = []
        for index, proxy in partitions:
            mine = [(u, s) for u, s in plan.trainers if u % k == index]
            config = {
                "config": self.co.config_json, "client_plan": self.co.plan_json, "round": server_round - 1,
                "broadcast": broadcast_to_json(self.server.broadcast(plan)),
                "params": model_bytes(self.server.params), "partition": index, "num_partitions": k,
                "users": i64_bytes(np.array([u for u, _ in mine], dtype=np.int64)),
                "slow": i64_bytes(np.array([int(s) for _, s in mine], dtype=np.int64)),
            }
            out.append((proxy, FitIns(ndarrays_to_parameters([np.zeros(1)]), config)))
        self.pending = RoundMetrics(round=server_round, sampled=len(plan.sampled), contributors=0,
                                    train_loss=float("nan"), seconds=0.0)
        return out

    def aggregate_fit(self, server_round, results, failures):
        server = self.server
        assert self.pending is not None
        if not results:
            return None, {}
        mean = parameters_to_ndarrays(results[0][1].parameters)[0]
        total = mean * len(results)  # the workflow returns the mean over surviving nodes (weight 1)
        weight_total = float(total[-1])
        if weight_total > 0:
            server.params = server.server_optimizer.step(server.params, total[:-1] / weight_total)
        losses = [float(r.metrics.get("loss_sum", 0.0)) for _, r in results]
        counts = [int(r.metrics.get("users", 0)) for _, r in results]
        self.pending.contributors = int(sum(counts))
        self.pending.train_loss = float(sum(losses) / max(1, sum(counts)))
        self.pending.measurements = {"weight_total": weight_total, "nodes_failed": float(len(failures)),
                                     "contributors": float(sum(counts))}
        return ndarrays_to_parameters([np.zeros(1)]), {}

    def configure_evaluate(self, server_round, parameters, client_manager):
        cfg = self.co.config.evaluation
        if not (server_round % cfg.every == 0 or server_round == self.co.config.training.rounds):
            self._close_round()
            return []
        partitions = self._partitions(client_manager)
        config = {"config": self.co.config_json, "params": model_bytes(self.server.params),
                  "num_partitions": len(partitions)}
        return [(proxy, EvaluateIns(parameters, {**config, "partition": index}))
                for index, proxy in partitions]

    def aggregate_evaluate(self, server_round, results, failures):
        replies = [json.loads(str(r.metrics["reply"])) for _, r in results]
        assert self.pending is not None
        self.pending.evaluation = combine_evaluations(replies, len(self.co.split.test), bool(failures))
        self._close_round()
        return None, {}

    def _close_round(self) -> None:
        if self.pending is None:
            return
        self.pending.seconds = time.perf_counter() - self.round_started
        self.co.history.append(self.pending)
        self.server.round_index += 1
        self.pending = None

    def evaluate(self, server_round, parameters):
        return None


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    from ...inputs import load_data, make_split
    from ...outputs import write_json_atomic
    from .run_config import engine_name, run_config_from_flower, with_engine
    from .server_app import default_out_dir

    started = time.perf_counter()
    rc = context.run_config
    out = Path(str(rc.get("out-dir", "") or default_out_dir(context.run_id))).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    try:
        config = with_engine(run_config_from_flower(rc), engine_name(grid))
        # A legacy ClientApp answers no "query": the node count is the config's (the launcher's).
        num_nodes = config.flower.nodes
        data = load_data(config)
        split = make_split(config, data)
        # Our nodes return per-user float updates (the plaintext pipeline), which each node adds up
        # and Flower's SecAgg+ then sums across nodes.
        plain = dataclasses.replace(config, aggregation=dataclasses.replace(config.aggregation,
                                                                             protocol="plaintext"))
        coordinator = FlowerCoordinator(plain, data, split, transport=None, num_partitions=num_nodes)  # type: ignore[arg-type]
        strategy = SecAggPlusStrategy(coordinator)
        t = config.training
        users_per_node = math.ceil(max(1.0, t.clients_per_round) / 1)  # worst case: all on one node
        clip = max(1.0, config.aggregation.coordinate_clip) * users_per_node
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=t.rounds),
                               strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=num_nodes, reconstruction_threshold=num_nodes // 2 + 1,
            clipping_range=clip, timeout=config.flower.stage_timeout or None))
        workflow(grid, legacy)
        result = coordinator.result(started, {"protocol": "flower-secagg+", "clipping_range": clip})
        result["engine"] = config.engine
        result["protocol"] = "flower-secagg+"
        result["config"] = config_to_dict(config)
        np.save(out / "final_params.npy", coordinator.server.params)
        write_json_atomic(out / "metrics.json", result)
    except BaseException as exc:
        write_json_atomic(out / "error.json", {"error": f"{type(exc).__name__}: {exc}",
                                               "traceback": traceback.format_exc()})
        raise


class _NodeClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context

    def _state(self) -> dict:
        record = self.context.state.config_records.get(STATE_KEY)
        return load_node_state(bytes(record["blob"]) if record is not None else b"")

    def _save(self, state: dict) -> None:
        from flwr.app import ConfigRecord

        self.context.state.config_records[STATE_KEY] = ConfigRecord({"blob": dump_node_state(state)})

    def fit(self, parameters, config):
        from .node import handle_train, workspace

        state = self._state()
        users = i64_array(bytes(config["users"])).tolist()
        slow = [bool(s) for s in i64_array(bytes(config["slow"])).tolist()]
        ws = workspace(str(config["config"]))
        size = ws.model.layout().size
        vector = np.zeros(size + 1)
        loss_sum = 0.0
        if users:
            reply = handle_train(state, {
                "config": str(config["config"]), "client_plan": str(config["client_plan"]),
                "broadcast": str(config["broadcast"]), "round": int(config["round"]),
                "params": bytes(config["params"]), "users": users, "slow": slow,
            }, int(config["partition"]), int(config["num_partitions"]))
            clip = ws.config.aggregation.coordinate_clip
            for j in range(len(reply["float_users"])):
                idx = i64_array(reply["indices"][j])
                # The same per-coordinate clip as QuantizedEncoding, before summing.
                np.add.at(vector, idx, np.clip(f64_array(reply["values"][j]), -clip, clip))
                vector[-1] += reply["weights"][j]
            loss_sum = float(sum(reply["losses"]))
            self._save(state)
        return [vector], 1, {"loss_sum": loss_sum, "users": len(users)}

    def evaluate(self, parameters, config):
        from .node import handle_evaluate

        state = self._state()
        reply = handle_evaluate(state, {"config": str(config["config"]),
                                        "params": bytes(config["params"])},
                                int(config["partition"]), int(config["num_partitions"]))
        return 0.0, max(1, int(reply["n_test"])), {"reply": json.dumps(reply)}


def _client_fn(context: Context):
    return _NodeClient(context).to_client()


client_app = ClientApp(client_fn=_client_fn, mods=[secaggplus_mod])
