"""The server of a multi-round masking session (sans-IO).

Lifecycle::

    server = MultiRoundServer(params, participants, rounds=R, first_round=r0)
    send(server.start())                 # announcement; collect AdvertiseKeys
    send(server.advance())               # key directories; collect Arming (round r0)
    server.advance()                     # setup done: BETWEEN_ROUNDS
    for each round:
        send(server.start_round())       # RoundStart; collect RoundUpload / Arming
        send(server.advance())           # unmask requests; collect RoundUnmaskShares
        server.advance()                 # the round's sum: server.result (and .results)

A client that has not answered when a stage closes is a dropout for the rest
of that round; it may come back in a later round (it re-arms first). Every
round starts for the session's *members*, the clients that armed the first
round during the setup; one that missed the setup is out for the session. The
server aborts the whole session (``ABORTED``, error re-raised) only when a
round cannot finish correctly — fewer than ``t`` live members around some
client, fewer than ``min_survivors`` contributors, or a reconstruction that
fails its check — and then releases nothing of that round. A new session
(with a new setup) is the way on after an abort.

A vanished armed client's masks are removed with its *round* recovery key
``E_r``, reconstructed from ``t`` holders; it opens the round-r pairwise seeds
that client sealed under it, and nothing else. Its long-term X25519 keys are
never reconstructed, so neither its earlier nor its later uploads become
unmaskable (see :mod:`.client`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ... import prg
from ...errors import (
    InvalidShare,
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from ...graph import harary_neighbourhoods
from ...wire import SERVER_ID, check_round_index
from .. import derivations as d1
from .. import messages as m
from .. import steps
from ..params import MaskingParams, SessionConfig
from ..server import Broadcast, Outgoing, ServerResult
from . import derivations as d
from . import messages as mr
from .states import SERVER_EXPECTS, ServerStage

__all__ = ["MultiRoundServer", "RoundResult"]


@dataclass(frozen=True)
class RoundResult(ServerResult):
    """One round's sum, with the round and who was armed for it."""

    round_index: int = 0
    armed: tuple[int, ...] = ()  # clients expected to contribute (masked with each other)


@dataclass
class _Armed:
    """What a client deposited to arm one round."""

    holders: tuple[int, ...]
    shares: dict[int, bytes]  # holder -> recovery-share ciphertext
    sealed_seeds: bytes


