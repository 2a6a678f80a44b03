"""Upload bytes, expansion and accuracy of the compact encoding against the dense 32-bit one.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/communication.py [--seeds 0 1 2] [--rounds N]

For each data set (the synthetic default; ``../shared/data/ml-latest-small``, when
present, at model dim 16 — issue 22's cell — and at the default dim 8) and each seed, two runs of the default private job (user-level
ε = 8, distributed discrete Gaussian under SecAgg+, in-process engine), one after
the other in this process, identical but for ``aggregation.encoding``:

* ``dense``: every coordinate in a 32-bit ring (4 bytes on the wire);
* ``compact``: a public random ``compact_keep`` of the coordinates per round,
  randomly rotated, in a 16-bit ring (2 bytes on the wire).

Per run: the upload per client per round (every protocol frame the client sends,
mean over rounds), the masked vector's share of it (``payload`` = the encoded
vector's bytes), the expansion (upload over the encoded vector), the download,
the final RMSE, CPU and wall time. Writes ``benchmarks/results/communication.json``.

``--record`` measures the record-level counterpart on ml-latest-small (record-level
DP-SGD with distributed noise, its defaults, target ε ``--epsilon``): the dense upload
against the public subset at ``compact_keep`` 0.46 and 0.23 (the subset in the plan's
32-bit ring; docs/privacy.md §4.5). RMSE from the labelled simulation of the secure sum
(the ring sum in the clear, bit for bit the protocol's release), one run per seed and
encoding; bytes from ``--byte-rounds`` rounds of each encoding under SecAgg+. Writes
``communication_record.json`` next to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from secure_fedrec.config import AggregationConfig, RunConfig
from secure_fedrec.runner import run_job

RESULTS = Path(__file__).parent / "results" / "communication.json"
ML_SMALL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-latest-small"


#: data set name -> (source, model.dim or None for the default): ml-latest-small at dim 16 is
#: issue 22's cell (biased MF, (9,066 x 17 + 2) coordinates); dim 8 is the default model
DATASETS = {"synthetic": ("synthetic", None), "ml-latest-small": (str(ML_SMALL.resolve()), 16),
            "ml-latest-small-dim8": (str(ML_SMALL.resolve()), None)}


def configure(dataset: str, encoding: str, seed: int, rounds: int | None,
              clients_per_round: float | None = None, **extra: object) -> RunConfig:
    """The run of one cell. Built with ``load_config`` so that the keys set here count as given:
    a data set's preset (``secure_fedrec.presets``) fills only the keys a run leaves unset, and
    would otherwise put ml-latest-small back at its preset's model dim."""
    from secure_fedrec.config import load_config

    source, dim = DATASETS[dataset]
    overrides: dict[str, object] = {
        "seed": seed, "data.source": source, "aggregation.encoding": encoding,
        # the calibration the documented tables were measured with (the default until session 10)
        "privacy.calibrate_to": "amplified", "training.checkpoint_every": 0, **extra}
    if rounds is not None:
        overrides["training.rounds"] = rounds
    if clients_per_round is not None:
        overrides["training.clients_per_round"] = clients_per_round
    if dim is not None:
        overrides["model.dim"] = dim
    return load_config(None, overrides)


#: the compact encoding's default aggregation.compact_keep
DEFAULT_KEEP = AggregationConfig().compact_keep

#: record-level cells: encoding label -> (aggregation.encoding, compact_keep)
RECORD_ENCODINGS = {"dense": ("dense", None), "compact-0.46": ("compact", 0.46), "compact-0.23": ("compact", 0.23)}


def configure_record(label: str, seed: int, epsilon: float, protocol: str, rounds: int | None) -> RunConfig:
    """ml-latest-small, record-level DP-SGD with distributed noise at its defaults (presets applied)."""
    from secure_fedrec.config import load_config

    encoding, keep = RECORD_ENCODINGS[label]
    overrides = {"data.source": str(ML_SMALL.resolve()), "privacy.unit": "record", "privacy.noise": "distributed",
                 "privacy.target_epsilon": epsilon, "aggregation.protocol": protocol,
                 "aggregation.encoding": encoding, "seed": seed, "training.checkpoint_every": 0}
    if keep is not None:
        overrides["aggregation.compact_keep"] = keep
    if rounds is not None:
        overrides["training.rounds"] = rounds
    return load_config(None, overrides)


