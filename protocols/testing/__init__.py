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

__all__ = ["FrameLog", "Outcome", "expected_outcome", "rewrite"]


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
