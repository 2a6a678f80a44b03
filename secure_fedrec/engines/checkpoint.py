"""Crash-safe checkpoints of a federated run.

A checkpoint holds everything the next round depends on: the shared
parameters, the server optimizer's state, every client's private rows and own state
(the in-process stand-in for the clients' own disks), the privacy accountants,
torch's RNG state (Opacus draws its noise from it) and the metrics so far.
Client sampling and local randomness are derived from (seed, round, client),
so no numpy generator state needs saving.

The file (:mod:`secure_fedrec.state_file`: JSON plus ``.npy`` arrays, never a
pickle) is written 0600 — it holds every client's private rows — to a fresh
temporary name, fsynced and renamed over the previous one: a crash at any
instant leaves either the old or the new checkpoint, never half of one (and the
next checkpoint removes the temporary file a crash left).

A resume continues the same run or nothing: the configuration must be the same
(``training.rounds`` may grow), and the privacy state must add up (see
:func:`check_resume`): a checkpoint whose accountant forgot rounds would let the
resumed run spend a second budget.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import config_to_dict
from ..outputs import PRIVATE_MODE, write_bytes_atomic
from ..plans import RecordDistributed, RecordLocal, UserLevelPlan
from ..state_file import StateFileError, dump_state, load_state
from ..training.record_sampling import planned_steps
from .inprocess import FederatedTrainer, RoundMetrics

__all__ = ["CHECKPOINT_NAME", "CheckpointError", "check_resume", "config_fingerprint", "load_checkpoint",
           "read_checkpoint_state", "save_checkpoint", "write_checkpoint_state"]

CHECKPOINT_NAME = "checkpoint.npz"
#: what versions up to 0.x wrote: a torch pickle, never loaded (it could run code)
_PICKLED_CHECKPOINT = "checkpoint.pt"
_VERSION = 2
#: relative slack when a metric recorded in the history is recomputed from the accountants
_EPSILON_RTOL = 1e-6


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed safely (another config, missing privacy state, ...)."""


def config_fingerprint(trainer: FederatedTrainer) -> str:
    cfg = config_to_dict(trainer.config)
    cfg.get("training", {}).pop("rounds", None)  # a resume may extend the planned rounds
    cfg.pop("flower", None)  # the Flower engine's settings do not touch an in-process run
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


# -- the file --------------------------------------------------------------------------------------
def write_checkpoint_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint's state dict (private: 0600, atomically)."""
    write_bytes_atomic(Path(path), dump_state(state), mode=PRIVATE_MODE)


def read_checkpoint_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint's state dict, read without running any code; :class:`CheckpointError` if unreadable."""
    try:
        state = load_state(path)
    except StateFileError as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a readable checkpoint: its state is not a mapping")
    return state


