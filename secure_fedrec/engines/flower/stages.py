"""The protocol half of a node: feed each user's party its frames, collect the replies.

Kept free of torch and of the model code, so that a node answering a
protocol stage starts fast (Flower starts a fresh ClientApp process per
message in deployment mode).

A node keeps two kinds of parties in its state: ``sessions``, this round's
single-session parties (masking clients, Paillier uploaders), and ``keyed``, the
:class:`protocols.masking.multiround.MultiRoundClient` of each member of the
current key session, which live from the session's announcement to its last
round. ``inputs`` holds the round's encoded updates until each member's
``RoundStart`` arrives (a member without one uploads zeros).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from protocols.errors import ProtocolError

from .codec import Payload

__all__ = ["deliver", "deliver_stage", "handle_hello", "handle_stage", "start_key_session"]


def handle_hello(node_config: dict[str, Any]) -> Payload:
    return {"partition_id": int(node_config["partition-id"]),
            "num_partitions": int(node_config["num-partitions"])}


def deliver(sessions: dict[int, Any], request: Payload, *, before=None) -> Payload:
    """Feed each user's protocol party its frame; collect the replies (or the errors).

    ``before(user, party)`` runs first for each addressed party (a key session's
    member gets its round input there). ``protocol_seconds`` is the CPU the parties took.
    """
    out_users, out_frames, errors = [], [], []
    clock = time.process_time()
    for user, frame in zip(request.get("frame_users", []), request.get("frames", [])):
        user = int(user)
        client = sessions.get(user)
        if client is None:
            errors.append(f"{user}: no protocol party (node restarted or user not trained)")
            continue
        try:
            if before is not None:
                before(user, client)
            replies = client.receive(bytes(frame))
        except ProtocolError as exc:
            # An aborted party answers nothing more: the server sees a dropout.
            errors.append(f"{user}: {type(exc).__name__}: {exc}")
            del sessions[user]
            continue
        for data in replies:
            out_users.append(user)
            out_frames.append(data)
    return {"frame_users": out_users, "frames": out_frames, "errors": errors,
            "protocol_seconds": time.process_time() - clock}


def start_key_session(state: dict[str, Any], request: Payload) -> None:
    """A new key session: a fresh party for each member the announcement names on this node
    (the parties of an earlier session are dropped with their secrets)."""
    from protocols.masking.multiround import MultiRoundClient

    state["keyed"] = {int(u): MultiRoundClient(int(u)) for u in request.get("frame_users", [])}


def _give_round_input(state: dict[str, Any]):
    inputs: dict[int, np.ndarray] = state.get("inputs", {})

    def before(user: int, client: Any) -> None:
        vector = inputs.pop(user, None)
        if vector is None:  # a member that does not train this round adds the ring's zero
            # (aggregation.key_sessions.zero_input; not imported: a stage loads no aggregation code)
            vector = np.zeros(client.config.params.vector_length, dtype=np.uint64)
        client.set_input(vector)

    return before


def deliver_stage(state: dict[str, Any], request: Payload) -> Payload:
    """The frames of one stage to this node's parties: the key session's members (``keyed``),
    else this round's single-session parties."""
    if request.get("keyed"):
        keyed = state.setdefault("keyed", {})
        before = _give_round_input(state) if request.get("stage") == "masked_input" else None
        return deliver(keyed, request, before=before)
    return deliver(state.setdefault("sessions", {}), request)


def handle_stage(state: dict[str, Any], request: Payload) -> Payload:
    """One later protocol stage: the server's frames for this node's parties in, replies out.

    The parties are this round's users (masking clients, Paillier uploaders), the
    key session's members, and, for the Paillier ``decrypt`` stage, the key holders
    this node hosts.
    """
    if request.get("stage") == "decrypt":
        from .paillier import key_holder_parties

        holders = key_holder_parties(state, request, min_clients=int(request["min_clients"]))
        # A copy: a key holder that refuses one request (its error is reported) still serves
        # later sessions.
        return deliver(dict(holders), request)
    reply = deliver_stage(state, request)
    if request.get("last") and not request.get("keyed"):
        state["sessions"] = {}
    return reply
