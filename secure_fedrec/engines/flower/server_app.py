"""The Flower ServerApp: discovers the nodes, then runs :class:`.coordinator.FlowerCoordinator`.

Its run config is our ``RunConfig`` key for key, plus ``config-path``,
``out-dir`` and ``paillier-keys`` (:mod:`.run_config`); the nodes receive the
resolved config in their messages. The number of nodes is what the nodes' own
node-config says (``num-partitions``), and the engine recorded is ``flower-sim``
under Flower's simulation engine, ``flower`` otherwise.

``flwr run`` exits 0 even when the ServerApp fails, so the outcome is a file:
``metrics.json`` on success, ``error.json`` (with the traceback) on failure; the
ServerApp's log (``flwr run --stream``) names the folder.
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
from .deadlines import StageDeadline

__all__ = ["GridTransport", "app", "discover_nodes"]

# A child of Flower's logger, so that `flwr run --stream` shows where the results are.
log = logging.getLogger("flwr.secure_fedrec")
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
                 deadline: StageDeadline | None, round_index: int) -> Exchange:
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
        limit = None
        while waiting:
            elapsed = time.perf_counter() - started
            limit = deadline.limit(ex.reply_seconds) if deadline is not None else None
            if limit is not None and elapsed > limit:
                break
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
                ex.reply_seconds.append(time.perf_counter() - started)
            if waiting:
                time.sleep(POLL_SECONDS)
        for partition in waiting.values():
            ex.failed[partition] = f"no reply within {limit:.1f} s" if limit is not None else "no reply"
        ex.seconds = time.perf_counter() - started
        return ex


def _query(grid: Grid, nodes: list[int], seconds: float) -> dict[int, Payload]:
    """Ask ``nodes`` which partition they host; node id -> reply."""
    transport = GridTransport(grid, dict(enumerate(nodes)))
    ex = transport.exchange("query", {i: {} for i in range(len(nodes))}, round_index=0,
                            deadline=StageDeadline("query", fixed=max(1.0, seconds), factor=1.0, floor=1.0,
                                                   first=1.0, slowest_before=None))
    if ex.failed:
        raise RuntimeError(f"nodes did not answer the hello: {ex.failed}")
    return {nodes[i]: reply for i, reply in ex.replies.items()}


def discover_nodes(grid: Grid, wait_seconds: float, expected: int | None = None) -> dict[int, int]:
    """Wait for the nodes and ask each its partition; returns partition -> node id.

    How many nodes the job has is what the nodes say (their node-config's
    ``num-partitions``: Flower's simulation sets it, a deployment passes it to each
    SuperNode), unless ``expected`` is given; every node must report the same number
    and a distinct partition.
    """
    deadline = time.monotonic() + wait_seconds
    mapping: dict[int, int] = {}
    asked: set[int] = set()
    total = expected
    while True:
        new = sorted(set(grid.get_node_ids()) - asked)
        if new:
            for node, reply in _query(grid, new, deadline - time.monotonic()).items():
                partition, count = int(reply["partition_id"]), int(reply["num_partitions"])
                total = count if total is None else total
                if count != total or partition in mapping or not 0 <= partition < total:
                    raise RuntimeError(f"node {node} reports partition {partition} of {count}; expected a "
                                       f"distinct partition of {total}")
                mapping[partition] = node
            asked.update(new)
        if total is not None and len(mapping) >= total:
            return mapping
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(mapping)} of {total if total is not None else 'the'} nodes "
                               f"connected within {wait_seconds} s")
        time.sleep(0.2)


def default_out_dir(run_id: int) -> Path:
    return Path.home() / "secure-fedrec-runs" / f"flower-{run_id}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    from ...inputs import load_data, make_split
    from ...outputs import write_json_atomic
    from .run_config import engine_name, run_config_from_flower, with_engine

    started = time.perf_counter()
    rc = context.run_config
    out = Path(str(rc.get("out-dir", "") or default_out_dir(context.run_id))).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    log.info("secure_fedrec run %s: results in %s", context.run_id, out)
    try:
        config = with_engine(run_config_from_flower(rc), engine_name(grid))
        mapping = discover_nodes(grid, config.flower.node_wait_timeout)
        data = load_data(config)
        split = make_split(config, data)
        progress = out / "progress.jsonl"

        def on_event(event: dict) -> None:
            with progress.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"time": time.time(), **event}) + "\n")

        coordinator = FlowerCoordinator(config, data, split, GridTransport(grid, mapping), len(mapping),
                                        on_event=on_event,
                                        paillier_keys=str(rc.get("paillier-keys", "")) or None)
        coordinator.run()
        result = coordinator.result(started, {"node_ids": {str(p): n for p, n in mapping.items()}})
        np.save(out / "final_params.npy", coordinator.server.params)
        write_json_atomic(out / "metrics.json", result)
        log.info("secure_fedrec run %s done: %s", context.run_id, json.dumps(result["final"]))
    except BaseException as exc:
        write_json_atomic(out / "error.json", {"error": f"{type(exc).__name__}: {exc}",
                                               "traceback": traceback.format_exc()})
        log.error("secure_fedrec run %s failed: %s: %s (details in %s)", context.run_id,
                  type(exc).__name__, exc, out / "error.json")
        raise
