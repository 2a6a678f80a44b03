"""Route one request payload to the node handler its message type names.

Shared by the Flower ClientApp and the in-memory transport, so both run the
very same node code; the node's state goes in and out as one pickled blob
(see :mod:`.codec`).
"""

from __future__ import annotations

from typing import Any

from .codec import Payload, dump_node_state, load_node_state
from .stages import handle_hello, handle_stage

__all__ = ["dispatch"]


def dispatch(message_type: str, request: Payload, state_blob: bytes,
             node_config: dict[str, Any]) -> tuple[Payload, bytes]:
    """Handle one message; returns the reply payload and the node's new state blob."""
    partition = int(node_config["partition-id"])
    num_partitions = int(node_config["num-partitions"])
    if message_type == "query":
        return handle_hello(node_config), state_blob
    state = load_node_state(state_blob)
    if message_type == "train":
        from .node import (
            handle_train,  # torch and the model: only where training happens
        )

        reply = handle_train(state, request, partition, num_partitions)
    elif message_type == "train.stage":
        reply = handle_stage(state, request)
    elif message_type == "evaluate":
        from .node import handle_evaluate

        reply = handle_evaluate(state, request, partition, num_partitions)
    else:
        raise ValueError(f"unknown message type {message_type!r}")
    return reply, dump_node_state(state)
