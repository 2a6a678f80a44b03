"""An in-memory transport: the coordinator and K node states in one process, no Flower.

It runs exactly the node code the Flower ClientApp runs (through
:func:`.dispatch.dispatch`), so a test can check the coordinator/node split
against the in-process engine in seconds, and can play a node that dies.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from .codec import Payload, payload_size
from .coordinator import Exchange
from .deadlines import StageDeadline
from .dispatch import dispatch

__all__ = ["MemoryTransport"]


class MemoryTransport:
    def __init__(self, num_partitions: int) -> None:
        self.num_partitions = num_partitions
        self.states: dict[int, bytes] = {p: b"" for p in range(num_partitions)}
        #: (round_index, stage) -> partitions that die on receiving it; the stage is the
        #: request's ``stage`` for ``train.stage`` messages, else the message type ("train",
        #: "evaluate")
        self.kill_at: dict[tuple[int, str], set[int]] = {}
        self.killed: set[int] = set()

    def exchange(self, message_type: str, requests: Mapping[int, Payload], *,
                 deadline: StageDeadline, round_index: int) -> Exchange:
        started = time.perf_counter()
        ex = Exchange(replies={})
        for partition, request in requests.items():
            ex.bytes_down += payload_size(request)
            label = request.get("stage", message_type) if message_type == "train.stage" else message_type
            if partition in self.kill_at.get((round_index, label), set()):
                self.killed.add(partition)
            if partition in self.killed:
                ex.failed[partition] = "killed"
                continue
            node_config = {"partition-id": partition, "num-partitions": self.num_partitions}
            reply, self.states[partition] = dispatch(message_type, request, self.states[partition],
                                                     node_config)
            ex.bytes_up += payload_size(reply)
            ex.replies[partition] = reply
            ex.reply_seconds.append(time.perf_counter() - started)
        ex.seconds = time.perf_counter() - started
        return ex
