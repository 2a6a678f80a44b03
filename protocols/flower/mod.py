"""The client half of the drop-in: a Flower ClientApp mod that makes a node one party of our SecAgg.

``ClientApp(..., mods=[secure_aggregation_mod])``. The mod acts only on ``train``
messages carrying our ConfigRecord (:data:`protocols.flower.RECORD_KEY`); anything
else goes to the app unchanged. On a stage that asks it to train, it calls the app
first (the rest of the chain), encodes the reply's parameters and example count
(:class:`.weighted.WeightedEncoding`), strips the parameters from the reply — they
never leave the node in the clear — and feeds the server's frame to the node's
party. The party (a :class:`protocols.masking.MaskingClient`, or a
:class:`protocols.masking.multiround.MultiRoundClient` that lives for a whole key
session) is kept in ``Context.state`` between messages (:mod:`.state`).

Request record (server → node): ``kind`` (``start``: a new single session, with its
first frame; ``announce``: a new key session; ``round``: a key session's round
start, for which the node gives its input; ``relay``: any later frame), ``party``
(this node's id in the session), ``frame``, ``train`` (call the app first), and the
encoding: ``clip``, ``max_weight``, ``bits``, ``summands``, ``length``,
``weight_key``. Reply record: ``frames`` (the party's answer), ``error`` (why it
answers nothing: the server counts the node as a dropout), ``cpu_seconds`` (the
mod's own CPU, the app's training excluded).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from ..errors import EncodingError, ProtocolError
from ..masking import MaskingClient
from ..masking.multiround import MultiRoundClient
from .records import RECORD_KEY
from .state import dump_party, load_party
from .weighted import WeightedEncoding

__all__ = ["STATE_KEY", "secure_aggregation_mod"]

#: Where the node's party is kept in ``Context.state``.
STATE_KEY = "secure-aggregation-party"
_KINDS = ("start", "announce", "round", "relay")
_LEGACY_ARRAYS, _LEGACY_EXAMPLES = "fitres.parameters", "fitres.num_examples"


@dataclass(frozen=True)
class _Request:
    kind: str
    party: int
    frame: bytes
    train: bool
    encoding: WeightedEncoding
    length: int
    weight_key: str

    @classmethod
    def parse(cls, record: ConfigRecord) -> _Request:
        """Every field checked for type and range before anything is built from it."""
        def get(name: str, kind: type | tuple[type, ...]):
            value = record.get(name)
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                raise ValueError(f"the {RECORD_KEY} record's {name!r} must be {kind}, got {type(value).__name__}")
            return value

        kind = get("kind", str)
        if kind not in _KINDS:
            raise ValueError(f"unknown stage kind {kind!r}")
        party, length = get("party", int), get("length", int)
        if not 0 <= party < 0xFFFFFFFF or not 1 <= length <= 0xFFFFFFFF:
            raise ValueError("party or length out of range")
        encoding = WeightedEncoding(clip=float(get("clip", (int, float))),
                                    max_weight=float(get("max_weight", (int, float))),
                                    bits=get("bits", int), summands=get("summands", int))
        return cls(kind=kind, party=party, frame=bytes(get("frame", bytes)), train=get("train", bool),
                   encoding=encoding, length=length, weight_key=get("weight_key", str))


def _take_update(content: RecordDict, weight_key: str) -> tuple[list[np.ndarray], float, RecordDict]:
    """The parameters and example count of the app's reply, and the reply without the parameters.

    Legacy (``NumPyClient``) replies hold ``fitres.parameters`` and
    ``fitres.num_examples``; Message-API replies one ArrayRecord and a MetricRecord with
    ``weight_key`` (1 example when it is absent). The parameters' record stays, empty, so
    that the reply still parses as what it was.
    """
    arrays_records = content.array_records
    if _LEGACY_ARRAYS in arrays_records:
        name = _LEGACY_ARRAYS
        examples = float(content.metric_records[_LEGACY_EXAMPLES]["num_examples"])
    else:
        if len(arrays_records) != 1:
            raise ValueError(f"the app's reply must hold one ArrayRecord, it holds {len(arrays_records)}")
        name = next(iter(arrays_records))
        examples = 1.0
        for metrics in content.metric_records.values():
            if weight_key in metrics:
                examples = float(metrics[weight_key])
    arrays = arrays_records[name].to_numpy_ndarrays()
    stripped = RecordDict({key: value for key, value in content.items() if key != name})
    stripped[name] = ArrayRecord()
    return arrays, examples, stripped


def _party_for(request: _Request, state: dict):
    if request.kind == "start":
        party = MaskingClient(request.party)
        party.set_input(state.pop("input"))
        return party
    if request.kind == "announce":
        return MultiRoundClient(request.party)
    party = state.get("party")
    if party is None:
        raise ValueError("no protocol party on this node (it missed the session's start)")
    if request.kind == "round":
        vector = state.pop("input", None)
        if vector is None:  # a member that did not train this round adds the ring's zero,
            # sized by the session the party agreed to, never by the request
            vector = np.zeros(party.config.params.vector_length, dtype=np.uint64)
        party.set_input(vector)
    return party


def secure_aggregation_mod(msg: Message, ctx: Context,
                           call_next: Callable[[Message, Context], Message]) -> Message:
    """The ClientApp mod (Flower's ``Mod`` signature)."""
    if msg.metadata.message_type != "train" or RECORD_KEY not in msg.content.config_records:
        return call_next(msg, ctx)
    started = time.process_time()
    training = 0.0
    content = RecordDict()
    out: dict = {}
    stored = ctx.state.config_records.get(STATE_KEY)
    state: dict = {}
    try:
        state = load_party(bytes(stored["blob"]) if stored is not None else b"")
        request = _Request.parse(msg.content.config_records[RECORD_KEY])
        if request.kind in ("start", "announce"):
            state = {}  # a new session: the last one's party and input are dropped
        if request.train:
            clock = time.process_time()
            reply = call_next(msg, ctx)
            training = time.process_time() - clock
            if reply.has_error():
                return reply
            arrays, examples, content = _take_update(reply.content, request.weight_key)
            vector = request.encoding.encode(arrays, examples)
            if vector.size != request.length:
                raise EncodingError(f"the app's parameters have {vector.size - 1} values, the session "
                                    f"{request.length - 1}")
            state["input"] = vector
        party = _party_for(request, state)
        frames = party.receive(request.frame)
        state["party"] = party
        out["frames"] = list(frames)
    except (ProtocolError, EncodingError, ValueError, KeyError) as exc:
        # An aborted party answers nothing more: the server counts this node as a dropout.
        state.pop("party", None)
        out = {"frames": [], "error": f"{type(exc).__name__}: {exc}"}
    ctx.state.config_records[STATE_KEY] = ConfigRecord({"blob": dump_party(state)})
    out["cpu_seconds"] = max(0.0, time.process_time() - started - training)
    content[RECORD_KEY] = ConfigRecord(out)
    return Message(content, reply_to=msg)
