"""The Flower App's run config: our ``RunConfig``, key for key.

The app's ``[tool.flwr.app.config]`` (rendered by :mod:`.app_config`) holds:

* ``config-path`` — a TOML run config (``secure-fedrec``'s own format), optional;
* ``out-dir`` — where ``metrics.json`` goes (default: ``~/secure-fedrec-runs/flower-<run id>``);
* ``paillier-keys`` — the dealer's folder, for ``aggregation.protocol = "paillier"``;
* one table per ``RunConfig`` section with every key whose default is a value
  (Flower's run config has no null): ``training.rounds``,
  ``training.clients_per_round``, ``aggregation.protocol``, ``privacy.unit``,
  ``privacy.target_epsilon``, ... with ``RunConfig``'s own defaults.

The run config of a run (:func:`run_config_from_flower`) is ``RunConfig``'s defaults,
then the file of ``config-path``, then every sectioned key whose value differs from
its default (what ``--run-config`` or an edit of the app's pyproject changed). A key
that should keep its default against the file is set in the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...config import RunConfig, config_to_dict, load_config

__all__ = ["APP_KEYS", "engine_name", "run_config_from_flower", "sectioned_defaults", "with_engine"]

#: The app's own keys (not RunConfig's): what they mean is in the module docstring.
APP_KEYS = {"config-path": "", "out-dir": "", "paillier-keys": ""}

#: RunConfig keys that are not the app's to set: the app knows which engine runs it.
_NOT_IN_APP = {"engine"}


def _scalars(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict to dotted keys, keeping the values Flower's run config can hold."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_scalars(value, name + "."))
        elif value is not None and name not in _NOT_IN_APP:
            out[name] = value
    return out


def sectioned_defaults() -> dict[str, Any]:
    """Every RunConfig key the app's run config carries, with its default (dotted keys)."""
    return _scalars(config_to_dict(RunConfig()))


def run_config_from_flower(run_config: Mapping[str, Any]) -> RunConfig:
    """The run's :class:`RunConfig` from Flower's (flattened) run config.

    Raises :class:`secure_fedrec.config.ConfigError` for a bad file or value.
    """
    defaults = sectioned_defaults()
    overrides = {key: value for key, value in run_config.items()
                 if key in defaults and value != defaults[key]}
    unknown = sorted(k for k in run_config if k not in defaults and k not in APP_KEYS)
    if unknown:
        from ...config import ConfigError

        raise ConfigError(f"unknown run-config key {unknown[0]}: this app's keys are RunConfig's "
                          "(e.g. training.rounds) and " + ", ".join(APP_KEYS))
    path = str(run_config.get("config-path", "") or "")
    return load_config(Path(path) if path else None, overrides)


def engine_name(grid: object) -> str:
    """``flower-sim`` under Flower's simulation engine (its in-memory Grid), else ``flower``."""
    return "flower-sim" if "InMemory" in type(grid).__name__ else "flower"


def with_engine(config: RunConfig, engine: str) -> RunConfig:
    return dataclasses.replace(config, engine=engine)
