"""The client side of SecAgg / SecAgg+ as a sans-IO state machine.

Feed it the server's frames with :meth:`MaskingClient.receive`; it returns the
frames to send back (zero or one). It never does I/O, never blocks, and holds
no thread. Any protocol error moves it to ``ABORTED`` and is re-raised; an
aborted client answers nothing more, which the server sees as a dropout.

Refusals an honest client enforces (each raises and aborts):

* the request to unmask names a client both as survivor and as dropped
  (:class:`UnmaskRequestRefused`): revealing both the self-mask seed share
  and the mask-key share of one client would let the server unmask it;
* a second unmasking request, or any message replayed from an earlier stage
  (:class:`~protocols.errors.ReplayedMessage`);
* a frame of another session, round or receiver
  (:class:`~protocols.errors.SessionMismatch`);
* parameters weaker than its policy (threshold not a strict majority, passive
  mode when it holds a signing key) or fewer than ``t`` neighbours left
  (:class:`~protocols.errors.BelowThreshold`);
* a survivor set (consistency check) or an unmasking request whose
  session-wide survivor count is below the session's ``min_survivors``
  (:class:`~protocols.errors.BelowThreshold`): its shares would help release a
  sum with fewer inputs — for distributed DP, less noise — than agreed.

Once the session is announced, every frame is decoded against the session's
own sizes (:meth:`Limits.for_session`), so a hostile server cannot make the
client allocate more than the largest legal message of each kind.
"""

from __future__ import annotations

import secrets

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import keys as kx
from .. import prg, shamir
from ..errors import (
    BelowThreshold,
    ConsistencyError,
    InvalidSignature,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ReplayedMessage,
    SessionMismatch,
)
from ..graph import closed_neighbourhood
from ..wire import SERVER_ID
from . import derivations as d
from . import messages as m
from . import steps
from .params import SessionConfig
from .states import ClientState, client_next_state, client_past_kinds

__all__ = ["MaskingClient", "UnmaskRequestRefused"]


class UnmaskRequestRefused(RemoteProtocolError):
    """The server asked for both kinds of share of one client, or for shares it may not have."""


