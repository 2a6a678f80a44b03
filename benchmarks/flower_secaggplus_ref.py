"""Reference workload: Flower 1.42's SecAgg+ building blocks, composed as its mod and workflow do.

Run with the Python that has ``flwr==1.42.0`` (``/tmp/flwr-venv/bin/python``);
:mod:`benchmarks.secagg` calls it in a subprocess and reads one JSON line.

What is composed (read from ``flwr/client/mod/secure_aggregation/secaggplus_mod.py``
and ``flwr/server/workflow/secure_aggregation/secaggplus_workflow.py``; this
is our own re-composition of the public building blocks, no code copied):

* setup: the server shuffles the node ids and gives each node the ``num_shares``
  ids centred on it in the ring (a Harary graph, degree ``num_shares - 1``);
  every node makes two SECP384R1 key pairs, serialised as PEM/DER bytes.
* share keys: each node draws a 32-byte seed, Shamir-shares it and its PEM
  private key 1 with ``create_shares`` (pycryptodome, GF(2^128)), and
  Fernet-encrypts each neighbour's pair of shares under an ECDH+HKDF key.
* collect masked vectors: each node decrypts its shares, quantizes its vector
  (``quantize``; weight factor via ``factor_combine``), adds the self mask and
  the pairwise masks from ``pseudo_rand_gen`` (MT19937 seeded by a 32-bit fold)
  and reduces modulo ``mod_range``; the server sums the vectors.
* unmask: nodes return seed shares of active neighbours and key shares of dead
  ones; the server ``combine_shares`` per node and removes the masks.

Dropouts are applied where Flower supports them: before the masked-vector
upload (a node that vanishes earlier leaves the workflow without enough
shares for that node, and ``unmask_stage`` returns False).

Bytes are the payload sizes (keys, ciphertexts, ids, ``ndarray_to_bytes`` of
the masked vector, shares) — a lower bound on Flower's protobuf messages.
CPU is :func:`time.process_time` (all threads: ``create_shares`` uses a pool).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np
from flwr.common import ndarray_to_bytes
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt,
    encrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_utils import (
    pseudo_rand_gen,
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)


class Node:
    def __init__(self, nid: int) -> None:
        self.nid = nid
        self.sent = 0
        self.received = 0


def run(n: int, m: int, num_shares: int, threshold: int, dropout: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)  # workload data only
    clip, q_range, mod_range, max_weight = 1.0, 1 << 22, 1 << 32, 1000.0
    values = rng.uniform(-clip, clip, size=m).astype(np.float32)
    ids = list(range(1, n + 1))
    dead = {int(x) + 1 for x in rng.choice(n, size=round(dropout * n), replace=False)}
    nodes = {nid: Node(nid) for nid in ids}
    client_cpu = 0.0
    server_cpu = 0.0

    # ---- server: setup, neighbour ring (secaggplus_workflow.setup_stage)
    t0 = time.process_time()
    order = ids[:]
    random.shuffle(order)
    half = num_shares >> 1
    neighbours = {nid: {order[(i + off) % n] for off in range(-half, half + 1)}
                  for i, nid in enumerate(order)}
    server_cpu += time.process_time() - t0

    # ---- stage 0: key pairs (secaggplus_mod._setup)
    t0 = time.process_time()
    state: dict[int, dict] = {}
    for nid in ids:
        sk1, pk1 = generate_key_pairs()
        sk2, pk2 = generate_key_pairs()
        st = {"sk1": private_key_to_bytes(sk1), "pk1": public_key_to_bytes(pk1),
              "sk2": private_key_to_bytes(sk2), "pk2": public_key_to_bytes(pk2),
              "seed_shares": {}, "sk1_shares": {}, "ss2": {}}
        state[nid] = st
        nodes[nid].sent += len(st["pk1"]) + len(st["pk2"])
    client_cpu += time.process_time() - t0
    public_keys = {nid: (state[nid]["pk1"], state[nid]["pk2"]) for nid in ids}

    # ---- stage 1: share keys (secaggplus_mod._share_keys); server forwards
    fwd: dict[int, list[tuple[int, bytes]]] = {nid: [] for nid in ids}
    for nid in ids:
        nodes[nid].received += sum(len(a) + len(b) + 8 for j in neighbours[nid]
                                   for a, b in [public_keys[j]])
        t0 = time.process_time()
        st = state[nid]
        st["pks"] = {j: public_keys[j] for j in sorted(neighbours[nid])}
        st["seed"] = os.urandom(32)
        b_shares = create_shares(st["seed"], threshold, num_shares)
        sk_shares = create_shares(st["sk1"], threshold, num_shares)
        out = []
        for idx, (j, (_, pk2)) in enumerate(st["pks"].items()):
            if j == nid:
                st["seed_shares"][nid] = b_shares[idx]
                st["sk1_shares"][nid] = sk_shares[idx]
                continue
            key = generate_shared_key(bytes_to_private_key(st["sk2"]), bytes_to_public_key(pk2))
            st["ss2"][j] = key
            ct = encrypt(key, share_keys_plaintext_concat(nid, j, b_shares[idx], sk_shares[idx]))
            out.append((j, ct))
        client_cpu += time.process_time() - t0
        nodes[nid].sent += sum(len(ct) + 8 for _, ct in out)
        t0 = time.process_time()
        for j, ct in out:
            fwd[j].append((nid, ct))
        server_cpu += time.process_time() - t0

    # ---- stage 2: masked vectors (secaggplus_mod._collect_masked_vectors)
    total = None
    active = [nid for nid in ids if nid not in dead]
    for nid in active:
        nodes[nid].received += sum(len(ct) + 8 for _, ct in fwd[nid])
        t0 = time.process_time()
        st = state[nid]
        available = []
        for src, ct in fwd[nid]:
            src2, dst, b_share, sk_share = share_keys_plaintext_separate(
                decrypt(st["ss2"][src], ct))
            assert src2 == src and dst == nid
            st["seed_shares"][src] = b_share
            st["sk1_shares"][src] = sk_share
            available.append(src)
        num_examples = 1.0
        ratio = num_examples / max_weight
        q_ratio = round(ratio * q_range)
        params = [values * (q_ratio / q_range)]
        quantized = quantize(params, clip, q_range)
        quantized = factor_combine(q_ratio, quantized)
        dims = [a.shape for a in quantized]
        quantized = parameters_addition(quantized, pseudo_rand_gen(st["seed"], mod_range, dims))
        for j in available:
            key = generate_shared_key(bytes_to_private_key(st["sk1"]),
                                      bytes_to_public_key(st["pks"][j][0]))
            mask = pseudo_rand_gen(key, mod_range, dims)
            quantized = (parameters_addition(quantized, mask) if nid > j
                         else parameters_subtraction(quantized, mask))
        quantized = parameters_mod(quantized, mod_range)
        payload = [ndarray_to_bytes(a) for a in quantized]
        client_cpu += time.process_time() - t0
        nodes[nid].sent += sum(len(p) for p in payload)
        t0 = time.process_time()
        total = quantized if total is None else parameters_addition(total, quantized)
        server_cpu += time.process_time() - t0
    t0 = time.process_time()
    total = parameters_mod(total, mod_range)
    server_cpu += time.process_time() - t0

    # ---- stage 3: unmask (secaggplus_mod._unmask, workflow.unmask_stage)
    collected: dict[int, list[bytes]] = {nid: [] for nid in ids}
    for nid in active:
        hood = neighbours[nid]
        act = [j for j in hood if j not in dead]
        dd = [j for j in hood if j in dead]
        nodes[nid].received += 8 * (len(act) + len(dd))
        t0 = time.process_time()
        st = state[nid]
        shares = [st["seed_shares"][j] for j in act] + [st["sk1_shares"][j] for j in dd]
        client_cpu += time.process_time() - t0
        nodes[nid].sent += sum(len(s) + 8 for s in shares)
        t0 = time.process_time()
        for owner, share in zip(act + dd, shares):
            collected[owner].append(share)
        server_cpu += time.process_time() - t0

    t0 = time.process_time()
    dims = [a.shape for a in total]
    ok = True
    for nid, share_list in collected.items():
        if len(share_list) < threshold:
            ok = False
            break
        secret = combine_shares(share_list)
        if nid not in dead:
            total = parameters_subtraction(total, pseudo_rand_gen(secret, mod_range, dims))
        else:
            for j in neighbours[nid] - {nid}:
                key = generate_shared_key(bytes_to_private_key(secret),
                                          bytes_to_public_key(public_keys[j][0]))
                mask = pseudo_rand_gen(key, mod_range, dims)
                total = (parameters_addition(total, mask) if nid > j
                         else parameters_subtraction(total, mask))
    if ok:
        total = parameters_mod(total, mod_range)
        q_total, recon = factor_extract(total)
    server_cpu += time.process_time() - t0

    # Correctness (outside the timings): every node holds the same vector, so
    # the dequantized weighted average, computed as the workflow does, must give
    # it back up to quantization error; a mask left in the sum gives garbage.
    correct = False
    if ok:
        avg = dequantize(recon, clip, q_range)[0] - (len(active) - 1) * clip
        avg = avg * (q_range / q_total)
        correct = bool(np.max(np.abs(avg - values)) < 1e-3)
    vec_bytes = m * 4  # the unmasked quantized vector in a 2^32 ring
    sent = [nodes[nid].sent for nid in active]
    received = [nodes[nid].received for nid in active]
    return {"n": n, "m": m, "num_shares": num_shares, "threshold": threshold,
            "dropout": dropout, "client_seconds": client_cpu, "server_seconds": server_cpu,
            "client_seconds_per_client": client_cpu / n,
            "bytes_sent_per_client": float(np.mean(sent)), "max_bytes_sent": max(sent),
            "bytes_received_per_client": float(np.mean(received)),
            "expansion": max(sent) / vec_bytes, "completed": ok, "correct": correct}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--m", type=int, required=True)
    ap.add_argument("--num-shares", type=int, required=True)
    ap.add_argument("--threshold", type=int, required=True)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    result = run(args.n, args.m, args.num_shares, args.threshold, args.dropout, args.seed)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
