"""Multi-round masking sessions (``aggregation.key_rounds > 1``): one key setup for several rounds.

:mod:`protocols.masking.multiround` agrees the pairwise secrets once and derives
every round's masks from them, so a steady round is the masked upload and the
unmasking — two exchanges instead of four. Its sessions have a fixed set of
members, while our rounds sample clients afresh (the DP accountants assume
independent sampling per round). We keep the sampling and make the session's
members the **union of the clients sampled in its rounds** (the server draws the
samples of the coming rounds up front: they depend only on the seed and the round).
In each round every member uploads: the round's trainers their encoded update,
every other member the zero vector, which is the ring's neutral element. So:

* the released sum is exactly the trainers' sum (what a single-round session
  releases) and nothing about who trained is new to the server, which chose the
  sample;
* the contributors of a round are the trainers whose masked update is in the sum;
  the floor of the privacy plan (``min_survivors``: the noise shares the
  distributed noise was sized for) counts those only, and is checked before any
  unmasking request leaves the server (:func:`check_floor`); a member that only
  uploads zeros adds no noise;
* the cost of a round grows with the members rather than the sample: each member
  masks and uploads a vector (docs/flower.md has the numbers), against the two
  key-setup exchanges (and their X25519 agreements and Shamir shares) saved in
  every later round of the session.

A round that cannot release a sum (too few contributors, a neighbourhood below the
threshold, any protocol error) ends the session: the next round opens a new one,
with a new setup, as the protocol requires. Both engines follow these rules: the
in-process engine through :class:`InProcessKeySessions`, the Flower engine with
the sans-IO parties over the network (``engines/flower/coordinator.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from protocols import BelowThreshold
from protocols.errors import ProtocolError

from .session import SessionParameters
from .sums import transfer_measurements
from .values import Measurements, SumOutcome

__all__ = ["InProcessKeySessions", "KeySession", "check_floor", "zero_input"]


@dataclass(frozen=True)
class KeySession:
    """One multi-round session: its first round, how many rounds it serves, its members,
    and the masking parameters sized for the members."""

    first_round: int
    rounds: int
    members: tuple[int, ...]
    parameters: SessionParameters

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.first_round < 0:
            raise ValueError("a key session serves at least one round, from round 0 on")
        if list(self.members) != sorted(set(self.members)):
            raise ValueError("members must be sorted and distinct")

    @property
    def last_round(self) -> int:
        return self.first_round + self.rounds - 1

    def masking_params(self):
        """The members' masking parameters, the plan's ``min_survivors`` included."""
        return self.parameters.masking_params()


def zero_input(vector_length: int) -> np.ndarray:
    """What a member that does not train this round uploads: the ring's zero."""
    return np.zeros(vector_length, dtype=np.uint64)


def check_floor(contributors: int, trainers_session: SessionParameters, stage: str) -> None:
    """Refuse to unmask a round whose sum would hold fewer updates than the plan's floor.

    Called before the server sends any unmasking request. The session's protocol also
    carries the plan's ``min_survivors`` (:meth:`KeySession.masking_params`), but it
    counts every uploader, zero vectors included: a weaker gate (members ≥ trainers).
    The floor on the updates that carry noise shares is the engine's to enforce.
    """
    if contributors < trainers_session.min_survivors:
        raise BelowThreshold(contributors, trainers_session.min_survivors, stage)


