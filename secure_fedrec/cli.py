"""The ``secure-fedrec`` command line."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

from .arguments import add_job_arguments, overrides_from_args

__all__ = ["main"]

DESCRIPTION = """\
secure_fedrec: privacy-preserving federated recommendation.

Subcommands:
  run      train a federated recommender (every user is a client) and write metrics.json
  baseline train the same model centrally, for comparison
  (more subcommands are registered by the workflow modules; see --help of each)
"""

#: modules that add subcommands: each has ``register(subparsers) -> {name: handler}``
COMMAND_MODULES = (
    "secure_fedrec.commands.study",
    "secure_fedrec.reports.commands",
    "secure_fedrec.audit.commands",
    "secure_fedrec.engines.flower.launcher",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secure-fedrec", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="train a federated recommender and write metrics.json",
                         description="Train a federated recommender; each user is one client.")
    add_job_arguments(run)
    run.add_argument("--resume", type=Path, default=None, metavar="DIR",
                     help="continue the run whose --out was DIR from its last checkpoint "
                          "(its config.toml is used; --set may only raise training.rounds)")
    base = sub.add_parser("baseline", help="train the same model centrally (for comparison)",
                          description="Centralized training with the federated run's model and evaluation.")
    add_job_arguments(base)
    base.add_argument("--epochs", type=int, default=20, help="passes over the pooled training data")
    base.add_argument("--twin-noise", choices=("same", "own"), default="same",
                      help="record level with distributed noise: the centralized DP-SGD twin's noise, the "
                           "federated run's ('same', same ε by construction) or its own PLD calibration ('own')")
    return parser


def _extra_commands(sub) -> dict:
    import importlib

    handlers = {}
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that workflow is not part of this installation
            raise
        handlers.update(module.register(sub))
    return handlers


def _config_from_args(args: argparse.Namespace):
    from .config import load_config

    return load_config(args.config, overrides_from_args(args))


def _summary_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k.ljust(width)} | {v}" for k, v in rows), line])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .runner import run_job

    if args.resume is not None:
        if args.config is None:
            args.config = args.resume / "config.toml"
        if args.out is None:
            args.out = args.resume
    config = _config_from_args(args)
    bar = tqdm(total=config.training.rounds, desc="rounds", unit="round", disable=args.quiet)

    def on_round(m) -> None:
        shown = {k: v for k, v in m.evaluation.items() if isinstance(v, float)}
        loss = {"loss": f"{m.train_loss:.3f}"} if math.isfinite(m.train_loss) else {}  # private runs: none
        bar.set_postfix({**loss, **{k: f"{v:.3f}" for k, v in shown.items()}})
        bar.update(1)

    result = run_job(config, args.out, on_round=on_round, resume=args.resume is not None)
    bar.close()
    rows = [
        ("dataset", (f"{result['dataset']['name']} ({result['dataset']['n_users']} users, "
                     f"{result['dataset']['n_items']} items, {result['dataset']['n_ratings']} ratings)")),
        ("model / split", f"{result['model']} / {result['split']}"),
        ("protocol", result["protocol"]),
        ("privacy", result["privacy"]["statement"]),
        ("rounds", str(config.training.rounds)),
        *((k, _fmt(v)) for k, v in result["final"].items()),
        ("bytes up / down per client per round",
         (f"{result['bytes_sent_per_client_mean']:.0f} / {result.get('bytes_down_per_client_mean', 0.0):.0f}"
          f" ({config.aggregation.encoding} upload; down = the model as float64 plus the protocol's frames)")),
        ("wall time", f"{result['wall_time_seconds']:.1f} s"),
    ]
    print(_summary_table(rows))
    if result.get("stopped_early"):
        print(f"note: {result['stopped_early']}")
    if args.out is not None:
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'config.toml'}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from .centralized import train_centralized
    from .runner import load_data, make_split, write_json_atomic

    config = _config_from_args(args)
    split = make_split(config, load_data(config))
    if config.privacy.unit == "record" and config.privacy.noise == "distributed":
        return _baseline_dpsgd_twin(args, config, split)
    result = train_centralized(config, split, epochs=args.epochs)
    rows = [("model", config.model_name), *((k, _fmt(v)) for k, v in result.metrics.items()),
            ("wall time", f"{result.seconds:.1f} s")]
    print(_summary_table(rows))
    if args.out is not None:
        write_json_atomic(args.out / "baseline.json", {"metrics": result.metrics, "epochs": result.epochs})
    return 0


def _baseline_dpsgd_twin(args: argparse.Namespace, config, split) -> int:
    """The centralized DP-SGD twin of a record-level run with distributed noise (same model, clip, σ, q,
    steps and accountant; :mod:`secure_fedrec.centralized_dpsgd`)."""
    from .centralized_dpsgd import train_dpsgd_twin
    from .runner import write_json_atomic

    result = train_dpsgd_twin(config, split, noise=args.twin_noise)
    rows = [("model", f"{config.model_name}, centralized DP-SGD twin ({args.twin_noise} noise)"),
            ("privacy", result.privacy["statement"]), ("steps", str(result.steps)),
            *((k, _fmt(v)) for k, v in result.metrics.items()), ("wall time", f"{result.seconds:.1f} s")]
    print(_summary_table(rows))
    if args.out is not None:
        write_json_atomic(args.out / "baseline.json", {"metrics": result.metrics, "privacy": result.privacy,
                                                       "steps": result.steps, "history": result.history})
    return 0


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data import DataError
    from .engines.checkpoint import CheckpointError
    from .engines.inprocess import TrainingDiverged

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    extra = _extra_commands(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"run": cmd_run, "baseline": cmd_baseline, **extra}
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except (ConfigError, DataError, CheckpointError, TrainingDiverged) as exc:
        print(f"secure-fedrec: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
