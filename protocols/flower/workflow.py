"""The server half of the drop-in: a Flower fit workflow running our SecAgg / SecAgg+ over the nodes.

``DefaultWorkflow(fit_workflow=SecureAggregationWorkflow(...))`` in a ServerApp, in
place of Flower's ``SecAggPlusWorkflow`` (same contract: called once per round with
the ``LegacyContext``; the strategy's ``configure_fit`` picks the nodes and their
``FitIns``, its ``aggregate_fit`` gets one ``FitRes`` per contributing node carrying
the securely aggregated weighted mean, so FedAvg-family strategies keep working).

One round, single session (``key_rounds = 1``): the ``FitIns`` ride with the
session's first frame (the node trains, then answers with its keys), then the share
exchange, the masked upload, the unmasking — four exchanges, the count of Flower's
SecAgg+. With ``key_rounds = R > 1`` one key setup serves R rounds
(:mod:`protocols.masking.multiround`): every node connected at the session's start
is a member; a steady round is the ``FitIns`` with the round start (each member
answers with its masked update — zeros when the strategy did not select it) and the
unmasking: two exchanges. Any protocol error ends the round without an update (as
Flower's workflow does) and a key session with it; the next round sets up anew.

The exchanges poll the Grid from every ``poll_interval`` seconds, backing off to ten
times that while no reply comes (Flower's ``send_and_receive`` sleeps 3 s between
polls); a node that has not answered a stage
within ``timeout`` seconds (``None``: wait for every node) is a dropout, which the
protocol survives while every neighbourhood keeps ``threshold`` members.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from flwr.app import ConfigRecord, Message, RecordDict

from ..errors import ProtocolError
from ..graph import choose_parameters
from ..masking.params import MaskingParams
from .records import RECORD_KEY
from .weighted import WeightedEncoding

__all__ = ["RoundCost", "SecureAggregationWorkflow", "record_bytes"]

log = logging.getLogger("flwr.secure_aggregation")


@dataclass
class RoundCost:
    """What one round cost: exchanges, our records' bytes, CPU of the server and of the mods."""

    round: int
    exchanges: int = 0
    bytes_down: int = 0  # our records and the FitIns arrays, server -> nodes
    bytes_up: int = 0  # our records, nodes -> server
    server_seconds: float = 0.0  # CPU of the workflow's protocol steps
    client_seconds: float = 0.0  # CPU of the nodes' mods (their training excluded)
    wall_seconds: float = 0.0
    contributors: int = 0
    setup: bool = False
    dropped: list[int] = field(default_factory=list)


@dataclass
class _KeySession:
    server: Any  # MultiRoundServer
    members: list[int]  # node ids, party id = index
    last_round: int
    encoding: WeightedEncoding
    length: int
    next_round: int


def record_bytes(content: RecordDict) -> int:
    """The bytes a message's records carry: byte and string values by length, numbers as 8
    bytes, arrays by size (a lower bound on the serialized message)."""
    total = 0
    for record in content.values():
        if isinstance(record, ConfigRecord):
            for value in record.values():
                items = value if isinstance(value, list) else [value]
                total += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in items)
        elif hasattr(record, "to_numpy_ndarrays"):
            total += sum(a.nbytes for a in record.to_numpy_ndarrays())
    return total


