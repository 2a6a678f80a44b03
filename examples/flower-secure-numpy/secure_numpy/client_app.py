"""The ClientApp: a NumPyClient, and the secure-aggregation mod the run config asks for."""

from __future__ import annotations

import json
import os
import time

from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from protocols.flower import secure_aggregation_mod

from .task import load_data, mse, train


class LinearClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        rc = context.run_config
        self.partition = int(context.node_config["partition-id"])
        self.x, self.y = load_data(self.partition, int(rc["model-size"]), int(rc["examples-per-node"]))
        self.steps, self.lr = int(rc["local-steps"]), float(rc["learning-rate"])

    def fit(self, parameters, config):
        params = train(parameters, self.x, self.y, self.steps, self.lr)
        return params, len(self.y), {"train_mse": mse(params, self.x, self.y)}

    def evaluate(self, parameters, config):
        loss = mse(parameters, self.x, self.y)
        return loss, len(self.y), {"mse": loss}


def client_fn(context: Context):
    return LinearClient(context).to_client()


def chosen_mod(msg: Message, context: Context, call_next) -> Message:
    """The run config's secure aggregation. In your own app, list the mod you use directly:
    ``ClientApp(client_fn, mods=[secure_aggregation_mod])``."""
    aggregation = str(context.run_config["aggregation"])
    if aggregation == "ours":
        mod = secure_aggregation_mod
    elif aggregation == "flower-secagg+":
        mod = secaggplus_mod
    else:
        return call_next(msg, context)
    costs = str(context.run_config.get("costs-file", ""))
    if not costs or msg.metadata.message_type != "train":
        return mod(msg, context, call_next)
    # For the cost table: the mod's CPU without the app's training.
    trained = [0.0]

    def timed_next(inner: Message, ctx: Context) -> Message:
        clock = time.process_time()
        try:
            return call_next(inner, ctx)
        finally:
            trained[0] += time.process_time() - clock

    clock = time.process_time()
    reply = mod(msg, context, timed_next)
    cpu = time.process_time() - clock - trained[0]
    with open(costs + ".nodes", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "round": msg.metadata.group_id,
                             "node": int(context.node_config["partition-id"]), "cpu_seconds": cpu}) + "\n")
    return reply


app = ClientApp(client_fn=client_fn, mods=[chosen_mod])
