"""Packed Paillier vs plain phe, side by side in one run.

Usage::

    python benchmarks/paillier.py --key-bits 2048 --keygen \
        --output benchmarks/results/paillier_2048.json
    python benchmarks/paillier.py --key-bits 3072 --output benchmarks/results/paillier_3072.json
    python benchmarks/paillier.py --quick         # 2048 only, m = 10^3, 10^4 (a few minutes)
    python benchmarks/paillier.py --keygen-only --output benchmarks/results/paillier_keygen.json
    python benchmarks/paillier.py --ml100k-only --output benchmarks/results/paillier_ml100k.json

The full grid at 3072 bits takes about an hour on the project machine; the JSON
is rewritten after every row, so an interrupted run keeps what it measured.

For every key size (2048, 3072), vector length m (10^3, 10^4, 10^5), client
count n (10, 100) and quantization width b (16, 32 bits) it measures, on one
core (``time.process_time``):

* client encryption of one m-vector: values/s without precomputation (textbook
  randomizers r^n, and the opt-in DJN fixed-base randomizers: see
  protocols/paillier/encryption.py; their one-off table is reported apart), and
  the online cost with a randomizer pool (the pool fill is reported apart);
* bytes per value: the length of the actual wire frame / m;
* server sum: multiplying n clients' ciphertexts (n copies of one client's
  batch; the cost of a modular product does not depend on the values);
* decryption of the aggregate: threshold 2-of-3 (t partial decryptions with
  proofs, proof verification and combination: all parties' CPU summed, and
  the slowest single key holder), and the two-party decryptor (phe CRT).

phe is the reference: ``PaillierPublicKey.encrypt(float)`` per value, ``+``
per value, ``decrypt`` per value. Running it over 10^5 values x 100 clients
would take hours, so it is timed on a sample (``--phe-sample`` values, default
200) and extrapolated linearly; the table says so in the ``phe`` columns.
Ratios are computed within this one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocols.paillier import (
    FixedBaseRandomizers,
    PackingLayout,
    PaillierPublicKey,
    RandomizerPool,
    add_ciphertexts,
    ciphertexts_to_bytes,
    combine_partials,
    deal_threshold_keys,
    encrypt_packed,
    generate_keypair,
    generate_safe_prime,
    partial_decrypt,
    verify_partial,
)
from protocols.paillier.encryption import _fixed_base_for
from protocols.paillier.keys import PaillierPrivateKey
from protocols.paillier.messages import EncryptedUpdate
from protocols.wire import HEADER_SIZE

RESULTS = Path(__file__).resolve().parent / "results"


def cpu(call, *args, **kwargs):
    start = time.process_time()
    out = call(*args, **kwargs)
    return out, time.process_time() - start


def phe_reference(
    public: PaillierPublicKey, private: PaillierPrivateKey, sample: int
) -> dict[str, float]:
    """Per-value costs of plain phe, measured on ``sample`` random floats."""
    pk, sk = public.to_phe(), private.to_phe()
    values = [random.uniform(-1, 1) for _ in range(sample)]
    ciphertexts, enc = cpu(lambda: [pk.encrypt(v) for v in values])
    _, add = cpu(lambda: [a + b for a, b in zip(ciphertexts, reversed(ciphertexts), strict=True)])
    _, dec = cpu(lambda: [sk.decrypt(c) for c in ciphertexts])
    return {
        "encrypt_seconds_per_value": enc / sample,
        "add_seconds_per_value": add / sample,
        "decrypt_seconds_per_value": dec / sample,
        "bytes_per_value": float(
            public.ciphertext_bytes
        ),  # the bare ciphertext, exponent not counted
        "sample": sample,
    }


def frame_bytes(public: PaillierPublicKey, blob: bytes) -> int:
    message = EncryptedUpdate(public.fingerprint, blob, bytes(64))
    return HEADER_SIZE + len(message.body())


def bench_config(
    key_set, private: PaillierPrivateKey, m: int, n: int, bits: int
) -> dict[str, float]:
    public = key_set.public_key
    layout = PackingLayout.for_key(public.bits, bits=bits, max_clients=n, length=m)
    vector = np.frombuffer(np.random.bytes(8 * m), dtype=np.uint64) & np.uint64((1 << bits) - 1)
    plaintexts, pack_seconds = cpu(layout.pack, vector)
    ciphertexts, encrypt_seconds = cpu(encrypt_packed, public, plaintexts)
    blob, serialize_seconds = cpu(ciphertexts_to_bytes, public, ciphertexts)
    _fixed_base_for(public.n)  # the one-off DJN table (timed in djn_table_seconds)
    djn_ciphertexts, djn_seconds = cpu(encrypt_packed, public, plaintexts, randomizers="djn")
    pool = RandomizerPool(public)
    _, fill_seconds = cpu(pool.fill, len(plaintexts))

    def online():
        return ciphertexts_to_bytes(public, encrypt_packed(public, layout.pack(vector), pool=pool))

    _, online_seconds = cpu(online)
    client_no_pool = pack_seconds + encrypt_seconds + serialize_seconds
    aggregate, sum_seconds = cpu(add_ciphertexts, public, [ciphertexts] * n)

    expected = (vector * np.uint64(n)) & np.uint64((1 << bits) - 1)
    context = b"benchmark"
    timings = []
    partials = []
    for share in key_set.shares[: key_set.params.threshold]:
        partial, seconds = cpu(partial_decrypt, share, aggregate, context=context)
        partials.append(partial)
        timings.append(seconds)
    verify_seconds = 0.0
    for partial in partials:
        _, seconds = cpu(verify_partial, key_set.params, aggregate, partial, context=context)
        verify_seconds += seconds
    plaintext_sum, combine_seconds = cpu(combine_partials, key_set.params, partials)
    total, unpack_seconds = cpu(layout.unpack, plaintext_sum, count=n)
    assert np.array_equal(total, expected), "threshold decryption is wrong"
    djn_sum = add_ciphertexts(public, [djn_ciphertexts] * n)
    djn_partials = [partial_decrypt(share, djn_sum, context=context)
                    for share in key_set.shares[: key_set.params.threshold]]
    assert np.array_equal(
        layout.unpack(combine_partials(key_set.params, djn_partials), count=n), expected
    ), "DJN ciphertexts decrypt wrongly"
    # The dealer erased the threshold key's factors, so the two-party decryptor is timed on its own
    # key of the same size, on ciphertexts of the same plaintexts (r = 1: the cost of CRT decryption
    # does not depend on r, and building them costs nothing).
    two_party_n = private.public_key.n
    stand_ins = [(1 + p * two_party_n) % (two_party_n * two_party_n) for p in plaintext_sum]
    two_party_plain, two_party_seconds = cpu(private.decrypt_raw, stand_ins)
    assert np.array_equal(layout.unpack(two_party_plain, count=n), expected), (
        "two-party decryption is wrong"
    )
    return {
        "key_bits": public.bits,
        "m": m,
        "n": n,
        "bits": bits,
        "slots": layout.slots,
        "ciphertexts": layout.num_plaintexts,
        "client_seconds_no_pool": client_no_pool,
        "client_seconds_pool_online": online_seconds,
        "pool_fill_seconds": fill_seconds,
        "values_per_second_no_pool": m / client_no_pool,
        "values_per_second_pool": m / online_seconds,
        "client_seconds_djn": pack_seconds + djn_seconds + serialize_seconds,
        "values_per_second_djn": m / (pack_seconds + djn_seconds + serialize_seconds),
        "frame_bytes": frame_bytes(public, blob),
        "bytes_per_value": frame_bytes(public, blob) / m,
        "server_sum_seconds": sum_seconds,
        "threshold_partial_seconds_max_holder": max(timings),
        "threshold_decrypt_seconds_total": sum(timings)
        + verify_seconds
        + combine_seconds
        + unpack_seconds,
        "threshold_verify_seconds": verify_seconds,
        "two_party_decrypt_seconds": two_party_seconds + unpack_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keygen", action="store_true", help="also time threshold key generation")
    parser.add_argument("--keygen-only", action="store_true", help="only time key generation")
    parser.add_argument("--ml100k-only", action="store_true",
                        help="only the ML-100K item-table cells (and the phe reference)")
    parser.add_argument("--phe-sample", type=int, default=200)
    parser.add_argument("--key-bits", type=int, nargs="*", default=None)
    parser.add_argument("--bits", type=int, nargs="*", default=[16, 32])
    parser.add_argument("--output", default=str(RESULTS / "paillier.json"))
    args = parser.parse_args()
    key_sizes = args.key_bits or ([2048] if args.quick else [2048, 3072])
    lengths = [1000, 10_000] if args.quick else [1000, 10_000, 100_000]
    clients = [10, 100]

    report: dict[str, object] = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "phe_extrapolated_from_sample": args.phe_sample,
        "rows": [],
        "ml100k": [],
        "keygen": {},
    }
    rows: list[dict] = report["rows"]  # type: ignore[assignment]
    if args.keygen_only:
        bench_keygen(report, key_sizes, args.output)
        return
    for key_bits in key_sizes:
        start = time.perf_counter()
        key_set = deal_threshold_keys(key_bits, threshold=2, parties=3)
        deal_wall = time.perf_counter() - start
        report["keygen"][f"threshold_{key_bits}_wall_seconds"] = deal_wall  # type: ignore[index]
        print(f"[{key_bits}] threshold 2-of-3 key dealt in {deal_wall:.1f} s (wall)", flush=True)
        # The two-party decryptor holds the factors: a phe-generated key of the same size.
        public_two_party, private_two_party = generate_keypair(key_bits)
        reference = phe_reference(public_two_party, private_two_party, args.phe_sample)
        report[f"phe_{key_bits}"] = reference
        per_value_ms = {k: v * 1e3 for k, v in reference.items() if k.endswith("per_value")}
        print(
            f"[{key_bits}] phe per value: "
            f"encrypt {per_value_ms['encrypt_seconds_per_value']:.2f} ms, "
            f"add {per_value_ms['add_seconds_per_value'] * 1e3:.1f} us, "
            f"decrypt {per_value_ms['decrypt_seconds_per_value']:.2f} ms "
            f"(sample {args.phe_sample})",
            flush=True,
        )
        for bits in [] if args.ml100k_only else args.bits:
            for m in lengths:
                for n in clients:
                    row = bench_config(key_set, private_two_party, m, n, bits)
                    phe_enc = reference["encrypt_seconds_per_value"]
                    row.update(
                        {
                            "phe_values_per_second": 1 / phe_enc,
                            "phe_bytes_per_value": reference["bytes_per_value"],
                            "phe_server_sum_seconds_extrapolated": reference[
                                "add_seconds_per_value"
                            ]
                            * m
                            * (n - 1),
                            "phe_decrypt_seconds_extrapolated": reference[
                                "decrypt_seconds_per_value"
                            ]
                            * m,
                            "speedup_no_pool": row["values_per_second_no_pool"] * phe_enc,
                            "speedup_pool": row["values_per_second_pool"] * phe_enc,
                            "speedup_djn": row["values_per_second_djn"] * phe_enc,
                            "bytes_ratio": reference["bytes_per_value"] / row["bytes_per_value"],
                        }
                    )
                    rows.append(row)
                    print_row(row, flush=True)
                    save(report, args.output)
        # The ML-100K item table: 1,682 x 32 = 53,824 values, one client, one core.
        for bits in args.bits:
            layout = PackingLayout.for_key(key_bits, bits=bits, max_clients=100, length=53_824)
            vector = np.frombuffer(np.random.bytes(8 * 53_824), dtype=np.uint64) & np.uint64(
                (1 << bits) - 1
            )
            public = key_set.public_key

            def encrypt_table(public=public, layout=layout, vector=vector) -> bytes:
                return ciphertexts_to_bytes(public, encrypt_packed(public, layout.pack(vector)))

            _, seconds = cpu(encrypt_table)
            _, table_seconds = cpu(FixedBaseRandomizers, public.n)
            _fixed_base_for(public.n)

            def encrypt_table_djn(public=public, layout=layout, vector=vector) -> bytes:
                return ciphertexts_to_bytes(
                    public, encrypt_packed(public, layout.pack(vector), randomizers="djn")
                )

            _, djn_seconds = cpu(encrypt_table_djn)
            wall_start = time.perf_counter()
            ciphertexts_to_bytes(public, encrypt_packed(public, layout.pack(vector), processes=2))
            wall_two = time.perf_counter() - wall_start
            entry = {
                "key_bits": key_bits,
                "bits": bits,
                "max_clients": 100,
                "values": 53_824,
                "ciphertexts": layout.num_plaintexts,
                "one_core_cpu_seconds": seconds,
                "one_core_cpu_seconds_djn": djn_seconds,
                "djn_table_cpu_seconds": table_seconds,
                "two_processes_wall_seconds": wall_two,
                "phe_one_core_seconds_extrapolated": reference["encrypt_seconds_per_value"]
                * 53_824,
            }
            report["ml100k"].append(entry)  # type: ignore[union-attr]
            save(report, args.output)
            print(
                f"[{key_bits}] ML-100K item table, b={bits}: {seconds:.2f} s on one core "
                f"({wall_two:.2f} s wall on 2 processes); DJN randomizers {djn_seconds:.2f} s "
                f"(+ {table_seconds:.2f} s one-off table); "
                f"phe ≈ {entry['phe_one_core_seconds_extrapolated']:.0f} s",
                flush=True,
            )
    if args.keygen:
        bench_keygen(report, key_sizes, args.output)
    save(report, args.output)
    print(f"wrote {args.output}")
    summarize(rows)


def bench_keygen(report: dict, key_sizes: list[int], output: str, samples: int = 3) -> None:
    """Wall time of safe primes per backend, and of whole 2-of-3 deals (default backend)."""
    for half in sorted({k // 2 for k in key_sizes}):
        for backend in ("sieve", "openssl", "next_prime"):
            if backend == "next_prime" and half > 1024:
                continue  # minutes per prime
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                generate_safe_prime(half, backend=backend)
                times.append(time.perf_counter() - start)
            report["keygen"][f"safe_prime_{half}_{backend}_wall_seconds"] = times
            save(report, output)
            print(
                f"safe prime {half} bits via {backend}: {', '.join(f'{t:.1f}' for t in times)} s",
                flush=True,
            )
    for key_bits in key_sizes:
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            deal_threshold_keys(key_bits, threshold=2, parties=3)
            times.append(time.perf_counter() - start)
        report["keygen"][f"deal_2_of_3_{key_bits}_wall_seconds"] = times
        save(report, output)
        print(f"2-of-3 deal, {key_bits} bits: {', '.join(f'{t:.1f}' for t in times)} s", flush=True)


def save(report: dict, output: str) -> None:
    """Written after every row, so a long run interrupted midway keeps what it measured."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(report, indent=2))


