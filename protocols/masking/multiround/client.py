"""The client of a multi-round masking session (sans-IO).

One setup for R rounds: the client advertises two X25519 public keys once,
agrees a secret with each neighbour once, and arms the first round. Each
round then costs two exchanges:

* ``RoundStart(r)`` → ``RoundUpload(r)``: ``y = x + PRG(b_r) + Σ ±PRG(s_ij,r)`` with a
  fresh self-mask seed ``b_r`` (from :mod:`secrets`) and round seeds
  ``s_ij,r = HKDF(X25519(s_i, s_j), session, r, i, j)``; Shamir shares of
  ``b_r`` sealed to each holder; and the *arming* of round r + 2: a fresh
  recovery key ``E_{r+2}``, its shares sealed to each holder, and the round
  r + 2 seeds sealed under it. Arming two rounds ahead means a client that
  misses one round is still armed for the next and contributes as soon as it
  is back; one that missed more is told it is not armed, sends only the
  armings it lacks, and contributes from the round after.
* ``RoundUnmaskRequest(r)`` → ``RoundUnmaskShares(r)``: the shares of ``b_r``
  of its neighbours that survived, and of ``E_r`` of its neighbours that
  vanished after being armed.

Why not simply reuse single-round SecAgg's keys: there the server
reconstructs a vanished client's mask *private key*. Across rounds that key
would unmask every earlier upload of that client whose self-mask seed the
server had legitimately recovered — not only future ones. Here the server
only ever recovers ``E_r``, which opens the round-r seeds and nothing else;
the long-term X25519 secrets never leave the client (Flamingo, IEEE S&P 2023,
reveals per-round pairwise masks of dropped clients for the same reason).
See docs/protocols/masking.md § Multi-round sessions.

Refusals (each raises a typed error and aborts the client for the rest of
the session): any frame of another session, a round already passed or out of
the session, a request naming a client both survivor and dropped or naming
clients it did not mask with (:class:`UnmaskRequestRefused`), fewer than
``t`` survivors around it or a session-wide survivor count below
``min_survivors`` (:class:`~protocols.errors.BelowThreshold`), a share that
does not authenticate (:class:`~protocols.errors.DecryptionError`).
"""

from __future__ import annotations

import secrets

import numpy as np

