"""What rejecting an oversized frame costs each Paillier party: peak RSS growth and CPU time.

Each party of a small session (512-bit test keys, 3 clients, 4 values) is
handed one frame far larger than its session allows (default 64 MiB; a frame
of the right kind and session, so that only its size is wrong). The peak RSS
(``VmHWM``) is reset before each call through ``/proc/self/clear_refs``, so
the figure is what that one rejection cost. Linux only.

Uses only API that existed before the decoding bounds, so the same command
measures an older checkout for the side-by-side (``PYTHONPATH=<checkout>``)::

    OMP_NUM_THREADS=1 python benchmarks/paillier_hostile_frames.py \
        --output benchmarks/results/paillier_hostile_frames.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from protocols.errors import ProtocolError
from protocols.paillier import (
    PaillierAggregator,
    PaillierClient,
    PaillierDeployment,
    deal_threshold_keys,
    generate_keypair,
)
from protocols.paillier.messages import KEY_HOLDER_ID_BASE, DecryptionRequest, Kind
from protocols.paillier.session import _frame as encode_message
from protocols.wire import SERVER_ID, Writer, decode_frame

SID = bytes(range(16))


def _peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def _cost(call: Callable[[], object]) -> tuple[float, float, str]:
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    before, clock = _peak_rss_mib(), time.process_time()
    outcome = "accepted"
    try:
        call()
    except ProtocolError as error:
        outcome = type(error).__name__
    return _peak_rss_mib() - before, time.process_time() - clock, outcome


def _grown(frame: bytes, extra: bytes) -> bytes:
    header, body = decode_frame(frame)
    return encode_message(Kind(header.kind), header.session_id, header.round, header.sender,
                          header.receiver, body + extra)


def _cases(deployment: PaillierDeployment, size: int) -> Iterator[tuple[str, Callable, bytes]]:
    for c in range(3):
        deployment.register_client(c)
    threshold = deployment.threshold_keys
    aggregator = PaillierAggregator(
        deployment.public_key, {c: deployment.registry[c] for c in range(3)}, bits=16, length=4,
        min_clients=2, threshold_params=threshold.params if threshold else None, session_id=SID)
    filler = b"\x01" * size  # non-zero, so that its pages are resident
    holder = deployment.key_holders[1]
    client = PaillierClient(0, deployment.public_key, deployment.register_client(0))
    yield "aggregator: EncryptedUpdate", aggregator.receive, encode_message(
        Kind.ENCRYPTED_UPDATE, SID, 0, 1, SERVER_ID, filler)
    yield "client: RoundAnnouncement", client.receive, encode_message(
        Kind.ROUND_ANNOUNCEMENT, SID, 0, SERVER_ID, 0, filler)
    yield "key holder: garbage request", holder.receive, encode_message(
        Kind.DECRYPTION_REQUEST, SID, 0, SERVER_ID, holder.party_id, filler)
    for c in (0, 1):
        uploader = PaillierClient(c, deployment.public_key, deployment.register_client(c))
        uploader.receive(aggregator.announcement_for(c))
        aggregator.receive(uploader.upload(np.arange(4, dtype=np.uint64)))
    request = aggregator.close_collection()[0]
    yield "key holder: valid request + bulk", holder.receive, _grown(request, filler)
    parsed = DecryptionRequest.parse(decode_frame(request)[1],
                                     ciphertext_bytes=deployment.public_key.ciphertext_bytes)
    params = dataclasses.replace(parsed.params, headroom_bits=20, max_clients=1 << 20)
    body = params.write(Writer()).blob(np.arange(1 << 20, dtype=">u4").tobytes()).getvalue()
    yield "key holder: 2^20 contributors + bulk", holder.receive, encode_message(
        Kind.DECRYPTION_REQUEST, SID, 0, SERVER_ID, holder.party_id, body + filler)
    kind = Kind.PARTIAL_DECRYPTION if threshold else Kind.AGGREGATE_PLAINTEXT
    yield f"aggregator: {kind.name.title().replace('_', '')}", aggregator.receive, encode_message(
        kind, SID, 0, KEY_HOLDER_ID_BASE + 1, SERVER_ID, filler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="size of each hostile frame")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if not 1 <= args.mib <= 1024:
        parser.error("--mib must be in [1, 1024]")
    deployments = {
        "threshold": PaillierDeployment(threshold_keys=deal_threshold_keys(
            512, threshold=2, parties=3, insecure_for_tests=True)),
        "two_party": PaillierDeployment(
            private_key=generate_keypair(512, insecure_for_tests=True)[1]),
    }
    rows = []
    print(f"{'mode':10} {'party: frame':40} {'peak RSS +MiB':>13} {'CPU ms':>8}  error")
    for mode, deployment in deployments.items():
        for name, receive, frame in _cases(deployment, args.mib << 20):
            growth, cpu, outcome = _cost(lambda receive=receive, frame=frame: receive(frame))
            del frame
            rows.append({"mode": mode, "case": name, "frame_mib": args.mib,
                         "peak_rss_growth_mib": round(growth, 1), "cpu_ms": round(cpu * 1e3, 2),
                         "error": outcome})
            print(f"{mode:10} {name:40} {growth:13.1f} {cpu * 1e3:8.2f}  {outcome}")
    if args.output:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip()
        args.output.write_text(json.dumps({"commit": commit, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
