"""The Flower ClientApp: a SuperNode's partition of users, running :mod:`.node`.

Message types: ``query`` (which partition is this node), ``train`` (train the
sampled users and answer the protocol's first request), ``train.stage`` (one
later protocol stage), ``evaluate`` (score this node's users). The node's own
state — its users' private model rows and live protocol parties — lives in
``Context.state`` between messages, which the SuperNode keeps locally.
"""

from __future__ import annotations

import logging

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from .codec import PAYLOAD_KEY
from .dispatch import dispatch

__all__ = ["app"]

STATE_KEY = "sfr-node"
log = logging.getLogger(__name__)

app = ClientApp()


def _handle(message: Message, context: Context) -> Message:
    request = dict(message.content.config_records[PAYLOAD_KEY]) if PAYLOAD_KEY in message.content.config_records else {}
    state_record = context.state.config_records.get(STATE_KEY)
    blob = bytes(state_record["blob"]) if state_record is not None else b""
    reply, blob = dispatch(message.metadata.message_type, request, blob, dict(context.node_config))
    context.state.config_records[STATE_KEY] = ConfigRecord({"blob": blob})
    return Message(RecordDict({PAYLOAD_KEY: ConfigRecord(reply)}), reply_to=message)


@app.query()
def hello(message: Message, context: Context) -> Message:
    return _handle(message, context)


@app.train()
def train(message: Message, context: Context) -> Message:
    return _handle(message, context)


@app.train("stage")
def stage(message: Message, context: Context) -> Message:
    return _handle(message, context)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    return _handle(message, context)
