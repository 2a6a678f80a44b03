"""The server side of SecAgg / SecAgg+ as a sans-IO state machine.

The server collects one kind of message per stage (:data:`SERVER_EXPECTS`),
and the caller decides when a stage ends (a deadline, or every live client
answered) by calling :meth:`MaskingServer.advance`, which returns the frames
of the next stage as ``(receiver, bytes)`` pairs. A client that has not
answered when its stage closes is a dropout from then on; a late answer is
rejected.

Errors: a bad frame from one client (malformed, replayed, wrong session,
invalid signature, wrong content) raises a typed error from :meth:`receive`
and is discarded — the server stays in its stage and that client simply has
not answered. The server itself aborts (state ``ABORTED``, error re-raised)
only when the session cannot finish correctly: fewer than ``t`` survivors in
some neighbourhood, or fewer than ``params.min_survivors`` live clients in the
whole session (:class:`~protocols.errors.BelowThreshold`, naming the stage), or
a reconstruction that fails its commitment (:class:`~protocols.errors.InvalidShare`).
It never releases a partial sum.

Every frame is decoded against the session's own sizes
(:meth:`Limits.for_session`): a client cannot make the server allocate more
than the largest legal message of its kind. An advertised public key that is
not a valid X25519 point of large order is refused at advertise time
(:class:`~protocols.errors.MalformedMessage`): that client is a dropout and
the session goes on without it.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from .. import keys as kx
from .. import prg
from ..errors import (
    InvalidShare,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from ..graph import harary_neighbourhoods
from ..keys import TrustStore
from ..wire import SERVER_ID, FrameHeader, Writer, check_round_index
from . import derivations as d
from . import messages as m
from . import steps
from .params import MaskingParams, SessionConfig
from .states import SERVER_EXPECTS, ServerStage, server_next_stage

__all__ = ["Broadcast", "MaskingServer", "Outgoing", "ServerResult"]

Outgoing = tuple[int, bytes]  # (receiver client id, frame)


class Broadcast(Sequence[Outgoing]):
    """One message to many receivers, as ``(receiver, frame)`` pairs built on access.

    The body is encoded once; each frame is the 40-byte header of its receiver
    followed by that body. At n = 10,000 the announcement is a 40 KB body:
    holding every frame at once would take 400 MB, building each one as the
    transport reads it takes one.
    """

    def __init__(self, message: m.Message, receivers: Sequence[int], *, session_id: bytes,
                 round_index: int, protocol: int = m.PROTOCOL_CODE) -> None:
        self._protocol = protocol
        self._kind = message.KIND
        self._body = m.encode_body(message)
        self._receivers = tuple(receivers)
        self._session_id = session_id
        self._round_index = round_index

    def __len__(self) -> int:
        return len(self._receivers)

    def _pair(self, receiver: int) -> Outgoing:
        header = FrameHeader(self._protocol, self._kind, self._session_id, self._round_index,
                             SERVER_ID, receiver)
        return receiver, header.pack(len(self._body)) + self._body

    @overload
    def __getitem__(self, index: int) -> Outgoing: ...

    @overload
    def __getitem__(self, index: slice) -> list[Outgoing]: ...

    def __getitem__(self, index: int | slice) -> Outgoing | list[Outgoing]:
        if isinstance(index, slice):
            return [self._pair(r) for r in self._receivers[index]]
        return self._pair(self._receivers[index])

    def __iter__(self) -> Iterator[Outgoing]:
        return (self._pair(r) for r in self._receivers)


@dataclass(frozen=True)
class ServerResult:
    total: np.ndarray  # uint64, sum of the contributors' inputs modulo 2^bits
    contributors: tuple[int, ...]  # U3: clients whose masked input is in the total
    dropped: tuple[int, ...]  # participants not in the total


class MaskingServer:
    """The aggregating server of one masking session.

    Parameters
    ----------
    params:
        Threshold, degree, bits, vector length and mode.
    participants:
        The client ids invited to the session.
    round_index:
        The training round, an integer in ``[0, 2^32)``; bound into every frame
        and derived key.
    trust:
        Verification keys of the clients (active mode).
    session_id, graph_seed:
        Fresh from :mod:`secrets` unless given (tests pin them).
    """

    def __init__(
        self,
        params: MaskingParams,
        participants: Iterable[int],
        *,
        round_index: int = 0,
        trust: TrustStore | None = None,
        session_id: bytes | None = None,
        graph_seed: bytes | None = None,
        limits: m.Limits | None = None,
    ) -> None:
        if params.active and trust is None:
            raise ValueError("active mode needs a trust store")
        self.session_id = session_id if session_id is not None else secrets.token_bytes(16)
        self.round_index = check_round_index(round_index)
        self.config = SessionConfig(params, tuple(sorted(set(participants))),
                                    graph_seed if graph_seed is not None
                                    else secrets.token_bytes(32))
        self.params = params
        self.stage = ServerStage.COLLECT_KEYS
        self.result: ServerResult | None = None
        self._trust = trust
        self._limits = m.Limits.for_session(self.config).tightened(limits)
        self._started = False
        self._participants = frozenset(self.config.participants)
        self.neighbourhoods = harary_neighbourhoods(
            self.config.participants, params.degree, self.config.graph_seed)
        self._digest = self.config.digest(self.session_id, round_index)
        self._dtype = prg.word_dtype(params.bits)
        # What each stage collected, keyed by client id.
        self._keys: dict[int, m.AdvertiseKeys] = {}
        self._taken_keys: set[bytes] = set()
        # Sender -> (receivers, its ciphertexts joined in receiver order, seed commitment).
        self._shares: dict[int, tuple[tuple[int, ...], bytes, bytes]] = {}
        self._commitments: dict[int, bytes] = {}  # self-mask seed commitments of U2
        self._forwarded: dict[int, frozenset[int]] = {}  # i -> senders whose shares i got
        self._masked: set[int] = set()
        self._masked_sum: np.ndarray | None = None
        self._signatures: dict[int, bytes] = {}
        self._requests: dict[int, m.UnmaskRequest] = {}
        self._unmask: dict[int, m.UnmaskShares] = {}
        self._alive: frozenset[int] = self._participants  # expected to answer this stage
        self._survivors: tuple[int, ...] = ()  # U3

    # --------------------------------------------------------------- frames
    def _frame(self, receiver: int, msg: m.Message) -> Outgoing:
        return receiver, m.encode(msg, session_id=self.session_id, round_index=self.round_index,
                                  sender=SERVER_ID, receiver=receiver)

    def _frame_of(self, receiver: int, kind: int, body: Writer) -> Outgoing:
        return receiver, m.encode_writer(kind, body, session_id=self.session_id,
                                         round_index=self.round_index, sender=SERVER_ID,
                                         receiver=receiver)

    def _broadcast(self, msg: m.Message, receivers: Sequence[int]) -> Broadcast:
        return Broadcast(msg, receivers, session_id=self.session_id, round_index=self.round_index)

    def start(self) -> Sequence[Outgoing]:
        """The session announcement, one frame per participant (built as it is read)."""
        if self._started:
            raise LocalProtocolError("the session was already started")
        self._started = True
        return self._broadcast(m.SessionStart(self.config), self.config.participants)

    def _collected(self) -> Collection[int]:
        return {
            ServerStage.COLLECT_KEYS: self._keys,
            ServerStage.COLLECT_SHARES: self._shares,
            ServerStage.COLLECT_MASKED: self._masked,
            ServerStage.COLLECT_SIGNATURES: self._signatures,
            ServerStage.COLLECT_UNMASK: self._unmask,
        }.get(self.stage, ())

    @property
    def answered(self) -> frozenset[int]:
        """Clients whose message for the current stage was accepted."""
        return frozenset(self._collected())

    @property
    def waiting_for(self) -> frozenset[int]:
        """Clients still expected to answer in the current stage."""
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            return frozenset()
        return self._alive - self.answered

    def receive(self, data: bytes) -> None:
        """Accept one client frame for the current stage, or raise a typed error."""
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            raise LocalProtocolError(f"the session is {self.stage.value}")
        if not self._started:
            raise LocalProtocolError("start() the session first")
        env = m.decode(data, limits=self._limits)
        h = env.header
        if h.session_id != self.session_id or h.round != self.round_index:
            raise SessionMismatch("frame of another session or round")
        sender = h.sender
        if sender not in self._participants:
            raise SessionMismatch("frame from a client outside the session")
        expected = SERVER_EXPECTS[self.stage]
        if env.message.KIND != expected:
            if env.message.KIND in [k for s, k in SERVER_EXPECTS.items() if self._before(s)]:
                raise ReplayedMessage("message of a closed stage (replayed or late)")
            raise RemoteProtocolError(f"{type(env.message).__name__} not expected now")
        if sender in self._collected():
            raise ReplayedMessage("this client already answered the current stage")
        if sender not in self._alive:
            raise RemoteProtocolError("client dropped out in an earlier stage")
        handler = {
            ServerStage.COLLECT_KEYS: self._on_keys,
            ServerStage.COLLECT_SHARES: self._on_shares,
            ServerStage.COLLECT_MASKED: self._on_masked,
            ServerStage.COLLECT_SIGNATURES: self._on_signature,
            ServerStage.COLLECT_UNMASK: self._on_unmask,
        }[self.stage]
        handler(sender, env.message)

    def _before(self, stage: ServerStage) -> bool:
        order = list(SERVER_EXPECTS)
        return stage in order and self.stage in order and order.index(stage) < order.index(
            self.stage)

    # ------------------------------------------------------------ handlers
    def _on_keys(self, sender: int, msg: m.AdvertiseKeys) -> None:
        steps.check_advertised_keys(msg, self._taken_keys)
        if self.params.active:
            assert self._trust is not None
            vk = self._trust.verification_key(sender)
            if vk is None or not msg.signature:
                raise InvalidSignature("unverifiable advertised keys")
            kx.verify(vk, msg.signature, d.advertise_transcript(
                self._digest, sender, msg.c_public, msg.s_public))
        elif msg.signature:
            raise MalformedMessage("signature in passive mode")
        self._keys[sender] = msg
        self._taken_keys.update((msg.c_public, msg.s_public))

    def _on_shares(self, sender: int, msg: m.EncryptedShares) -> None:
        expected = sorted((self.neighbourhoods[sender] & self._alive) - {sender})
        if list(msg.receivers) != expected:
            raise RemoteProtocolError("shares must go to exactly the announced neighbours")
        # Joined now, while they are hot: the bundles are cut from one array at close.
        self._shares[sender] = (msg.receivers, b"".join(msg.ciphertexts), msg.seed_commitment)

    def _on_masked(self, sender: int, msg: m.MaskedInput) -> None:
        self._masked_sum = steps.add_upload(self._masked_sum, msg.words, self.params,
                                            self._dtype)
        self._masked.add(sender)

    def _on_signature(self, sender: int, msg: m.ConsistencySignature) -> None:
        assert self._trust is not None
        vk = self._trust.verification_key(sender)
        if vk is None:
            raise InvalidSignature("unknown client key")
        kx.verify(vk, msg.signature, d.consistency_transcript(self._digest, self._survivors))
        self._signatures[sender] = msg.signature

    def _on_unmask(self, sender: int, msg: m.UnmaskShares) -> None:
        request = self._requests[sender]
        if msg.seed_owners != request.survivors or msg.key_owners != request.dropped:
            raise RemoteProtocolError("unmask shares do not answer the request")
        self._unmask[sender] = msg

    # --------------------------------------------------------------- stages
    def advance(self) -> Sequence[Outgoing]:
        """Close the current stage; returns the frames that open the next one."""
        if self.stage in (ServerStage.DONE, ServerStage.ABORTED):
            raise LocalProtocolError(f"the session is {self.stage.value}")
        if not self._started:
            raise LocalProtocolError("start() the session first")
        try:
            out = {
                ServerStage.COLLECT_KEYS: self._close_keys,
                ServerStage.COLLECT_SHARES: self._close_shares,
                ServerStage.COLLECT_MASKED: self._close_masked,
                ServerStage.COLLECT_SIGNATURES: self._close_signatures,
                ServerStage.COLLECT_UNMASK: self._close_unmask,
            }[self.stage]()
        except ProtocolError:
            self._abort()
            raise
        self.stage = server_next_stage(self.stage, self.params.active)
        return out

    def _abort(self) -> None:
        self.stage = ServerStage.ABORTED
        self._masked_sum = None
        self._unmask.clear()

    def _require_neighbours(self, alive: frozenset[int], stage: ServerStage) -> None:
        """Every live client must keep ``t`` live members in its neighbourhood."""
        steps.require_neighbours(self.neighbourhoods, alive, self.params.threshold, stage.value)

    def _require_survivors(self, alive: frozenset[int], stage: ServerStage) -> None:
        """The session-wide floor: at least ``min_survivors`` clients may still contribute.

        Checked when each stage that can lose contributors closes (keys,
        shares, masked inputs); the last of these is the gate before any
        unmasking request goes out, so no share is ever asked for a sum of
        fewer than ``min_survivors`` inputs.
        """
        steps.require_survivors(alive, self.params.min_survivors, stage.value)

    def _close_keys(self) -> list[Outgoing]:
        u1 = frozenset(self._keys)
        self._require_survivors(u1, self.stage)
        self._require_neighbours(u1, self.stage)
        self._alive = u1
        # Each directory is written from per-client columns (64 key bytes, 0 or 64 signature
        # bytes), joined per receiver: no per-(receiver, neighbour) object.
        keys = {j: msg.c_public + msg.s_public for j, msg in self._keys.items()}
        signatures = {j: msg.signature for j, msg in self._keys.items()}
        out = []
        for i in sorted(u1):
            ids = sorted(self.neighbourhoods[i] & u1)
            w = Writer()
            m.write_key_directory(w, ids, b"".join([keys[j] for j in ids]),
                                  b"".join([signatures[j] for j in ids]))
            out.append(self._frame_of(i, m.KeyDirectory.KIND, w))
        return out

    def _close_shares(self) -> list[Outgoing]:
        u2 = frozenset(self._shares)
        self._require_survivors(u2, self.stage)
        self._require_neighbours(u2, self.stage)
        self._alive = u2
        # Every ciphertext as one row of one array, sorted by (receiver, sender): each
        # bundle is then one contiguous run. The bundle of i holds exactly the rows
        # addressed to i: every sender j in U2 addressed N(j) ∩ U1 - {j} (checked on
        # receipt), and N is symmetric, so these are the senders N(i) ∩ U2 - {i}, ascending.
        # (Built per row with Python objects, this step cost 3x more per row at
        # n = 10,000 than at n = 1,000: 420,000 scattered 90-byte objects.)
        order_senders = sorted(u2)
        receivers = [np.asarray(self._shares[j][0], dtype=np.int64) for j in order_senders]
        row_receiver = np.concatenate(receivers) if receivers else np.empty(0, np.int64)
        row_sender = np.repeat(np.asarray(order_senders, dtype=np.int64),
                               [r.size for r in receivers])
        rows = np.frombuffer(b"".join([self._shares[j][1] for j in order_senders]),
                             dtype=np.uint8).reshape(-1, m.SHARE_CIPHERTEXT_SIZE)
        by_receiver = np.argsort(row_receiver, kind="stable")  # senders stay ascending
        row_receiver, row_sender = row_receiver[by_receiver], row_sender[by_receiver]
        rows = rows[by_receiver]
        ids = np.asarray(order_senders, dtype=np.int64)
        starts = np.searchsorted(row_receiver, ids, side="left").tolist()
        ends = np.searchsorted(row_receiver, ids, side="right").tolist()
        out = []
        for i, start, end in zip(order_senders, starts, ends):
            senders = row_sender[start:end]
            self._forwarded[i] = frozenset(senders.tolist())
            w = Writer()
            m.write_share_bundle(w, senders, memoryview(rows[start:end]))
            out.append(self._frame_of(i, m.ShareBundle.KIND, w))
        # The ciphertexts are delivered; only the commitments are needed from here on.
        self._commitments = {j: entry[2] for j, entry in self._shares.items()}
        self._shares = {}
        return out

    def _close_masked(self) -> Sequence[Outgoing]:
        u3 = frozenset(self._masked)
        self._require_survivors(u3, self.stage)
        self._require_neighbours(u3, self.stage)
        self._alive = u3
        self._survivors = tuple(sorted(u3))
        if self.params.active:
            return self._broadcast(m.ConsistencyRequest(self._survivors), self._survivors)
        return self._unmask_requests(u3, {})

    def _close_signatures(self) -> list[Outgoing]:
        u4 = frozenset(self._signatures)
        self._require_neighbours(u4, self.stage)
        self._alive = u4
        return self._unmask_requests(u4, self._signatures)

    def _unmask_requests(self, ask: frozenset[int], signatures: dict[int, bytes]) -> list[Outgoing]:
        u3 = set(self._survivors)
        signed = set(signatures)  # once: per receiver it made this loop O(n^2) in active mode
        out = []
        for i in sorted(ask):
            known = self._forwarded[i] | {i}
            signers = tuple(sorted(self.neighbourhoods[i] & signed))
            request = m.UnmaskRequest(
                survivors=tuple(sorted(known & u3)),
                dropped=tuple(sorted(known - u3)),
                signers=signers,
                signatures=tuple(signatures[s] for s in signers),
                survivor_count=len(u3),
            )
            self._requests[i] = request
            out.append(self._frame(i, request))
        return out

    def _close_unmask(self) -> list[Outgoing]:
        t = self.params.threshold
        bits = self.params.bits
        length = self.params.vector_length
        dtype = self._dtype
        total = (self._masked_sum if self._masked_sum is not None
                 else np.zeros(length, dtype=dtype))
        # The revealed shares per owner: x = holder id + 1.
        seed_shares = steps.gather_shares(
            {h: (msg.seed_owners, msg.seed_shares) for h, msg in self._unmask.items()})
        key_shares = steps.gather_shares(
            {h: (msg.key_owners, msg.key_shares) for h, msg in self._unmask.items()})
        survivors = self._survivors
        dropped_with_masks = sorted(
            {j for i in survivors for j in self._forwarded[i]} - set(survivors))
        recover = steps.SecretRecovery(t, ServerStage.COLLECT_UNMASK.value)

        # Recover every secret before touching the sum: all-or-nothing.
        seeds = {}
        for j in survivors:
            seed = recover(seed_shares.get(j))
            commitment = self._commitments[j]
            if d.seed_commitment(seed, self.session_id, self.round_index, j) != commitment:
                raise InvalidShare("a self-mask seed does not match its commitment")
            seeds[j] = seed
        mask_keys = {}
        for j in dropped_with_masks:
            private, public = kx.load_private(recover(key_shares.get(j)))
            if public != self._keys[j].s_public:
                raise InvalidShare("a mask key does not match its public key")
            mask_keys[j] = private  # loaded once for all of j's surviving neighbours

        for seed in seeds.values():
            prg.add_mask(total, seed, subtract=True)
        survivor_set = set(survivors)
        for j, private in mask_keys.items():
            for i in sorted(self.neighbourhoods[j] & survivor_set):
                if j not in self._forwarded[i]:
                    continue
                seed = d.pairwise_seed(private, self._keys[i].s_public, self.session_id,
                                       self.round_index, i, j)
                # Survivor i added +mask if i < j, -mask otherwise: undo it.
                prg.add_mask(total, seed, subtract=i < j)
        result = total.astype(np.uint64) & np.uint64((1 << bits) - 1)
        self.result = ServerResult(
            total=result,
            contributors=survivors,
            dropped=tuple(sorted(self._participants - set(survivors))),
        )
        self._masked_sum = None
        return []

