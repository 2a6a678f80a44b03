"""Legal transitions of the masking protocol, in one place (h11 style).

The client and the server consult these tables before acting on a message;
anything not listed is a protocol error and moves the party to ``ABORTED``.
The docs draw the message-flow diagram from the same tables.
"""

from __future__ import annotations

from enum import Enum

from . import messages as m

__all__ = [
    "SERVER_EXPECTS",
    "STAGE_NAMES",
    "ClientState",
    "ServerStage",
    "client_next_state",
    "client_past_kinds",
    "server_next_stage",
]


class ClientState(Enum):
    IDLE = "idle"  # waiting for SessionStart
    ADVERTISED = "advertised"  # sent keys, waiting for KeyDirectory
    SHARED = "shared"  # sent encrypted shares, waiting for ShareBundle
    MASKED = "masked"  # sent masked input, waiting for ConsistencyRequest/UnmaskRequest
    SIGNED = "signed"  # active mode: signed the survivor set, waiting for UnmaskRequest
    DONE = "done"  # sent unmasking shares; terminal
    ABORTED = "aborted"  # terminal


class ServerStage(Enum):
    COLLECT_KEYS = "advertise_keys"
    COLLECT_SHARES = "share_keys"
    COLLECT_MASKED = "masked_input"
    COLLECT_SIGNATURES = "consistency_check"
    COLLECT_UNMASK = "unmasking"
    DONE = "done"
    ABORTED = "aborted"


#: The stage names used by dropout schedules, in protocol order.
STAGE_NAMES: tuple[str, ...] = tuple(
    s.value for s in ServerStage if s not in (ServerStage.DONE, ServerStage.ABORTED)
)

# (state, incoming message kind, active mode?) -> next state; None = both modes.
_CLIENT_TABLE: dict[tuple[ClientState, int], tuple[ClientState, bool | None]] = {
    (ClientState.IDLE, m.SessionStart.KIND): (ClientState.ADVERTISED, None),
    (ClientState.ADVERTISED, m.KeyDirectory.KIND): (ClientState.SHARED, None),
    (ClientState.SHARED, m.ShareBundle.KIND): (ClientState.MASKED, None),
    (ClientState.MASKED, m.ConsistencyRequest.KIND): (ClientState.SIGNED, True),
    (ClientState.MASKED, m.UnmaskRequest.KIND): (ClientState.DONE, False),
    (ClientState.SIGNED, m.UnmaskRequest.KIND): (ClientState.DONE, True),
}
_CLIENT_ORDER = [ClientState.IDLE, ClientState.ADVERTISED, ClientState.SHARED,
                 ClientState.MASKED, ClientState.SIGNED, ClientState.DONE]


def client_next_state(state: ClientState, kind: int, active: bool) -> ClientState | None:
    """The state after handling ``kind`` in ``state``, or None if the move is illegal."""
    entry = _CLIENT_TABLE.get((state, kind))
    if entry is None:
        return None
    nxt, mode = entry
    if mode is not None and mode != active:
        return None
    return nxt


def client_past_kinds(state: ClientState) -> frozenset[int]:
    """Kinds a client in ``state`` has already handled: receiving one again is a replay."""
    if state is ClientState.ABORTED:
        return frozenset()
    reached = _CLIENT_ORDER[:_CLIENT_ORDER.index(state)]
    return frozenset(kind for (s, kind) in _CLIENT_TABLE if s in reached)


#: The message kind the server collects in each stage.
SERVER_EXPECTS: dict[ServerStage, int] = {
    ServerStage.COLLECT_KEYS: m.AdvertiseKeys.KIND,
    ServerStage.COLLECT_SHARES: m.EncryptedShares.KIND,
    ServerStage.COLLECT_MASKED: m.MaskedInput.KIND,
    ServerStage.COLLECT_SIGNATURES: m.ConsistencySignature.KIND,
    ServerStage.COLLECT_UNMASK: m.UnmaskShares.KIND,
}


def server_next_stage(stage: ServerStage, active: bool) -> ServerStage:
    order = [ServerStage.COLLECT_KEYS, ServerStage.COLLECT_SHARES, ServerStage.COLLECT_MASKED]
    if active:
        order.append(ServerStage.COLLECT_SIGNATURES)
    order += [ServerStage.COLLECT_UNMASK, ServerStage.DONE]
    if stage not in order[:-1]:
        raise ValueError(f"no stage follows {stage}")
    return order[order.index(stage) + 1]
