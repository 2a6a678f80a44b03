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
from functools import cached_property
from typing import overload

import numpy as np

from .. import keys as kx
from .. import prg
from ..errors import (
    BelowThreshold,
    InvalidShare,
    InvalidSignature,
    LocalProtocolError,
    MalformedMessage,
    ProtocolError,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from ..graph import harary_rows
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
        # Per-client state in columns indexed by the client's position in the sorted
        # participant list; the graph as one (n, k + 1) array of positions. (Sets and
        # dicts per (client, neighbour) cost ~1.5x more per entry at n = 10,000 than at
        # 1,000: their working set no longer fits the caches.)
        self._ids = np.asarray(self.config.participants, dtype=np.int64)
        self._position = dict(zip(self.config.participants, range(len(self._ids))))
        self._rows = harary_rows(self._ids, params.degree, self.config.graph_seed)
        self._key_columns = np.zeros((self._ids.size, 2 * kx.KEY_SIZE), dtype=np.uint8)
        self._signature_columns = np.zeros(
            (self._ids.size, m.SIGNATURE_SIZE if params.active else 0), dtype=np.uint8)
        self._digest = self.config.digest(self.session_id, round_index)
        self._dtype = prg.word_dtype(params.bits)
        # What each stage collected, keyed by client id.
        self._keys: dict[int, m.AdvertiseKeys] = {}
        self._taken_keys: set[bytes] = set()
        # Sender -> (receivers, its ciphertexts joined in receiver order, seed commitment).
        self._shares: dict[int, tuple[tuple[int, ...], bytes, bytes]] = {}
        self._commitments: dict[int, bytes] = {}  # self-mask seed commitments of U2
        # U2 and U3 as masks over positions. The bundle of i in U2 held the shares of
        # exactly N(i) ∩ U2 - {i} (checked on receipt), so U2 says who holds whose shares.
        self._u2 = np.zeros(self._ids.size, dtype=bool)
        self._u3 = np.zeros(self._ids.size, dtype=bool)
        self._masked: set[int] = set()
        self._masked_sum: np.ndarray | None = None
        self._signatures: dict[int, bytes] = {}
        self._requests: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}  # survivors, dropped
        self._unmask: dict[int, m.UnmaskShares] = {}
        self._alive: frozenset[int] = self._participants  # expected to answer this stage
        self._alive_mask = np.ones(self._ids.size, dtype=bool)
        self._survivors: tuple[int, ...] = ()  # U3

    @cached_property
    def neighbourhoods(self) -> dict[int, frozenset[int]]:
        """Each participant's closed neighbourhood (the server itself uses the rows)."""
        return {int(self._ids[s]): frozenset(self._ids[row].tolist())
                for s, row in enumerate(self._rows)}

    def _mask_of(self, members: Collection[int]) -> np.ndarray:
        """``members`` (participants) as a boolean mask over positions."""
        mask = np.zeros(self._ids.size, dtype=bool)
        if members:
            mask[np.searchsorted(self._ids, np.fromiter(members, np.int64, len(members)))] = True
        return mask

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
        position = self._position[sender]
        self._key_columns[position] = np.frombuffer(msg.c_public + msg.s_public, np.uint8)
        if self.params.active:
            self._signature_columns[position] = np.frombuffer(msg.signature, np.uint8)

    def _on_shares(self, sender: int, msg: m.EncryptedShares) -> None:
        position = self._position[sender]
        row = self._rows[position]
        expected = self._ids[row[self._alive_mask[row] & (row != position)]].tolist()
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
        survivors, dropped = self._requests[sender]
        if msg.seed_owners != survivors or msg.key_owners != dropped:
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

    def _require_neighbours(self, alive: np.ndarray, stage: ServerStage) -> None:
        """Every live client (``alive``, a mask) must keep ``t`` live members in its
        neighbourhood (:func:`steps.require_neighbours`, on the rows)."""
        threshold = self.params.threshold
        if not alive.any():
            raise BelowThreshold(0, threshold, stage.value)
        fewest = int(np.count_nonzero(alive[self._rows[alive]], axis=1).min())
        if fewest < threshold:
            raise BelowThreshold(fewest, threshold, stage.value)

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
        mask = self._mask_of(u1)
        self._require_neighbours(mask, self.stage)
        self._alive, self._alive_mask = u1, mask
        # Every directory cut from one gather of the key columns (64 key bytes, 0 or 64
        # signature bytes per client): row by row, the live members of each receiver's
        # neighbourhood, ascending, so that each directory is one contiguous run.
        receivers = np.flatnonzero(mask)
        rows = self._rows[receivers]
        live = mask[rows]
        members = rows[live]
        ends = np.cumsum(np.count_nonzero(live, axis=1)).tolist()
        ids, keys = self._ids[members], self._key_columns[members].reshape(-1)
        signatures = self._signature_columns[members].reshape(-1)
        key_size, signature_size = self._key_columns.shape[1], self._signature_columns.shape[1]
        out = []
        start = 0
        for i, end in zip(self._ids[receivers].tolist(), ends):
            w = Writer()
            m.write_key_directory(
                w, ids[start:end], memoryview(keys[start * key_size:end * key_size]),
                memoryview(signatures[start * signature_size:end * signature_size]))
            out.append(self._frame_of(i, m.KeyDirectory.KIND, w))
            start = end
        return out

    def _close_shares(self) -> list[Outgoing]:
        u2 = frozenset(self._shares)
        self._require_survivors(u2, self.stage)
        mask = self._mask_of(u2)
        self._require_neighbours(mask, self.stage)
        self._alive, self._alive_mask, self._u2 = u2, mask, mask
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
            w = Writer()
            m.write_share_bundle(w, row_sender[start:end], memoryview(rows[start:end]))
            out.append(self._frame_of(i, m.ShareBundle.KIND, w))
        # The ciphertexts are delivered; only the commitments are needed from here on.
        self._commitments = {j: entry[2] for j, entry in self._shares.items()}
        self._shares = {}
        return out

    def _close_masked(self) -> Sequence[Outgoing]:
        u3 = frozenset(self._masked)
        self._require_survivors(u3, self.stage)
        mask = self._mask_of(u3)
        self._require_neighbours(mask, self.stage)
        self._alive, self._alive_mask, self._u3 = u3, mask, mask
        self._survivors = tuple(sorted(u3))
        if self.params.active:
            return self._broadcast(m.ConsistencyRequest(self._survivors), self._survivors)
        return self._unmask_requests(mask, {})

    def _close_signatures(self) -> list[Outgoing]:
        u4 = frozenset(self._signatures)
        mask = self._mask_of(u4)
        self._require_neighbours(mask, self.stage)
        self._alive, self._alive_mask = u4, mask
        return self._unmask_requests(mask, self._signatures)

    def _unmask_requests(self, ask: np.ndarray, signatures: dict[int, bytes]) -> list[Outgoing]:
        """One request per client in ``ask`` (a mask): the survivors and the dropped among
        the clients whose shares it holds (N(i) ∩ U2, itself included), and the
        neighbours' consistency signatures (active mode)."""
        signed = self._mask_of(signatures)  # once: per receiver it made this loop O(n^2)
        count = len(self._survivors)
        receivers = np.flatnonzero(ask)
        rows = self._rows[receivers]
        known, alive = self._u2[rows], self._u3[rows]
        ids = self._ids
        survivors, dropped = ids[rows[known & alive]], ids[rows[known & ~alive]]
        survivor_ends = np.cumsum(np.count_nonzero(known & alive, axis=1)).tolist()
        dropped_ends = np.cumsum(np.count_nonzero(known & ~alive, axis=1)).tolist()
        signer_rows = signed[rows]
        out = []
        s_start = d_start = 0
        for index, (i, s_end, d_end) in enumerate(zip(ids[receivers].tolist(), survivor_ends,
                                                       dropped_ends)):
            signers = tuple(ids[rows[index][signer_rows[index]]].tolist()) if signatures else ()
            request = m.UnmaskRequest(
                survivors=tuple(survivors[s_start:s_end].tolist()),
                dropped=tuple(dropped[d_start:d_end].tolist()),
                signers=signers,
                signatures=tuple(signatures[s] for s in signers),
                survivor_count=count,
            )
            self._requests[i] = (request.survivors, request.dropped)
            out.append(self._frame(i, request))
            s_start, d_start = s_end, d_end
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
        # The clients whose pairwise masks some survivor added: in U2 (each survivor
        # received their shares and agreed with them) but not in U3, and a survivor's
        # neighbour.
        maybe = np.flatnonzero(self._u2 & ~self._u3)
        with_masks = maybe[self._u3[self._rows[maybe]].any(axis=1)]
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
        for j in self._ids[with_masks].tolist():
            private, public = kx.load_private(recover(key_shares.get(j)))
            if public != self._keys[j].s_public:
                raise InvalidShare("a mask key does not match its public key")
            mask_keys[j] = private  # loaded once for all of j's surviving neighbours

        for seed in seeds.values():
            prg.add_mask(total, seed, subtract=True)
        for j, private in mask_keys.items():
            row = self._rows[self._position[j]]
            for i in self._ids[row[self._u3[row]]].tolist():  # ascending, all hold j's shares
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