class SecureAggregationWorkflow:
    """Our secure aggregation as a Flower fit workflow (see the module docstring).

    ``clipping_range``: each coordinate of a node's weighted parameters is clipped to it;
    ``max_weight``: example counts above it weigh as much as it; ``bits``: the ring
    Z_{2^bits}; ``degree``/``threshold``: the graph (``None``: the parameter helper's
    SecAgg+ graph for ``dropout_rate``, the complete graph with a majority when the
    nodes are few); ``weight_key``: the Message-API reply's example count.
    """

    def __init__(self, *, key_rounds: int = 1, clipping_range: float = 8.0, max_weight: float = 1000.0,
                 bits: int = 32, degree: int | None = None, threshold: int | None = None,
                 dropout_rate: float = 0.1, timeout: float | None = None, poll_interval: float = 0.02,
                 weight_key: str = "num-examples") -> None:
        if not (isinstance(key_rounds, int) and 1 <= key_rounds <= 1 << 20):
            raise ValueError(f"key_rounds must be an integer in [1, 2^20], got {key_rounds!r}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
        if timeout is not None and not 0 < timeout <= 86_400:
            raise ValueError(f"timeout must be in (0, 86400] seconds or None, got {timeout!r}")
        if not 0.001 <= poll_interval <= 60:
            raise ValueError(f"poll_interval must be in [0.001, 60] seconds, got {poll_interval!r}")
        WeightedEncoding(clip=clipping_range, max_weight=max_weight, bits=bits)  # checks them
        self.key_rounds = key_rounds
        self.clipping_range = float(clipping_range)
        self.max_weight = float(max_weight)
        self.bits = bits
        self.degree = degree
        self.threshold = threshold
        self.dropout_rate = dropout_rate
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.weight_key = weight_key
        self.costs: list[RoundCost] = []
        self._session: _KeySession | None = None

    # -- parameters ---------------------------------------------------------------------------
    def _params(self, n: int, length: int) -> MaskingParams:
        if self.degree is not None and self.threshold is not None:
            degree, threshold = min(self.degree, n - 1), min(self.threshold, n)
        else:
            try:
                chosen = choose_parameters(n, dropout_rate=max(self.dropout_rate, 0.05), corrupt_fraction=0.05)
                degree, threshold = chosen.degree, chosen.threshold
            except ValueError:  # too few nodes for a sparse graph: SecAgg's complete graph
                degree, threshold = n - 1, n // 2 + 1
        return MaskingParams(threshold=threshold, degree=degree, bits=self.bits, vector_length=length)

    def _encoding(self, summands: int) -> WeightedEncoding:
        return WeightedEncoding(clip=self.clipping_range, max_weight=self.max_weight, bits=self.bits,
                                summands=summands)

    def _record(self, kind: str, party: int, frame: bytes, train: bool, encoding: WeightedEncoding,
                length: int) -> ConfigRecord:
        return ConfigRecord({"kind": kind, "party": party, "frame": frame, "train": train,
                             "clip": encoding.clip, "max_weight": encoding.max_weight, "bits": encoding.bits,
                             "summands": encoding.summands, "length": length, "weight_key": self.weight_key})

    # -- one exchange -------------------------------------------------------------------------
    def _exchange(self, grid, contents: Mapping[int, RecordDict], round_index: int,
                  cost: RoundCost) -> dict[int, RecordDict]:
        """Send one message per node, poll for the replies until all came or the timeout."""
        if not contents:
            return {}
        messages = [Message(content, dst_node_id=node, message_type="train", group_id=str(round_index))
                    for node, content in contents.items()]
        cost.exchanges += 1
        cost.bytes_down += sum(record_bytes(c) for c in contents.values())
        ids = list(grid.push_messages(messages))
        waiting = {mid: node for mid, node in zip(ids, contents) if mid}
        replies: dict[int, RecordDict] = {}
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        pause = self.poll_interval
        while waiting and (deadline is None or time.monotonic() < deadline):
            pulled = list(grid.pull_messages(list(waiting)))
            # Back off while nothing comes (every pull is a request to the SuperLink), up to
            # ten times the interval; back to it as soon as replies arrive.
            pause = self.poll_interval if pulled else min(pause * 1.5, 10 * self.poll_interval)
            for reply in pulled:
                node = waiting.pop(reply.metadata.reply_to_message_id, None)
                if node is None or reply.has_error():
                    continue
                record = reply.content.config_records.get(RECORD_KEY)
                if record is None:
                    continue
                cost.bytes_up += record_bytes(RecordDict({RECORD_KEY: record}))
                cost.client_seconds += float(record.get("cpu_seconds", 0.0))
                if record.get("error"):
                    log.warning("node %s left the secure aggregation: %s", node, record["error"])
                    continue
                replies[node] = reply.content
            if waiting:
                time.sleep(pause)
        return replies

    def _stage(self, grid, server, outgoing, node_of: Sequence[int], kind: str, round_index: int,
               cost: RoundCost, encoding: WeightedEncoding, length: int,
               train: Mapping[int, RecordDict] | None = None) -> dict[int, RecordDict]:
        """Frames out (``FitIns`` added for the nodes in ``train``), frames back into ``server``."""
        contents: dict[int, RecordDict] = {}
        for party, frame in outgoing:
            node = node_of[party]
            fit = (train or {}).get(node)
            content = RecordDict(dict(fit.items())) if fit is not None else RecordDict()
            content[RECORD_KEY] = self._record(kind, party, frame, fit is not None, encoding, length)
            contents[node] = content
        replies = self._exchange(grid, contents, round_index, cost)
        clock = time.process_time()
        for content in replies.values():
            for frame in content.config_records[RECORD_KEY].get("frames", []):
                try:
                    server.receive(bytes(frame))
                except ProtocolError as exc:
                    log.warning("refused a frame: %s", exc)
        cost.server_seconds += time.process_time() - clock
        return replies

    # -- the workflow -------------------------------------------------------------------------
    def __call__(self, grid, context) -> None:
        import flwr.compat.common.recorddict_compat as compat
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server import LegacyContext
        from flwr.server.workflow.constant import (
            MAIN_CONFIGS_RECORD,
            MAIN_PARAMS_RECORD,
            Key,
        )

        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        started = time.perf_counter()
        current_round = cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND])
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD],
                                                      keep_input=True)
        instructions = context.strategy.configure_fit(current_round, parameters, context.client_manager)
        if not instructions:
            log.info("configure_fit: no clients selected, cancel")
            return
        shapes = [a.shape for a in parameters_to_ndarrays(parameters)]
        length = WeightedEncoding.length(shapes)
        fitins = {proxy.node_id: compat.fitins_to_recorddict(ins, True) for proxy, ins in instructions}
        proxies = {proxy.node_id: proxy for proxy, _ in instructions}
        cost = RoundCost(round=current_round)
        self.costs.append(cost)
        if self.key_rounds > 1:
            every = sorted({int(p.node_id) for p in context.client_manager.all().values()} | set(fitins))
            outcome = self._keyed_round(grid, current_round, fitins, every, length, context.config.num_rounds,
                                        cost)
        else:
            outcome = self._single_round(grid, current_round, fitins, length, cost)
        cost.wall_seconds = time.perf_counter() - started
        if outcome is None:
            log.info("secure aggregation halted in round %s", current_round)
            return
        total, trained, replies, encoding = outcome
        arrays, weight = encoding.decode(total, shapes)
        if weight <= 0:
            return
        aggregated = ndarrays_to_parameters(arrays)
        results = []
        for node in trained:
            fitres = compat.recorddict_to_fitres(replies[node], False)
            fitres.parameters = aggregated
            results.append((proxies[node], fitres))
        cost.contributors = len(results)
        failures = [Exception(f"node {n} dropped out") for n in fitins if n not in trained]
        parameters_aggregated, metrics = context.strategy.aggregate_fit(current_round, results, failures)
        if parameters_aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                parameters_aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics)

    def _single_round(self, grid, round_index: int, fitins: Mapping[int, RecordDict], length: int,
                      cost: RoundCost):
        from ..masking import MaskingServer

        nodes = sorted(fitins)
        if len(nodes) < 2:
            log.error("secure aggregation needs at least 2 nodes, the strategy selected %d", len(nodes))
            return None
        encoding = self._encoding(len(nodes))
        clock = time.process_time()
        server = MaskingServer(self._params(len(nodes), length), range(len(nodes)), round_index=round_index)
        outgoing = server.start()
        cost.server_seconds += time.process_time() - clock
        cost.setup = True
        try:
            replies = self._stage(grid, server, outgoing, nodes, "start", round_index, cost, encoding, length,
                                  train=fitins)
            for _ in range(3):  # share keys, masked input, unmasking
                outgoing = self._timed(server.advance, cost)
                self._stage(grid, server, outgoing, nodes, "relay", round_index, cost, encoding, length)
            self._timed(server.advance, cost)
        except ProtocolError as exc:
            log.error("secure aggregation failed in round %s: %s", round_index, exc)
            return None
        result = server.result
        trained = [nodes[p] for p in result.contributors if nodes[p] in replies]
        cost.dropped = [nodes[p] for p in result.dropped]
        return result.total, trained, replies, encoding

    def _keyed_round(self, grid, round_index: int, fitins: Mapping[int, RecordDict], every: list[int],
                     length: int, num_rounds: int, cost: RoundCost):
        from ..masking.multiround import MultiRoundServer

        session = self._session
        if (session is None or session.next_round != round_index or session.length != length
                or not set(fitins) <= set(session.members)):
            if len(every) < 2:
                log.error("secure aggregation needs at least 2 nodes, %d are connected", len(every))
                return None
            rounds = max(1, min(self.key_rounds, num_rounds - round_index + 1))
            clock = time.process_time()
            server = MultiRoundServer(self._params(len(every), length), range(len(every)), rounds=rounds,
                                      first_round=round_index)
            cost.server_seconds += time.process_time() - clock
            session = self._session = _KeySession(server=server, members=every,
                                                  last_round=round_index + rounds - 1,
                                                  encoding=self._encoding(len(every)), length=length,
                                                  next_round=round_index)
            cost.setup = True
        server, members, encoding = session.server, session.members, session.encoding
        replies: dict[int, RecordDict] = {}
        try:
            if cost.setup:
                replies = self._stage(grid, server, self._timed(server.start, cost), members, "announce",
                                      round_index, cost, encoding, length, train=fitins)
                self._stage(grid, server, self._timed(server.advance, cost), members, "relay", round_index,
                            cost, encoding, length)
                self._timed(server.advance, cost)
                self._stage(grid, server, self._timed(server.start_round, cost), members, "round",
                            round_index, cost, encoding, length)
            else:
                replies = self._stage(grid, server, self._timed(server.start_round, cost), members, "round",
                                      round_index, cost, encoding, length, train=fitins)
            self._stage(grid, server, self._timed(server.advance, cost), members, "relay", round_index, cost,
                        encoding, length)
            self._timed(server.advance, cost)
        except ProtocolError as exc:
            log.error("secure aggregation failed in round %s: %s (the key session ends)", round_index, exc)
            self._session = None
            return None
        session.next_round = round_index + 1
        if round_index >= session.last_round:
            self._session = None
        result = server.result
        uploaded = {members[p] for p in result.contributors}
        trained = [n for n in sorted(fitins) if n in uploaded and n in replies]
        cost.dropped = [members[p] for p in result.dropped]
        return result.total, trained, replies, encoding

    @staticmethod
    def _timed(step, cost: RoundCost):
        clock = time.process_time()
        try:
            return step()
        finally:
            cost.server_seconds += time.process_time() - clock