def save_checkpoint(trainer: FederatedTrainer, folder: str | Path) -> Path:
    path = Path(folder) / CHECKPOINT_NAME
    state: dict[str, Any] = {
        "version": _VERSION,
        "fingerprint": config_fingerprint(trainer),
        "round_index": trainer.round_index,
        "params": trainer.params,
        "model": trainer.model.state_dict(),
        "server_optimizer": trainer.server_optimizer.state_dict(),
        # each client's own state (record-level DP-SGD with distributed noise: the private rows'
        # optimizer moments), the stand-in for the clients' disks like the private rows
        "client_states": {str(client): dict(own) for client, own in trainer.client_states.items()},
        "privacy": trainer.privacy.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "history": [m.__dict__ for m in trainer.history],
    }
    write_checkpoint_state(path, state)
    # a write that a crash (kill -9) interrupted left its temporary file behind: a private copy
    # of every client's rows that nothing else would ever remove (one writer per run folder)
    for stale in Path(folder).glob(f".{CHECKPOINT_NAME}.*.tmp"):
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(trainer: FederatedTrainer, folder: str | Path) -> None:
    """Restore ``trainer`` from ``folder``; refuse anything that would not continue the same run."""
    path = Path(folder) / CHECKPOINT_NAME
    if not path.exists():
        if (Path(folder) / _PICKLED_CHECKPOINT).exists():
            raise CheckpointError(f"{folder} holds a {_PICKLED_CHECKPOINT} of an older version: a pickle, "
                                  "which is never loaded (reading it could run code); start the run again")
        raise CheckpointError(f"no checkpoint in {folder}")
    state = read_checkpoint_state(path)
    if state.get("version") != _VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')!r}, expected {_VERSION}")
    if state.get("fingerprint") != config_fingerprint(trainer):
        raise CheckpointError("the checkpoint was written by a run with another configuration")
    if trainer.privacy.enabled and not state.get("privacy"):
        raise CheckpointError("the checkpoint has no privacy accountant state: resuming would reset ε")
    try:
        trainer.privacy.load_state_dict(state["privacy"])
    except Exception as exc:  # noqa: BLE001 -- any malformed privacy state refuses the resume
        raise CheckpointError(f"cannot restore the privacy accountants ({exc}); refusing to resume") from None
    try:
        round_index, history = _round_index(state, trainer), _history(state)
        params = _params(state, trainer)
        rng = state["torch_rng"]
        if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.shape == torch.get_rng_state().shape):
            raise CheckpointError("the checkpoint's torch RNG state is malformed")
        check_resume(trainer, round_index, history)
        trainer.model.load_state_dict(state["model"])
        trainer.server_optimizer.load_state_dict(_optimizer_state(state["server_optimizer"], len(params)))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a consistent checkpoint: {type(exc).__name__}: {exc}") from None
    trainer.round_index = round_index
    trainer.params = params
    torch.set_rng_state(rng)
    trainer.history = history
    trainer.client_states = _client_states(state)


# -- what a checkpoint must add up to ------------------------------------------------------------
def _client_states(state: dict[str, Any]) -> dict[int, dict[str, Any]]:
    raw = state.get("client_states", {})  # keyed by the client's id as a string (the file's keys are)
    if not isinstance(raw, dict) or not all(isinstance(c, str) and c.isdigit() and isinstance(s, dict)
                                            for c, s in raw.items()):
        raise CheckpointError("the checkpoint's client states are not a mapping of client to state")
    return {int(client): dict(own) for client, own in raw.items()}


def _round_index(state: dict[str, Any], trainer: FederatedTrainer) -> int:
    value = state.get("round_index")
    rounds = trainer.config.training.rounds
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= rounds:
        raise CheckpointError(f"the checkpoint's round index {value!r} is outside [0, training.rounds = {rounds}]")
    return value


def _history(state: dict[str, Any]) -> list[RoundMetrics]:
    raw = state.get("history")
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise CheckpointError("the checkpoint's metrics history is not a list of rounds")
    return [RoundMetrics(**m) for m in raw]


def _params(state: dict[str, Any], trainer: FederatedTrainer) -> np.ndarray:
    params = state.get("params")
    if not (isinstance(params, np.ndarray) and params.dtype == np.float64 and params.shape == trainer.params.shape):
        raise CheckpointError(f"the checkpoint's shared parameters are not {trainer.params.shape[0]} float64 values")
    if not np.all(np.isfinite(params)):
        raise CheckpointError("the checkpoint's shared parameters are not finite")
    return params


def _optimizer_state(state: Any, size: int) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise CheckpointError("the checkpoint's server optimizer state is not a mapping")
    for key, value in state.items():
        if key == "step_count":  # Adam's bias-correction counter (record-level DP-SGD's server step)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CheckpointError(f"the checkpoint's server optimizer step count {value!r} is not a count")
            continue
        if value is not None and not (isinstance(value, np.ndarray) and value.shape == (size,)):
            raise CheckpointError(f"the checkpoint's server optimizer entry {key!r} is not {size} values")
    return state


