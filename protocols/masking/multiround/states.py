"""Legal transitions of the multi-round masking session, in one place.

The setup runs once (keys, then the arming of the first two rounds); then
each round is two exchanges: ``RoundStart`` → ``RoundUpload`` (or, from a
client that is not armed for the round, ``Armings`` for the next ones), and
``RoundUnmaskRequest`` → ``RoundUnmaskShares``. Anything not listed here is a
protocol error that moves the party to ``ABORTED``.
"""

from __future__ import annotations

from enum import Enum

from .. import messages as m
from . import messages as mr

__all__ = ["CLIENT_MOVES", "SERVER_EXPECTS", "STAGE_NAMES", "ClientState", "ServerStage"]


class ClientState(Enum):
    IDLE = "idle"  # waiting for the announcement
    ADVERTISED = "advertised"  # sent keys, waiting for the key directory
    READY = "ready"  # between rounds, waiting for a RoundStart
    UPLOADED = "uploaded"  # sent this round's masked input, waiting for its unmask request
    DONE = "done"  # answered the last round's unmask request; terminal
    ABORTED = "aborted"  # terminal


class ServerStage(Enum):
    COLLECT_KEYS = "advertise_keys"
    COLLECT_ARMING = "arming"
    BETWEEN_ROUNDS = "between_rounds"  # a round may start (start_round)
    COLLECT_UPLOADS = "masked_input"
    COLLECT_UNMASK = "unmasking"
    DONE = "done"
    ABORTED = "aborted"


#: Dropout-schedule stage names: the setup's, then each round's.
SETUP_STAGES: tuple[str, ...] = (ServerStage.COLLECT_KEYS.value, ServerStage.COLLECT_ARMING.value)
ROUND_STAGES: tuple[str, ...] = (ServerStage.COLLECT_UPLOADS.value,
                                 ServerStage.COLLECT_UNMASK.value)
STAGE_NAMES = SETUP_STAGES + ROUND_STAGES

#: (state, incoming kind) -> the states the handler may move to.
CLIENT_MOVES: dict[tuple[ClientState, int], frozenset[ClientState]] = {
    (ClientState.IDLE, mr.SessionAnnouncement.KIND): frozenset({ClientState.ADVERTISED}),
    (ClientState.ADVERTISED, m.KeyDirectory.KIND): frozenset({ClientState.READY}),
    (ClientState.READY, mr.RoundStart.KIND): frozenset({ClientState.READY, ClientState.UPLOADED,
                                                        ClientState.DONE}),
    # The previous round's unmask request never came (the upload arrived late, or the
    # client was not needed): a later round may still start.
    (ClientState.UPLOADED, mr.RoundStart.KIND): frozenset({ClientState.READY,
                                                           ClientState.UPLOADED,
                                                           ClientState.DONE}),
    (ClientState.UPLOADED, mr.RoundUnmaskRequest.KIND): frozenset({ClientState.READY,
                                                                   ClientState.DONE}),
}

#: The message kinds the server collects in each stage.
SERVER_EXPECTS: dict[ServerStage, frozenset[int]] = {
    ServerStage.COLLECT_KEYS: frozenset({m.AdvertiseKeys.KIND}),
    ServerStage.COLLECT_ARMING: frozenset({mr.Armings.KIND}),
    ServerStage.COLLECT_UPLOADS: frozenset({mr.RoundUpload.KIND, mr.Armings.KIND}),
    ServerStage.COLLECT_UNMASK: frozenset({mr.RoundUnmaskShares.KIND}),
}
