"""The study file: which runs to make, validated before any of them starts.

A study TOML has three tables::

    [study]
    name = "tiny"
    seeds = [0, 1]          # every cell runs once per seed
    parallel = 1            # worker processes (1 = in this process)

    [base]                  # run-config keys shared by every cell, nested as in a run config
    training.rounds = 2

    [grid]                  # dotted run-config key -> list of values; cells = cartesian product
    "aggregation.protocol" = ["plaintext", "secagg"]
    "training.clients_per_round" = [5, 10]

Grid keys may be quoted dotted strings or nested tables; both mean the same.
Several grids, written as ``[[grid]]`` tables, make a union of products — how a
no-DP baseline sits next to a sweep over ε without running it once per ε::

    [[grid]]
    "privacy.unit" = ["none"]
    [[grid]]
    "privacy.unit" = ["user"]
    "privacy.target_epsilon" = [1.0, 4.0, 16.0]
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError

__all__ = ["GRID_JOBS", "GRID_JOB_KEY", "StudyError", "StudySpec", "flatten", "load_study", "nest",
           "parse_study"]

_STUDY_KEYS = {"name", "seeds", "parallel", "description", "job"}
JOBS = ("run", "audit")
#: a grid key that is not a run-config key: which job its cells run. "dpsgd-twin" trains the
#: centralized DP-SGD twin of a record-level run with distributed noise (same σ, q, steps,
#: accountant; secure_fedrec/centralized_dpsgd.py), "dpsgd-twin-own" the twin with its own PLD
#: calibration, "dpsgd-twin-nonprivate" the same schedule without clipping or noise
GRID_JOB_KEY = "study.job"
GRID_JOBS = ("run", "dpsgd-twin", "dpsgd-twin-own", "dpsgd-twin-nonprivate")


class StudyError(ConfigError):
    """A study file that is not valid (the message names the key)."""


@dataclass(frozen=True)
class StudySpec:
    """A validated study: base config, grid axes and seeds."""

    name: str
    seeds: tuple[int, ...] = (0,)
    parallel: int = 1
    base: dict[str, Any] = field(default_factory=dict)  # dotted key -> value
    grids: tuple[tuple[tuple[str, tuple[Any, ...]], ...], ...] = ((),)  # per grid: (key, values)
    description: str = ""
    source_text: str = ""  # the study file as written, kept for the report
    job: str = "run"  # "run": run_job per cell; "audit": secure_fedrec.audit.run_audit per cell
    audit: dict[str, Any] = field(default_factory=dict)  # the [audit] table (job = "audit")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise StudyError("study.name must be a non-empty string")
        if not self.seeds:
            raise StudyError("study.seeds must list at least one seed")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise StudyError(f"study.seeds must be integers; got {seed!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise StudyError(f"study.seeds has duplicates: {list(self.seeds)}")
        for seed in self.seeds:
            if not 0 <= seed < 2**63:
                raise StudyError(f"study.seeds must be in [0, 2^63); got {seed!r}")
        if isinstance(self.parallel, bool) or not isinstance(self.parallel, int) or not 1 <= self.parallel <= 256:
            raise StudyError(f"study.parallel must be an integer in [1, 256]; got {self.parallel!r}")
        if not self.grids:
            raise StudyError("a study needs at least one grid (an empty [grid] runs the base config)")
        for key, values in (axis for grid in self.grids for axis in grid):
            if key == "seed":
                raise StudyError("grid.seed: list seeds in study.seeds, not in the grid")
            if not values:
                raise StudyError(f"grid.{key} must list at least one value")
            if len(set(map(repr, values))) != len(values):
                raise StudyError(f"grid.{key} has duplicate values: {list(values)}")
            if key in self.base:
                raise StudyError(f"{key} is set in both [base] and [grid]; keep one")
        if "seed" in self.base:
            raise StudyError("base.seed: list seeds in study.seeds instead")
        if self.job not in JOBS:
            raise StudyError(f"study.job must be one of {', '.join(map(repr, JOBS))}; got {self.job!r}")
        if self.audit and self.job != "audit":
            raise StudyError('an [audit] table needs study.job = "audit"')
        if self.job == "audit":
            from ..audit.spec import spec_from_dict

            spec_from_dict(dict(self.audit))  # raises a ConfigError naming the audit key

    @property
    def grid_keys(self) -> tuple[str, ...]:
        """Every key that some grid varies, in order of first appearance."""
        return tuple(dict.fromkeys(key for grid in self.grids for key, _ in grid))

    @property
    def n_cells(self) -> int:
        """Grid points (before collapsing points that two grids share)."""
        return sum(math.prod(len(values) for _, values in grid) for grid in self.grids)

    @property
    def n_runs(self) -> int:
        return self.n_cells * len(self.seeds)


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c.d": 2}`` -> ``{"a.b": 1, "c.d": 2}``."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten`: dotted keys -> nested tables (a run-config dict)."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StudyError(f"cannot set {dotted}: {part} is a value, not a table")
        if isinstance(node.get(leaf), dict):
            raise StudyError(f"cannot set {dotted}: it is a table of keys")
        node[leaf] = value
    return nested


def parse_study(text: str, *, origin: str = "study file") -> StudySpec:
    """Parse and validate study TOML text (cells are checked by :func:`expand_cells`)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{origin} is not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"study", "base", "grid", "audit"})
    if unknown:
        raise StudyError(f"unknown table [{unknown[0]}] in {origin}; valid tables: study, base, grid, audit")
    audit = raw.get("audit", {})
    if not isinstance(audit, dict):
        raise StudyError("[audit] must be a table of audit options (see `secure-fedrec audit --help`)")
    study = raw.get("study")
    if not isinstance(study, dict):
        raise StudyError(f"{origin} needs a [study] table with at least name = \"...\"")
    bad = sorted(set(study) - _STUDY_KEYS)
    if bad:
        raise StudyError(f"unknown key study.{bad[0]}; valid keys: {', '.join(sorted(_STUDY_KEYS))}")
    base = raw.get("base", {})
    if not isinstance(base, dict):
        raise StudyError("[base] must be a table of run-config keys")
    grid_raw = raw.get("grid", {})
    tables = grid_raw if isinstance(grid_raw, list) else [grid_raw]
    grids = []
    for table in tables:
        if not isinstance(table, dict):
            raise StudyError("[grid] must be a table of dotted key = [values] (or [[grid]] tables)")
        grid = []
        for key, values in flatten(table).items():
            if not isinstance(values, list):
                raise StudyError(f"grid.{key} must be a list of values; got {values!r}")
            if key == GRID_JOB_KEY and not set(values) <= set(GRID_JOBS):
                raise StudyError(f"grid.{key} must list jobs among {', '.join(GRID_JOBS)}; got {values!r}")
            grid.append((key, tuple(values)))
        grids.append(tuple(grid))
    seeds = study.get("seeds", [0])
    if not isinstance(seeds, list):
        raise StudyError(f"study.seeds must be a list of integers; got {seeds!r}")
    return StudySpec(
        name=study.get("name", ""),
        seeds=tuple(seeds),
        parallel=study.get("parallel", 1),
        base=flatten(base),
        grids=tuple(grids),
        description=str(study.get("description", "")),
        source_text=text,
        job=study.get("job", "run"),
        audit=audit,
    )


def load_study(path: str | Path) -> StudySpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(f"study file not found: {path}") from None
    return parse_study(text, origin=str(path))
