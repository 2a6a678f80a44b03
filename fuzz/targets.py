"""Every decoder that takes bytes from outside, with the only errors it may raise.

One :class:`Target` per decoder: the entry point (bytes in), the documented
error types that may escape it, and valid inputs to start mutating from. The
atheris harnesses (``fuzz/fuzz_*.py``) and the hypothesis tests
(``tests/fuzz/test_fuzz_decoders.py``) both read this table, so they fuzz
exactly the same contracts. Any other exception is a finding.

Keys used here are small (``insecure_for_tests``): decoding cost, not security,
is what matters to a fuzzer.
"""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from protocols.errors import MalformedMessage, ProtocolError

__all__ = ["TARGETS", "Target"]


@dataclass(frozen=True)
class Target:
    name: str
    call: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    description: str


# ------------------------------------------------------------------------------------- wire
def _wire_frame(data: bytes) -> object:
    from protocols.wire import decode_frame

    return decode_frame(data)


def _wire_reader(data: bytes) -> object:
    """The first bytes are a program of field reads, the rest the body they read."""
    from protocols.wire import Reader

    if not data:
        return None
    count = data[0] % 8
    program, body = data[1:1 + count], data[1 + count:]
    reader = Reader(body, max_blob=1 << 16)
    for op in program:
        choice = op % 8
        if choice == 0:
            reader.u8()
        elif choice == 1:
            reader.u32()
        elif choice == 2:
            reader.u64()
        elif choice == 3:
            reader.blob(max_len=op)
        elif choice == 4:
            reader.bigint(max_bytes=64)
        elif choice == 5:
            reader.array(">u4", max_items=64)
        elif choice == 6:
            reader.u32_list(max_items=32)
        else:
            reader.blob(exact_len=op % 5)
    reader.end()
    return None


def _wire_seeds() -> list[bytes]:
    from protocols.wire import FrameHeader, Writer, encode_frame

    body = Writer().u8(7).u32(1).blob(b"abc").u32_list([1, 2, 3]).getvalue()
    return [encode_frame(FrameHeader(1, 2, bytes(16), 3, 4, 5), body),
            encode_frame(FrameHeader(2, 1, bytes(range(16)), 0, 0xFFFFFFFF, 9), b"")]


def _wire_reader_seeds() -> list[bytes]:
    from protocols.wire import Writer

    body = Writer().u8(7).u32(1).blob(b"abc").u32_list([1, 2, 3]).getvalue()
    # program: u8, u32, blob(max_len=3), u32_list — exactly what the body holds
    return [bytes([4, 0, 1, 3, 6]) + body, bytes([1, 2]) + (1 << 40).to_bytes(8, "big")]


# ---------------------------------------------------------------------------------- masking
@functools.lru_cache(maxsize=1)
def _masking_frames() -> tuple[bytes, ...]:
    """One recorded active-mode session (every message kind), dropouts included."""
    from protocols.keys import StaticTrustStore
    from protocols.masking import MaskingParams, run_session
    from protocols.testing import FrameLog

    ids = list(range(6))
    params = MaskingParams(threshold=5, degree=5, bits=16, vector_length=4, active=True)
    rng = np.random.default_rng(0)
    inputs = {c: rng.integers(0, 1 << 16, size=4, dtype=np.uint64) for c in ids}
    trust, signing = StaticTrustStore.generate(ids)
    log = FrameLog()
    run_session(inputs, params, signing_keys=signing, trust=trust, interceptor=log,
                dropouts={5: "unmasking"})
    return tuple(frame for _, _, _, frame in log.frames)


def _masking_decode(data: bytes) -> object:
    from protocols.masking import decode

    return decode(data)


def _one_per_kind(frames) -> list[bytes]:
    """The first frame of each message kind (byte 6 of the header)."""
    seen: dict[int, bytes] = {}
    for frame in frames:
        seen.setdefault(frame[6], frame)
    return list(seen.values())


def _masking_seeds() -> list[bytes]:
    return _one_per_kind(_masking_frames())


def _masking_parties(data: bytes) -> object:
    """A client that joined a session, and a server collecting keys, fed the same bytes."""
    from protocols.masking import MaskingClient, MaskingParams, MaskingServer

    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=4)
    server = MaskingServer(params, [0, 1, 2, 3], session_id=bytes(16), graph_seed=bytes(32))
    starts = dict(server.start())
    client = MaskingClient(1)
    client.set_input(np.arange(4))
    client.receive(starts[1])
    errors = 0
    for party in (client.receive, server.receive):
        try:
            party(data)
        except ProtocolError:
            errors += 1
    return errors


def _masking_party_seeds() -> list[bytes]:
    from protocols.masking import MaskingParams, MaskingServer

    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=4)
    server = MaskingServer(params, [0, 1, 2, 3], session_id=bytes(16), graph_seed=bytes(32))
    return [frame for _, frame in server.start()][:1] + _masking_seeds()


