"""The server side of a packed threshold Paillier round over Flower (the nodes' side: :mod:`.paillier`).

Three exchanges: ``train`` (the nodes train, encode, and return their users'
Ed25519 identity keys; the server pins each user's first key) → ``announce``
(announcements in, encrypted signed updates out) → ``decrypt`` (the aggregate
ciphertexts to the key holders' hosts, with the contributors' public identity
keys and the session's floor; proven partial decryptions back). The metrics use
the in-process engine's keys (``protocol_*`` of :class:`protocols.paillier.PaillierSecureSum`).
"""

from __future__ import annotations

import logging

from protocols import BelowThreshold
from protocols.errors import ProtocolError
from protocols.wire import decode_frame

from ...aggregation import SessionParameters, SumOutcome
from ...aggregation.sums import transfer_measurements
from .codec import Payload
from .masking_rounds import Result, train_only
from .paillier import KEY_HOLDERS, key_holder_host
from .relay import ProtocolTally, RoundIO

__all__ = ["paillier_round"]

log = logging.getLogger(__name__)


def paillier_round(io: RoundIO, session: SessionParameters | BelowThreshold, trainers: list[int], *,
                   public_params, keys_dir: str, identities: dict[int, bytes],
                   num_partitions: int) -> Result:
    """One round; ``identities`` (user -> raw public key) persists between rounds (pinning)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from protocols.paillier import PaillierAggregator, key_holder_id
    from protocols.paillier.messages import KEY_HOLDER_ID_BASE

    if isinstance(session, BelowThreshold):
        return train_only(io, "train", session)
    replies = io.send("train", {p: {**r, "min_clients": session.min_survivors, "paillier_keys": keys_dir}
                                for p, r in io.train_requests().items()}, "train")
    reports = io.collect(replies)
    tally = ProtocolTally(parties=frozenset(trainers))
    registry: dict[int, Ed25519PublicKey] = {}
    for partition, reply in replies.items():
        for user, raw in zip(reply.get("identity_users", []), reply.get("identity_keys", [])):
            user, raw = int(user), bytes(raw)
            if user not in tally.parties or io.partition_of(user) != partition:
                tally.rejected += 1
                continue
            if identities.setdefault(user, raw) != raw:
                tally.rejected += 1  # a user's identity key never changes: treat it as gone
                log.warning("user %d came back with another identity key", user)
                continue
            registry[user] = Ed25519PublicKey.from_public_bytes(raw)
    if len(registry) < session.min_survivors:
        return reports, BelowThreshold(len(registry), session.min_survivors, "train"), {"protocol_failed": 1.0}
    aggregator = tally.server(lambda: PaillierAggregator(
        public_params.public_key, registry, bits=session.bits, length=session.vector_length,
        min_clients=session.min_survivors, threshold_params=public_params,
        round_index=io.round_index))
    announcements = [(user, aggregator.announcement_for(user)) for user in sorted(registry)]

    def receive_update(frame: bytes) -> None:
        if io.dropouts.get(decode_frame(frame)[0].sender) == "upload":
            return  # scheduled to vanish after the announcement: its update never arrives
        aggregator.receive(frame)

    tally.parties = frozenset(registry)
    io.relay("train.stage", announcements, tally, stage="announce", receive=receive_update, last=True)
    try:
        decryption = tally.server(aggregator.close_collection)
    except BelowThreshold as exc:
        return reports, exc, {"protocol_failed": 1.0}
    # The contributors' identity keys travel with the request: key holders check the
    # signatures themselves (and pin each user's first key).
    contributors = aggregator.contributors
    decrypt: dict[int, Payload] = {}
    key_holder_bytes = 0
    for frame in decryption:
        index = decode_frame(frame)[0].receiver - KEY_HOLDER_ID_BASE
        request = decrypt.setdefault(key_holder_host(index, num_partitions), {
            "round": io.round_index, "stage": "decrypt", "min_clients": session.min_survivors,
            "paillier_keys": keys_dir, "frame_users": [], "frames": [],
            "registry_users": list(contributors),
            "registry_keys": [identities[c] for c in contributors], "last": False})
        request["frame_users"].append(key_holder_id(index))
        request["frames"].append(frame)
        key_holder_bytes += len(frame)
    holders = {key_holder_id(i) for i in range(1, KEY_HOLDERS + 1)}
    answering = set()
    key_holder_seconds = 0.0
    for reply in io.send("train.stage", decrypt, "decrypt").values():
        tally.errors.extend(str(e) for e in reply.get("errors", []))
        key_holder_seconds += float(reply.get("protocol_seconds", 0.0))
        for party, frame in zip(reply.get("frame_users", []), reply.get("frames", [])):
            key_holder_bytes += len(frame)
            if int(party) not in holders or aggregator.result is not None:
                continue
            try:
                tally.server(lambda frame=frame: aggregator.receive(bytes(frame)))
                answering.add(int(party))
            except ProtocolError as exc:
                tally.rejected += 1
                log.warning("rejected a partial decryption of %#x: %s", int(party), exc)
    result = aggregator.result
    if result is None:
        log.error("round %d failed: too few key holders answered (%s)", io.round_index + 1,
                  "; ".join(tally.errors) or "no errors reported")
        return reports, BelowThreshold(len(contributors), session.min_survivors, "decryption"), {
            "protocol_failed": 1.0}
    layout = aggregator.layout
    assert session.bits is not None
    measurements = transfer_measurements(tally.sent, tally.received, result.contributors,
                                         plain_bytes=session.vector_length * session.bits / 8)
    measurements.update({
        "protocol_client_seconds": tally.client_seconds,
        "protocol_server_seconds": tally.server_seconds,
        "protocol_contributors": float(len(result.contributors)),
        "protocol_dropped": float(len(trainers) - len(result.contributors)),
        "protocol_rejected": float(tally.rejected),
        "protocol_rejected_frames": float(tally.rejected),
        "protocol_client_errors": float(len(tally.errors)),
        "protocol_slots_per_ciphertext": float(layout.slots),
        "protocol_ciphertexts_per_client": float(layout.num_plaintexts),
        "protocol_headroom_bits": float(layout.headroom_bits),
        "protocol_key_bits": float(public_params.public_key.bits),
        "protocol_key_holder_seconds": key_holder_seconds,
        "protocol_key_holders_answering": float(len(answering)),
        "protocol_key_holder_bytes": float(key_holder_bytes),
        # The dealer ran before the job, outside the ServerApp (launcher.deal_paillier_keys).
        "protocol_keygen_seconds": 0.0,
    })
    outcome = SumOutcome(total=result.total, contributors=tuple(result.contributors),
                         measurements=measurements)
    return reports, outcome, {}
