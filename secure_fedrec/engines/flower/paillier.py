"""Packed threshold Paillier over Flower: who holds which key, and the node-side parties.

Roles, as in the in-process engine's :class:`protocols.paillier.PaillierSecureSum`
(threshold 2 of 3 key holders), placed on a federation:

* the **dealer** (:func:`deal_paillier_keys`) runs once before the job, on the
  operator's machine, never inside the ServerApp: it writes the public
  parameters (``public.json``, read by the server and every node) and one
  share per key holder (``share-<i>.json``, mode 0600). On one machine the
  files share a folder; a real deployment copies each share to its holder's
  machine only.
* **key holder** ``i`` is hosted by node ``(i - 1) % K`` (:func:`key_holder_host`)
  and answers the server's decryption request with a proven partial
  decryption; any 2 of the 3 suffice, so one dead host is tolerated.
* every sampled **user** is a :class:`protocols.paillier.PaillierClient` on its
  node, with an Ed25519 identity key made on the node the first time the user
  trains and kept in the node's state (:class:`PaillierUploader`).
* the **server** runs the :class:`protocols.paillier.PaillierAggregator`.

The server relays the users' public identity keys to the key holders (they
verify each contributor's signature against them). Key holders pin the first
key they see for a user, so a server cannot swap a known user's key later;
for a user's first key they trust the server — the honest-but-curious server
of docs/protocols/paillier.md.

Flow of one round: ``train`` (the node trains, encodes, and returns its users'
identity keys) → ``announce`` (announcements in, encrypted signed updates
out) → ``decrypt`` (the aggregate to the key holders' hosts, partial
decryptions back).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ...config import RunConfig
from ...outputs import PRIVATE_MODE, write_text_atomic

__all__ = [
    "KEY_HOLDERS",
    "KEY_THRESHOLD",
    "PaillierUploader",
    "deal_paillier_keys",
    "key_holder_host",
    "key_holder_parties",
    "load_public_params",
    "paillier_uploaders",
    "public_identity",
]

#: The in-process engine's PaillierSecureSum defaults: 2 of 3 key holders decrypt.
KEY_THRESHOLD, KEY_HOLDERS = 2, 3
PUBLIC_FILE = "public.json"


def _share_file(index: int) -> str:
    return f"share-{index}.json"


def deal_paillier_keys(config: RunConfig, directory: str | Path) -> Path:
    """The trusted dealer: a fresh threshold key of ``aggregation.paillier_key_bits`` bits."""
    from protocols.paillier.threshold import deal_threshold_keys

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    keys = deal_threshold_keys(config.aggregation.paillier_key_bits, threshold=KEY_THRESHOLD,
                               parties=KEY_HOLDERS)
    write_text_atomic(folder / PUBLIC_FILE, keys.params.to_json(), mode=0o644)
    for share in keys.shares:
        # A fresh file created 0600 (never an old file truncated with its old mode), exclusively
        # and never through a symlink, fsynced, then renamed into place: write_bytes_atomic.
        write_text_atomic(folder / _share_file(share.index), share.to_json(), mode=PRIVATE_MODE)
    return folder


def load_public_params(directory: str | Path):
    """The dealer's public parameters (public key, verification keys)."""
    from protocols.paillier.threshold import ThresholdParams

    return ThresholdParams.from_json((Path(directory) / PUBLIC_FILE).read_text(encoding="utf-8"))


def key_holder_host(index: int, num_partitions: int) -> int:
    """The partition whose node hosts key holder ``index`` (1-based)."""
    return (index - 1) % num_partitions


def public_identity(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class PaillierUploader:
    """One user's party for one round: takes the announcement, answers with its encrypted update.

    Wraps :class:`protocols.paillier.PaillierClient` (announcement, then
    ``upload``) into the one-call ``receive(frame) -> frames`` every party of
    a node has, so the node delivers frames to it like to a masking client.
    """

    def __init__(self, client: Any, vector: np.ndarray) -> None:
        self.client = client
        self.vector = vector

    def receive(self, frame: bytes) -> list[bytes]:
        self.client.receive(frame)
        return [self.client.upload(self.vector)]


def paillier_uploaders(users: list[int], inputs: Mapping[int, np.ndarray],
                       identities: dict[int, Ed25519PrivateKey], keys_dir: str, *,
                       min_clients: int, round_index: int) -> dict[int, PaillierUploader]:
    """This round's party per user; makes a user's identity key the first time it trains."""
    from protocols.paillier import PaillierClient

    public_key = load_public_params(keys_dir).public_key
    parties = {}
    for user in users:
        identity = identities.get(user)
        if identity is None:
            identity = identities[user] = Ed25519PrivateKey.generate()
        client = PaillierClient(user, public_key, identity, min_clients=min_clients,
                                round_index=round_index)
        parties[user] = PaillierUploader(client, inputs[user])
    return parties


def key_holder_parties(state: dict[str, Any], request: Mapping[str, Any], *,
                       min_clients: int) -> dict[int, Any]:
    """This node's key holders named in a ``decrypt`` request (loaded from their share files
    once, then kept in the node's state with the sessions they served)."""
    from protocols.paillier import ThresholdKeyHolder, key_holder_id
    from protocols.paillier.threshold import KeyShare

    registry: dict[int, Ed25519PublicKey] = state.setdefault("paillier_registry", {})
    for user, raw in zip(request["registry_users"], request["registry_keys"]):
        # Pinned on first sight: a later, different key for the same user is not taken.
        registry.setdefault(int(user), Ed25519PublicKey.from_public_bytes(bytes(raw)))
    holders: dict[int, Any] = state.setdefault("key_holders", {})
    wanted = {int(u) for u in request["frame_users"]}
    for index in range(1, KEY_HOLDERS + 1):
        party = key_holder_id(index)
        if party in wanted and party not in holders:
            path = Path(str(request["paillier_keys"])) / _share_file(index)
            share = KeyShare.from_json(path.read_text(encoding="utf-8"))
            holders[party] = ThresholdKeyHolder(share, registry, min_clients=min_clients)
    return holders