def print_row(row: dict, *, flush: bool = False) -> None:
    r = row
    print(
        f"k={r['key_bits']} m={r['m']:>6} n={r['n']:>3} b={r['bits']:>2} slots={r['slots']:>3} | "
        f"enc {r['values_per_second_no_pool']:>9.0f} v/s ({r['speedup_no_pool']:5.1f}x phe) "
        f"djn {r['values_per_second_djn']:>9.0f} v/s ({r['speedup_djn']:5.1f}x) "
        f"pool {r['values_per_second_pool']:>10.0f} v/s ({r['speedup_pool']:6.0f}x) | "
        f"B/v {r['bytes_per_value']:6.2f} vs {r['phe_bytes_per_value']:.0f} "
        f"({r['bytes_ratio']:4.0f}x) | "
        f"sum {r['server_sum_seconds']:7.3f} s "
        f"vs phe~{r['phe_server_sum_seconds_extrapolated']:8.2f} s"
        f" | dec thr {r['threshold_decrypt_seconds_total']:7.2f} s "
        f"(holder {r['threshold_partial_seconds_max_holder']:6.2f}) "
        f"2p {r['two_party_decrypt_seconds']:6.2f} s "
        f"vs phe~{r['phe_decrypt_seconds_extrapolated']:7.1f} s",
        flush=flush,
    )


def summarize(rows: list[dict]) -> None:
    for key_bits in sorted({r["key_bits"] for r in rows}):
        subset = [r for r in rows if r["key_bits"] == key_bits]
        no_pool = statistics.median(r["speedup_no_pool"] for r in subset)
        pool = statistics.median(r["speedup_pool"] for r in subset)
        djn = statistics.median(r["speedup_djn"] for r in subset)
        smaller = statistics.median(r["bytes_ratio"] for r in subset)
        print(
            f"{key_bits}-bit: median speed-up {no_pool:.0f}x (no pool), {djn:.0f}x (DJN), "
            f"{pool:.0f}x (pool); "
            f"bytes {smaller:.0f}x smaller"
        )


if __name__ == "__main__":
    main()
