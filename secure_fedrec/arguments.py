"""The flags every job command shares (run, baseline, audit, flower), with the one ``--set`` parser."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .config import ConfigError, parse_override

__all__ = ["add_job_arguments", "add_set_argument", "overrides_from_args", "set_override"]


def set_override(text: str) -> tuple[str, Any]:
    """argparse's ``type=`` for ``--set``: :func:`secure_fedrec.config.parse_override`."""
    try:
        return parse_override(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_set_argument(p: argparse.ArgumentParser, *, example: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], type=set_override,
                   metavar="KEY=VALUE", help=f"override one config key with a TOML value, e.g. {example}")


def add_job_arguments(p: argparse.ArgumentParser, *, engine: bool = True) -> None:
    p.add_argument("--config", type=Path, help="a TOML configuration file (defaults apply to every missing key)")
    p.add_argument("--data", help="a ratings file or folder (default: the embedded synthetic data set)")
    p.add_argument("--format", default=None,
                   help="auto, ml-100k, ml-1m, ml-latest, atomic or csv (default: auto)")
    p.add_argument("--out", type=Path, default=None, help="folder for metrics.json and config.toml")
    p.add_argument("--seed", type=int, default=None, help="seed for data, sampling and model init")
    add_set_argument(p, example="--set training.rounds=10 --set data.implicit=true "
                                "--set privacy.unit='\"record\"'")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    if engine:
        p.add_argument("--engine", choices=("inprocess", "flower-sim", "flower"), default=None,
                       help="in-process (default), Flower's simulation engine, or a Flower deployment")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The ``--set`` overrides plus the shortcut flags (--data, --format, --seed, --engine)."""
    overrides = dict(args.overrides)
    if getattr(args, "data", None) is not None:
        overrides["data.source"] = args.data
    if getattr(args, "format", None) is not None:
        overrides["data.format"] = args.format
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    if getattr(args, "engine", None) is not None:
        overrides["engine"] = args.engine
    return overrides
