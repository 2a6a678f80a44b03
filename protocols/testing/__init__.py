"""In-memory test harness for the masking protocol.

* :func:`expected_outcome` — an oracle, written independently of the server,
  that says from the graph and the dropout schedule alone whether a session
  must succeed (and with which contributors) or stop below threshold.
* :func:`rewrite` — decode a frame, change its message, re-encode it under the
  same header: how tests play a curious server or a tampering network.
* :class:`FrameLog` — an interceptor that records every frame, to replay
  later or deliver into another session.

Simulation randomness here (inputs, schedules) may be seeded; protocol
secrets never are — they come from the parties themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..graph import harary_neighbourhoods
from ..masking import messages as m
from ..masking.driver import stages_for
from ..masking.params import MaskingParams

__all__ = ["FrameLog", "Outcome", "RoundsOutcome", "expected_outcome", "expected_rounds",
           "rewrite"]


@dataclass(frozen=True)
class Outcome:
    """``contributors`` on success; ``below_threshold_stage`` set on a typed abort."""

    contributors: tuple[int, ...] = ()
    below_threshold_stage: str | None = None


def expected_outcome(
    participants: Sequence[int],
    params: MaskingParams,
    graph_seed: bytes,
    dropouts: Mapping[int, str],
) -> Outcome:
    """What an honest session must produce under ``dropouts`` (client -> stage it vanishes before).

    Rules (Bonawitz et al. §4, per neighbourhood as in Bell et al.): after
    each collecting stage every live client must keep ``t`` live members of
    its closed neighbourhood; at unmasking each survivor's seed and each
    dropped-after-sharing client's mask key needs ``t`` responding holders.
    Session-wide: the clients that can still contribute — the participants,
    then those alive after each of the stages that lose contributors (keys,
    shares, masked inputs) — must number at least ``params.min_survivors``.
    """
    stages = stages_for(params.active)
    if len(participants) < params.min_survivors:
        return Outcome(below_threshold_stage=stages[0])
    hood = harary_neighbourhoods(list(participants), params.degree, graph_seed)
    t = params.threshold
    order = {s: i for i, s in enumerate(stages)}
    losing_contributors = ("advertise_keys", "share_keys", "masked_input")

    def alive_after(stage: str) -> set[int]:
        return {c for c in participants
                if dropouts.get(c) is None or order[dropouts[c]] > order[stage]}

    alive: dict[str, set[int]] = {s: alive_after(s) for s in stages}
    for stage in stages[:-1]:  # the collecting stages before unmasking
        live = alive[stage]
        if stage in losing_contributors and len(live) < params.min_survivors:
            return Outcome(below_threshold_stage=stage)
        if not live or min(len(hood[i] & live) for i in live) < t:
            return Outcome(below_threshold_stage=stage)
    u2, u3 = alive["share_keys"], alive["masked_input"]
    responders = alive["unmasking"]
    owners = set(u3) | {j for j in u2 - u3 if hood[j] & u3 - {j}}
    for j in owners:
        if len(hood[j] & responders) < t:
            return Outcome(below_threshold_stage="unmasking")
    return Outcome(contributors=tuple(sorted(u3)))


@dataclass(frozen=True)
class RoundsOutcome:
    """Per round, the contributors; or the stage and round at which the session stops."""

    contributors: tuple[tuple[int, ...], ...] = ()
    below_threshold_stage: str | None = None
    below_threshold_round: int | None = None


def expected_rounds(
    participants: Sequence[int],
    params: MaskingParams,
    graph_seed: bytes,
    schedules: Sequence[Mapping[int, str]],
) -> RoundsOutcome:
    """What an honest multi-round session must produce (one schedule per round).

    Independent of the server, from the graph and the dropouts alone. Setup
    (stages ``advertise_keys``, ``arming``, read from the first schedule):
    the keyed clients, then those that armed the first round (the session's
    members, the only clients any round starts for), must each keep ``t`` live
    members of their closed neighbourhood and number at least
    ``min_survivors``. Every member is armed for the first two rounds, and
    whenever it answers a round's start it is armed for the two rounds after.
    Each round: the armed clients must pass the same test when the round
    starts; those of them that answer upload; the uploaders must pass the
    test; every uploader's seed and every vanished armed client's recovery key
    needs ``t`` answering holders. ``schedules[r]`` maps a client to the stage
    before which it vanishes *in that round only*.
    """
    hood = harary_neighbourhoods(list(participants), params.degree, graph_seed)
    t, floor = params.threshold, params.min_survivors

    def fails(alive: set[int]) -> bool:
        return (len(alive) < floor or not alive
                or min(len(hood[i] & alive) for i in alive) < t)

    first = schedules[0] if schedules else {}
    keyed = {c for c in participants if first.get(c) != "advertise_keys"}
    if fails(keyed):
        return RoundsOutcome(below_threshold_stage="advertise_keys", below_threshold_round=0)
    members = {c for c in keyed if first.get(c) != "arming"}  # every round starts for them
    if fails(members):
        return RoundsOutcome(below_threshold_stage="arming", below_threshold_round=0)
    # A client holds recovery material for the next two rounds whenever it answers.
    holds = {c: {0, 1} for c in members}
    out: list[tuple[int, ...]] = []
    for r, schedule in enumerate(schedules):
        stopped = RoundsOutcome(tuple(out), "masked_input", r)
        armed = {c for c in members if r in holds[c]}
        if fails(armed):
            return stopped
        answered = {c for c in members if schedule.get(c) != "masked_input"}
        uploaded = armed & answered
        if fails(uploaded):
            return stopped
        responders = {c for c in uploaded if schedule.get(c) != "unmasking"}
        vanished = {j for j in armed - uploaded if (hood[j] - {j}) & uploaded}
        if any(len(hood[j] & responders) < t for j in uploaded | vanished):
            return RoundsOutcome(tuple(out), "unmasking", r)
        out.append(tuple(sorted(uploaded)))
        for c in answered:
            holds[c].update((r + 1, r + 2))
    return RoundsOutcome(tuple(out))


def rewrite(frame: bytes, change: Callable[[m.Message], m.Message]) -> bytes:
    """Re-encode ``frame`` with its message replaced by ``change(message)``, same header."""
    env = m.decode(frame)
    h = env.header
    return m.encode(change(env.message), session_id=h.session_id, round_index=h.round,
                    sender=h.sender, receiver=h.receiver)


@dataclass
class FrameLog:
    """Interceptor that records ``(stage, sender, receiver, frame)`` and passes frames on."""

    frames: list[tuple[str, int, int, bytes]] = field(default_factory=list)

    def __call__(self, stage: str, sender: int, receiver: int, frame: bytes) -> bytes:
        self.frames.append((stage, sender, receiver, frame))
        return frame

    def find(self, kind: type, *, sender: int | None = None,
             receiver: int | None = None) -> list[bytes]:
        found = []
        for _, snd, rcv, frame in self.frames:
            if ((sender is None or snd == sender) and (receiver is None or rcv == receiver)
                    and isinstance(m.decode(frame).message, kind)):
                found.append(frame)
        return found


def random_inputs(ids: Sequence[int], length: int, bits: int,
                  rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Uniform test inputs in [0, 2^bits) (simulation data, seeded on purpose)."""
    return {cid: rng.integers(0, 1 << bits, size=length, dtype=np.uint64, endpoint=False)
            for cid in ids}


__all__.append("random_inputs")