class MaskingClient:
    """One client of a masking session.

    Parameters
    ----------
    client_id:
        This client's id, as the server lists it among the participants.
    signing_key:
        Ed25519 key for the active-adversary mode. A client with a signing key
        refuses sessions that are not in active mode (no silent downgrade).
    trust:
        Looks up the verification keys of other clients (active mode only).
    expected_session:
        If given, the 16-byte session id this client agreed to join; a
        SessionStart for any other session is rejected.
    limits:
        Decoder bounds before the session is known (the announcement itself);
        afterwards the session's own sizes, tightened by these.
    """

    def __init__(
        self,
        client_id: int,
        *,
        signing_key: Ed25519PrivateKey | None = None,
        trust: kx.TrustStore | None = None,
        expected_session: bytes | None = None,
        limits: m.Limits = m.DEFAULT_LIMITS,
    ) -> None:
        if not (isinstance(client_id, int) and 0 <= client_id < SERVER_ID):
            raise ValueError(f"client_id out of range: {client_id!r}")
        if signing_key is not None and trust is None:
            raise ValueError("active mode needs a trust store for the other clients' keys")
        self.client_id = client_id
        self.state = ClientState.IDLE
        self._signing_key = signing_key
        self._trust = trust
        self._expected_session = expected_session
        self._limits = limits
        self._session_limits: m.Limits | None = None
        self._input: np.ndarray | None = None
        # Filled in as the session advances.
        self.session_id: bytes | None = None
        self.round_index: int | None = None
        self.config: SessionConfig | None = None
        self._digest = b""
        self._neighbourhood: frozenset[int] = frozenset()
        self._c_keys: kx.KeyPair | None = None
        self._s_keys: kx.KeyPair | None = None
        self._keyed: frozenset[int] = frozenset()  # the key directory's ids, self included
        self._share_keys: dict[int, bytes] = {}  # neighbour -> AEAD key of the pair (2 uses)
        self._s_shared: dict[int, bytes] = {}  # neighbour -> X25519(s_sk, s_pk_j)
        self._seed_shares: dict[int, int] = {}  # owner -> share of its self-mask seed
        self._key_shares: dict[int, int] = {}  # owner -> share of its mask secret key
        self._share_senders: frozenset[int] = frozenset()  # U2 ∩ N(i), self included
        self._signed_survivors: tuple[int, ...] | None = None
        self._self_seed: bytes | None = None

    # ------------------------------------------------------------------ input
    def set_input(self, vector: np.ndarray) -> None:
        """The vector to contribute: integers in [0, 2^bits), any integer dtype."""
        if self.state not in (ClientState.IDLE, ClientState.ADVERTISED, ClientState.SHARED):
            raise LocalProtocolError("the input can only be set before the masked upload")
        arr = np.asarray(vector)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError("the input must be a 1-D integer vector")
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise ValueError("input entries must be non-negative")
        self._input = arr  # read only; copied once, into the masked vector
        if self.config is not None:
            self._check_input(self.config)

    def _check_input(self, config: SessionConfig) -> None:
        assert self._input is not None
        p = config.params
        if self._input.size != p.vector_length:
            raise LocalProtocolError(
                f"input has {self._input.size} entries, the session expects {p.vector_length}")
        fits = self._input.dtype.kind == "u" and 8 * self._input.dtype.itemsize <= p.bits
        if self._input.size and not fits and int(self._input.max()) >> p.bits:
            raise LocalProtocolError(f"input entries must be below 2^{p.bits}")

    # ------------------------------------------------------------- dispatch
    def receive(self, data: bytes) -> list[bytes]:
        """Handle one frame from the server; returns the frames to send back."""
        if self.state is ClientState.ABORTED:
            raise LocalProtocolError("this client has aborted")
        try:
            env = m.decode(data, limits=self._session_limits or self._limits)
            self._check_binding(env)
            active = self.config.params.active if self.config else False
            kind = env.message.KIND
            nxt = client_next_state(self.state, kind, active)
            if nxt is None:
                if kind in client_past_kinds(self.state):
                    raise ReplayedMessage(f"{type(env.message).__name__} already handled")
                raise RemoteProtocolError(
                    f"{type(env.message).__name__} is not allowed in state {self.state.value}")
            if isinstance(env.message, m.SessionStart):
                self.session_id, self.round_index = env.header.session_id, env.header.round
            reply = self._handle(env.message)
            self.state = nxt
        except ProtocolError:
            self._abort()
            raise
        if reply is None:
            return []
        assert self.session_id is not None and self.round_index is not None
        return [m.encode(reply, session_id=self.session_id, round_index=self.round_index,
                         sender=self.client_id, receiver=SERVER_ID)]

    def _check_binding(self, env: m.Envelope) -> None:
        h = env.header
        if h.receiver != self.client_id:
            raise SessionMismatch("frame addressed to another client")
        if self.session_id is None:
            if self._expected_session is not None and h.session_id != self._expected_session:
                raise SessionMismatch("frame of another session")
            return
        if h.session_id != self.session_id or h.round != self.round_index:
            raise SessionMismatch("frame of another session or round")

    def _handle(self, msg: m.Message) -> m.Message | None:
        if isinstance(msg, m.SessionStart):
            return self._on_session_start(msg)
        if isinstance(msg, m.KeyDirectory):
            return self._on_key_directory(msg)
        if isinstance(msg, m.ShareBundle):
            return self._on_share_bundle(msg)
        if isinstance(msg, m.ConsistencyRequest):
            return self._on_consistency_request(msg)
        if isinstance(msg, m.UnmaskRequest):
            return self._on_unmask_request(msg)
        raise RemoteProtocolError(f"unexpected {type(msg).__name__}")  # pragma: no cover

    def _abort(self) -> None:
        self.state = ClientState.ABORTED
        # Drop every secret so that nothing more can be asked of this client.
        self._c_keys = self._s_keys = None
        self._self_seed = None
        self._seed_shares.clear()
        self._key_shares.clear()
        self._share_keys.clear()
        self._s_shared.clear()

    # ----------------------------------------------------- round 0: keys
    def _on_session_start(self, msg: m.SessionStart) -> m.AdvertiseKeys:
        config = msg.config
        if not config.includes(self.client_id):
            raise SessionMismatch("this client is not a participant of the session")
        if config.params.active and self._signing_key is None:
            raise LocalProtocolError("active mode requested but this client has no signing key")
        if self._signing_key is not None and not config.params.active:
            raise RemoteProtocolError("refusing to downgrade to the passive mode")
        # Not known until now: the frame header of the first message fixes the session.
        self.config = config
        self._session_limits = m.Limits.for_session(config).tightened(self._limits)
        if self._input is not None:
            self._check_input(config)
        self._neighbourhood = closed_neighbourhood(
            config.ids, config.params.degree, config.graph_seed, self.client_id)
        self._c_keys, self._s_keys = kx.generate_key_pair(), kx.generate_key_pair()
        signature = b""
        if self._signing_key is not None:
            signature = kx.sign(self._signing_key, d.advertise_transcript(
                self._digest_for(config), self.client_id,
                self._c_keys.public_bytes, self._s_keys.public_bytes))
        return m.AdvertiseKeys(self._c_keys.public_bytes, self._s_keys.public_bytes, signature)

    def _digest_for(self, config: SessionConfig) -> bytes:
        if not self._digest:
            assert self.session_id is not None and self.round_index is not None
            self._digest = config.digest(self.session_id, self.round_index)
        return self._digest

    # ----------------------------------------------- round 1: share keys
    def _on_key_directory(self, msg: m.KeyDirectory) -> m.EncryptedShares:
        assert self.config is not None and self._c_keys and self._s_keys
        params = self.config.params
        entries = {e.client_id: e for e in msg.entries}
        steps.check_key_directory(entries, self._neighbourhood, self.client_id,
                                  (self._c_keys.public_bytes, self._s_keys.public_bytes),
                                  params.threshold)
        if params.active:
            self._verify_directory(entries)
        # Only the ids are needed from here on (the keys are agreed): 43 KeyEntry objects
        # per client were 150 MB of the n = 10,000 simulation, all scanned by the GC.
        self._keyed = frozenset(entries)
        c_shared, self._s_shared = steps.agree_with_neighbours(
            entries, self.client_id, self._c_keys, self._s_keys)
        holders = sorted(entries)
        seed = secrets.token_bytes(prg.SEED_SIZE)
        seed_shares, key_shares = shamir.split_many(
            [seed, self._s_keys.private_bytes], params.threshold, [h + 1 for h in holders])
        self._s_keys = None  # shared, and its agreements done: only the shares remain
        receivers, ciphertexts = [], []
        for idx, holder in enumerate(holders):
            if holder == self.client_id:
                self._seed_shares[holder] = seed_shares[idx]
                self._key_shares[holder] = key_shares[idx]
                continue
            # One key per pair: it seals these shares now and opens the holder's later.
            key = self._share_keys[holder] = d.share_key(
                c_shared[holder], self.session_id, self.round_index, self.client_id, holder)
            ciphertexts.append(d.seal_shares(key, self.session_id, self.round_index,
                                             self.client_id, holder,
                                             seed_shares[idx], key_shares[idx]))
            receivers.append(holder)
        self._self_seed = seed
        commitment = d.seed_commitment(seed, self.session_id, self.round_index, self.client_id)
        return m.EncryptedShares(tuple(receivers), tuple(ciphertexts), commitment)

    def _verify_directory(self, entries: dict[int, m.KeyEntry]) -> None:
        assert self.config is not None and self._trust is not None
        digest = self._digest_for(self.config)
        for cid, e in entries.items():
            vk = self._trust.verification_key(cid)
            if vk is None or not e.signature:
                raise InvalidSignature("unverifiable advertised keys")
            kx.verify(vk, e.signature,
                      d.advertise_transcript(digest, cid, e.c_public, e.s_public))

    # ------------------------------------------- round 2: masked input
    def _on_share_bundle(self, msg: m.ShareBundle) -> m.MaskedInput:
        assert self.config is not None
        params = self.config.params
        senders = set(msg.senders)
        if self.client_id in senders or not senders <= self._keyed:
            raise RemoteProtocolError("share bundle from clients that were not announced")
        if len(senders) + 1 < params.threshold:
            raise BelowThreshold(len(senders) + 1, params.threshold, "share_keys")
        if self._input is None:
            raise LocalProtocolError("set_input() must be called before the masked upload")
        for sender, ct in zip(msg.senders, msg.ciphertexts):
            seed_share, key_share = d.open_shares(self._share_keys[sender], ct, self.session_id,
                                                  self.round_index, sender, self.client_id)
            self._seed_shares[sender] = seed_share
            self._key_shares[sender] = key_share
        self._share_senders = frozenset(senders | {self.client_id})

        assert self._self_seed is not None
        pairwise = ((peer, d.pairwise_seed_from_shared(self._s_shared[peer], self.session_id,
                                                       self.round_index, self.client_id, peer))
                    for peer in sorted(senders))
        masked = steps.mask_input(self._input, params, self._self_seed, pairwise,
                                  self.client_id)
        self._self_seed = None  # only the shares remain
        # Only the shares of the neighbours' secrets are needed from here on.
        self._s_shared.clear()
        self._share_keys.clear()
        self._keyed = frozenset()
        self._input = None
        return m.MaskedInput(masked)

    # ------------------------------------ round 3: consistency (active)
    def _on_consistency_request(self, msg: m.ConsistencyRequest) -> m.ConsistencySignature:
        assert self.config is not None and self._signing_key is not None
        survivors = tuple(sorted(msg.survivors))
        self._check_survivors(set(survivors), "consistency_check")
        if len(survivors) < self.config.params.min_survivors:
            raise BelowThreshold(len(survivors), self.config.params.min_survivors,
                                 "consistency_check")
        self._signed_survivors = survivors
        signature = kx.sign(self._signing_key, d.consistency_transcript(
            self._digest_for(self.config), survivors))
        return m.ConsistencySignature(signature)

    def _check_survivors(self, survivors: set[int], stage: str) -> set[int]:
        assert self.config is not None
        if self.client_id not in survivors:
            raise RemoteProtocolError("survivor set omits this client")
        if not self.config.includes_all(survivors):
            raise RemoteProtocolError("survivor set names non-participants")
        local = survivors & self._neighbourhood
        if not local <= self._share_senders:
            raise RemoteProtocolError("survivor set names neighbours that never shared keys")
        if len(local) < self.config.params.threshold:
            raise BelowThreshold(len(local), self.config.params.threshold, stage)
        return local

    # ------------------------------------------------ round 4: unmasking
    def _on_unmask_request(self, msg: m.UnmaskRequest) -> m.UnmaskShares:
        assert self.config is not None
        params = self.config.params
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        if survivors & dropped:
            raise UnmaskRequestRefused("a client cannot be both a survivor and dropped")
        if not (survivors | dropped) <= self._share_senders:
            raise UnmaskRequestRefused("request names clients this client holds no shares of")
        if self.client_id not in survivors:
            raise UnmaskRequestRefused("request names this client as dropped")
        if len(survivors) < params.threshold:
            raise BelowThreshold(len(survivors), params.threshold, "unmasking")
        if not len(survivors) <= msg.survivor_count <= len(self.config):
            raise UnmaskRequestRefused("the stated survivor count contradicts the request")
        if params.active:
            self._check_consistency(msg, survivors)
        if msg.survivor_count < params.min_survivors:
            raise BelowThreshold(msg.survivor_count, params.min_survivors, "unmasking")
        seed_owners = tuple(sorted(survivors))
        key_owners = tuple(sorted(dropped))
        reply = m.UnmaskShares(
            seed_owners, tuple(shamir.encode_share(self._seed_shares[o]) for o in seed_owners),
            key_owners, tuple(shamir.encode_share(self._key_shares[o]) for o in key_owners),
        )
        self._seed_shares.clear()
        self._key_shares.clear()
        return reply

    def _check_consistency(self, msg: m.UnmaskRequest, survivors: set[int]) -> None:
        assert self.config is not None and self._trust is not None
        signed = self._signed_survivors
        assert signed is not None
        if survivors != set(signed) & self._neighbourhood or msg.survivor_count != len(signed):
            raise ConsistencyError("unmask request disagrees with the signed survivor set")
        if not set(msg.signers) <= set(signed) & self._neighbourhood:
            raise ConsistencyError("signatures from clients outside the survivor set")
        if len(msg.signers) < self.config.params.threshold:
            raise ConsistencyError("too few neighbours confirmed the survivor set")
        transcript = d.consistency_transcript(self._digest_for(self.config), signed)
        for signer, sig in zip(msg.signers, msg.signatures):
            vk = self._trust.verification_key(signer)
            if vk is None:
                raise InvalidSignature("unverifiable consistency signature")
            kx.verify(vk, sig, transcript)

