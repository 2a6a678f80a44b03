"""The Flower ServerApp: discovers the nodes, then runs :class:`.coordinator.FlowerCoordinator`.

Run-config keys (``[tool.flwr.app.config]``, set by the launcher): ``config-path``
(our TOML run config, read by the server; nodes receive it in their
messages), ``out-dir`` (where metrics.json goes), ``num-nodes``,
``train-timeout`` / ``stage-timeout`` (seconds a node may take to answer
before it counts as dropped; 0 = wait forever), ``node-wait-timeout`` and,
for Paillier, ``paillier-keys`` (the dealer's folder; the server reads only
its public parameters).

``flwr run`` exits 0 even when the ServerApp fails, so the outcome is a file:
``metrics.json`` on success, ``error.json`` (with the traceback) on failure.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from .codec import PAYLOAD_KEY, Payload, payload_size
from .coordinator import Exchange, FlowerCoordinator

__all__ = ["GridTransport", "app", "discover_nodes"]

log = logging.getLogger(__name__)
POLL_SECONDS = 0.05  # Grid.send_and_receive polls every 3 s, which would dominate a round

app = ServerApp()


class GridTransport:
    """Our request/reply step over a Flower Grid: push, then pull until answered or timed out.

    Replies are matched to requests by ``reply_to_message_id`` (an error
    reply's source is not the failed node); an error reply or no reply by the
    deadline marks the node as failed, which the coordinator treats as a
    dropout of all its users.
    """

    def __init__(self, grid: Grid, node_of_partition: Mapping[int, int]) -> None:
        self.grid = grid
        self.node_of_partition = dict(node_of_partition)

    def exchange(self, message_type: str, requests: Mapping[int, Payload], *,
                 timeout: float | None, round_index: int) -> Exchange:
        started = time.perf_counter()
        ex = Exchange(replies={})
        messages = []
        partitions = []
        for partition, payload in requests.items():
            messages.append(Message(RecordDict({PAYLOAD_KEY: ConfigRecord(dict(payload))}),
                                    dst_node_id=self.node_of_partition[partition],
                                    message_type=message_type, group_id=str(round_index)))
            partitions.append(partition)
            ex.bytes_down += payload_size(payload)
        ids = list(self.grid.push_messages(messages))
        waiting = {mid: p for mid, p in zip(ids, partitions) if mid}
        for p, mid in zip(partitions, ids):
            if not mid:
                ex.failed[p] = "could not be sent"
        deadline = None if not timeout else time.monotonic() + timeout
        while waiting and (deadline is None or time.monotonic() < deadline):
            for reply in self.grid.pull_messages(list(waiting)):
                partition = waiting.pop(reply.metadata.reply_to_message_id, None)
                if partition is None:
                    continue
                if reply.has_error():
                    ex.failed[partition] = f"error reply {reply.error.code}: {reply.error.reason}"
                    continue
                payload = dict(reply.content.config_records[PAYLOAD_KEY])
                ex.bytes_up += payload_size(payload)
                ex.replies[partition] = payload
            if waiting:
                time.sleep(POLL_SECONDS)
        for partition in waiting.values():
            ex.failed[partition] = f"no reply within {timeout} s"
        ex.seconds = time.perf_counter() - started
        return ex


def discover_nodes(grid: Grid, num_nodes: int, wait_seconds: float) -> dict[int, int]:
    """Wait for ``num_nodes`` nodes, ask each its partition; returns partition -> node id."""
    deadline = time.monotonic() + wait_seconds
    nodes: list[int] = []
    while time.monotonic() < deadline:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= num_nodes:
            break
        time.sleep(0.5)
    if len(nodes) < num_nodes:
        raise RuntimeError(f"only {len(nodes)} of {num_nodes} nodes connected within {wait_seconds} s")
    hello = GridTransport(grid, {i: n for i, n in enumerate(nodes)})
    ex = hello.exchange("query", {i: {} for i in range(len(nodes))}, timeout=wait_seconds,
                        round_index=0)
    if ex.failed:
        raise RuntimeError(f"nodes did not answer the hello: {ex.failed}")
    mapping: dict[int, int] = {}
    for index, reply in ex.replies.items():
        partition, total = int(reply["partition_id"]), int(reply["num_partitions"])
        if total != num_nodes or partition in mapping or not 0 <= partition < total:
            raise RuntimeError(f"node {nodes[index]} reports partition {partition} of {total}; "
                               f"expected a distinct partition of {num_nodes}")
        mapping[partition] = nodes[index]
    return mapping


@app.main()
def main(grid: Grid, context: Context) -> None:
    from ...config import load_config
    from ...inputs import load_data, make_split
    from ...outputs import write_json_atomic

    started = time.perf_counter()
    rc = context.run_config
    out = Path(str(rc["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    try:
        config = load_config(str(rc["config-path"]))
        num_nodes = int(rc["num-nodes"])
        mapping = discover_nodes(grid, num_nodes, float(rc.get("node-wait-timeout", 120.0)))
        data = load_data(config)
        split = make_split(config, data)
        train_timeout = float(rc.get("train-timeout", 0.0)) or None
        stage_timeout = float(rc.get("stage-timeout", 0.0)) or None
        progress = out / "progress.jsonl"

        def on_event(event: dict) -> None:
            with progress.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"time": time.time(), **event}) + "\n")

        coordinator = FlowerCoordinator(config, data, split, GridTransport(grid, mapping), num_nodes,
                                        train_timeout=train_timeout, stage_timeout=stage_timeout,
                                        on_event=on_event,
                                        paillier_keys=str(rc.get("paillier-keys", "")) or None)
        coordinator.run()
        result = coordinator.result(started, {"mode": str(rc.get("mode", "")),
                                              "node_ids": {str(p): n for p, n in mapping.items()}})
        result["engine"] = "flower-sim" if str(rc.get("mode", "")) == "sim" else "flower"
        np.save(out / "final_params.npy", coordinator.server.params)
        write_json_atomic(out / "metrics.json", result)
    except BaseException as exc:
        write_json_atomic(out / "error.json", {"error": f"{type(exc).__name__}: {exc}",
                                               "traceback": traceback.format_exc()})
        raise
