"""Legal moves of the Paillier protocol, in one table (h11 style, as :mod:`protocols.masking.states`).

Every party consults :func:`next_state` before it acts on an event; a move
the table does not list is a protocol error. The docs draw the diagram from
:data:`TRANSITIONS` (``docs/protocols/paillier.md``), and a test walks every
(role, state, event) triple against the live parties.

Events are the message kinds a party receives, plus the local calls and
outcomes that move it (``upload()``, ``close_collection()``, "enough valid
decryption shares")::

    role        state        event                        next state    mode
    client      WAITING      RoundAnnouncement received   READY
    client      READY        upload()                     UPLOADED
    aggregator  COLLECTING   EncryptedUpdate received     COLLECTING
    aggregator  COLLECTING   close_collection()           DECRYPTING
    aggregator  DECRYPTING   PartialDecryption received   DECRYPTING    threshold
    aggregator  DECRYPTING   AggregatePlaintext received  DECRYPTING    two-party
    aggregator  DECRYPTING   decrypted (t valid shares)   DONE
    key holder  NEW          DecryptionRequest received   SERVED        (per session id)

What an error does depends on how many peers a party has:

* a **client** has one peer: any error moves it to ``ABORTED`` (terminal),
  and it answers nothing more;
* the **aggregator** has many: a bad frame raises its typed error and is
  dropped, the aggregator keeps its state (one client must not be able to
  end everyone's session); it moves to ``ABORTED`` when the session cannot
  finish correctly (fewer contributors than the minimum at close, decryption
  shares that do not combine, a slot overflow). A local call in the wrong
  state raises :class:`~protocols.errors.LocalProtocolError` and changes
  nothing, as :meth:`protocols.masking.MaskingServer.advance` does;
* a **key holder** outlives sessions: its state is per session id. A refused
  request leaves the session ``NEW`` (a request rejected for its form can be
  corrected), a served one is ``SERVED`` for good, and a second request for
  it is a :class:`~protocols.errors.ReplayedMessage`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .messages import Kind, Mode

__all__ = [
    "TRANSITIONS",
    "AggregatorState",
    "ClientState",
    "Event",
    "KeyHolderState",
    "Role",
    "Transition",
    "accepted_kinds",
    "is_received",
    "next_state",
    "received",
]


class Role(enum.Enum):
    CLIENT = "client"
    AGGREGATOR = "aggregator"
    KEY_HOLDER = "key_holder"


class ClientState(enum.Enum):
    WAITING = "waiting"  # for the round announcement
    READY = "ready"  # announcement accepted; upload() next
    UPLOADED = "uploaded"  # terminal: the encrypted update is out
    ABORTED = "aborted"  # terminal


class AggregatorState(enum.Enum):
    COLLECTING = "collecting"  # encrypted updates
    DECRYPTING = "decrypting"  # requests sent; collecting decryption shares
    DONE = "done"  # terminal: ``result`` holds the sum
    ABORTED = "aborted"  # terminal: nothing released


class KeyHolderState(enum.Enum):
    """The state of one session id at a key holder."""

    NEW = "new"  # never served (a refused request leaves it here)
    SERVED = "served"  # terminal: decrypted once, never again


class Event(enum.Enum):
    # a frame of this kind arrived
    ROUND_ANNOUNCEMENT = "round_announcement"
    ENCRYPTED_UPDATE = "encrypted_update"
    DECRYPTION_REQUEST = "decryption_request"
    PARTIAL_DECRYPTION = "partial_decryption"
    AGGREGATE_PLAINTEXT = "aggregate_plaintext"
    # a local call, or an outcome of the party's own checks
    UPLOAD = "upload"
    CLOSE_COLLECTION = "close_collection"
    DECRYPTED = "decrypted"


_RECEIVED = {kind: Event[kind.name] for kind in Kind}


def received(kind: Kind) -> Event:
    """The event of receiving a frame of ``kind``."""
    return _RECEIVED[kind]


def is_received(event: Event) -> bool:
    return event in _RECEIVED.values()


State = ClientState | AggregatorState | KeyHolderState


@dataclass(frozen=True)
class Transition:
    role: Role
    state: State
    event: Event
    next_state: State
    mode: Mode | None = None  # None: both deployment modes


TRANSITIONS: tuple[Transition, ...] = (
    Transition(Role.CLIENT, ClientState.WAITING, Event.ROUND_ANNOUNCEMENT, ClientState.READY),
    Transition(Role.CLIENT, ClientState.READY, Event.UPLOAD, ClientState.UPLOADED),
    Transition(Role.AGGREGATOR, AggregatorState.COLLECTING, Event.ENCRYPTED_UPDATE,
               AggregatorState.COLLECTING),
    Transition(Role.AGGREGATOR, AggregatorState.COLLECTING, Event.CLOSE_COLLECTION,
               AggregatorState.DECRYPTING),
    Transition(Role.AGGREGATOR, AggregatorState.DECRYPTING, Event.PARTIAL_DECRYPTION,
               AggregatorState.DECRYPTING, Mode.THRESHOLD),
    Transition(Role.AGGREGATOR, AggregatorState.DECRYPTING, Event.AGGREGATE_PLAINTEXT,
               AggregatorState.DECRYPTING, Mode.TWO_PARTY),
    Transition(Role.AGGREGATOR, AggregatorState.DECRYPTING, Event.DECRYPTED,
               AggregatorState.DONE),
    Transition(Role.KEY_HOLDER, KeyHolderState.NEW, Event.DECRYPTION_REQUEST,
               KeyHolderState.SERVED),
)

_TABLE: dict[tuple[Role, State, Event], Transition] = {
    (t.role, t.state, t.event): t for t in TRANSITIONS
}


def next_state(role: Role, state: State, event: Event, mode: Mode | None = None) -> State | None:
    """The state after ``event`` in ``state``, or None if the table does not allow the move.

    A move the table restricts to one deployment mode is legal only in that ``mode``.
    """
    move = _TABLE.get((role, state, event))
    if move is None or (move.mode is not None and move.mode is not mode):
        return None
    return move.next_state


def accepted_kinds(role: Role, mode: Mode) -> frozenset[Kind]:
    """Message kinds ``role`` accepts in some state of a ``mode`` session; any other is malformed."""
    return frozenset(
        kind
        for kind, event in _RECEIVED.items()
        for t in TRANSITIONS
        if t.role is role and t.event is event and t.mode in (None, mode)
    )
