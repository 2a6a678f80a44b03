"""Fault-injection soak of every secure-sum protocol (the long version of tests/soak/).

    OMP_NUM_THREADS=1 python benchmarks/soak.py --minutes 12          # the figure in docs/security.md
    OMP_NUM_THREADS=1 python benchmarks/soak.py --rounds 2000 --seed 7

Thousands of sessions of random shape (n, threshold, SecAgg+ degree, bits,
vector length) for SecAgg, SecAgg+ (passive and active mode) and packed
Paillier (threshold and two-party, 512-bit keys: ``insecure_for_tests``,
speed only), through a network that drops, reorders, duplicates, delays and
replays frames, with a fraction of clients tampering with their own frames.
Each round is classified by :mod:`protocols.testing.faults`: ``exact``, ``aborted``
(typed), ``unverifiable`` (passive mode, see there) or ``other`` — a bug,
which must be 0. There is no reference implementation to put side by side;
the table shows the verdict counts per protocol instead, and the per-round
throughput. Writes ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols.testing.faults import (
    MASKING_VARIANTS,
    FaultConfig,
    PaillierSoak,
    run_soak,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="time budget")
    parser.add_argument("--rounds", type=int, default=None, help="round budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-clients", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--paillier-every", type=int, default=5,
                        help="every k-th round is a Paillier round")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks/results/soak.json")
    args = parser.parse_args(argv)
    if args.minutes is None and args.rounds is None:
        args.minutes = 10.0
    from tqdm import tqdm

    config = FaultConfig(max_clients=args.max_clients, max_length=args.max_length)
    started = time.perf_counter()
    paillier = [PaillierSoak("threshold", insecure_for_tests=True),
                PaillierSoak("two_party", insecure_for_tests=True)]
    keygen = time.perf_counter() - started
    bar = tqdm(total=args.rounds, unit="round", mininterval=2.0, file=sys.stderr)
    bad = 0

    def on_round(report):
        nonlocal bad
        bad += report.verdict == "other"
        bar.update(1)
        if bar.n % 50 == 0:
            bar.set_postfix(other=bad)

    tally = run_soak(list(MASKING_VARIANTS), rounds=args.rounds,
                     seconds=None if args.minutes is None else 60 * args.minutes,
                     seed=args.seed, config=config, paillier=paillier,
                     paillier_every=args.paillier_every, on_round=on_round)
    bar.close()
    result = tally.as_dict()
    result.update(
        command="python benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        seed=args.seed, paillier_key_bits=512, paillier_keygen_seconds=round(keygen, 2),
        config=dataclasses.asdict(config),
        machine=platform.platform(), python=platform.python_version(),
    )
    print(f"\n{'protocol':<20}{'rounds':>8}{'exact':>8}{'aborted':>9}{'unverif.':>9}{'other':>7}")
    for variant, counts in result["by_variant"].items():
        print(f"{variant:<20}{counts['rounds']:>8}{counts['exact']:>8}{counts['aborted']:>9}"
              f"{counts['unverifiable']:>9}{counts['other']:>7}")
    print(f"{'total':<20}{result['rounds']:>8}{result['exact']:>8}{result['aborted']:>9}"
          f"{result['unverifiable']:>9}{result['other']:>7}")
    print(f"{result['rounds'] / max(tally.seconds, 1e-9):.1f} rounds/s over {tally.seconds:.0f} s;"
          f" aborts by type: {result['abort_types']}")
    for failure in result["failures"]:
        print("FAILURE:", failure)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if result["other"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