@functools.lru_cache(maxsize=1)
def _midsession_frames() -> tuple[bytes, ...]:
    """Frames of a 4-client session stopped with the server collecting masked inputs."""
    return tuple(frame for _, frame in _midsession()[2])


def _midsession():
    from protocols.masking import MaskingClient, MaskingParams, MaskingServer

    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=4, min_survivors=3)
    server = MaskingServer(params, [0, 1, 2, 3], session_id=bytes(16), graph_seed=bytes(32))
    clients = {c: MaskingClient(c) for c in range(4)}
    for client in clients.values():
        client.set_input(np.arange(4))
    seen: list[tuple[int, bytes]] = []
    _deliver(server.start(), clients, server, seen)
    _deliver(server.advance(), clients, server, seen)
    return server, clients, seen + list(server.advance())


def _deliver(frames, clients, server, seen: list | None = None) -> None:
    """Hand each frame to its client and each reply to the server (recording them in ``seen``)."""
    for cid, frame in frames:
        replies = clients[cid].receive(frame)
        if seen is not None:
            seen.extend([(cid, frame)] + [(cid, reply) for reply in replies])
        for reply in replies:
            server.receive(reply)


def _masking_midsession(data: bytes) -> object:
    """A server collecting masked inputs and a client awaiting its share bundle, same bytes.

    Both decode with the session's own sizes (4 clients, 4 coordinates): this is
    where a frame sized for another session must fail cheaply and typed.
    """
    server, clients, _ = _midsession()
    errors = 0
    for party in (server.receive, clients[1].receive):
        try:
            party(data)
        except ProtocolError:
            errors += 1
    return errors


@functools.lru_cache(maxsize=1)
def _multiround_frames() -> tuple[bytes, ...]:
    """Every message kind of a 3-round multi-round session with dropouts and a return."""
    from protocols.masking import MaskingParams
    from protocols.masking.multiround import MultiRoundSecAgg

    frames: list[bytes] = []

    def keep(stage, sender, receiver, frame):
        frames.append(frame)
        return frame

    params = MaskingParams(threshold=3, degree=4, bits=16, vector_length=3)
    session = MultiRoundSecAgg(params, list(range(6)), rounds=4, session_id=bytes(16),
                               graph_seed=bytes(32), interceptor=keep)
    for schedule in ({}, {2: "masked_input"}, {2: "masked_input"}, {4: "unmasking"}):
        session.run_round({c: np.arange(3) for c in range(6)}, dropouts=schedule)
    return tuple(frames)


def _multiround_decode(data: bytes) -> object:
    from protocols.masking.multiround import decode

    return decode(data)


def _multiround_seeds() -> list[bytes]:
    return _one_per_kind(_multiround_frames())


def _multiround_parties(data: bytes) -> object:
    """A multi-round server collecting uploads and a client that uploaded, fed the same bytes."""
    from protocols.masking import MaskingParams
    from protocols.masking.multiround import MultiRoundClient, MultiRoundServer

    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=3)
    server = MultiRoundServer(params, [0, 1, 2, 3], rounds=3, session_id=bytes(16),
                              graph_seed=bytes(32))
    clients = {c: MultiRoundClient(c) for c in range(4)}
    _deliver(server.start(), clients, server)
    _deliver(server.advance(), clients, server)
    server.advance()
    for client in clients.values():
        client.set_input(np.arange(3))
    for cid, frame in server.start_round():
        clients[cid].receive(frame)  # uploads are not delivered: the server still collects
    errors = 0
    for party in (server.receive, clients[1].receive):
        try:
            party(data)
        except ProtocolError:
            errors += 1
    return errors


# --------------------------------------------------------------------------------- Paillier
@functools.lru_cache(maxsize=1)
def _paillier_setup():
    """A 512-bit threshold deployment and one recorded session (frames of every kind)."""
    from protocols.paillier import (
        PaillierAggregator,
        PaillierClient,
        PaillierDeployment,
        deal_threshold_keys,
        generate_keypair,
    )
    from protocols.wire import decode_frame

    keys = deal_threshold_keys(512, threshold=2, parties=3, insecure_for_tests=True)
    deployment = PaillierDeployment(threshold_keys=keys, min_clients=2)
    ids = [0, 1, 2]
    signing = {c: deployment.register_client(c) for c in ids}
    aggregator = PaillierAggregator(
        keys.public_key, {c: deployment.registry[c] for c in ids}, bits=16, length=5,
        min_clients=2, threshold_params=keys.params, send_contributions=True,
        session_id=bytes(16))
    frames = []
    clients = {c: PaillierClient(c, keys.public_key, signing[c], min_clients=2) for c in ids}
    for frame in aggregator.start():
        frames.append(frame)
        clients[decode_frame(frame)[0].receiver].receive(frame)
    for c in ids:
        upload = clients[c].upload(np.arange(5, dtype=np.uint64))
        frames.append(upload)
        aggregator.receive(upload)
    requests = aggregator.close_collection()
    frames.extend(requests)
    for request in requests[:2]:
        index = decode_frame(request)[0].receiver - 0xFFFFFF00
        frames.extend(deployment.key_holders[index].receive(request))
    _, private = generate_keypair(512, insecure_for_tests=True)
    return keys, deployment, tuple(frames), private


