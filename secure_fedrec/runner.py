"""One federated job from a configuration: load data, train, evaluate, write results."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import RunConfig, config_to_dict, dump_toml
from .data import (
    holdout_split,
    leave_last_out,
    load_ratings,
    require_test_ratings,
    synthetic_ratings,
)
from .data.dataset import RatingData, Split
from .engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .engine.inprocess import FederatedTrainer, RoundMetrics

__all__ = ["load_data", "make_split", "resolve_config", "run_job", "write_json_atomic"]


def load_data(config: RunConfig) -> RatingData:
    """The configured data set; the last one loaded is kept, so that resolving a preset and
    then running the job reads the file once."""
    key = (repr(config.data), config.seed if config.data.source == "synthetic" else None)
    if _last_loaded and _last_loaded[0] == key:
        return _last_loaded[1]
    data = _load_data(config)
    _last_loaded[:] = [key, data]
    return data


_last_loaded: list[Any] = []


def resolve_config(config: RunConfig) -> RunConfig:
    """The configuration with its preset applied for the data it names (secure_fedrec/presets.py)."""
    from .presets import apply_preset

    return apply_preset(config, load_data(config))


def _load_data(config: RunConfig) -> RatingData:
    d = config.data
    if d.source == "synthetic":
        s = d.synthetic
        return synthetic_ratings(
            n_users=s.n_users, n_items=s.n_items, rank=s.rank,
            mean_ratings_per_user=s.mean_ratings_per_user, noise_std=s.noise_std,
            seed=config.seed, implicit=d.implicit,
        )
    return load_ratings(
        d.source, d.format, implicit=d.implicit, binarize_threshold=d.binarize_threshold,
        min_user_ratings=d.min_user_ratings, min_item_ratings=d.min_item_ratings,
        user_col=d.user_col, item_col=d.item_col, rating_col=d.rating_col, timestamp_col=d.timestamp_col,
    )


def make_split(config: RunConfig, data: RatingData) -> Split:
    if config.split_protocol == "leave-last-out":
        split = leave_last_out(data, seed=config.seed, without_timestamps=config.data.without_timestamps)
    else:
        split = holdout_split(data, test_fraction=config.data.test_fraction, seed=config.seed)
    return require_test_ratings(split)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=_json_default)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def save_model_atomic(path: Path, trainer: FederatedTrainer) -> None:
    """The trained shared parameters (what a deployment's server holds), written atomically."""
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"shared": trainer.model.shared_state(), "layout": trainer.layout.names,
                "round": trainer.round_index}, tmp)
    os.replace(tmp, path)


def environment() -> dict[str, str]:
    import torch

    return {
        "secure_fedrec": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": str(os.cpu_count()),
    }


def run_job(
    config: RunConfig, out_dir: str | Path | None = None, *,
    on_round: Callable[[RoundMetrics], None] | None = None, resume: bool = False,
) -> dict[str, Any]:
    """Run a whole federated job; returns (and, with ``out_dir``, writes) ``metrics.json``.

    With ``out_dir``, a checkpoint is written there every
    ``training.checkpoint_every`` rounds; ``resume=True`` continues from it.
    """
    started = time.perf_counter()
    config = resolve_config(config)  # the preset for this data (idempotent on a resolved config)
    if config.engine != "inprocess":
        from .engines.flower import run_flower

        return run_flower(config, out_dir, mode="sim" if config.engine == "flower-sim" else "deployment")
    data = load_data(config)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        if not resume:  # written before training, so that a crashed run can be resumed from its folder
            (Path(out_dir) / "config.toml").write_text(dump_toml(config_to_dict(config)), encoding="utf-8")
    split = make_split(config, data)
    trainer = FederatedTrainer(config, split)
    if resume:
        if out_dir is None:
            raise CheckpointError("resuming needs the run's output folder")
        load_checkpoint(trainer, out_dir)
    every = config.training.checkpoint_every

    def after_round(metrics: RoundMetrics) -> None:
        if out_dir is not None and every and trainer.round_index % every == 0:
            save_checkpoint(trainer, out_dir)
        if on_round is not None:
            on_round(metrics)

    history = trainer.run(on_round=after_round)
    final = dict(history[-1].evaluation) if history else {}
    bytes_per_round = [m.measurements.get("bytes_sent_per_client", 0.0) for m in history]
    result: dict[str, Any] = {
        "config": config_to_dict(config),
        "seed": config.seed,
        "engine": config.engine,
        "protocol": config.aggregation.protocol,
        "model": config.model_name,
        "split": split.protocol,
        "dataset": data.stats(),
        "dataset_notes": list(data.notes),
        "rounds": [m.as_dict() for m in history],
        "final": final,
        "bytes_sent_per_client_per_round": bytes_per_round,
        "bytes_sent_per_client_mean": float(np.mean(bytes_per_round)) if bytes_per_round else 0.0,
        "privacy": trainer.privacy.summary(),
        "stopped_early": trainer.privacy.stopped_reason,
        "wall_time_seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", result)
        save_model_atomic(out / "model.pt", trainer)
        if every:
            save_checkpoint(trainer, out)
    return result
