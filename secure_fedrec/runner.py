"""One federated job from a configuration: load data, train, evaluate, write results."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import RunConfig, config_to_dict, dump_toml
from .engines.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .engines.inprocess import FederatedTrainer, RoundMetrics, TrainingDiverged
from .inputs import load_data, make_split, resolve_config
from .outputs import environment, write_bytes_atomic, write_json_atomic
from .rounds.metrics import clipping_summary, transfer_summary
from .state_file import dump_state

#: the trained shared parameters in a run folder (read with :func:`secure_fedrec.state_file.load_state`)
MODEL_NAME = "model.npz"

__all__ = ["MODEL_NAME", "environment", "load_data", "make_split", "resolve_config", "run_job", "write_json_atomic"]


def save_model_atomic(path: Path, trainer: FederatedTrainer) -> None:
    """The trained shared parameters (what a deployment's server holds), written atomically in
    a format whose reader runs no code (:mod:`secure_fedrec.state_file`)."""
    write_bytes_atomic(path, dump_state({"shared": trainer.model.shared_state(), "layout": trainer.layout.names,
                                         "round": trainer.round_index}))


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
        if not resume:  # written first, so that a crashed run can be resumed from its folder
            write_bytes_atomic(Path(out_dir) / "config.toml", dump_toml(config_to_dict(config)).encode(), mode=0o644)
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

    try:
        history = trainer.run(on_round=after_round)
    except TrainingDiverged:
        if out_dir is not None:  # the state up to the diverged round, for a look at what went wrong
            save_checkpoint(trainer, out_dir)
        raise
    final = dict(history[-1].evaluation) if history else {}
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
        **transfer_summary(history),
        **clipping_summary(history),
        "privacy": trainer.server.privacy_summary(),
        "stopped_early": trainer.privacy.stopped_reason,
        "wall_time_seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", result)
        save_model_atomic(out / MODEL_NAME, trainer)
        if every:
            save_checkpoint(trainer, out)
    return result