from ... import keys as kx
from ... import prg, shamir
from ...errors import (
    BelowThreshold,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from ...graph import closed_neighbourhood
from ...wire import SERVER_ID
from .. import derivations as d1
from .. import messages as m
from .. import steps
from ..client import UnmaskRequestRefused
from ..params import SessionConfig
from . import derivations as d
from . import messages as mr
from .states import CLIENT_MOVES, ClientState

__all__ = ["MultiRoundClient"]


class MultiRoundClient:
    """One client of a multi-round masking session.

    Call :meth:`set_input` before each round's ``RoundStart`` arrives: the
    reply to it is the masked upload. ``rounds_contributed`` lists the rounds
    whose upload this client sent.
    """

    def __init__(self, client_id: int, *, expected_session: bytes | None = None,
                 limits: m.Limits = m.DEFAULT_LIMITS) -> None:
        if not (isinstance(client_id, int) and 0 <= client_id < SERVER_ID):
            raise ValueError(f"client_id out of range: {client_id!r}")
        self.client_id = client_id
        self.state = ClientState.IDLE
        self._expected_session = expected_session
        self._limits = limits
        self._session_limits: m.Limits | None = None
        self.session_id: bytes | None = None
        self.config: SessionConfig | None = None
        self.first_round = 0
        self.rounds = 0
        self.round_index: int | None = None  # the last round this client took part in
        self.rounds_contributed: list[int] = []
        self._input: np.ndarray | None = None
        self._neighbourhood: frozenset[int] = frozenset()
        self._c_keys: kx.KeyPair | None = None
        self._s_keys: kx.KeyPair | None = None
        self._holders: tuple[int, ...] = ()  # keyed neighbours: they hold this client's shares
        self._c_shared: dict[int, bytes] = {}  # session-long secrets, never revealed
        self._s_shared: dict[int, bytes] = {}
        self._armed_rounds: set[int] = set()  # rounds this client sent recovery material for
        self._armed_seeds: dict[int, dict[int, bytes]] = {}  # round -> its seeds, once armed
        self._maskers: frozenset[int] = frozenset()
        self._own_seed_share: int | None = None

    @property
    def last_round(self) -> int:
        return self.first_round + self.rounds - 1

    # ------------------------------------------------------------------ input
    def set_input(self, vector: np.ndarray) -> None:
        """The vector for the next round: integers in [0, 2^bits), any integer dtype."""
        if self.state in (ClientState.DONE, ClientState.ABORTED):
            raise LocalProtocolError(f"this client is {self.state.value}")
        arr = np.asarray(vector)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError("the input must be a 1-D integer vector")
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise ValueError("input entries must be non-negative")
        if self.config is not None:
            p = self.config.params
            if arr.size != p.vector_length:
                raise LocalProtocolError(
                    f"input has {arr.size} entries, the session expects {p.vector_length}")
            if arr.size and int(arr.max()) >> p.bits:
                raise LocalProtocolError(f"input entries must be below 2^{p.bits}")
        self._input = arr

    # ------------------------------------------------------------- dispatch
    def receive(self, data: bytes) -> list[bytes]:
        """Handle one frame from the server; returns the frames to send back."""
        if self.state is ClientState.ABORTED:
            raise LocalProtocolError("this client has aborted")
        if self.state is ClientState.DONE:
            raise LocalProtocolError("this client's session is over")
        try:
            env = mr.decode(data, limits=self._session_limits or self._limits)
            round_index = self._check_binding(env)
            allowed = CLIENT_MOVES.get((self.state, env.message.KIND))
            if allowed is None:
                raise RemoteProtocolError(
                    f"{type(env.message).__name__} is not allowed in state {self.state.value}")
            reply, nxt = self._handle(env, round_index)
            assert nxt in allowed
            self.state = nxt
        except ProtocolError:
            self._abort()
            raise
        if reply is None:
            return []
        assert self.session_id is not None
        return [mr.encode(reply, session_id=self.session_id, round_index=round_index,
                          sender=self.client_id, receiver=SERVER_ID)]

    def _check_binding(self, env: m.Envelope) -> int:
        h = env.header
        if h.receiver != self.client_id:
            raise SessionMismatch("frame addressed to another client")
        if self.session_id is None:
            if self._expected_session is not None and h.session_id != self._expected_session:
                raise SessionMismatch("frame of another session")
            return h.round
        if h.session_id != self.session_id:
            raise SessionMismatch("frame of another session")
        kind = env.message.KIND
        if kind == m.KeyDirectory.KIND:
            if h.round != self.first_round:
                raise SessionMismatch("setup frame of another round")
        elif kind == mr.RoundStart.KIND:
            if not self.first_round <= h.round <= self.last_round:
                raise SessionMismatch("round outside the session")
            if self.round_index is not None and h.round <= self.round_index:
                raise ReplayedMessage("a round that already started")
        elif kind == mr.RoundUnmaskRequest.KIND:
            if h.round != self.round_index:
                raise SessionMismatch("unmask request of another round")
            if self.state is not ClientState.UPLOADED:
                raise ReplayedMessage("this round's unmask request was already answered")
        return h.round

    def _handle(self, env: m.Envelope, round_index: int) -> tuple[object | None, ClientState]:
        msg = env.message
        if isinstance(msg, mr.SessionAnnouncement):
            self.session_id = env.header.session_id
            return self._on_announcement(msg, round_index), ClientState.ADVERTISED
        if isinstance(msg, m.KeyDirectory):
            return self._on_key_directory(msg), ClientState.READY
        if isinstance(msg, mr.RoundStart):
            return self._on_round_start(msg, round_index)
        if isinstance(msg, mr.RoundUnmaskRequest):
            return self._on_unmask_request(msg, round_index)
        raise RemoteProtocolError(f"unexpected {type(msg).__name__}")  # pragma: no cover

    def _abort(self) -> None:
        self.state = ClientState.ABORTED
        self._c_keys = self._s_keys = None
        self._c_shared.clear()
        self._s_shared.clear()
        self._armed_seeds.clear()
        self._own_seed_share = None
        self._input = None

    # --------------------------------------------------------------- setup
    def _on_announcement(self, msg: mr.SessionAnnouncement, first_round: int) -> m.AdvertiseKeys:
        config = msg.config
        if not config.includes(self.client_id):
            raise SessionMismatch("this client is not a participant of the session")
        if config.params.active:
            raise RemoteProtocolError("multi-round sessions are passive-mode only")
        if first_round + msg.rounds - 1 > 0xFFFFFFFF:
            raise RemoteProtocolError("the session's rounds overflow the round counter")
        self.config = config
        self.first_round, self.rounds = first_round, msg.rounds
        self._session_limits = m.Limits.for_session(config).tightened(self._limits)
        if self._input is not None:
            self.set_input(self._input)  # check it against the session now
        self._neighbourhood = closed_neighbourhood(
            config.ids, config.params.degree, config.graph_seed, self.client_id)
        self._c_keys, self._s_keys = kx.generate_key_pair(), kx.generate_key_pair()
        return m.AdvertiseKeys(self._c_keys.public_bytes, self._s_keys.public_bytes)

    def _on_key_directory(self, msg: m.KeyDirectory) -> mr.Armings:
        assert self.config is not None and self._c_keys and self._s_keys
        entries = {e.client_id: e for e in msg.entries}
        steps.check_key_directory(entries, self._neighbourhood, self.client_id,
                                  (self._c_keys.public_bytes, self._s_keys.public_bytes),
                                  self.config.params.threshold)
        # The only key agreements of the session.
        self._c_shared, self._s_shared = steps.agree_with_neighbours(
            entries, self.client_id, self._c_keys, self._s_keys)
        self._c_keys = self._s_keys = None  # the private keys are never needed again
        self._holders = tuple(sorted(self._c_shared))
        first = range(self.first_round, min(self.first_round + mr.ARMING_WINDOW,
                                            self.last_round + 1))
        return mr.Armings(tuple(self._arm(q) for q in first))

    # ----------------------------------------------------------- the rounds
    def _round_seeds(self, round_index: int) -> dict[int, bytes]:
        assert self.session_id is not None
        return {peer: d1.pairwise_seed_from_shared(shared, self.session_id, round_index,
                                                   self.client_id, peer)
                for peer, shared in self._s_shared.items()}

    def _arm(self, round_index: int) -> mr.Arming:
        """Recovery material for ``round_index``: E's shares and the round's seeds under E."""
        assert self.config is not None and self.session_id is not None
        recovery_key = secrets.token_bytes(32)
        seeds = self._round_seeds(round_index)
        xs = [self.client_id + 1] + [h + 1 for h in self._holders]
        shares = shamir.split(recovery_key, self.config.params.threshold, xs)[1:]
        sealed = tuple(
            d.seal_share(d.recovery_share_key(self._c_shared[h], self.session_id, round_index,
                                              self.client_id, h),
                         d.RECOVERY, self.session_id, round_index, self.client_id, h, share)
            for h, share in zip(self._holders, shares))
        self._armed_rounds.add(round_index)
        self._armed_seeds[round_index] = seeds  # derived once, used when the round comes
        return mr.Arming(round_index, self._holders, sealed,
                         d.seal_seeds(recovery_key, self.session_id, round_index,
                                      self.client_id, seeds))

    def _on_round_start(self, msg: mr.RoundStart, round_index: int,
                        ) -> tuple[object | None, ClientState]:
        assert self.config is not None and self.session_id is not None
        params = self.config.params
        self.round_index = round_index
        self._own_seed_share = None
        last = round_index == self.last_round
        if (msg.armed and round_index not in self._armed_rounds) or (
                msg.next_armed and round_index + 1 not in self._armed_rounds):
            raise RemoteProtocolError("told it is armed for a round it never armed")
        seeds = self._armed_seeds.pop(round_index, None)
        for stale in [q for q in self._armed_seeds if q <= round_index]:
            del self._armed_seeds[stale]  # rounds it missed: never used
        # Keep recovery material for the next two rounds at the server.
        armings = tuple(self._arm(q) for q in (round_index + 1, round_index + 2)
                        if q <= self.last_round and not (q == round_index + 1 and msg.next_armed))
        if not msg.armed:
            # It missed the round that would have armed this one: arm, contribute later.
            if last:
                return None, ClientState.DONE
            return (mr.Armings(armings) if armings else None), ClientState.READY
        maskers = frozenset(msg.maskers)
        if self.client_id in maskers or not maskers <= set(self._holders):
            raise RemoteProtocolError("maskers outside the keyed neighbourhood")
        if len(maskers) + 1 < params.threshold:
            raise BelowThreshold(len(maskers) + 1, params.threshold, "masked_input")
        if self._input is None:
            raise LocalProtocolError("set_input() must be called before each round starts")
        if seeds is None:
            seeds = self._round_seeds(round_index)
        self_seed = secrets.token_bytes(prg.SEED_SIZE)  # fresh every round
        masked = steps.mask_input(self._input, params, self_seed,
                                  ((peer, seeds[peer]) for peer in sorted(maskers)),
                                  self.client_id)
        xs = [self.client_id + 1] + [h + 1 for h in self._holders]
        shares = shamir.split(self_seed, params.threshold, xs)
        self._own_seed_share = shares[0]
        sealed = tuple(
            d.seal_share(d.seed_share_key(self._c_shared[h], self.session_id, round_index,
                                          self.client_id, h),
                         d.SEED, self.session_id, round_index, self.client_id, h, share)
            for h, share in zip(self._holders, shares[1:]))
        commitment = d1.seed_commitment(self_seed, self.session_id, round_index, self.client_id)
        self._maskers = maskers
        self._input = None
        self.rounds_contributed.append(round_index)
        return (mr.RoundUpload(masked, self._holders, sealed, commitment, armings),
                ClientState.UPLOADED)

    def _on_unmask_request(self, msg: mr.RoundUnmaskRequest, round_index: int,
                           ) -> tuple[mr.RoundUnmaskShares, ClientState]:
        assert self.config is not None and self.session_id is not None
        params = self.config.params
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        if survivors & dropped:
            raise UnmaskRequestRefused("a client cannot be both a survivor and dropped")
        if self.client_id not in survivors:
            raise UnmaskRequestRefused("request names this client as dropped")
        if not (survivors | dropped) <= self._maskers | {self.client_id}:
            raise UnmaskRequestRefused("request names clients this client did not mask with")
        if len(survivors) < params.threshold:
            raise BelowThreshold(len(survivors), params.threshold, "unmasking")
        if not len(survivors) <= msg.survivor_count <= len(self.config):
            raise UnmaskRequestRefused("the stated survivor count contradicts the request")
        if msg.survivor_count < params.min_survivors:
            raise BelowThreshold(msg.survivor_count, params.min_survivors, "unmasking")
        assert self._own_seed_share is not None
        others = [s for s in msg.survivors if s != self.client_id]
        seed_shares = {self.client_id: self._own_seed_share}
        for owner, ciphertext in zip(others, msg.seed_shares):
            key = d.seed_share_key(self._c_shared[owner], self.session_id, round_index, owner,
                                   self.client_id)
            seed_shares[owner] = d.open_share(key, d.SEED, ciphertext, self.session_id,
                                              round_index, owner, self.client_id)
        recovery_shares = {}
        for owner, ciphertext in zip(msg.dropped, msg.recovery_shares):
            key = d.recovery_share_key(self._c_shared[owner], self.session_id, round_index,
                                       owner, self.client_id)
            recovery_shares[owner] = d.open_share(key, d.RECOVERY, ciphertext, self.session_id,
                                                  round_index, owner, self.client_id)
        self._own_seed_share = None
        seed_owners, recovery_owners = tuple(sorted(seed_shares)), tuple(sorted(recovery_shares))
        reply = mr.RoundUnmaskShares(
            seed_owners, tuple(shamir.encode_share(seed_shares[o]) for o in seed_owners),
            recovery_owners, tuple(shamir.encode_share(recovery_shares[o])
                                   for o in recovery_owners))
        if round_index == self.last_round:
            self._c_shared.clear()
            self._s_shared.clear()
            return reply, ClientState.DONE
        return reply, ClientState.READY
