"""The server side of SecAgg / SecAgg+ rounds over Flower: single sessions, or one key setup for many rounds.

* **single session per round** (``aggregation.key_rounds = 1``): a
  :class:`protocols.masking.MaskingServer` for the round's trainers; its first
  frames (``SessionStart``) ride with the ``train`` request, so a round is the
  ``train`` exchange (keys back), ``share_keys``, ``masked_input`` and
  ``unmasking``: four exchanges.
* **key sessions** (``aggregation.key_rounds > 1``,
  :mod:`secure_fedrec.aggregation.key_sessions`): a
  :class:`protocols.masking.multiround.MultiRoundServer` over the members of the
  session, kept between rounds. A steady round is two exchanges: the ``train``
  request carries each member's ``RoundStart`` and its reply the masked upload
  (each node trains its users, then feeds the round's inputs to their parties),
  then ``unmasking``. The session's first round adds the setup: the
  announcement rides with ``train`` (advertised keys back), then the arming.

Every user is one party; a node carries its users' frames in one message per
stage (:mod:`.relay`). The metrics use the in-process engine's keys.
"""

from __future__ import annotations

import logging

from protocols import BelowThreshold
from protocols.errors import ProtocolError
from protocols.wire import decode_frame

from ...aggregation import SessionParameters, SumOutcome
from ...aggregation.key_sessions import (
    KeySession,
    check_floor,
    key_session_measurements,
)
from ...aggregation.sums import transfer_measurements
from ...rounds.client import RoundReports
from ...rounds.server import RoundServer
from .codec import Payload
from .relay import ProtocolTally, RoundIO

__all__ = ["KeySessionRounds", "masking_round"]

log = logging.getLogger(__name__)

Result = tuple[RoundReports, "SumOutcome | ProtocolError | None", dict[str, float]]


def _aborted(reason: ProtocolError, tally: ProtocolTally | None = None) -> tuple[ProtocolError, dict[str, float]]:
    extra = {"protocol_failed": 1.0}
    if tally is not None:
        extra["protocol_dropped"] = float(len(tally.gone))
    return reason, extra


def train_only(io: RoundIO, stage: str, reason: BelowThreshold) -> Result:
    """Too few clients to release anything: they still train (as in-process)."""
    replies = io.send("train", io.train_requests(), stage)
    return (io.collect(replies), *_aborted(reason))


def masking_round(io: RoundIO, session: SessionParameters | BelowThreshold, trainers: list[int]) -> Result:
    """One single-round SecAgg / SecAgg+ session over the round's trainers."""
    from protocols.masking import MaskingServer, stages_for

    if isinstance(session, BelowThreshold):
        return train_only(io, "advertise_keys", session)
    params = session.masking_params()
    tally = ProtocolTally(parties=frozenset(trainers))
    server = tally.server(lambda: MaskingServer(params, trainers, round_index=io.round_index))
    outgoing = tally.server(server.start)
    stages = stages_for(params.active)
    reports = RoundReports()
    try:
        for index, stage in enumerate(stages):
            if index == 0:
                # Every trainer trains, even one scheduled to vanish (as in-process).
                replies = io.relay("train", outgoing, tally, stage=stage, receive=server.receive,
                                   requests=io.train_requests(), min_clients=session.min_survivors)
                reports = io.collect(replies)
            else:
                io.relay("train.stage", outgoing, tally, stage=stage, receive=server.receive,
                         last=index == len(stages) - 1)
            outgoing = tally.server(server.advance)
    except ProtocolError as exc:
        log.error("round %d failed: %s", io.round_index + 1, exc)
        return (reports, *_aborted(exc, tally))
    result = server.result
    assert result is not None
    # Defence in depth: ``params`` carry min_survivors, so the server above refused to start
    # the unmasking below it (BelowThreshold) and honest nodes refuse to reveal shares.
    if len(result.contributors) < session.min_survivors:
        log.error("round %d failed: %d survivors, fewer than %d", io.round_index + 1,
                  len(result.contributors), session.min_survivors)
        return (reports, *_aborted(BelowThreshold(len(result.contributors), session.min_survivors,
                                                  "unmasking")))
    measurements = masking_measurements(tally, session, uploaders=tuple(result.contributors),
                                        parties=len(trainers), dropped=len(result.dropped))
    outcome = SumOutcome(total=result.total, contributors=tuple(result.contributors),
                         measurements=measurements)
    return reports, outcome, {}