def record_cells(seeds: list[int], epsilon: float, byte_rounds: int) -> dict:
    runs: list[dict] = []
    cells = ([("simulation", label, s) for s in seeds for label in RECORD_ENCODINGS]
             + [("secagg+", label, 0) for label in RECORD_ENCODINGS])
    for protocol, label, seed in tqdm(cells, desc="record-level runs"):
        rounds = byte_rounds if protocol == "secagg+" else None
        config = configure_record(label, seed, epsilon, "plaintext" if protocol == "simulation" else protocol, rounds)
        row = {"protocol": protocol, "encoding": label, "seed": seed, **one_run(config)}
        runs.append(row)
        tqdm.write(json.dumps(row))
    dense = [r for r in runs if r["protocol"] == "simulation" and r["encoding"] == "dense"]
    summary = {}
    for label in RECORD_ENCODINGS:
        sim = [r for r in runs if r["protocol"] == "simulation" and r["encoding"] == label]
        wire = next(r for r in runs if r["protocol"] == "secagg+" and r["encoding"] == label)
        wire_dense = next(r for r in runs if r["protocol"] == "secagg+" and r["encoding"] == "dense")
        summary[label] = {
            "rmse_mean": float(np.mean([r["rmse"] for r in sim])),
            "rmse_per_seed": [r["rmse"] for r in sim],
            "rmse_ratio_to_dense": float(np.mean([r["rmse"] for r in sim]) / np.mean([r["rmse"] for r in dense])),
            "rmse_ratio_per_seed": [c["rmse"] / d["rmse"] for d, c in zip(dense, sim, strict=True)],
            "epsilon": [r["epsilon"] for r in sim],
            "cpu_seconds_mean": float(np.mean([r["cpu_seconds"] for r in sim])),
            "upload_bytes": wire["upload_bytes"], "encoded_vector_bytes": wire["encoded_vector_bytes"],
            "expansion": wire["expansion"], "download_bytes": wire["download_bytes"],
            "upload_ratio_to_dense": wire["upload_bytes"] / wire_dense["upload_bytes"],
            "secagg_cpu_seconds_per_round": wire["cpu_seconds"] / max(1, wire["rounds_released"]),
        }
        print(label, json.dumps(summary[label], indent=1))
    return {"summary": summary, "runs": runs}


def one_run(config: RunConfig) -> dict:
    cpu, wall = time.process_time(), time.perf_counter()
    result = run_job(config)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    # rounds a protocol released (the labelled simulation of the sum reports no protocol bytes)
    rounds = [r for r in result["rounds"] if r.get("bytes_sent_per_client") and r.get("communication_expansion")]
    vector_bytes = [r["bytes_sent_per_client"] / r["communication_expansion"] for r in rounds]
    return {
        "rmse": result["final"].get("rmse"),
        "epsilon": result["privacy"]["epsilon"],
        "rounds_released": len(rounds),
        "upload_bytes": float(np.mean([r["bytes_sent_per_client"] for r in rounds])) if rounds else None,
        "encoded_vector_bytes": float(np.mean(vector_bytes)) if rounds else None,
        "expansion": float(np.mean([r["communication_expansion"] for r in rounds])) if rounds else None,
        "download_bytes": float(np.mean([r["bytes_down_per_client"] for r in result["rounds"]])),
        "model_bytes": float(result["rounds"][0]["model_bytes_per_client"]),
        "noise_std_model_units": result["privacy"].get("noise_std_model_units"),
        "cpu_seconds": cpu,
        "wall_seconds": wall,
    }


# ----------------------------------------------------------------- byte breakdown (floor)
#: frame kind -> name, per protocol code (1: single-round masking, 3: multi-round key sessions)
_KIND_NAMES = {
    1: {2: "advertise_keys", 4: "encrypted_shares", 6: "masked_input", 8: "consistency_signature",
        10: "unmask_shares"},
    3: {2: "advertise_keys", 4: "armings", 6: "round_upload", 8: "round_unmask_shares"},
}