def check_resume(trainer: FederatedTrainer, round_index: int, history: list[RoundMetrics]) -> None:
    """Refuse a checkpoint whose metrics and privacy state (already loaded into ``trainer``) do
    not add up to ``round_index`` rounds of this run.

    * the metrics history has one entry per round, numbered 1 … ``round_index``;
    * user level: every round charges the accountant one step, released or not, so it
      holds exactly ``round_index`` steps;
    * record level: each client's accountant holds exactly the DP-SGD steps of the rounds
      it was sampled in (redrawn from the seed: sampling does not depend on the
      accountants), or fewer only if the client has reached its budget and abstains;
    * the ε the last round reported is the ε of the loaded accountants.

    Any other plan with privacy has no check here yet and is refused (fail closed).
    """
    rounds = [m.round for m in history]
    if rounds != list(range(1, round_index + 1)):
        raise CheckpointError(f"the checkpoint's metrics history has rounds {rounds[:3]}…(len {len(rounds)}), "
                              f"its round index says {round_index}: refusing to resume")
    plan = trainer.privacy
    if not plan.enabled:
        return
    if isinstance(plan, UserLevelPlan):
        steps = plan.accountant.total_steps
        if steps != round_index:
            raise CheckpointError(f"the checkpoint's accountant holds {steps} rounds, its round index says "
                                  f"{round_index}: resuming would spend a second privacy budget")
        epsilon = plan.accountant.get_epsilon(plan.delta) if steps else 0.0
    elif isinstance(plan, RecordDistributed):
        # one population accountant, charged every round whether it released a sum or aborted
        steps = len(plan.accountant)
        if steps != round_index:
            raise CheckpointError(f"the checkpoint's accountant holds {steps} DP-SGD steps, its round index says "
                                  f"{round_index}: resuming would spend a second privacy budget")
        epsilon = plan.accountant.get_epsilon(plan.delta) if steps else 0.0
    elif isinstance(plan, RecordLocal):
        _check_client_accountants(trainer, plan, round_index)
        accountants = plan.client_accountants
        epsilon = accountants.worst_epsilon(plan.delta) if len(accountants) else 0.0
    else:
        raise CheckpointError(f"no resume cross-check is defined for the {type(plan).__name__} plan: "
                              "refusing to resume rather than risk resetting its accountant")
    reported = [m.measurements.get("epsilon") for m in history if "epsilon" in m.measurements]
    if reported and not math.isclose(float(reported[-1]), epsilon, rel_tol=_EPSILON_RTOL, abs_tol=1e-12):
        raise CheckpointError(f"the checkpoint's accountants give ε={epsilon:.6g}, its last round reported "
                              f"ε={reported[-1]:.6g}: refusing to resume")
    if any(b < a * (1 - _EPSILON_RTOL) for a, b in itertools.pairwise(reported)):
        raise CheckpointError("the checkpoint's metrics history has ε decreasing between rounds")


def _check_client_accountants(trainer: FederatedTrainer, plan: RecordLocal, round_index: int) -> None:
    p, t = trainer.config.privacy, trainer.config.training
    examples = trainer.server.examples
    drawn: dict[int, int] = {}  # client -> the steps of every round it was sampled in
    for r in range(round_index):
        draw = trainer.server.draw(r)
        for client, slow in zip(draw.sampled.tolist(), draw.stragglers.tolist()):
            steps = planned_steps(int(examples[client]), p.record_batch_size, 1 if slow else t.local_epochs)
            drawn[int(client)] = drawn.get(int(client), 0) + steps
    accountants = plan.client_accountants
    held = {c: accountants[c].total_steps for c in accountants.client_ids}
    if set(held) - set(drawn):
        raise CheckpointError(f"the checkpoint charges clients never sampled: {sorted(set(held) - set(drawn))[:5]}")
    for client, steps in sorted(drawn.items()):
        charged = held.get(client, 0)
        if charged > steps:
            raise CheckpointError(f"the checkpoint charges client {client} {charged} DP-SGD steps, more than "
                                  f"the {steps} of the rounds it was sampled in")
        if charged < steps and plan.client_may_train(client, int(examples[client])):
            raise CheckpointError(f"the checkpoint's accountant of client {client} holds {charged} DP-SGD "
                                  f"steps; the {round_index} rounds drawn so far give it {steps}: resuming "
                                  "would spend a second privacy budget")
