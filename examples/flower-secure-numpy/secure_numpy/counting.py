"""A Grid that counts the exchanges and the bytes of the records it carries (for the cost table)."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from protocols.flower.workflow import record_bytes


def _size(message: Message) -> int:
    return record_bytes(message.content) if message.has_content() else 0


class CountingGrid(Grid):
    """Delegates everything to ``grid`` (Flower's ``send_and_receive`` included, 3 s polls and all)."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.exchanges = 0
        self.bytes_down = 0
        self.bytes_up = 0

    def snapshot(self) -> tuple[int, int, int]:
        return self.exchanges, self.bytes_down, self.bytes_up

    def since(self, before: tuple[int, int, int]) -> dict[str, int]:
        now = self.snapshot()
        return {"exchanges": now[0] - before[0], "bytes_down": now[1] - before[1],
                "bytes_up": now[2] - before[2]}

    def set_run(self, run_id):
        return self._grid.set_run(run_id)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, *args, **kwargs):
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self):
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self.exchanges += 1
        self.bytes_down += sum(_size(m) for m in messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        self.bytes_up += sum(_size(m) for m in replies)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self.exchanges += 1
        self.bytes_down += sum(_size(m) for m in messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.bytes_up += sum(_size(m) for m in replies)
        return replies
