"""In-process driver: one whole masking session for n simulated clients.

The driver plays the network. It passes the *encoded* frames between one
:class:`MaskingServer` and n :class:`MaskingClient` objects, sequentially, so
byte counts are those of the real wire format and CPU time is measured per
party with :func:`time.process_time`. A dropout schedule says, per client,
the stage *before* which it vanishes (it receives that stage's request and
never answers, nor anything after). An optional interceptor sees every frame
and may replace or drop it — the hook the tests use to play a tampering
network or a curious server.

:class:`SecAgg` and :class:`SecAggPlus` wrap the driver behind the
:class:`protocols.api.SecureSum` interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..api import DropoutSchedule, SecureSumResult
from ..errors import BelowThreshold, LocalProtocolError, ProtocolError
from ..keys import StaticTrustStore, TrustStore
from ..wire import SERVER_ID, check_round_index
from .client import MaskingClient
from .params import MaskingParams, choose_parameters, params_for
from .server import MaskingServer
from .states import STAGE_NAMES

__all__ = ["Interceptor", "SecAgg", "SecAggPlus", "SessionTrace", "Tally", "exchange",
           "run_session", "stages_for"]

#: (stage, sender, receiver, frame) -> the frame to deliver, or None to drop it.
Interceptor = Callable[[str, int, int, bytes], "bytes | None"]


def stages_for(active: bool) -> tuple[str, ...]:
    """Dropout-schedule stage names, in order (the consistency check is active-mode only)."""
    return tuple(s for s in STAGE_NAMES if active or s != "consistency_check")


@dataclass
class SessionTrace:
    """What happened besides the result: errors that parties raised, per stage."""

    client_errors: dict[int, ProtocolError] = field(default_factory=dict)
    rejected_frames: list[tuple[str, int, ProtocolError]] = field(default_factory=list)


T = TypeVar("T")


@dataclass
class Tally:
    """CPU seconds and bytes of the parties of one simulated exchange, as the driver sees them."""

    client_seconds: float = 0.0
    server_seconds: float = 0.0
    sent: dict[int, int] = field(default_factory=dict)
    received: dict[int, int] = field(default_factory=dict)

    def server(self, call: Callable[[], T]) -> T:
        """Run a server call on the server's clock."""
        start = time.process_time()
        try:
            return call()
        finally:
            self.server_seconds += time.process_time() - start


def exchange(stage: str, outgoing: Iterable[tuple[int, bytes]], *, clients: Mapping[int, Any],
             server: Any, schedule: Mapping[int, str], gone: set[int],
             interceptor: Interceptor | None, trace: SessionTrace, tally: Tally) -> None:
    """Deliver one stage's frames to the clients and their replies to the server.

    A client scheduled to vanish before ``stage``, or one that raised, is
    added to ``gone`` and gets nothing more; a finished or aborted client is
    skipped. Shared by the single-round and the multi-round drivers.
    """
    # A Broadcast builds each frame when it is read: that is server work, on its clock.
    frames = iter(outgoing)
    while True:
        item = tally.server(lambda: next(frames, None))
        if item is None:
            return
        cid, frame = item
        if interceptor is not None:
            frame = interceptor(stage, SERVER_ID, cid, frame)
            if frame is None:
                continue
        if cid in gone or schedule.get(cid) == stage:
            gone.add(cid)
            continue
        client = clients[cid]
        if client.state.value in ("aborted", "done"):
            continue
        tally.received[cid] = tally.received.get(cid, 0) + len(frame)
        start = time.process_time()
        try:
            replies = client.receive(frame)
        except ProtocolError as exc:
            trace.client_errors[cid] = exc
            gone.add(cid)
            replies = []
        finally:
            tally.client_seconds += time.process_time() - start
        for reply in replies:
            tally.sent[cid] = tally.sent.get(cid, 0) + len(reply)
            if interceptor is not None:
                reply = interceptor(stage, cid, SERVER_ID, reply)
                if reply is None:
                    continue
            start = time.process_time()
            try:
                server.receive(reply)
            except ProtocolError as exc:
                trace.rejected_frames.append((stage, cid, exc))
            finally:
                tally.server_seconds += time.process_time() - start