def _frame_sizes(sizes: dict) -> Callable[[str, int, int, bytes], bytes]:
    """An interceptor that adds every client frame's size to ``sizes[(client, kind name)]``."""
    from protocols.wire import SERVER_ID

    def record(stage: str, sender: int, receiver: int, frame: bytes) -> bytes:
        if receiver == SERVER_ID:
            name = _KIND_NAMES.get(frame[5], {}).get(frame[6], f"kind{frame[6]}")
            sizes[(sender, name)] = sizes.get((sender, name), 0) + len(frame)
        return frame
    return record


def byte_breakdown(clients: int, vector_lengths: dict[str, tuple[int, int]], *, rounds: int = 4,
                   seed: int = 0) -> dict:
    """What a client uploads per round, frame by frame, under SecAgg+ at the job's parameters.

    ``vector_lengths``: encoding -> (coordinates, ring bits). One single-round session
    (what ``aggregation.key_rounds = 1``, the default, runs every round) and one multi-round
    key session of ``rounds`` rounds (``aggregation.key_rounds > 1``: setup once, then two
    exchanges per round), on the same clients, degree and threshold; nobody drops out.
    """
    from protocols.masking import MaskingParams, run_session
    from protocols.masking.multiround import MultiRoundSecAgg
    from secure_fedrec.aggregation.session import SessionPolicy, session_parameters

    rng = np.random.default_rng(seed)  # workload values only
    out: dict = {"clients_per_round": clients}
    for encoding, (length, bits) in vector_lengths.items():
        plan = session_parameters(SessionPolicy("secagg+"), clients, bits=bits,
                                  vector_length=length)
        params = MaskingParams(threshold=plan.threshold, degree=plan.degree, bits=bits,
                               vector_length=length)
        inputs = {c: rng.integers(0, 1 << bits, length, dtype=np.uint64) for c in range(clients)}
        vector_bytes = length * (1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8)
        single: dict = {}
        run_session(inputs, params, interceptor=_frame_sizes(single))
        per_round: list[dict] = []
        driver = MultiRoundSecAgg(params, list(range(clients)), rounds=rounds)
        for _ in range(rounds):
            sizes: dict = {}
            driver.interceptor = _frame_sizes(sizes)
            driver.run_round(inputs)
            per_round.append(sizes)

        def mean_by_kind(sizes: dict) -> dict[str, float]:
            kinds = sorted({k for _, k in sizes})
            return {k: sum(v for (_, kk), v in sizes.items() if kk == k) / clients for k in kinds}

        steady = [mean_by_kind(r) for r in per_round[1:]]
        steady_mean = {k: float(np.mean([r.get(k, 0.0) for r in steady]))
                       for k in sorted({k for r in steady for k in r})}
        single_kinds = mean_by_kind(single)
        out[encoding] = {
            "degree": plan.degree, "threshold": plan.threshold, "bits": bits,
            "coordinates": length, "encoded_vector_bytes": vector_bytes,
            "single_round": {"by_frame": single_kinds, "total": sum(single_kinds.values()),
                             "overhead": sum(single_kinds.values()) - vector_bytes,
                             "expansion": sum(single_kinds.values()) / vector_bytes},
            "key_session_first_round": {"by_frame": mean_by_kind(per_round[0]),
                                        "total": sum(mean_by_kind(per_round[0]).values())},
            "key_session_steady_round": {"by_frame": steady_mean,
                                         "total": sum(steady_mean.values()),
                                         "overhead": sum(steady_mean.values()) - vector_bytes,
                                         "expansion": sum(steady_mean.values()) / vector_bytes},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=None, help="default: the config's")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--clients-per-round", type=float, default=None, help="default: the config's")
    parser.add_argument("--keep", type=float, nargs="+", default=[DEFAULT_KEEP],
                        help="aggregation.compact_keep of the compact runs (each value its own cell)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--breakdown", action="store_true",
                        help="only the per-frame byte breakdown on the synthetic default's "
                             "parameters (SecAgg+, single-round and key sessions); writes "
                             "communication_breakdown.json next to --out")
    parser.add_argument("--record", action="store_true",
                        help="only the record-level cells on ml-latest-small (see the module docstring); "
                             "writes communication_record.json next to --out")
    parser.add_argument("--epsilon", type=float, default=1.0, help="--record: the target ε")
    parser.add_argument("--byte-rounds", type=int, default=2, help="--record: SecAgg+ rounds for the bytes")
    args = parser.parse_args()
    if args.record:
        if not ML_SMALL.exists():
            raise SystemExit(f"--record needs {ML_SMALL}")
        report = record_cells(args.seeds, args.epsilon, args.byte_rounds)
        path = args.out.with_name("communication_record.json")
        path.write_text(json.dumps({
            "command": "OMP_NUM_THREADS=1 python benchmarks/communication.py --record --seeds "
                       + " ".join(map(str, args.seeds)) + f" --epsilon {args.epsilon:g} --byte-rounds {args.byte_rounds}",
            "machine": platform.platform(), **report}, indent=1) + "\n")
        print(f"wrote {path}")
        return
    if args.breakdown:
        config = RunConfig()
        clients = round(config.training.clients_per_round * config.data.synthetic.n_users)
        # The synthetic default's vectors (benchmarks/results/communication.json): dense
        # 1,801 coordinates in a 32-bit ring; compact 828 (46 %) in a 16-bit ring.
        report = byte_breakdown(clients, {"dense": (1801, 32), "compact": (828, 16)})
        path = args.out.with_name("communication_breakdown.json")
        path.write_text(json.dumps({
            "command": "OMP_NUM_THREADS=1 python benchmarks/communication.py --breakdown",
            **report}, indent=1) + "\n")
        print(json.dumps(report, indent=1))
        print(f"wrote {path}")
        return
    if not ML_SMALL.exists():
        print(f"skipping ml-latest-small: {ML_SMALL} is absent")
        args.datasets = [d for d in args.datasets if not d.startswith("ml-latest-small")]
    # "compact" is the default keep; any other keep is its own cell, "compact-K"
    labels = {"dense": None, **{("compact" if k == DEFAULT_KEEP else f"compact-{k:g}"): k for k in args.keep}}
    cells = [(d, s, e) for d in args.datasets for s in args.seeds for e in labels]
    runs: list[dict] = []
    for dataset, seed, label in tqdm(cells, desc="runs"):
        keep = labels[label]
        extra = {} if keep is None else {"aggregation.compact_keep": keep}
        config = configure(dataset, "dense" if keep is None else "compact", seed, args.rounds,
                           args.clients_per_round, **extra)
        row = {"dataset": dataset, "seed": seed, "encoding": label, **one_run(config)}
        runs.append(row)
        tqdm.write(json.dumps(row))
    summary: dict = {}
    mean = lambda rows, key: float(np.mean([r[key] for r in rows]))
    for dataset in args.datasets:
        dense = [r for r in runs if r["dataset"] == dataset and r["encoding"] == "dense"]
        for label, keep in labels.items():
            if keep is None:
                continue
            compact = [r for r in runs if r["dataset"] == dataset and r["encoding"] == label]
            key = dataset if label == "compact" else f"{dataset} {label}"
            summary[key] = {
                "seeds": args.seeds, "compact_keep": keep,
                "upload_ratio": mean(compact, "upload_bytes") / mean(dense, "upload_bytes"),
                "encoded_vector_ratio": mean(compact, "encoded_vector_bytes") / mean(dense, "encoded_vector_bytes"),
                "expansion_dense": mean(dense, "expansion"),
                "expansion_compact": mean(compact, "expansion"),
                "rmse_dense": mean(dense, "rmse"),
                "rmse_compact": mean(compact, "rmse"),
                "rmse_ratio": mean(compact, "rmse") / mean(dense, "rmse"),
                "rmse_ratio_per_seed": [c["rmse"] / d["rmse"] for d, c in zip(dense, compact, strict=True)],
                "download_ratio": mean(compact, "download_bytes") / mean(dense, "download_bytes"),
                "cpu_ratio": mean(compact, "cpu_seconds") / mean(dense, "cpu_seconds"),
            }
            print(key, json.dumps(summary[key], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": "OMP_NUM_THREADS=1 python benchmarks/communication.py "
                   + " ".join(f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                              for k, v in (("seeds", args.seeds), ("rounds", args.rounds),
                                           ("datasets", args.datasets),
                                           ("clients-per-round", args.clients_per_round),
                                           ("keep", args.keep)) if v is not None)
                   + (f" --out {args.out}" if args.out != RESULTS else ""),
        "machine": platform.platform(), "summary": summary, "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
