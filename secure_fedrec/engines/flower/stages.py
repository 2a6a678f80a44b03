"""The protocol half of a node: feed each user's party its frames, collect the replies.

Kept free of torch and of the model code, so that a node answering a
protocol stage starts fast (Flower starts a fresh ClientApp process per
message in deployment mode).
"""

from __future__ import annotations

from typing import Any

from protocols.errors import ProtocolError

from .codec import Payload

__all__ = ["deliver", "handle_hello", "handle_stage"]


def handle_hello(node_config: dict[str, Any]) -> Payload:
    return {"partition_id": int(node_config["partition-id"]),
            "num_partitions": int(node_config["num-partitions"])}


def deliver(sessions: dict[int, Any], request: Payload) -> Payload:
    """Feed each user's protocol party its frame; collect the replies (or the errors)."""
    out_users, out_frames, errors = [], [], []
    for user, frame in zip(request["frame_users"], request["frames"]):
        user = int(user)
        client = sessions.get(user)
        if client is None:
            errors.append(f"{user}: no protocol party (node restarted or user not trained)")
            continue
        try:
            replies = client.receive(frame)
        except ProtocolError as exc:
            # An aborted party answers nothing more: the server sees a dropout.
            errors.append(f"{user}: {type(exc).__name__}: {exc}")
            del sessions[user]
            continue
        for data in replies:
            out_users.append(user)
            out_frames.append(data)
    return {"frame_users": out_users, "frames": out_frames, "errors": errors}


def handle_stage(state: dict[str, Any], request: Payload) -> Payload:
    """One later protocol stage: the server's frames for this node's parties in, replies out.

    The parties are this round's users (masking clients, Paillier uploaders)
    and, for the Paillier ``decrypt`` stage, the key holders this node hosts.
    """
    sessions = state.setdefault("sessions", {})
    if request.get("stage") == "decrypt":
        from .paillier import key_holder_parties

        holders = key_holder_parties(state, request, min_clients=int(request["min_clients"]))
        # A copy: a key holder that refuses one request (its error is reported) still serves
        # later sessions.
        return deliver(dict(holders), request)
    reply = deliver(sessions, request)
    if request.get("last"):
        state["sessions"] = {}
    return reply


