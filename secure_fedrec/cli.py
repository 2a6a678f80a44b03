"""The ``secure-fedrec`` command line."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
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
    base = sub.add_parser(
        "baseline", help="the centralized twin and reference recommenders on the run's own split",
        description="Train the run's model centrally (the 'twin': same data, split, model, loss and "
                    "evaluation) and fit reference recommenders on the same split: global/item/user "
                    "means and user+item biases for ratings, most-popular and item-kNN for implicit "
                    "feedback; Surprise's svd, svd++ and baseline-only on request. Writes "
                    "metrics.json and config.toml like `run`.")
    add_job_arguments(base, engine=False)
    base.add_argument("--epochs", type=_bounded_int(1, 10_000), default=20,
                      help="passes of the twin over the pooled training data (default 20)")
    base.add_argument("--models", default="auto", metavar="LIST",
                      help="comma-separated: twin and any of " + ", ".join(_baseline_choices())
                           + " (default auto: the twin and the baselines for the feedback type)")
    base.add_argument("--twin-noise", choices=("same", "own"), default="same",
                      help="record level with distributed noise: the centralized DP-SGD twin's noise, the "
                           "federated run's ('same', same ε by construction) or its own PLD calibration ('own')")
    return parser


def _bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {value}")
        return value
    return parse


def _baseline_choices() -> list[str]:
    from .baselines import BASELINES

    return list(BASELINES)


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


#: how the summary names a metric key: (label, protocol)
_METRIC_LABELS = {
    "rmse": "RMSE", "mae": "MAE",
    "hr@": "HR@{k}, full ranking", "ndcg@": "NDCG@{k}, full ranking", "recall@": "Recall@{k}, full ranking",
    "sampled_hr@": "HR@{k}, sampled 1+{n}", "sampled_ndcg@": "NDCG@{k}, sampled 1+{n}",
    "sampled_recall@": "Recall@{k}, sampled 1+{n}",
}


def metric_label(key: str, sampled_negatives: int = 99) -> str:
    """``sampled_hr@10`` -> ``HR@10, sampled 1+99``: every ranking figure names its protocol."""
    for prefix, label in sorted(_METRIC_LABELS.items(), key=lambda item: -len(item[0])):
        if key == prefix or (prefix.endswith("@") and key.startswith(prefix)):
            return label.format(k=key.removeprefix(prefix), n=sampled_negatives)
    return key.replace("_", " ")


def metric_rows(metrics: dict[str, Any], sampled_negatives: int = 99) -> list[tuple[str, str]]:
    """Summary rows of the numeric metrics (the long protocol sentence stays in metrics.json)."""
    return [(metric_label(k, sampled_negatives), _fmt(int(v)) if k == "evaluated_users" else _fmt(v))
            for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_seconds")]


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .runner import run_job

    if args.resume is not None:
        if args.config is None:
            args.config = args.resume / "config.toml"
        if args.out is None:
            args.out = args.resume
    from .inputs import resolve_config

    config = resolve_config(_config_from_args(args))  # the preset for this data, before the bar
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
        ("model / loss / split", f"{result['model']} / {config.loss_name} / {result['split']}"),
        ("preset", config.preset),
        ("protocol", result["protocol"]),
        ("privacy", result["privacy"]["statement"]),
        *_participation_rows(result["privacy"]),
        ("rounds", str(config.training.rounds)),
        *metric_rows(result["final"], config.evaluation.sampled_negatives),
        ("bytes up / down per client per round",
         (f"{result['bytes_sent_per_client_mean']:.0f} / {result.get('bytes_down_per_client_mean', 0.0):.0f}"
          f" ({config.aggregation.encoding} upload; down = the model as float32 plus the protocol's frames)")),
        ("wall time", f"{result['wall_time_seconds']:.1f} s"),
    ]
    print(_summary_table(rows))
    if result.get("stopped_early"):
        print(f"note: {result['stopped_early']}")
    if result.get("coordinates_clipped_total", 0.0) > 0:
        print(f"note: the fixed-point encoding clipped {result['coordinates_clipped_total']:.0f} update "
              f"coordinates to ±{config.aggregation.coordinate_clip:g} in {result['rounds_with_clipped_coordinates']}"
              " rounds, so the secure sum differed from the plaintext one; raise aggregation.coordinate_clip")
    if args.out is not None:
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'config.toml'}")
    return 0


def _participation_rows(privacy: dict[str, Any]) -> list[tuple[str, str]]:
    """The guarantee for an observer who knows who took part (no amplification by sampling)."""
    known = privacy.get("participation_known")
    if not known:
        return []
    revealed = privacy.get("participation_revealed")
    proven = [("… proven for every observer", (
        f"ε={revealed['epsilon']:.3g}"
        + (f" ({revealed['epsilon_at_released_shares']:.3g} at the noise shares the sums carried)"
           if revealed.get("epsilon_at_released_shares") is not None else "")
        + ": who took part revealed, zero-out; the amplified ε above does not cover "
        "the number of noise shares in each sum (docs/privacy.md, 'The share count')"))] \
        if revealed and not revealed.get("calibrated_to") else []
    return [*proven, ("… if who took part is known",
             (f"worst user ε={known['epsilon_worst_user']:.3g} ({known['max_rounds_per_user']} rounds), median "
              f"ε={known['epsilon_median_user']:.3g} ({known['median_rounds_per_participating_user']} rounds): no "
              "amplification by client sampling against the server (distributed noise) or anyone with the seed"
              + ("; each round at the noise shares its sum carried" if known.get("charged_at") else "")))]


def cmd_baseline(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .baselines import BASELINES, baseline_names, evaluate_baseline
    from .centralized import train_centralized
    from .config import ConfigError, config_to_dict, dump_toml
    from .inputs import load_data, make_split, resolve_config
    from .outputs import environment, write_json_atomic

    started = time.perf_counter()
    config = resolve_config(_config_from_args(args))
    data = load_data(config)
    split = make_split(config, data)
    if config.privacy.unit == "record" and config.privacy.noise == "distributed":
        return _baseline_dpsgd_twin(args, config, data, split, started)
    names = ["twin", *baseline_names(data.implicit)] if args.models == "auto" else \
        [name.strip() for name in args.models.split(",") if name.strip()]
    for name in names:
        if name != "twin" and name not in BASELINES:
            raise ConfigError(f"--models: unknown model {name!r}; choose twin or "
                              + ", ".join(BASELINES))
        if name != "twin" and (BASELINES[name][0] == "implicit") != data.implicit:
            raise ConfigError(f"--models: {name!r} is for {BASELINES[name][0]} feedback and "
                              f"{data.name} is {'implicit' if data.implicit else 'explicit'}")
    ev = config.evaluation
    results: dict[str, dict[str, Any]] = {}
    for name in tqdm(names, desc="models", unit="model", disable=args.quiet):
        if name == "twin":
            twin = train_centralized(config, split, epochs=args.epochs)
            results[name] = {**twin.metrics, "train_seconds": twin.seconds}
        else:
            results[name] = evaluate_baseline(name, split, k=ev.k, recall_k=ev.recall_k, ranking=ev.ranking,
                                              sampled_negatives=ev.sampled_negatives, seed=config.seed)
    print(_models_table(results, ev.sampled_negatives))
    protocol = next((m["ranking_protocol"] for m in results.values() if "ranking_protocol" in m), None)
    if protocol:
        print(f"ranking protocols: {protocol}")
    payload = {
        "command": "baseline", "config": config_to_dict(config), "seed": config.seed,
        "model": config.model_name, "loss": config.loss_name, "split": split.protocol,
        "twin_epochs": args.epochs if "twin" in names else None,
        "dataset": data.stats(), "dataset_notes": list(data.notes),
        "models": results, "final": results.get("twin", {}),
        "wall_time_seconds": time.perf_counter() - started, "environment": environment(),
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.toml").write_text(dump_toml(config_to_dict(config)), encoding="utf-8")
        write_json_atomic(args.out / "metrics.json", payload)
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'config.toml'}")
    return 0


def _models_table(results: dict[str, dict[str, Any]], sampled_negatives: int) -> str:
    """One row per model, one column per metric (each ranking column names its protocol)."""
    keys: list[str] = []
    for metrics in results.values():
        keys += [k for k, v in metrics.items() if isinstance(v, float) and k not in keys
                 and not k.endswith("_seconds") and k != "evaluated_users"]
    header = ["model", *(metric_label(k, sampled_negatives) for k in keys), "seconds"]
    rows = [[name, *(_fmt(m.get(k, "")) for k in keys),
             f"{sum(v for k, v in m.items() if k.endswith('_seconds')):.1f}"]
            for name, m in results.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "-+-".join("-" * w for w in widths)
    fmt = lambda r: " | ".join(str(c).ljust(w) for c, w in zip(r, widths))
    return "\n".join([fmt(header), line, *(fmt(r) for r in rows)])


def _baseline_dpsgd_twin(args: argparse.Namespace, config, data, split, started: float) -> int:
    """The centralized DP-SGD twin of a record-level run with distributed noise (same model, clip, σ, q,
    steps and accountant; :mod:`secure_fedrec.centralized_dpsgd`)."""
    from .centralized_dpsgd import train_dpsgd_twin
    from .config import config_to_dict, dump_toml
    from .outputs import environment, write_json_atomic

    result = train_dpsgd_twin(config, split, noise=args.twin_noise)
    rows = [("model", f"{config.model_name}, centralized DP-SGD twin ({args.twin_noise} noise)"),
            ("privacy", result.privacy["statement"]), ("steps", str(result.steps)),
            *((k, _fmt(v)) for k, v in result.metrics.items()), ("wall time", f"{result.seconds:.1f} s")]
    print(_summary_table(rows))
    if args.out is not None:
        # what `run` writes (issue 18 item 5), the DP-SGD twin's privacy and history besides
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "config.toml").write_text(dump_toml(config_to_dict(config)), encoding="utf-8")
        write_json_atomic(args.out / "metrics.json", {
            "command": "baseline", "config": config_to_dict(config), "seed": config.seed,
            "model": config.model_name, "split": split.protocol, "dataset": data.stats(),
            "models": {f"dpsgd-twin-{args.twin_noise}": result.metrics}, "final": result.metrics,
            "privacy": result.privacy, "steps": result.steps, "history": result.history,
            "wall_time_seconds": time.perf_counter() - started, "environment": environment(),
        })
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'config.toml'}")
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