def masking_measurements(tally: ProtocolTally, session: SessionParameters, *,
                         uploaders: tuple[int, ...], parties: int, dropped: int) -> dict[str, float]:
    """A single session's measurements, in the in-process SecAgg driver's keys."""
    assert session.bits is not None
    measurements = transfer_measurements(tally.sent, tally.received, uploaders,
                                         plain_bytes=session.vector_length * session.bits / 8)
    sent = [tally.sent.get(c, 0) for c in uploaders]
    measurements.update({
        "protocol_n": float(parties),
        "protocol_degree": float(session.degree or 0),
        "protocol_threshold": float(session.threshold or 0),
        "protocol_client_seconds": tally.client_seconds,
        "protocol_client_seconds_per_client": tally.client_seconds / max(1, parties),
        "protocol_server_seconds": tally.server_seconds,
        "protocol_dropped": float(dropped),
        "protocol_max_bytes_sent": float(max(sent)) if sent else 0.0,
        "protocol_rejected_frames": float(tally.rejected),
        "protocol_client_errors": float(len(tally.errors)),
    })
    return measurements


class KeySessionRounds:
    """The coordinator's multi-round sessions: one :class:`MultiRoundServer` kept between rounds.

    A round that releases nothing (too few contributors, a protocol error) or a
    round without a sum ends the session; the next round opens a new one.
    """

    def __init__(self, server: RoundServer) -> None:
        self.round_server = server
        self.session: KeySession | None = None
        self.protocol_server = None
        self._next_round: int | None = None

    def close(self) -> None:
        self.session = None
        self.protocol_server = None
        self._next_round = None

    def round(self, io: RoundIO, session: SessionParameters | BelowThreshold) -> Result:
        from protocols.masking.multiround import MultiRoundServer, RoundUpload

        if isinstance(session, BelowThreshold):
            self.close()
            return train_only(io, "masked_input", session)
        setup = self.protocol_server is None or self._next_round != io.round_index
        reports = RoundReports()
        tally = ProtocolTally(parties=frozenset())
        uploads: set[int] = set()
        inputs: set[int] = set()  # members whose upload carries a real update (trainers with one)

        def note_upload(user: int, frame: bytes) -> None:
            if decode_frame(frame)[0].kind == RoundUpload.KIND:
                uploads.add(user)

        def train_replies(replies: dict[int, Payload]) -> RoundReports:
            for partition, reply in replies.items():
                inputs.update(int(u) for u in reply.get("input_users", [])
                              if io.partition_of(int(u)) == partition)
            return io.collect(replies)

        try:
            if setup:
                self.close()
                key_session = self.round_server.key_session(io.round_index)
                self.session = key_session
                tally.parties = frozenset(key_session.members)
                server = self.protocol_server = tally.server(lambda: MultiRoundServer(
                    key_session.masking_params(), key_session.members, rounds=key_session.rounds,
                    first_round=io.round_index))
                replies = io.relay("train", tally.server(server.start), tally, stage="advertise_keys",
                                   receive=server.receive, requests=io.train_requests(), keyed=True)
                reports = train_replies(replies)
                io.relay("train.stage", tally.server(server.advance), tally, stage="arming",
                         receive=server.receive, keyed=True)
                tally.server(server.advance)
                io.relay("train.stage", tally.server(server.start_round), tally, stage="masked_input",
                         receive=server.receive, on_accepted=note_upload, keyed=True)
            else:
                server = self.protocol_server
                assert server is not None and self.session is not None
                tally.parties = frozenset(self.session.members)
                replies = io.relay("train", tally.server(server.start_round), tally,
                                   stage="masked_input", receive=server.receive,
                                   requests=io.train_requests(), on_accepted=note_upload, keyed=True)
                reports = train_replies(replies)
            # The plan's floor counts real updates only: checked before any unmasking request.
            check_floor(len(uploads & inputs), session, "masked_input")
            io.relay("train.stage", tally.server(server.advance), tally, stage="unmasking",
                     receive=server.receive, keyed=True)
            tally.server(server.advance)
        except ProtocolError as exc:
            log.error("round %d failed: %s (the key session ends)", io.round_index + 1, exc)
            self.close()
            return (reports, *_aborted(exc, tally))
        key_session = self.session
        result = server.result
        assert result is not None and key_session is not None
        self._next_round = io.round_index + 1
        if io.round_index >= key_session.last_round:
            self.close()
        measurements = key_session_measurements(
            key_session, bytes_sent=tally.sent, bytes_received=tally.received,
            uploaders=tuple(result.contributors), dropped=len(result.dropped),
            client_seconds=tally.client_seconds, server_seconds=tally.server_seconds,
            rejected_frames=tally.rejected, client_errors=len(tally.errors),
            armed=len(result.armed), exchanges=4 if setup else 2, setup_included=setup,
            round_index=io.round_index)
        contributors = tuple(c for c in result.contributors if c in inputs)
        return reports, SumOutcome(total=result.total, contributors=contributors,
                                   measurements=measurements), {}
