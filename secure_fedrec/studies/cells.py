"""Cells: the grid's cartesian product, each resolved to a full run config and hashed.

A cell is identified by the hash of its *resolved* config (every default filled
in, seed included), so the same run is recognised whatever order the grid was
written in, and a change of any default makes it a new cell.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, RunConfig, config_from_dict, config_to_dict
from .spec import GRID_JOB_KEY, StudyError, StudySpec, nest

__all__ = ["Cell", "config_hash", "expand_cells"]


def config_hash(config: dict[str, Any], length: int = 16) -> str:
    """A stable hex digest of a (nested, JSON-able) config dict."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class Cell:
    """One run of the study: a grid point and a seed."""

    index: int  # position of the grid point (seeds share it)
    seed: int
    params: tuple[tuple[str, Any], ...]  # the grid values of this point, in grid order
    config: dict[str, Any]  # the resolved run config (nested), seed included
    job: dict[str, Any] = field(default_factory=dict)  # {} for run_job; {"audit": {...}}; {"twin": "dpsgd-twin"}

    def _identity(self, config: dict[str, Any]) -> dict[str, Any]:
        # a plain run hashes its config alone, so ids do not depend on this field's existence
        return {**config, "study_job": self.job} if self.job else config

    @property
    def cell_id(self) -> str:
        """Hash of the resolved config (and audit options), seed included: the file name of its result."""
        return config_hash(self._identity(self.config))

    @property
    def group_id(self) -> str:
        """The same hash without the seed: the runs a mean is taken over."""
        return config_hash(self._identity({k: v for k, v in self.config.items() if k != "seed"}))

    def run_config(self) -> RunConfig:
        return config_from_dict(self.config)

    def label(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params) or "base"
        return f"{shown}, seed={self.seed}"


def expand_cells(spec: StudySpec) -> list[Cell]:
    """Every (grid point, seed), validated as a run config; raises :class:`StudyError`.

    With several grids, a point that two of them share runs once (same resolved config).
    """
    job = {"audit": dict(spec.audit)} if spec.job == "audit" else {}
    cells: list[Cell] = []
    seen: set[str] = set()
    index = 0
    for grid in spec.grids:
        keys = [key for key, _ in grid]
        for values in itertools.product(*(v for _, v in grid)):
            params = tuple(zip(keys, values))
            point = [_resolve(spec, params, seed) for seed in spec.seeds]
            chosen = dict(params).get(GRID_JOB_KEY, "run")
            cell_job = job if chosen == "run" else {"twin": chosen}
            fresh = [Cell(index=index, seed=seed, params=params, config=config, job=cell_job)
                     for seed, config in zip(spec.seeds, point)]
            if fresh[0].cell_id in seen:
                continue  # the same run as a point of an earlier grid
            if any(c.cell_id in seen for c in fresh):
                raise StudyError("two grid points resolve to the same run config")
            seen.update(c.cell_id for c in fresh)
            cells.extend(fresh)
            index += 1
    return cells


def _resolve(spec: StudySpec, params: tuple[tuple[str, Any], ...], seed: int) -> dict[str, Any]:
    flat = {**spec.base, **{k: v for k, v in params if k != GRID_JOB_KEY}, "seed": seed}
    try:
        return config_to_dict(config_from_dict(nest(flat)))
    except StudyError:
        raise
    except ConfigError as exc:
        where = ", ".join(f"{k}={v!r}" for k, v in params) or "[base]"
        raise StudyError(f"cell {where}: {exc}") from None
