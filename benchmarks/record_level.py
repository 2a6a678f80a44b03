"""Where a round of record-level DP-SGD under secure aggregation spends its time (issue 20).

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/record_level.py            # ml-latest-small, ε = 1, dim 8
    OMP_NUM_THREADS=1 python benchmarks/record_level.py --dim 16 --rounds 2

One round of the default record-level run with distributed noise (every one of the
671 clients, q = 0.2, discrete Gaussian shares at the calibrated scale), cut into its
parts and timed in CPU seconds (``time.process_time``; wall time is noisy on the shared
machine), each beside its reference in the same process:

* **noise share** per client: the sampler of the issue-20 branch (AES-CTR words, guide
  table) against the sampler it replaced (16 bytes of ``os.urandom`` per draw, a binary
  search for every draw) — re-implemented below from the same table, so both draw the
  same distribution;
* **client step** (Poisson sampling, per-example gradients, joint clipping, per-example
  rounding, the private rows' noised Adam step) and the **encoding** (noise share +
  reduction to the ring), over all clients;
* **the sum**: SecAgg+ in this process (masking, all clients' and the server's CPU)
  against the plaintext ring sum the studies use as a labelled simulation;
* **server** halves and the optimizer step; then whole rounds through the engine,
  plaintext and SecAgg+, for the protocol's share of a round.

Writes ``benchmarks/results/record_level.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from secure_fedrec.aggregation import ServerContext
from secure_fedrec.aggregation.sums import InProcessSum, ring_sum
from secure_fedrec.config import load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.privacy.discrete_gaussian import DiscreteGaussianTable
from secure_fedrec.rounds.client import client_step
from secure_fedrec.runner import load_data, make_split

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small"


def reference_sample(table: DiscreteGaussianTable, size: int) -> np.ndarray:
    """The sampler before issue 20: 16 bytes of os.urandom per draw and a binary search for
    each (the same thresholds, hence the same distribution)."""
    raw = np.frombuffer(os.urandom(16 * size), dtype=np.uint64).reshape(size, 2)
    high, low = raw[:, 0], raw[:, 1]
    right = np.searchsorted(table._hi, high, side="right")
    magnitude = right.astype(np.int64)
    tied = right > 0
    tied[tied] = table._hi[right[tied] - 1] == high[tied]
    for index in np.flatnonzero(tied):
        count = int(np.searchsorted(table._hi, high[index], side="left"))
        while count < right[index] and table._lo[count] <= low[index]:
            count += 1
        magnitude[index] = count
    signs = np.frombuffer(os.urandom(size), dtype=np.uint8) & 1
    return np.where(signs == 1, -magnitude, magnitude)


def cpu(fn, *args, repeat: int = 1, **kwargs):
    started = time.process_time()
    for _ in range(repeat):
        out = fn(*args, **kwargs)
    return (time.process_time() - started) / repeat, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="whole rounds through the engine, per protocol")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "record_level.json")
    args = parser.parse_args()
    overrides = {"privacy.unit": "record", "privacy.noise": "distributed", "privacy.target_epsilon": args.epsilon,
                 "model.dim": args.dim, "evaluation.every": 1000, "aggregation.protocol": "plaintext"}
    if MOVIELENS.exists():
        overrides["data.source"] = str(MOVIELENS)
    else:  # ml-latest-small's shape
        overrides.update({"data.synthetic.n_users": 671, "data.synthetic.n_items": 9066,
                          "data.synthetic.mean_ratings_per_user": 149.0})
    config = load_config(None, overrides)
    split = make_split(config, load_data(config))
    trainer = FederatedTrainer(config, split)
    plan = trainer.privacy
    encoding = plan.pipeline.encoding
    size = trainer.layout.size
    table = DiscreteGaussianTable(encoding.share_sigma)
    table.sample(10)
    reference_sample(table, 10)
    out: dict = {"command": f"OMP_NUM_THREADS=1 python benchmarks/record_level.py --epsilon {args.epsilon} "
                            f"--dim {args.dim} --rounds {args.rounds}",
                 "data": "ml-latest-small" if MOVIELENS.exists() else "synthetic (ml-latest-small's shape)",
                 "clients": len(trainer.population), "vector_length": size, "share_sigma": encoding.share_sigma,
                 "guide_bits": table._guide_bits, "platform": platform.platform()}

    # 1. the noise share of one client, both samplers, side by side
    new, _ = cpu(table.sample, size, repeat=20)
    old, _ = cpu(reference_sample, table, size, repeat=20)
    out["noise_share_ms"] = {"issue 20 sampler": 1e3 * new, "previous sampler": 1e3 * old, "speedup": old / new}

    # 2. every client's step and encoding (the plaintext round's client side)
    broadcast = trainer.server.broadcast(trainer.plan_round(0))
    train_seconds = encode_seconds = 0.0
    payloads = {}
    for client in trainer.population.tolist():
        started = time.process_time()
        report = client_step(trainer.model, trainer.layout, trainer.client_data(client), trainer.server.client_plan,
                             broadcast, trainer.client_rng(0, client), state=trainer.client_states.setdefault(client, {}))
        total = time.process_time() - started
        encode_seconds += report.measurements.get("encode_seconds", 0.0)
        train_seconds += total - report.measurements.get("encode_seconds", 0.0)
        payloads[client] = report.payload
    n = len(payloads)
    out["clients_ms_per_client"] = {"step (sampling, gradients, clipping, rounding, private rows)":
                                    1e3 * train_seconds / n, "encoding (noise share, ring)": 1e3 * encode_seconds / n}

    # 3. the sum: SecAgg+ in this process against the plaintext ring sum (the labelled simulation)
    session_plain = trainer.server.session(n)
    ring, outcome = cpu(ring_sum, payloads, {}, bits=session_plain.bits, min_survivors=session_plain.min_survivors)
    secure_config = load_config(None, {**overrides, "aggregation.protocol": "secagg+"})
    secure = FederatedTrainer(secure_config, split)
    session = secure.server.session(n)
    masked, masked_outcome = cpu(InProcessSum("secagg+").run, payloads, session, round_index=0, dropouts={})
    assert np.array_equal(np.asarray(masked_outcome.total, np.uint64) & np.uint64((1 << session.bits) - 1),
                          outcome.total), "the simulation must be the protocol's sum, bit for bit"
    out["sum_seconds"] = {"secagg+ (all clients + server CPU)": masked,
                          "  of which clients": masked_outcome.measurements["protocol_client_seconds"],
                          "  of which server": masked_outcome.measurements["protocol_server_seconds"],
                          "plaintext ring sum (simulation)": ring, "degree": session.degree,
                          "threshold": session.threshold}

    # 4. the server's halves and its optimizer step
    def server_side():
        ctx = ServerContext(round_index=0, n_clients=n, expected_clients=float(n), reporting_clients=n)
        aggregate, _, _ = plan.pipeline.server(outcome, plan.layer_states, ctx)
        return trainer.server.server_optimizer.step(trainer.params, aggregate.total)

    server, _ = cpu(server_side)
    out["server_seconds"] = server

    # 5. whole rounds through the engine
    for name, engine in (("plaintext (simulation)", FederatedTrainer(config, split)), ("secagg+", secure)):
        engine.run_round()  # warm-up (first-call costs)
        seconds, _ = cpu(lambda e=engine: [e.run_round() for _ in range(args.rounds)])
        out.setdefault("round_seconds", {})[name] = seconds / args.rounds
    rounds = out["round_seconds"]
    out["protocol_share_of_a_secagg_round"] = 1 - rounds["plaintext (simulation)"] / rounds["secagg+"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    width = max(len(k) for k in out)
    for key, value in out.items():
        print(f"{key.ljust(width)}  {json.dumps(value) if isinstance(value, dict) else value}")


if __name__ == "__main__":
    main()
