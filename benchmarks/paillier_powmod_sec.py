"""What constant-time exponentiation costs a threshold key holder: powmod_sec vs powmod.

A key holder's partial decryption raises every aggregate ciphertext to its
secret 2Δs_i and makes a proof with a secret nonce; both now go through
``gmpy2.powmod_sec``. This times :func:`partial_decrypt` on the same batch
with the constant-time path and with the former variable-time ``powmod``
(swapped in for the reference), alternating the two ``--repeats`` times in
one process, and checks that both give identical partial decryptions. It
also times whole sessions (``run_session``: ``--clients`` clients encrypt
``--values`` values each, 2 of 3 key holders decrypt) both ways, since a
round costs more than the key holder's exponentiations. CPU seconds
(``time.process_time``), one process, one thread::

    OMP_NUM_THREADS=1 python benchmarks/paillier_powmod_sec.py --key-bits 2048 \
        --output benchmarks/results/paillier_powmod_sec.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from protocols.paillier import (
    PaillierDeployment,
    deal_threshold_keys,
    partial_decrypt,
    run_session,
)
from protocols.paillier import threshold as threshold_module
from protocols.paillier._lazy import gmpy2


def _variable_time(base, exponent, modulus):  # the reference: what main did
    return gmpy2().powmod(base, exponent, modulus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key-bits", type=int, default=2048, choices=(1024, 2048, 3072))
    parser.add_argument("--ciphertexts", type=int, default=20,
                        help="batch size (a 2048-bit ciphertext packs 52-102 values)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--values", type=int, default=1000, help="values per client (b = 16)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if not (1 <= args.ciphertexts <= 10_000 and 1 <= args.repeats <= 100
            and 2 <= args.clients <= 1000 and 1 <= args.values <= 10**6):
        parser.error("--ciphertexts in [1, 10000], --repeats in [1, 100], --clients in "
                     "[2, 1000], --values in [1, 10^6]")
    clock = time.perf_counter()
    keys = deal_threshold_keys(args.key_bits, threshold=2, parties=3,
                               insecure_for_tests=args.key_bits < 2048)
    print(f"dealt a {args.key_bits}-bit 2-of-3 key in {time.perf_counter() - clock:.1f} s wall")
    public = keys.public_key.to_phe()
    ciphertexts = [public.raw_encrypt(m) for m in range(1, args.ciphertexts + 1)]
    share = keys.shares[0]
    constant_time = threshold_module._powmod_secret
    seconds: dict[str, list[float]] = {"powmod_sec": [], "powmod": []}
    values: dict[str, tuple[int, ...]] = {}
    for _ in range(args.repeats):
        for name, implementation in (("powmod_sec", constant_time), ("powmod", _variable_time)):
            threshold_module._powmod_secret = implementation
            try:
                start = time.process_time()
                partial = partial_decrypt(share, ciphertexts, context=b"benchmark")
                seconds[name].append(time.process_time() - start)
            finally:
                threshold_module._powmod_secret = constant_time
            values[name] = partial.values
    assert values["powmod_sec"] == values["powmod"], "the two paths disagree"
    rng = np.random.default_rng(0)
    inputs = {c: rng.integers(0, 1 << 16, size=args.values, dtype=np.uint64)
              for c in range(args.clients)}
    sessions: dict[str, list[dict[str, float]]] = {"powmod_sec": [], "powmod": []}
    for _ in range(max(1, args.repeats // 2)):
        for name, implementation in (("powmod_sec", constant_time), ("powmod", _variable_time)):
            threshold_module._powmod_secret = implementation
            try:
                outcome = run_session(PaillierDeployment(threshold_keys=keys), inputs, bits=16)
            finally:
                threshold_module._powmod_secret = constant_time
            sessions[name].append({"client": outcome.client_seconds,
                                   "server": outcome.server_seconds,
                                   "key_holders": outcome.key_holder_seconds})
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    ratio = medians["powmod_sec"] / medians["powmod"]
    per = {name: m / args.ciphertexts * 1e3 for name, m in medians.items()}
    print(f"partial decryption of {args.ciphertexts} ciphertexts (median of {args.repeats}, CPU):")
    print(f"  powmod_sec {medians['powmod_sec']:.3f} s ({per['powmod_sec']:.1f} ms/ciphertext)")
    print(f"  powmod     {medians['powmod']:.3f} s ({per['powmod']:.1f} ms/ciphertext)")
    print(f"  ratio {ratio:.2f}x; identical partial decryptions: True")
    totals = {name: statistics.median(sum(r.values()) for r in runs)
              for name, runs in sessions.items()}
    holders = {name: statistics.median(r["key_holders"] for r in runs)
               for name, runs in sessions.items()}
    print(f"whole session, {args.clients} clients x {args.values} values (median of "
          f"{len(sessions['powmod'])}, CPU of all parties):")
    for name in ("powmod_sec", "powmod"):
        print(f"  {name:10} {totals[name]:.2f} s (key holders {holders[name]:.2f} s)")
    print(f"  ratio {totals['powmod_sec'] / totals['powmod']:.2f}x per session")
    if args.output:
        args.output.write_text(json.dumps({
            "key_bits": args.key_bits, "ciphertexts": args.ciphertexts, "repeats": args.repeats,
            "cpu_seconds": seconds, "median_cpu_seconds": medians, "ratio": ratio,
            "identical": True, "clients": args.clients, "values": args.values,
            "sessions": sessions, "session_ratio": totals["powmod_sec"] / totals["powmod"]},
            indent=1) + "\n")


if __name__ == "__main__":
    main()
