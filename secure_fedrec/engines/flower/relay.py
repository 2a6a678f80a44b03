"""Moving protocol frames between the server's sans-IO party and the users' parties on the nodes.

One Flower message per node per stage carries the frames of all the users it
hosts (``frame_users``/``frames``); the reply carries theirs. The server's party
gets every reply frame through ``receive`` (a typed protocol error rejects that
frame only: its sender becomes a dropout, as in the in-process drivers). A
:class:`ProtocolTally` adds up what one round of a protocol cost, in the keys
the in-process engine reports too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from protocols.errors import ProtocolError

from ...rounds.client import RoundReports
from .codec import Payload

__all__ = ["ProtocolTally", "RoundIO", "group_frames", "take_replies"]

log = logging.getLogger(__name__)


@dataclass
class ProtocolTally:
    """What one round of a protocol cost, and who took part in it."""

    parties: frozenset[int]
    sent: dict[int, int] = field(default_factory=dict)  # user -> bytes it sent
    received: dict[int, int] = field(default_factory=dict)  # user -> bytes it received
    gone: set[int] = field(default_factory=set)  # dropped for the rest of the round
    rejected: int = 0  # frames the server refused (or sent for users a node does not host)
    errors: list[str] = field(default_factory=list)  # protocol errors the nodes' parties reported
    client_seconds: float = 0.0  # CPU of the users' parties, as their nodes measured it
    server_seconds: float = 0.0  # CPU of the server's party

    def server(self, step: Callable[[], object]):
        """Run one step of the server's party, counting its CPU."""
        clock = time.process_time()
        try:
            return step()
        finally:
            self.server_seconds += time.process_time() - clock


def group_frames(outgoing: Iterable[tuple[int, bytes]], tally: ProtocolTally, *,
                 partition_of: Callable[[int], int], skip: Callable[[int], bool],
                 request_for: Callable[[int], Payload],
                 requests: dict[int, Payload] | None = None) -> dict[int, Payload]:
    """Batch the server's frames per node: ``requests`` (partition -> payload) gains
    ``frame_users``/``frames``; a user for whom ``skip`` is true (its node is dead, or
    it is scheduled to vanish here) gets nothing and is gone for the rest of the round."""
    requests = {} if requests is None else requests
    for user, frame in outgoing:
        if user in tally.gone or skip(user):
            tally.gone.add(user)
            continue
        tally.received[user] = tally.received.get(user, 0) + len(frame)
        partition = partition_of(user)
        request = requests.get(partition)
        if request is None:
            request = requests[partition] = request_for(partition)
        request.setdefault("frame_users", []).append(user)
        request.setdefault("frames", []).append(frame)
    return requests


def take_replies(replies: Mapping[int, Payload], tally: ProtocolTally, *,
                 partition_of: Callable[[int], int], receive: Callable[[bytes], None],
                 on_accepted: Callable[[int, bytes], None] | None = None) -> None:
    """Hand every reply frame to the server's party; count bytes, refusals and the nodes'
    own protocol errors and CPU."""
    clock = time.process_time()
    for partition, reply in replies.items():
        tally.errors.extend(str(e) for e in reply.get("errors", []))
        tally.client_seconds += float(reply.get("protocol_seconds", 0.0))
        for user, frame in zip(reply.get("frame_users", []), reply.get("frames", [])):
            user = int(user)
            if user not in tally.parties or partition_of(user) != partition:
                tally.rejected += 1  # a node answering for a user it does not host
                continue
            frame = bytes(frame)
            tally.sent[user] = tally.sent.get(user, 0) + len(frame)
            try:
                receive(frame)
            except ProtocolError as exc:
                tally.rejected += 1
                log.warning("rejected a frame of user %d: %s", user, exc)
                continue
            if on_accepted is not None:
                on_accepted(user, frame)
    tally.server_seconds += time.process_time() - clock


@dataclass
class RoundIO:
    """What a protocol's round needs from the coordinator: where each user lives, which nodes
    are gone, who is scheduled to vanish, and one exchange with the nodes.

    ``send(message_type, requests, stage)`` runs one exchange and returns the replies of
    the nodes that answered in time; ``train_requests()`` are the round's ``train``
    requests (one per node hosting a trainer, and per node that evaluates), and
    ``train_request(partition)`` a ``train`` request for a node that only relays frames;
    ``collect(replies)`` sums up the nodes' training reports.
    """

    round_index: int
    dropouts: Mapping[int, str]
    partition_of: Callable[[int], int]
    is_dead: Callable[[int], bool]
    send: Callable[[str, dict[int, Payload], str], dict[int, Payload]]
    train_requests: Callable[[], dict[int, Payload]]
    train_request: Callable[[int], Payload]
    collect: Callable[[Mapping[int, Payload]], RoundReports]

    def skips(self, stage: str) -> Callable[[int], bool]:
        """Users that get no frame of ``stage``: on a dead node, or scheduled to vanish there."""
        return lambda user: self.is_dead(self.partition_of(user)) or self.dropouts.get(user) == stage

    def stage_request(self, stage: str) -> Callable[[int], Payload]:
        return lambda partition: {"round": self.round_index, "stage": stage}

    def relay(self, message_type: str, outgoing: Iterable[tuple[int, bytes]], tally: ProtocolTally, *,
              stage: str, receive: Callable[[bytes], None],
              requests: dict[int, Payload] | None = None,
              on_accepted: Callable[[int, bytes], None] | None = None,
              **extra: object) -> dict[int, Payload]:
        """One stage: the server's frames out (batched per node), the users' frames back in."""
        request_for = self.train_request if message_type == "train" else self.stage_request(stage)
        requests = group_frames(outgoing, tally, partition_of=self.partition_of, skip=self.skips(stage),
                                request_for=request_for, requests=requests)
        for request in requests.values():  # every node of the exchange learns the stage
            request.update(stage=stage, **extra)
        replies = self.send(message_type, requests, stage)
        take_replies(replies, tally, partition_of=self.partition_of, receive=receive,
                     on_accepted=on_accepted)
        return replies