class InProcessKeySessions:
    """The in-process engine's multi-round sessions, opened one after another.

    ``open_session(round_index)`` plans the session starting at that round
    (:meth:`secure_fedrec.rounds.server.RoundServer.key_session`).
    """

    def __init__(self, open_session: Callable[[int], KeySession]) -> None:
        self._open = open_session
        self.session: KeySession | None = None
        self._driver = None
        self._next_round: int | None = None

    def close(self) -> None:
        """End the current session (the next round opens a new one)."""
        self.session = None
        self._driver = None
        self._next_round = None

    def run(self, payloads: Mapping[int, np.ndarray], trainers_session: SessionParameters, *,
            round_index: int, dropouts: Mapping[int, str]) -> SumOutcome:
        """One round: every member uploads (trainers their payload, the others zeros).

        ``dropouts`` may name any member (``masked_input`` or ``unmasking``).
        Raises :class:`BelowThreshold` (and ends the session) when nothing is released.
        """
        from protocols.masking.multiround import MultiRoundSecAgg

        contributing = [c for c in payloads if dropouts.get(c) != "masked_input"]
        try:
            check_floor(len(contributing), trainers_session, "masked_input")
            if self._driver is None or self._next_round != round_index:
                self.session = self._open(round_index)
                self._driver = MultiRoundSecAgg(self.session.masking_params(), self.session.members,
                                                rounds=self.session.rounds, first_round=round_index)
            session = self.session
            assert session is not None and self._driver is not None
            if not set(payloads) <= set(session.members):
                raise ValueError("a trainer outside the key session's members")  # a planning bug
            zero = zero_input(session.parameters.vector_length)
            inputs = {m: payloads.get(m, zero) for m in session.members}
            schedule = {c: s for c, s in dropouts.items() if c in inputs}
            result = self._driver.run_round(inputs, dropouts=schedule)
        except ProtocolError:
            self.close()
            raise
        self._next_round = round_index + 1
        if round_index >= session.last_round:
            self.close()
        contributors = tuple(c for c in result.contributors if c in payloads)
        measurements = key_session_measurements(
            session, bytes_sent=result.bytes_sent, bytes_received=result.bytes_received,
            uploaders=tuple(result.contributors), dropped=len(result.dropped),
            client_seconds=result.client_seconds, server_seconds=result.server_seconds,
            rejected_frames=int(result.measurements.get("rejected_frames", 0)),
            client_errors=int(result.measurements.get("client_errors", 0)),
            armed=int(result.measurements.get("armed", 0)),
            exchanges=int(result.measurements.get("exchanges", 0)),
            setup_included=bool(result.measurements.get("setup_included", 0)),
            round_index=round_index)
        return SumOutcome(total=result.total, contributors=contributors, measurements=measurements)


def key_session_measurements(session: KeySession, *, bytes_sent: Mapping[int, int],
                             bytes_received: Mapping[int, int], uploaders: tuple[int, ...],
                             dropped: int, client_seconds: float, server_seconds: float,
                             rejected_frames: int, client_errors: int, armed: int, exchanges: int,
                             setup_included: bool, round_index: int) -> Measurements:
    """One round's protocol measurements under a key session, the same keys on every engine.

    Bytes are averaged over the uploaders (zero vectors included: they are the
    price of the session), ``protocol_exchanges`` counts the protocol's round trips
    (4 with the setup, 2 in a steady round).
    """
    params = session.parameters
    assert params.bits is not None
    n = len(session.members)
    measurements = transfer_measurements(bytes_sent, bytes_received, uploaders,
                                         plain_bytes=params.vector_length * params.bits / 8)
    sent = [bytes_sent.get(c, 0) for c in uploaders]
    measurements.update({
        "protocol_n": float(n),
        "protocol_degree": float(params.degree or 0),
        "protocol_threshold": float(params.threshold or 0),
        "protocol_client_seconds": float(client_seconds),
        "protocol_client_seconds_per_client": float(client_seconds) / max(1, n),
        "protocol_server_seconds": float(server_seconds),
        "protocol_dropped": float(dropped),
        "protocol_max_bytes_sent": float(max(sent)) if sent else 0.0,
        "protocol_rejected_frames": float(rejected_frames),
        "protocol_client_errors": float(client_errors),
        "protocol_armed": float(armed),
        "protocol_exchanges": float(exchanges),
        "protocol_setup_included": float(setup_included),
        "protocol_key_rounds": float(session.rounds),
        "protocol_session_round": float(round_index - session.first_round),
    })
    return measurements