def _paillier_messages(data: bytes) -> object:
    from protocols.paillier import messages as pm
    from protocols.wire import Reader

    keys = _paillier_setup()[0]
    public = keys.public_key
    if not data:
        return None
    choice, body = data[0] % 6, data[1:]
    size = 1 * public.ciphertext_bytes
    if choice == 0:
        reader = Reader(body)
        pm.SessionParams.read(reader)
        return reader.end()
    if choice == 1:
        return pm.RoundAnnouncement.parse(body)
    if choice == 2:
        return pm.EncryptedUpdate.parse(body, ciphertexts_size=size)
    if choice == 3:
        return pm.DecryptionRequest.parse(body, ciphertext_bytes=public.ciphertext_bytes)
    if choice == 4:
        return pm.PartialDecryptionMessage.parse(body, partials_size=size,
                                                 key_bytes=public.plaintext_bytes)
    return pm.AggregatePlaintext.parse(body, size=public.plaintext_bytes)


def _paillier_message_seeds() -> list[bytes]:
    from protocols.wire import HEADER_SIZE

    seeds = []
    for frame in _paillier_setup()[2]:
        kind = frame[6]
        choice = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}[kind]
        seeds.append(bytes([choice]) + frame[HEADER_SIZE:])
    return seeds


def _paillier_parties(data: bytes) -> object:
    """The aggregator, a fresh client and a key holder, fed the same bytes."""
    from protocols.paillier import (
        PaillierAggregator,
        PaillierClient,
        ThresholdKeyHolder,
    )

    keys, deployment, _, _ = _paillier_setup()
    aggregator = PaillierAggregator(
        keys.public_key, {c: deployment.registry[c] for c in (0, 1, 2)}, bits=16, length=5,
        min_clients=2, threshold_params=keys.params, session_id=bytes(16))
    client = PaillierClient(0, keys.public_key, deployment.register_client(0), min_clients=2)
    holder = ThresholdKeyHolder(keys.shares[0], deployment.registry, min_clients=2)
    errors = 0
    for party in (aggregator.receive, client.receive, holder.receive):
        try:
            party(data)
        except ProtocolError:
            errors += 1
    return errors


def _paillier_party_seeds() -> list[bytes]:
    return list(_paillier_setup()[2])


def _paillier_keys(data: bytes) -> object:
    from protocols.paillier import PaillierPrivateKey, PaillierPublicKey
    from protocols.paillier.threshold import KeyShare, ThresholdKeySet, ThresholdParams

    if not data:
        return None
    decoders = (PaillierPublicKey, PaillierPrivateKey, ThresholdParams, KeyShare,
                ThresholdKeySet)
    return decoders[data[0] % len(decoders)].from_json(data[1:], insecure_for_tests=True)


def _paillier_key_seeds() -> list[bytes]:
    keys, _, _, private = _paillier_setup()
    docs = [private.public_key.to_json(), private.to_json(), keys.params.to_json(),
            keys.shares[0].to_json(), keys.to_json()]
    return [bytes([k]) + doc.encode() for k, doc in enumerate(docs)]


def _paillier_ciphertexts(data: bytes) -> object:
    from protocols.paillier import ciphertexts_from_bytes

    public = _paillier_setup()[0].public_key
    if not data:
        return None
    return ciphertexts_from_bytes(public, data[1:], data[0] % 4)


def _paillier_ciphertext_seeds() -> list[bytes]:
    from protocols.paillier import ciphertexts_to_bytes, encrypt_packed

    public = _paillier_setup()[0].public_key
    return [bytes([2]) + ciphertexts_to_bytes(public, encrypt_packed(public, [1, 2]))]


# ------------------------------------------------------------- files: config, state file
def _file_decoder(suffix: str, module: str, function: str) -> Callable[[bytes], object]:
    """A decoder of files: the input is written to a scratch file the decoder then reads."""
    path = os.path.join(tempfile.gettempdir(), f"sfr-fuzz-{os.getpid()}{suffix}")

    def decode(data: bytes) -> object:
        with open(path, "wb") as handle:
            handle.write(data)
        return getattr(importlib.import_module(module), function)(path)

    return decode