class MultiRoundServer:
    """The aggregating server of a masking session of ``rounds`` rounds."""

    def __init__(
        self,
        params: MaskingParams,
        participants: Iterable[int],
        *,
        rounds: int,
        first_round: int = 0,
        session_id: bytes | None = None,
        graph_seed: bytes | None = None,
        limits: m.Limits | None = None,
    ) -> None:
        if params.active:
            raise ValueError("multi-round sessions are passive-mode only; run one active "
                             "session per round instead")
        if not (isinstance(rounds, int) and 1 <= rounds <= mr.MAX_ROUNDS):
            raise ValueError(f"rounds must be in [1, {mr.MAX_ROUNDS}], got {rounds!r}")
        self.first_round = check_round_index(first_round)
        check_round_index(first_round + rounds - 1)
        self.rounds = rounds
        self.session_id = session_id if session_id is not None else secrets.token_bytes(16)
        self.config = SessionConfig(params, tuple(sorted(set(participants))),
                                    graph_seed if graph_seed is not None
                                    else secrets.token_bytes(32))
        self.params = params
        self.stage = ServerStage.COLLECT_KEYS
        self.round_index = first_round
        self.result: RoundResult | None = None
        self.results: list[RoundResult] = []
        self._limits = m.Limits.for_session(self.config).tightened(limits)
        self._started = False
        self._participants = frozenset(self.config.participants)
        self.neighbourhoods = harary_neighbourhoods(self.config.ids, params.degree,
                                                    self.config.graph_seed)
        self._dtype = prg.word_dtype(params.bits)
        self._keys: dict[int, m.AdvertiseKeys] = {}
        self._taken_keys: set[bytes] = set()
        self._keyed: frozenset[int] = frozenset()
        self._members: frozenset[int] = frozenset()  # armed the first round: in every round
        self._holders: dict[int, tuple[int, ...]] = {}  # keyed neighbours of each keyed client
        self._armed: dict[int, dict[int, _Armed]] = {}  # round -> client -> material
        self._arming_now: set[int] = set()  # answered in this stage (setup or upload)
        self._uploads: dict[int, tuple[dict[int, bytes], bytes]] = {}  # shares, commitment
        self._masked_sum: np.ndarray | None = None
        self._maskers: dict[int, frozenset[int]] = {}
        self._requests: dict[int, mr.RoundUnmaskRequest] = {}
        self._unmask: dict[int, mr.RoundUnmaskShares] = {}
        self._alive: frozenset[int] = self._participants
        self._next_round = first_round

    @property
    def last_round(self) -> int:
        return self.first_round + self.rounds - 1

    # --------------------------------------------------------------- frames
    def _frame(self, receiver: int, msg: mr.Message) -> Outgoing:
        return receiver, mr.encode(msg, session_id=self.session_id, round_index=self.round_index,
                                   sender=SERVER_ID, receiver=receiver)

    def start(self) -> Sequence[Outgoing]:
        """The session announcement (parameters and number of rounds), one frame per client."""
        if self._started:
            raise LocalProtocolError("the session was already started")
        self._started = True
        return Broadcast(mr.SessionAnnouncement(self.config, self.rounds),
                         self.config.participants, session_id=self.session_id,
                         round_index=self.first_round, protocol=mr.PROTOCOL_CODE)

    def _collected(self) -> set[int] | dict[int, object]:
        if self.stage in (ServerStage.COLLECT_ARMING, ServerStage.COLLECT_UPLOADS):
            return self._arming_now
        if self.stage is ServerStage.COLLECT_KEYS:
            return self._keys
        if self.stage is ServerStage.COLLECT_UNMASK:
            return self._unmask
        return set()

    @property
    def answered(self) -> frozenset[int]:
        return frozenset(self._collected())

    @property
    def waiting_for(self) -> frozenset[int]:
        if self.stage not in SERVER_EXPECTS:
            return frozenset()
        return self._alive - self.answered

    def receive(self, data: bytes) -> None:
        """Accept one client frame for the current stage, or raise a typed error."""
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            raise LocalProtocolError(f"the session is {self.stage.value}")
        if not self._started:
            raise LocalProtocolError("start() the session first")
        env = mr.decode(data, limits=self._limits)
        h = env.header
        if h.session_id != self.session_id:
            raise SessionMismatch("frame of another session")
        if h.round != self.round_index:
            raise ReplayedMessage("frame of another round (replayed or late)")
        sender = h.sender
        if sender not in self._participants:
            raise SessionMismatch("frame from a client outside the session")
        expected = SERVER_EXPECTS.get(self.stage, frozenset())
        if env.message.KIND not in expected:
            raise RemoteProtocolError(f"{type(env.message).__name__} not expected now")
        if sender in self._collected():
            raise ReplayedMessage("this client already answered the current stage")
        if sender not in self._alive:
            raise RemoteProtocolError("client is not part of the current stage")
        msg = env.message
        if isinstance(msg, m.AdvertiseKeys):
            self._on_keys(sender, msg)
        elif isinstance(msg, mr.Armings):
            self._on_armings(sender, msg)
        elif isinstance(msg, mr.RoundUpload):
            self._on_upload(sender, msg)
        else:
            self._on_unmask(sender, msg)

    # ------------------------------------------------------------ handlers
    def _on_keys(self, sender: int, msg: m.AdvertiseKeys) -> None:
        steps.check_advertised_keys(msg, self._taken_keys)
        if msg.signature:
            raise MalformedMessage("signature in passive mode")
        self._keys[sender] = msg
        self._taken_keys.update((msg.c_public, msg.s_public))

    def _check_arming(self, sender: int, arming: mr.Arming, round_index: int) -> _Armed:
        if arming.armed_round != round_index:
            raise RemoteProtocolError("arming for the wrong round")
        if arming.holders != self._holders[sender]:
            raise RemoteProtocolError("arming must address exactly the keyed neighbours")
        return _Armed(arming.holders, dict(zip(arming.holders, arming.shares)),
                      arming.sealed_seeds)

    def _expected_armings(self, client: int) -> list[int]:
        """The rounds ``client`` must arm now: two rounds ahead, and whatever it lacks before."""
        if self.stage is ServerStage.COLLECT_ARMING:
            ahead = range(self.first_round, self.first_round + mr.ARMING_WINDOW)
        else:
            ahead = range(self.round_index + 1, self.round_index + 1 + mr.ARMING_WINDOW)
        return [q for q in ahead
                if q <= self.last_round and client not in self._armed.get(q, {})]

    def _take_armings(self, sender: int, armings: tuple[mr.Arming, ...]) -> dict[int, _Armed]:
        wanted = self._expected_armings(sender)
        if [a.armed_round for a in armings] != wanted:
            raise RemoteProtocolError(f"armings must be for rounds {wanted}")
        return {a.armed_round: self._check_arming(sender, a, a.armed_round) for a in armings}

    def _on_armings(self, sender: int, msg: mr.Armings) -> None:
        if (self.stage is ServerStage.COLLECT_UPLOADS
                and sender in self._armed.get(self.round_index, {})):
            raise RemoteProtocolError("an armed client must upload, not only arm")
        if not msg.armings:
            raise RemoteProtocolError("nothing to arm")
        for q, armed in self._take_armings(sender, msg.armings).items():
            self._armed.setdefault(q, {})[sender] = armed
        self._arming_now.add(sender)

    def _on_upload(self, sender: int, msg: mr.RoundUpload) -> None:
        if sender not in self._armed.get(self.round_index, {}):
            raise RemoteProtocolError("upload from a client not armed for this round")
        if msg.holders != self._holders[sender]:
            raise RemoteProtocolError("seed shares must address exactly the keyed neighbours")
        armed = self._take_armings(sender, msg.armings)
        # Accepted: sum it now (streaming, O(m) memory), keep only what unmasking needs.
        self._masked_sum = steps.add_upload(self._masked_sum, msg.words, self.params,
                                            self._dtype)
        self._uploads[sender] = (dict(zip(msg.holders, msg.seed_shares)), msg.seed_commitment)
        for q, material in armed.items():
            self._armed.setdefault(q, {})[sender] = material
        self._arming_now.add(sender)

    def _on_unmask(self, sender: int, msg: mr.RoundUnmaskShares) -> None:
        request = self._requests[sender]
        if msg.seed_owners != request.survivors or msg.recovery_owners != request.dropped:
            raise RemoteProtocolError("unmask shares do not answer the request")
        self._unmask[sender] = msg

    # --------------------------------------------------------------- stages
    def advance(self) -> Sequence[Outgoing]:
        """Close the current stage; returns the frames that open the next one."""
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED, ServerStage.BETWEEN_ROUNDS):
            raise LocalProtocolError(f"nothing to close in stage {self.stage.value}")
        if not self._started:
            raise LocalProtocolError("start() the session first")
        close = {
            ServerStage.COLLECT_KEYS: self._close_keys,
            ServerStage.COLLECT_ARMING: self._close_arming,
            ServerStage.COLLECT_UPLOADS: self._close_uploads,
            ServerStage.COLLECT_UNMASK: self._close_unmask,
        }[self.stage]
        try:
            return close()
        except ProtocolError:
            self._abort()
            raise

    def start_round(self) -> Sequence[Outgoing]:
        """Open the next round: ``RoundStart`` to every keyed client."""
        if self.stage is not ServerStage.BETWEEN_ROUNDS:
            raise LocalProtocolError(f"a round cannot start in stage {self.stage.value}")
        self.round_index = self._next_round
        self._next_round += 1
        armed = frozenset(self._armed.get(self.round_index, {}))
        try:
            self._require_survivors(armed, ServerStage.COLLECT_UPLOADS)
            self._require_neighbours(armed, ServerStage.COLLECT_UPLOADS)
        except ProtocolError:
            self._abort()
            raise
        self._maskers = {i: (self.neighbourhoods[i] & armed) - {i} for i in armed}
        self._alive = self._members
        self._arming_now = set()
        self._uploads = {}
        self._masked_sum = None
        self.stage = ServerStage.COLLECT_UPLOADS
        upcoming = self._armed.get(self.round_index + 1, {})
        return [self._frame(i, mr.RoundStart(i in armed, i in upcoming,
                                             tuple(sorted(self._maskers.get(i, ())))))
                for i in sorted(self._members)]

    def _abort(self) -> None:
        self.stage = ServerStage.ABORTED
        self._masked_sum = None
        self._unmask.clear()
        self._armed.clear()
        self._uploads.clear()

    def _require_neighbours(self, alive: frozenset[int], stage: ServerStage) -> None:
        steps.require_neighbours(self.neighbourhoods, alive, self.params.threshold, stage.value)

    def _require_survivors(self, alive: frozenset[int], stage: ServerStage) -> None:
        steps.require_survivors(alive, self.params.min_survivors, stage.value)

    def _close_keys(self) -> list[Outgoing]:
        u1 = frozenset(self._keys)
        self._require_survivors(u1, self.stage)
        self._require_neighbours(u1, self.stage)
        self._keyed = self._alive = u1
        self._holders = {i: tuple(sorted((self.neighbourhoods[i] & u1) - {i})) for i in u1}
        out = []
        for i in sorted(u1):
            entries = tuple(m.KeyEntry(j, self._keys[j].c_public, self._keys[j].s_public)
                            for j in sorted(self.neighbourhoods[i] & u1))
            out.append(self._frame(i, m.KeyDirectory(entries)))
        self.stage = ServerStage.COLLECT_ARMING
        self._arming_now = set()
        return out

    def _close_arming(self) -> list[Outgoing]:
        armed = frozenset(self._arming_now)
        self._require_survivors(armed, self.stage)
        self._require_neighbours(armed, self.stage)
        # The session's members: they hold every key they will ever need. A keyed client
        # that never armed (it missed its key directory) cannot rejoin.
        self._members = armed
        self.stage = ServerStage.BETWEEN_ROUNDS
        return []

    def _close_uploads(self) -> list[Outgoing]:
        u3 = frozenset(self._uploads)
        self._require_survivors(u3, self.stage)
        self._require_neighbours(u3, self.stage)
        armed = self._armed.get(self.round_index, {})
        self._alive = u3
        self._requests = {}
        out = []
        for i in sorted(u3):
            near = self._maskers[i] | {i}
            survivors = tuple(sorted(near & u3))
            dropped = tuple(sorted(near - u3))
            request = mr.RoundUnmaskRequest(
                survivors=survivors,
                seed_shares=tuple(self._uploads[j][0][i] for j in survivors if j != i),
                dropped=dropped,
                recovery_shares=tuple(armed[j].shares[i] for j in dropped),
                survivor_count=len(u3),
            )
            self._requests[i] = request
            out.append(self._frame(i, request))
        self._unmask = {}
        self.stage = ServerStage.COLLECT_UNMASK
        return out

    def _close_unmask(self) -> list[Outgoing]:
        t = self.params.threshold
        length = self.params.vector_length
        dtype = self._dtype
        r = self.round_index
        survivors = tuple(sorted(self._uploads))
        armed = self._armed.get(r, {})
        total = (self._masked_sum if self._masked_sum is not None
                 else np.zeros(length, dtype=dtype))
        seed_shares = steps.gather_shares(
            {h: (msg.seed_owners, msg.seed_shares) for h, msg in self._unmask.items()})
        recovery_shares = steps.gather_shares(
            {h: (msg.recovery_owners, msg.recovery_shares) for h, msg in self._unmask.items()})
        recover = steps.SecretRecovery(t, ServerStage.COLLECT_UNMASK.value)

        # Recover and check every secret before touching the sum: all or nothing.
        self_seeds = {}
        for j in survivors:
            seed = recover(seed_shares.get(j))
            if d1.seed_commitment(seed, self.session_id, r, j) != self._uploads[j][1]:
                raise InvalidShare("a self-mask seed does not match its commitment")
            self_seeds[j] = seed
        vanished = sorted(set(armed) - set(survivors))
        round_seeds = {}
        for j in vanished:
            if not self._maskers.get(j, frozenset()) & set(survivors):
                continue  # nobody who uploaded masked with it
            key = recover(recovery_shares.get(j))
            round_seeds[j] = d.open_seeds(key, armed[j].sealed_seeds, self.session_id, r, j)
        for seed in self_seeds.values():
            prg.add_mask(total, seed, subtract=True)
        for j, seeds in round_seeds.items():
            for i in sorted(self._maskers[j] & set(survivors)):
                if i not in seeds:
                    raise InvalidShare("sealed seeds miss a neighbour")
                # Survivor i added +mask if i < j, -mask otherwise: undo it.
                prg.add_mask(total, seeds[i], subtract=i < j)
        result = RoundResult(
            total=total.astype(np.uint64) & np.uint64((1 << self.params.bits) - 1),
            contributors=survivors,
            dropped=tuple(sorted(self._participants - set(survivors))),
            round_index=r,
            armed=tuple(sorted(armed)),
        )
        self.result = result
        self.results.append(result)
        self._masked_sum = None
        self._armed.pop(r, None)  # a round's recovery material is never used again
        self._uploads = {}
        self._unmask = {}
        self.stage = ServerStage.DONE if r == self.last_round else ServerStage.BETWEEN_ROUNDS
        return []
