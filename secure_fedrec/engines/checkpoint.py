"""Crash-safe checkpoints of a federated run.

A checkpoint holds everything the next round depends on: the shared
parameters, the server optimizer's state, every client's private rows and own state
(the in-process stand-in for the clients' own disks), the privacy accountants,
torch's RNG state (Opacus draws its noise from it) and the metrics so far.
Client sampling and local randomness are derived from (seed, round, client),
so no numpy generator state needs saving.

It is written to a temporary file in the same folder, flushed, fsynced and
renamed over the previous one: a crash at any instant leaves either the old or
the new checkpoint, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..config import config_to_dict
from .inprocess import FederatedTrainer, RoundMetrics

__all__ = ["CheckpointError", "config_fingerprint", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_NAME = "checkpoint.pt"
_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed safely (another config, missing privacy state, ...)."""


def config_fingerprint(trainer: FederatedTrainer) -> str:
    cfg = config_to_dict(trainer.config)
    cfg.get("training", {}).pop("rounds", None)  # a resume may extend the planned rounds
    cfg.pop("flower", None)  # the Flower engine's settings do not touch an in-process run
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(trainer: FederatedTrainer, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_NAME
    state: dict[str, Any] = {
        "version": _VERSION,
        "fingerprint": config_fingerprint(trainer),
        "round_index": trainer.round_index,
        "params": trainer.params,
        "model": trainer.model.state_dict(),
        "server_optimizer": trainer.server_optimizer.state_dict(),
        # each client's own state (record-level DP-SGD with distributed noise: the private rows'
        # optimizer moments), the stand-in for the clients' disks like the private rows
        "client_states": trainer.client_states,
        "privacy": trainer.privacy.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": [m.__dict__ for m in trainer.history],
    }
    tmp = folder / f".{CHECKPOINT_NAME}.tmp"
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(trainer: FederatedTrainer, folder: str | Path) -> None:
    """Restore ``trainer`` from ``folder``; refuse anything that would not continue the same run."""
    path = Path(folder) / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {folder}")
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:  # noqa: BLE001 -- a truncated or foreign file, whatever fails: say so, don't guess
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from None
    if state.get("version") != _VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}, expected {_VERSION}")
    if state["fingerprint"] != config_fingerprint(trainer):
        raise CheckpointError("the checkpoint was written by a run with another configuration")
    if trainer.privacy.enabled and not state.get("privacy"):
        raise CheckpointError("the checkpoint has no privacy accountant state: resuming would reset ε")
    try:
        trainer.privacy.load_state_dict(state["privacy"])
    except Exception as exc:  # noqa: BLE001 -- any malformed privacy state refuses the resume
        raise CheckpointError(f"cannot restore the privacy accountants ({exc}); refusing to resume") from None
    trainer.round_index = int(state["round_index"])
    trainer.params = state["params"]
    trainer.model.load_state_dict(state["model"])
    trainer.server_optimizer.load_state_dict(state["server_optimizer"])
    trainer.client_states = dict(state.get("client_states", {}))
    torch.set_rng_state(state["torch_rng"])
    trainer.history = [RoundMetrics(**m) for m in state["history"]]
