"""Presets: chosen from the data's public shape, applied only to the keys a user leaves unset."""

from __future__ import annotations

import dataclasses

import pytest

from secure_fedrec.config import ConfigError, config_to_dict, load_config
from secure_fedrec.presets import apply_preset, preset_values
from secure_fedrec.runner import load_data, resolve_config


def ratings_file(tmp_path, n_users: int = 30, implicit_weights: bool = False):
    path = tmp_path / ("plays.csv" if implicit_weights else "ratings.csv")
    column = "plays" if implicit_weights else "rating"
    lines = [f"user,item,{column}"]
    for user in range(n_users):
        for item in range(user % 7, user % 7 + 8):
            lines.append(f"{user},{item},{1 + (user + item) % 5}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_file_gets_the_preset_for_its_kind_and_privacy(tmp_path):
    path = ratings_file(tmp_path)
    plain = resolve_config(load_config(None, {"data.source": str(path), "privacy.unit": "none"}))
    assert plain.preset == "explicit"
    assert plain.training.sampling == "fixed" and plain.training.clients_per_round == 30
    private = resolve_config(load_config(None, {"data.source": str(path), "data.rating_min": 1.0,
                                                "data.rating_max": 5.0}))
    assert private.preset == "explicit-dp" and private.training.sampling == "poisson"


def test_keys_the_user_sets_are_never_changed(tmp_path):
    path = ratings_file(tmp_path)
    config = resolve_config(load_config(None, {"data.source": str(path), "privacy.unit": "none",
                                               "training.rounds": 3, "model.dim": 5}))
    assert config.training.rounds == 3 and config.model.dim == 5
    assert config.training.local_epochs == preset_values("explicit", 30, 15)["training.local_epochs"]


def test_a_weight_column_makes_the_run_implicit_with_ials(tmp_path):
    path = ratings_file(tmp_path, implicit_weights=True)
    config = resolve_config(load_config(None, {"data.source": str(path), "privacy.unit": "none"}))
    assert config.data.implicit and config.preset == "implicit"
    assert config.loss_name == "ials" and config.model_name == "mf"
    assert config.split_protocol == "leave-last-out"
    assert config.training.clients_per_round == 30  # every user of a small file
    private = resolve_config(load_config(None, {"data.source": str(path)}))
    assert private.preset == "implicit-dp" and private.loss_name == "bpr"


def test_a_round_of_dense_updates_fits_the_memory_budget():
    """iALS updates cover every item row: the preset sizes a round by the catalogue."""
    small, large = preset_values("implicit", 671, 9066), preset_values("implicit", 100_000, 50_000)
    assert small["training.clients_per_round"] == 424
    per_client = 8 * 50_000 * (large["model.dim"] + 1)
    assert large["training.clients_per_round"] * per_client <= 2e9 or large["training.clients_per_round"] == 32


def test_resolving_twice_or_from_the_written_config_changes_nothing(tmp_path):
    path = ratings_file(tmp_path)
    once = resolve_config(load_config(None, {"data.source": str(path), "privacy.unit": "none"}))
    assert config_to_dict(resolve_config(once)) == config_to_dict(once)
    from secure_fedrec.config import dump_toml

    written = tmp_path / "config.toml"
    written.write_text(dump_toml(config_to_dict(once)), encoding="utf-8")
    reloaded = resolve_config(load_config(written))
    assert config_to_dict(reloaded) == config_to_dict(once)


def test_none_keeps_the_plain_defaults_and_unknown_names_are_errors(tmp_path):
    path = ratings_file(tmp_path)
    scale = {"data.rating_min": 1.0, "data.rating_max": 5.0}
    plain = resolve_config(load_config(None, {"data.source": str(path), "preset": "none", **scale}))
    defaults = load_config(None)
    assert plain.training == defaults.training and plain.model == defaults.model
    with pytest.raises(ConfigError, match="preset must be"):
        resolve_config(load_config(None, {"data.source": str(path), "preset": "huge", **scale}))


def test_the_choice_depends_on_the_shape_not_on_rating_values(tmp_path):
    config = load_config(None, {"data.source": str(ratings_file(tmp_path)), "privacy.unit": "none"})
    data = load_data(config)
    shifted = dataclasses.replace(data, ratings=(6 - data.ratings))
    assert config_to_dict(apply_preset(config, data)) == config_to_dict(apply_preset(config, shifted))


def test_given_is_bookkeeping_not_a_key():
    with pytest.raises(ConfigError, match="unknown key given"):
        load_config(None, {"given": ["x"]})
    assert "given" not in config_to_dict(load_config(None))


def test_implicit_updates_are_summed_under_masking_without_clipping(tmp_path):
    """iALS sends an unclipped gradient step (no DP, so no L2 clip): the preset's fixed-point range
    covers it, so SecAgg+ sums what plaintext sums; a range too narrow is counted in metrics.json
    (``coordinates_clipped_total``) and named by the CLI."""
    from secure_fedrec.runner import run_job

    path = ratings_file(tmp_path, implicit_weights=True)
    base = {"data.source": str(path), "privacy.unit": "none", "training.rounds": 2, "evaluation.every": 2}
    masked = run_job(load_config(None, {**base, "aggregation.protocol": "secagg+"}))
    plain = run_job(load_config(None, {**base, "aggregation.protocol": "plaintext"}))
    assert masked["config"]["aggregation"]["coordinate_clip"] == 64.0
    assert masked["coordinates_clipped_total"] == 0 and masked["rounds_with_clipped_coordinates"] == 0
    assert masked["final"]["hr@10"] == pytest.approx(plain["final"]["hr@10"], abs=1e-9)
    narrow = run_job(load_config(None, {**base, "aggregation.protocol": "secagg+",
                                        "aggregation.coordinate_clip": 1e-4}))
    assert narrow["coordinates_clipped_total"] > 0 and narrow["rounds_with_clipped_coordinates"] == 2


def test_the_cli_names_clipped_coordinates(tmp_path, capsys):
    from secure_fedrec.cli import main

    path = ratings_file(tmp_path, implicit_weights=True)
    assert main(["run", "--data", str(path), "--quiet", "--set", "privacy.unit=none", "--set", "training.rounds=1",
                 "--set", "aggregation.coordinate_clip=1e-4"]) == 0
    out = capsys.readouterr().out
    assert "clipped" in out and "raise aggregation.coordinate_clip" in out
