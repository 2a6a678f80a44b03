"""The shipped Flower App (flower-app/): its pyproject, its run config, and the deadline rules."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from secure_fedrec.config import ConfigError, RunConfig, config_to_dict
from secure_fedrec.engines.flower.app_config import render_pyproject
from secure_fedrec.engines.flower.deadlines import DeadlinePolicy
from secure_fedrec.engines.flower.run_config import (
    run_config_from_flower,
    sectioned_defaults,
)

ROOT = Path(__file__).resolve().parents[2]


def flattened_app_config() -> dict:
    """What Flower hands the ServerApp: the app's [tool.flwr.app.config], nested tables dotted."""
    table = tomllib.loads((ROOT / "flower-app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]

    def flatten(node: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in node.items():
            if isinstance(value, dict):
                out.update(flatten(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    return flatten(table)


def test_the_shipped_pyproject_is_the_rendered_one():
    """flower-app/pyproject.toml is generated: regenerate it with
    `python -m secure_fedrec.engines.flower.app_config > flower-app/pyproject.toml`."""
    assert (ROOT / "flower-app" / "pyproject.toml").read_text() == render_pyproject()
    parsed = tomllib.loads(render_pyproject())
    assert parsed["tool"]["flwr"]["app"]["components"]["serverapp"].endswith("server_app:app")
    assert "federations" not in parsed["tool"]["flwr"]  # flwr 1.42 would rewrite the file


def test_flowers_own_flattening_gives_the_keys_we_read():
    from flwr.common.config import flatten_dict

    table = tomllib.loads(render_pyproject())["tool"]["flwr"]["app"]["config"]
    assert flatten_dict(table) == flattened_app_config()


def test_app_defaults_are_runconfigs_defaults():
    config = run_config_from_flower(flattened_app_config())
    assert config_to_dict(config) == config_to_dict(RunConfig())
    # The keys users change are all there.
    for key in ("training.rounds", "training.clients_per_round", "aggregation.protocol", "privacy.unit",
                "privacy.target_epsilon", "aggregation.key_rounds", "flower.stage_timeout"):
        assert key in sectioned_defaults()


def test_run_config_overrides_and_config_files(tmp_path):
    base = flattened_app_config()
    config = run_config_from_flower({**base, "training.rounds": 3, "aggregation.protocol": "secagg",
                                     "training.clients_per_round": 20})
    assert (config.training.rounds, config.aggregation.protocol) == (3, "secagg")
    assert config.training.clients_per_round == 20.0
    job = tmp_path / "job.toml"
    job.write_text('[training]\nrounds = 7\nlocal_epochs = 3\n[privacy]\nunit = "none"\n')
    config = run_config_from_flower({**base, "config-path": str(job), "training.rounds": 4})
    # The file is the base; a key the run config changed from its default wins over it.
    assert (config.training.rounds, config.training.local_epochs, config.privacy.unit) == (4, 3, "none")


@pytest.mark.parametrize("bad, match", [
    ({"training.rounds": 0}, "training.rounds"),
    ({"training.bogus": 1}, "unknown run-config key"),
    ({"privacy.unit": "everything"}, "privacy.unit"),
    ({"config-path": "/nonexistent/job.toml"}, "not found"),
    ({"aggregation.key_rounds": 5000}, "key_rounds"),
])
def test_bad_run_config_is_a_config_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        run_config_from_flower({**flattened_app_config(), **bad})


def test_derived_deadlines_follow_the_slowest_reply():
    policy = DeadlinePolicy(factor=3.0, floor=5.0, first=120.0)
    deadline = policy.for_stage("train.stage", "train.stage:unmasking")
    assert deadline.limit([]) == 120.0  # nothing measured yet: every node was given this long to connect
    assert deadline.limit([0.5]) == 5.0  # never below the floor
    assert deadline.limit([2.0, 4.0]) == 12.0  # factor times the slowest reply of this exchange
    policy.observe("train.stage:unmasking", [2.0, 4.0])
    later = policy.for_stage("train.stage", "train.stage:unmasking")
    assert later.limit([]) == 12.0  # ... or of the last exchange of the same stage
    fixed = DeadlinePolicy(stage_timeout=30.0).for_stage("train.stage", "train.stage:share_keys")
    assert fixed.limit([1.0]) == 30.0
    with pytest.raises(ValueError):
        DeadlinePolicy(factor=0.5)
    with pytest.raises(ConfigError, match="timeout_factor"):
        from secure_fedrec.config import load_config

        load_config(None, {"flower.timeout_factor": float("nan")})