def run_session(
    inputs: Mapping[int, np.ndarray],
    params: MaskingParams,
    *,
    round_index: int = 0,
    dropouts: DropoutSchedule | None = None,
    signing_keys: Mapping[int, Ed25519PrivateKey] | None = None,
    trust: TrustStore | None = None,
    interceptor: Interceptor | None = None,
    trace: SessionTrace | None = None,
    session_id: bytes | None = None,
    graph_seed: bytes | None = None,
) -> SecureSumResult:
    """Run one session; raises :class:`~protocols.errors.BelowThreshold` (no partial sum).

    A session with fewer participants than ``params.min_survivors`` could never
    release a sum: it stops before the first frame, at stage ``advertise_keys``.
    """
    check_round_index(round_index)
    ids = sorted(inputs)
    if len(ids) < params.min_survivors:
        raise BelowThreshold(len(ids), params.min_survivors, stages_for(params.active)[0])
    for cid in ids:
        vector = np.asarray(inputs[cid])
        if vector.shape != (params.vector_length,) or not np.issubdtype(vector.dtype, np.integer):
            raise ValueError(f"input of client {cid} must be an integer vector of length "
                             f"{params.vector_length}")
        if vector.size and (int(vector.min()) < 0 or int(vector.max()) >> params.bits):
            raise ValueError(f"input of client {cid} has entries outside [0, 2^{params.bits})")
    stages = stages_for(params.active)
    schedule = dict(dropouts or {})
    unknown = set(schedule.values()) - set(stages)
    if unknown:
        raise LocalProtocolError(f"unknown stage(s) {sorted(unknown)}; stages are {stages}")
    if params.active and (signing_keys is None or trust is None):
        trust, signing_keys = StaticTrustStore.generate(ids)
    trace = trace if trace is not None else SessionTrace()

    tally = Tally(sent=dict.fromkeys(ids, 0), received=dict.fromkeys(ids, 0))
    server = tally.server(lambda: MaskingServer(params, ids, round_index=round_index, trust=trust,
                                                session_id=session_id, graph_seed=graph_seed))
    outgoing = tally.server(server.start)

    clients: dict[int, MaskingClient] = {}
    for cid in ids:
        start = time.process_time()
        client = MaskingClient(cid, signing_key=(signing_keys or {}).get(cid),
                               trust=trust if params.active else None)
        client.set_input(inputs[cid])
        clients[cid] = client
        tally.client_seconds += time.process_time() - start

    gone: set[int] = set()
    for stage in stages:
        exchange(stage, outgoing, clients=clients, server=server, schedule=schedule, gone=gone,
                 interceptor=interceptor, trace=trace, tally=tally)
        outgoing = tally.server(server.advance)
    client_seconds, server_seconds = tally.client_seconds, tally.server_seconds
    sent, received = tally.sent, tally.received

    assert server.result is not None
    result = server.result
    contributors = result.contributors
    n = len(ids)
    return SecureSumResult(
        total=result.total,
        contributors=contributors,
        dropped=result.dropped,
        bytes_sent=sent,
        bytes_received=received,
        client_seconds=client_seconds,
        server_seconds=server_seconds,
        measurements={
            "n": float(n),
            "degree": float(params.degree),
            "threshold": float(params.threshold),
            "client_seconds_per_client": client_seconds / n,
            "max_bytes_sent": float(max(sent.values())),
            "rejected_frames": float(len(trace.rejected_frames)),
            "client_errors": float(len(trace.client_errors)),
        },
    )


