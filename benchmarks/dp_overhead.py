"""DP-SGD overhead: client steps/s with record-level DP-SGD vs non-private training.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/dp_overhead.py

Same model, same clients, same data and batch size, measured side by side in
one process (the machine is shared and noisy, so only the ratios measured in
the same run mean much). For each client the modes below run one after the
other on a fresh copy of the model:

* ``non-private``: :func:`secure_fedrec.training.local.train_client` with
  mini-batches of ``privacy.record_batch_size`` (its view holds only the rows
  the client touches, as a non-private client does);
* ``non-private-full``: the same on a view of every item row (``all_items=True``),
  i.e. the very model DP-SGD trains: the ratio against it is the cost of DP-SGD
  itself, the ratio against ``non-private`` adds the cost of updating (and
  noising) every item row at every step;
* ``non-private-sgd``: the non-private client with plain SGD instead of Adam
  (DP-SGD's default optimizer), same sparse view;
* ``dp-<clipping>-adam``: :func:`secure_fedrec.training.dpsgd.train_client_dpsgd`
  with Adam: the view holds *every* item row and every one is noised at
  every step;
* ``dp-<clipping>-sgd``: plain SGD, a view of the touched rows only, and the
  untouched rows noised once in closed form at the end of the round (the
  same output distribution as the dense client:
  ``tests/privacy/test_privacy_lazy_noise.py``).

``<clipping>`` is ``grad_sample_mode``: ``hooks`` and ``ghost`` are Opacus'
per-sample hooks and ghost clipping, ``bookkeeping`` our one-pass clipped sum
(:mod:`secure_fedrec.training.bookkeeping`). ``dp-bookkeeping-sgd`` is the
default record-level client (``"auto"``, ``record_optimizer = "sgd"``).

Per-round setup (view + Opacus wrapping) is reported apart from the per-step
cost; ``x per round`` (whole client round, setup and the closed-form noise of
the untouched rows included, per step) is the headline ratio.

MF on ``../shared/data/ml-latest-small`` (explicit, holdout split) and NeuMF on
the same data read as implicit feedback (leave-last-out, 4 negatives per
positive); a synthetic data set of the same size stands in when the folder is
absent. Writes ``benchmarks/results/dp_overhead.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from secure_fedrec.config import load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split
from secure_fedrec.training.dpsgd import dpsgd_local_training, train_client_dpsgd
from secure_fedrec.training.local import LocalTraining, train_client

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = ROOT.parent / "shared" / "data" / "ml-latest-small"
MODES = ("non-private", "non-private-sgd", "non-private-full", "dp-hooks-adam", "dp-ghost-adam",
         "dp-bookkeeping-adam", "dp-ghost-sgd", "dp-hooks-sgd", "dp-bookkeeping-sgd")
DP_SGD_LR = 1.0  # privacy.record_lr's default (speed does not depend on it)


def make_trainer(model_name: str, seed: int, dim: int = 16) -> tuple[FederatedTrainer, str]:
    overrides: dict = {"seed": seed, "model.name": model_name, "model.dim": dim, "privacy.unit": "none"}
    if model_name == "neumf":
        overrides["data.implicit"] = True
    if MOVIELENS.exists():
        overrides["data.source"] = str(MOVIELENS)
        source = "ml-latest-small"
    else:  # same shape as ml-latest-small: 610 users, 9724 items, ~165 ratings per user
        overrides.update({"data.synthetic.n_users": 610, "data.synthetic.n_items": 9724,
                          "data.synthetic.mean_ratings_per_user": 165.0})
        source = "synthetic, ml-latest-small sized"
    config = load_config(None, overrides)
    split = make_split(config, load_data(config))
    return FederatedTrainer(config, split), source


def bench_model(model_name: str, n_clients: int, epochs: int, batch_size: int, seed: int, dim: int) -> dict:
    trainer, source = make_trainer(model_name, seed, dim)
    rng = np.random.default_rng(seed)
    clients = rng.choice(trainer.population, size=min(n_clients, len(trainer.population)), replace=False)
    local = LocalTraining(epochs=epochs, batch_size=batch_size, lr=trainer.local.lr,
                          optimizer=trainer.local.optimizer, reg=trainer.local.reg,
                          negatives=trainer.local.negatives)
    totals = {m: {"steps": 0, "step_seconds": 0.0, "setup_seconds": 0.0, "round_seconds": 0.0} for m in MODES}
    warm_up = [int(trainer.population[0])]  # first calls pay one-off import/allocation costs
    for index, client in enumerate(warm_up + clients.tolist()):
        data = trainer.client_data(client)
        for mode in MODES:
            model = copy.deepcopy(trainer.model)  # every mode starts from the same parameters
            client_rng = np.random.default_rng([seed, client])
            started = time.perf_counter()
            if mode.startswith("non-private"):
                mode_local = replace(local, optimizer="sgd") if mode == "non-private-sgd" else local
                result = train_client(model, data, mode_local, client_rng, all_items=mode == "non-private-full")
                elapsed = time.perf_counter() - started
                n = result.num_examples
                steps = epochs * int(np.ceil(n / min(batch_size, n)))
                setup, step_time = 0.0, elapsed  # its view is a few rows: setup is in the noise
            else:
                optimizer = "sgd" if mode.endswith("-sgd") else "adam"
                _, dp_step = train_client_dpsgd(
                    model, data, dpsgd_local_training(local, optimizer, DP_SGD_LR if optimizer == "sgd" else local.lr),
                    client_rng, noise_multiplier=1.0, max_grad_norm=0.5, batch_size=batch_size,
                    grad_sample_mode=mode.split("-")[1],
                )
                elapsed = time.perf_counter() - started
                steps, setup, step_time = dp_step.steps, dp_step.setup_seconds, dp_step.train_seconds
            if index < len(warm_up):
                continue
            t = totals[mode]
            t["steps"] += steps
            t["step_seconds"] += step_time
            t["setup_seconds"] += setup
            t["round_seconds"] += elapsed
    rows = {}
    for mode, t in totals.items():
        rows[mode] = {
            "steps": t["steps"],
            "steps_per_second": t["steps"] / t["step_seconds"],
            "setup_ms_per_client_round": 1e3 * t["setup_seconds"] / len(clients),
            "client_round_seconds": t["round_seconds"] / len(clients),
        }
    base, full = rows["non-private"], rows["non-private-full"]
    for mode in MODES:
        rows[mode]["slowdown_per_step"] = base["steps_per_second"] / rows[mode]["steps_per_second"]
        rows[mode]["slowdown_per_step_vs_full_view"] = full["steps_per_second"] / rows[mode]["steps_per_second"]
        rows[mode]["slowdown_per_client_round"] = (
            (rows[mode]["client_round_seconds"] / rows[mode]["steps"])
            / (base["client_round_seconds"] / base["steps"])
        )
    model = trainer.model
    return {"model": model_name, "data": source, "n_items": int(model.n_items), "dim": dim,
            "clients": len(clients), "epochs": epochs, "batch_size": batch_size, "modes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=12, help="clients per model (same ones for every mode)")
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per client round")
    parser.add_argument("--batch-size", type=int, default=32, help="(expected) batch size, as privacy.record_batch_size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dim", type=int, default=16, help="embedding dim (the MovieLens studies' MF uses 16)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dp_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [bench_model(m, args.clients, args.epochs, args.batch_size, args.seed, args.dim) for m in ("mf", "neumf")]
    header = (f"{'model':6} {'mode':17} {'steps/s':>9} {'x non-private':>14} {'x same view':>12} "
              f"{'x per round':>12} {'setup ms/round':>15}")
    print(header)
    print("-" * len(header))
    for res in results:
        for mode, row in res["modes"].items():
            print(f"{res['model']:6} {mode:17} {row['steps_per_second']:9.1f} {row['slowdown_per_step']:13.2f}x "
                  f"{row['slowdown_per_step_vs_full_view']:11.2f}x {row['slowdown_per_client_round']:11.2f}x "
                  f"{row['setup_ms_per_client_round']:15.1f}")
    print(f"data: {results[0]['data']} ({results[0]['n_items']} items), {args.clients} clients, "
          f"{args.epochs} epochs, batch {args.batch_size}, dim {args.dim}; target: dp-bookkeeping-sgd (the default) <= 3x")
    payload = {"command": "OMP_NUM_THREADS=1 python benchmarks/dp_overhead.py", "args": vars(args) | {"out": str(args.out)},
               "results": results, "torch": torch.__version__,
               "opacus": __import__("opacus").__version__, "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
