"""In-process driver of a multi-round masking session, behind the SecureSum interface.

How a driver runs R rounds (this class is one; an engine that moves frames
over a network does the same with the sans-IO parties)::

    server = MultiRoundServer(params, participants, rounds=R, first_round=r0)
    clients = {cid: MultiRoundClient(cid) for cid in participants}   # on each device
    deliver(server.start())              # SessionAnnouncement -> AdvertiseKeys
    deliver(server.advance())            # KeyDirectory -> Arming (round r0)
    server.advance()                     # setup done
    for r in range(r0, r0 + R):
        for cid in participants: clients[cid].set_input(vector_of(cid, r))
        deliver(server.start_round())    # RoundStart -> RoundUpload (or Arming)
        deliver(server.advance())        # RoundUnmaskRequest -> RoundUnmaskShares
        server.advance(); use(server.result)

where ``deliver`` sends each ``(client, frame)`` to its client and hands each
reply to ``server.receive`` until the stage's deadline. In steady state a
round is these two exchanges. If a round raises ``BelowThreshold`` (or any
other protocol error), the session is over: start a new one — with a new
setup — for the next round.

:class:`MultiRoundSecAgg` does exactly this in one process: each
``run_round`` call runs one round (the first call also runs the setup), with
the same dropout schedules as :func:`protocols.masking.run_session` — stage
names ``advertise_keys`` and ``arming`` (setup, first call only),
``masked_input`` and ``unmasking`` (every round); a client missing from a
round's ``inputs`` vanishes before ``masked_input``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from ...api import SecureSumResult
from ...errors import LocalProtocolError
from ..driver import Interceptor, SessionTrace, Tally, exchange
from ..params import MaskingParams
from .client import MultiRoundClient
from .server import MultiRoundServer
from .states import ROUND_STAGES, SETUP_STAGES

__all__ = ["MultiRoundSecAgg"]


class MultiRoundSecAgg:
    """``rounds`` secure sums over one set of participants, with one key setup.

    ``params`` as for a single session (degree, threshold, bits, vector
    length, ``min_survivors``; passive mode). Results are
    :class:`~protocols.api.SecureSumResult`; ``measurements`` adds
    ``setup_included`` (1 in the round that ran the setup), ``armed`` and
    ``exchanges`` (message round trips of the round).
    """

    name = "secagg+-multiround"

    def __init__(self, params: MaskingParams, participants: Sequence[int], *, rounds: int,
                 first_round: int = 0, session_id: bytes | None = None,
                 graph_seed: bytes | None = None, interceptor: Interceptor | None = None,
                 trace: SessionTrace | None = None) -> None:
        self.params = params
        self.server = MultiRoundServer(params, participants, rounds=rounds,
                                       first_round=first_round, session_id=session_id,
                                       graph_seed=graph_seed)
        self.clients = {cid: MultiRoundClient(cid) for cid in self.server.config.participants}
        self.interceptor = interceptor
        self.trace = trace if trace is not None else SessionTrace()
        self._setup_done = False
        self._gone: set[int] = set()  # clients that left for the rest of the current stage

    @property
    def stages(self) -> tuple[str, ...]:
        return ROUND_STAGES

    def run_round(self, inputs: Mapping[int, np.ndarray], *,
                  dropouts: Mapping[int, str] | None = None) -> SecureSumResult:
        """One round over ``inputs`` (client id -> vector); the first call runs the setup too."""
        schedule = dict(dropouts or {})
        allowed = ROUND_STAGES + (() if self._setup_done else SETUP_STAGES)
        unknown = set(schedule.values()) - set(allowed)
        if unknown:
            raise LocalProtocolError(f"unknown stage(s) {sorted(unknown)}; stages are {allowed}")
        if not set(inputs) <= set(self.clients):
            raise ValueError("inputs name clients outside the session")
        for cid in self.clients:
            if cid not in inputs:
                schedule.setdefault(cid, "masked_input")
        tally = Tally()
        exchanges = 2
        setup = not self._setup_done

        def stage(name: str, outgoing) -> None:
            exchange(name, outgoing, clients=self.clients, server=self.server,
                     schedule=schedule, gone=self._gone, interceptor=self.interceptor,
                     trace=self.trace, tally=tally)

        if setup:
            self._gone = set()
            stage(SETUP_STAGES[0], tally.server(self.server.start))
            stage(SETUP_STAGES[1], tally.server(self.server.advance))
            tally.server(self.server.advance)
            self._setup_done = True
            exchanges += 2
        self._gone = set()  # a client may come back in any new round
        for cid, vector in inputs.items():
            if self.clients[cid].state.value not in ("aborted", "done"):
                start = time.process_time()
                self.clients[cid].set_input(vector)
                tally.client_seconds += time.process_time() - start
        stage(ROUND_STAGES[0], tally.server(self.server.start_round))
        stage(ROUND_STAGES[1], tally.server(self.server.advance))
        tally.server(self.server.advance)
        result = self.server.result
        assert result is not None
        n = len(self.clients)
        return SecureSumResult(
            total=result.total, contributors=result.contributors, dropped=result.dropped,
            bytes_sent=tally.sent, bytes_received=tally.received,
            client_seconds=tally.client_seconds, server_seconds=tally.server_seconds,
            measurements={
                "n": float(n), "degree": float(self.params.degree),
                "threshold": float(self.params.threshold),
                "round_index": float(result.round_index), "armed": float(len(result.armed)),
                "setup_included": float(setup), "exchanges": float(exchanges),
                "client_seconds_per_client": tally.client_seconds / n,
                "rejected_frames": float(len(self.trace.rejected_frames)),
                "client_errors": float(len(self.trace.client_errors)),
            },
        )