class SecAgg:
    """Classic SecAgg (Bonawitz et al. 2017): every client is every client's neighbour.

    ``threshold`` defaults to the smallest strict majority (two thirds in active
    mode). ``signing_keys``/``trust`` pin the clients' Ed25519 identities in
    active mode; if omitted, fresh ones are generated per session (simulation).

    ``min_survivors`` is the session-wide floor on contributors
    (:attr:`MaskingParams.min_survivors`): below it the server refuses to
    unmask and honest clients refuse to reveal shares, so ``run_round`` raises
    :class:`~protocols.errors.BelowThreshold` and nothing is released. A
    distributed-DP layer passes the number of noise shares its noise needs.
    """

    name = "secagg"

    def __init__(self, *, threshold: int | None = None, active: bool = False,
                 signing_keys: Mapping[int, Ed25519PrivateKey] | None = None,
                 trust: TrustStore | None = None, min_survivors: int = 1) -> None:
        if not isinstance(min_survivors, int) or isinstance(min_survivors, bool) or min_survivors < 1:
            raise ValueError(f"min_survivors must be a positive integer, got {min_survivors!r}")
        self.threshold = threshold
        self.active = active
        self.signing_keys = signing_keys
        self.trust = trust
        self.min_survivors = min_survivors

    @property
    def stages(self) -> tuple[str, ...]:
        return stages_for(self.active)

    def params(self, n: int, *, bits: int, vector_length: int) -> MaskingParams:
        return params_for(n, bits=bits, vector_length=vector_length,
                          threshold=self.threshold, active=self.active,
                          min_survivors=self.min_survivors)

    def run_round(self, inputs: Mapping[int, np.ndarray], *, bits: int, round_index: int = 0,
                  dropouts: DropoutSchedule | None = None) -> SecureSumResult:
        length = _common_length(inputs)
        params = self.params(len(inputs), bits=bits, vector_length=length)
        return run_session(inputs, params, round_index=round_index, dropouts=dropouts,
                           signing_keys=self.signing_keys, trust=self.trust)


class SecAggPlus(SecAgg):
    """SecAgg+ (Bell et al. 2020): a Harary graph of degree k = O(log n).

    With ``degree``/``threshold`` unset, :func:`protocols.graph.choose_parameters`
    picks them for the expected ``dropout_rate`` and ``corrupt_fraction``; when
    no sparse graph meets the targets (small n), the complete graph is used,
    i.e. classic SecAgg with a majority threshold.
    """

    name = "secagg+"

    def __init__(self, *, degree: int | None = None, threshold: int | None = None,
                 dropout_rate: float = 0.1, corrupt_fraction: float = 0.05,
                 security_bits: int = 40, correctness_bits: int = 20, active: bool = False,
                 signing_keys: Mapping[int, Ed25519PrivateKey] | None = None,
                 trust: TrustStore | None = None, min_survivors: int = 1) -> None:
        super().__init__(threshold=threshold, active=active, signing_keys=signing_keys,
                         trust=trust, min_survivors=min_survivors)
        self.degree = degree
        self.dropout_rate = dropout_rate
        self.corrupt_fraction = corrupt_fraction
        self.security_bits = security_bits
        self.correctness_bits = correctness_bits

    def params(self, n: int, *, bits: int, vector_length: int) -> MaskingParams:
        degree, threshold = self.degree, self.threshold
        if degree is None:
            try:
                chosen = choose_parameters(
                    n, dropout_rate=self.dropout_rate, corrupt_fraction=self.corrupt_fraction,
                    security_bits=self.security_bits, correctness_bits=self.correctness_bits)
                degree = chosen.degree
                if threshold is None and not self.active:
                    threshold = chosen.threshold
            except ValueError:
                degree = n - 1
        return params_for(n, bits=bits, vector_length=vector_length, degree=degree,
                          threshold=threshold, active=self.active,
                          min_survivors=self.min_survivors)


def _common_length(inputs: Mapping[int, np.ndarray]) -> int:
    if len(inputs) < 2:
        raise ValueError("a masking session needs at least 2 clients")
    lengths = {np.asarray(v).shape for v in inputs.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError("every input must be a 1-D vector of the same length")
    return next(iter(lengths))[0]
