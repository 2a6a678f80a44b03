"""The secure-sum protocol driven by plain Python: no FL framework, no sockets, no threads.

Five clients add float vectors; the server learns the sum and nothing else, even
though client 4 vanishes after sending its keys (its masks are recovered from
its neighbours' shares). Then one key setup serves three rounds
(:mod:`protocols.masking.multiround`): two exchanges per round, and a client that
misses a round contributes again in the next. Every message is a ``bytes`` frame;
moving the frames is the caller's job — here, a loop; in a real system, whatever
transport it already has.

    python examples/sans_io_secure_sum.py
"""

from __future__ import annotations

import numpy as np

from protocols import FixedPointEncoder
from protocols.masking import MaskingClient, MaskingServer, params_for
from protocols.masking.multiround import MultiRoundClient, MultiRoundServer


def deliver(server, clients, frames, gone=()):
    """Send each (client id, frame) to its client, every reply to the server."""
    for cid, frame in frames:
        if cid in gone:
            continue
        for reply in clients[cid].receive(frame):
            server.receive(reply)


def one_session(vectors: dict[int, np.ndarray], encoder: FixedPointEncoder) -> np.ndarray:
    params = params_for(len(vectors), bits=encoder.bits, vector_length=len(next(iter(vectors.values()))))
    server = MaskingServer(params, sorted(vectors))
    clients = {cid: MaskingClient(cid) for cid in vectors}
    for cid, x in vectors.items():
        clients[cid].set_input(encoder.encode(x))
    deliver(server, clients, server.start())          # keys
    gone = {4}                                         # client 4 vanishes from here on
    for _ in range(3):                                 # shares, masked inputs, unmasking
        deliver(server, clients, server.advance(), gone)
    server.advance()
    print(f"single session: contributors {server.result.contributors}, dropped {server.result.dropped}")
    return encoder.decode(server.result.total)


def key_session(rounds: list[dict[int, np.ndarray]], encoder: FixedPointEncoder) -> list[np.ndarray]:
    ids = sorted(rounds[0])
    params = params_for(len(ids), bits=encoder.bits, vector_length=len(rounds[0][ids[0]]))
    server = MultiRoundServer(params, ids, rounds=len(rounds))
    clients = {cid: MultiRoundClient(cid) for cid in ids}
    deliver(server, clients, server.start())           # keys, once
    deliver(server, clients, server.advance())         # arming of the first rounds
    server.advance()
    sums = []
    for r, vectors in enumerate(rounds):
        missing = {0} if r == 1 else set()             # client 0 misses round 1
        for cid, x in vectors.items():
            clients[cid].set_input(encoder.encode(x))
        deliver(server, clients, server.start_round(), missing)   # exchange 1: masked uploads
        deliver(server, clients, server.advance(), missing)       # exchange 2: unmasking
        server.advance()
        print(f"key session, round {r}: contributors {server.result.contributors}")
        sums.append(encoder.decode(server.result.total))
    return sums


def main() -> None:
    rng = np.random.default_rng(0)
    encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=5, bits=32)
    vectors = {cid: rng.uniform(-1, 1, 4) for cid in range(5)}
    total = one_session(vectors, encoder)
    expected = sum(x for cid, x in vectors.items() if cid != 4)
    print("  sum of the survivors:", np.round(total, 6), "error", float(np.abs(total - expected).max()))
    rounds = [{cid: rng.uniform(-1, 1, 4) for cid in range(5)} for _ in range(3)]
    for r, (got, inputs) in enumerate(zip(key_session(rounds, encoder), rounds)):
        expected = sum(x for cid, x in inputs.items() if not (r == 1 and cid == 0))
        print(f"  round {r}: error {float(np.abs(got - expected).max()):.1e}")


if __name__ == "__main__":
    main()