_config_toml = _file_decoder(".toml", "secure_fedrec.config", "load_config")
_state_file = _file_decoder(".npz", "secure_fedrec.state_file", "load_state")


def _config_seeds() -> list[bytes]:
    from secure_fedrec.config import RunConfig, config_to_dict, dump_toml

    return [dump_toml(config_to_dict(RunConfig())).encode(),
            b'seed = 3\n[training]\nrounds = 4\n[aggregation]\nbits = 40\n',
            # the keys of issue 19 item 7 at valid values a mutation or two from its hostile ones
            # (seed = -1, 1e999, nan, model.dim = 20000000, an unknown data.format)
            (b'seed = 0\n[privacy]\ntarget_epsilon = 1.0\nclip_norm = 1.0\n[model]\ndim = 2000\n'
             b'init_std = 0.1\n[training]\nlr = 1.0\n[data]\nformat = "auto"\n'
             b'[data.synthetic]\nn_users = 1000\n')]


def _state_file_seeds() -> list[bytes]:
    from secure_fedrec.state_file import dump_state

    return [dump_state({"version": 2, "round_index": 3, "params": np.arange(6, dtype=np.float64),
                        "privacy": {"accountant": {"history": [[1.0, 0.25, 3]]}},
                        "history": [{"round": 1, "train_loss": float("nan")}], "rng": np.zeros(4, np.uint8)}),
            dump_state({})]


#: targets whose error type lives in secure_fedrec, resolved when needed (the fuzzers import torch-free)
_LAZY_ERRORS = {"config_toml": ("secure_fedrec.config", "ConfigError"),
                "state_file": ("secure_fedrec.state_file", "StateFileError")}


def _targets() -> dict[str, Target]:
    items = [
        Target("wire_frame", _wire_frame, (MalformedMessage,), _wire_seeds,
               "protocols.wire.decode_frame"),
        Target("wire_reader", _wire_reader, (MalformedMessage,), _wire_reader_seeds,
               "protocols.wire.Reader field codecs, driven by a program in the input"),
        Target("masking_decode", _masking_decode, (MalformedMessage,), _masking_seeds,
               "protocols.masking.messages.decode (all 10 message kinds)"),
        Target("masking_parties", _masking_parties, (), _masking_party_seeds,
               "MaskingClient.receive and MaskingServer.receive (ProtocolError caught inside)"),
        Target("masking_midsession", _masking_midsession, (), _midsession_frames,
               ("MaskingServer collecting masked inputs and MaskingClient awaiting shares, "
                "decoding with the session's own sizes (ProtocolError caught inside)")),
        Target("masking_multiround_decode", _multiround_decode, (MalformedMessage,),
               _multiround_seeds,
               "protocols.masking.multiround.decode (all 8 message kinds, protocol code 3)"),
        Target("masking_multiround_parties", _multiround_parties, (), _multiround_seeds,
               ("MultiRoundServer collecting uploads and MultiRoundClient awaiting its "
                "unmask request (ProtocolError caught inside)")),
        Target("paillier_messages", _paillier_messages, (MalformedMessage,),
               _paillier_message_seeds,
               "protocols.paillier.messages: SessionParams and the 5 message parsers"),
        Target("paillier_parties", _paillier_parties, (), _paillier_party_seeds,
               ("PaillierAggregator/PaillierClient/ThresholdKeyHolder.receive "
                "(ProtocolError caught inside)")),
        Target("paillier_keys", _paillier_keys, (ValueError,), _paillier_key_seeds,
               ("PaillierPublicKey/PaillierPrivateKey/ThresholdParams/KeyShare/ThresholdKeySet"
                ".from_json")),
        Target("paillier_ciphertexts", _paillier_ciphertexts, (ProtocolError,),
               _paillier_ciphertext_seeds,
               "protocols.paillier.encryption.ciphertexts_from_bytes (InvalidCiphertext)"),
        Target("config_toml", _config_toml, (), _config_seeds,
               "secure_fedrec.config.load_config on a TOML file (ConfigError)"),
        Target("state_file", _state_file, (), _state_file_seeds,
               "secure_fedrec.state_file.load_state: checkpoints and model files (StateFileError)"),
    ]
    return {t.name: t for t in items}


TARGETS = _targets()


def allowed(target: Target) -> tuple[type[BaseException], ...]:
    """The target's documented errors (secure_fedrec's error types are resolved lazily)."""
    if target.name in _LAZY_ERRORS:
        module, name = _LAZY_ERRORS[target.name]
        return (getattr(importlib.import_module(module), name),)
    return target.allowed


def check(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``; re-raise anything but its documented errors."""
    try:
        target.call(data)
    except allowed(target):
        pass


__all__ += ["allowed", "check"]
