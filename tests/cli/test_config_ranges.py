"""Issue 19 item 7: hostile configuration values get a clear ConfigError, before anything is built.

On the code before the fix ``privacy.target_epsilon=1e999``, ``seed=-1``, ``model.init_std=nan``,
``training.lr=1e999``, ``model.dim=20000000`` and an unknown ``data.format`` were accepted, and
``load_config('')`` raised ``IsADirectoryError``.
"""

import dataclasses
import math
import time
import typing

import pytest

from secure_fedrec.cli import main
from secure_fedrec.config import (
    MEMORY_LIMIT_ENV,
    RANGES,
    ConfigError,
    RunConfig,
    check_model_memory,
    load_config,
    parse_override,
)


def _numeric_fields(cls=RunConfig, prefix=""):
    """(dotted key, default) of every int/float field (Optional, tuple and list of them included)
    of the config tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        annotation, key = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(annotation):
            yield from _numeric_fields(annotation, key + ".")
            continue
        options = typing.get_args(annotation) or (annotation,)
        # a tuple/list of numbers (e.g. several cut-offs) is numeric too: each element needs the range
        options = [*options, *(a for o in options if typing.get_origin(o) in (tuple, list) for a in typing.get_args(o))]
        if any(o in (int, float) for o in options):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            yield key, default


NUMERIC = list(_numeric_fields())


def test_the_walk_finds_the_known_numeric_keys():
    keys = {k for k, _ in NUMERIC}
    assert {"seed", "model.dim", "training.lr", "privacy.target_epsilon", "data.synthetic.n_users",
            "flower.stage_timeout"} <= keys


@pytest.mark.parametrize(("key", "default"), NUMERIC, ids=[k for k, _ in NUMERIC])
def test_every_numeric_key_has_a_finite_range_holding_its_default(key, default):
    assert key in RANGES, f"{key} has no entry in secure_fedrec.config.RANGES: give it a finite range"
    bounds = RANGES[key]
    assert math.isfinite(bounds.low) and math.isfinite(bounds.high) and bounds.low <= bounds.high
    if default is not None:
        assert all(d in bounds for d in (default if isinstance(default, (tuple, list)) else (default,)))


def test_the_range_table_names_only_real_keys():
    assert set(RANGES) <= {k for k, _ in NUMERIC}


@pytest.mark.parametrize("override", [
    "privacy.target_epsilon=1e999", "privacy.target_epsilon=nan", "privacy.clip_norm=1e999",
    "seed=-1", "seed=1e30", "seed=1000000000000000000000000000000", "data.synthetic.n_users=1e30",
    "data.synthetic.n_users=1000000000000000000000000000000", "model.dim=1e30", "model.dim=20000000",
    "model.init_std=1e999", "model.init_std=nan", "model.init_std=-1", "training.lr=1e999", "training.lr=nan",
    "training.lr=-1", "training.rounds=1e999", "privacy.delta=nan", "flower.stage_timeout=inf",
    "privacy.noise_multiplier=-inf", "data.format=bogus",
])
def test_hostile_values_are_a_config_error(override):
    key, value = parse_override(override)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, {key: value})


@pytest.mark.parametrize(("key", "_"), NUMERIC, ids=[k for k, _ in NUMERIC])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, -1e300])
def test_no_numeric_key_takes_a_non_finite_or_absurd_value(key, _, value):
    annotation_is_int = key in {k for k, d in NUMERIC if isinstance(d, int) and not isinstance(d, bool)}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, {key: int(value) if annotation_is_int and math.isfinite(value) else value})


def test_a_huge_model_fails_fast_before_allocation(monkeypatch):
    started = time.process_time()
    with pytest.raises(ConfigError, match="model.dim"):
        load_config(None, {"model.dim": 20_000_000})
    # the range refuses it first; the memory estimate alone refuses it too (~3.6 TiB at 1000 x 1000)
    config = load_config(None)
    huge = dataclasses.replace(config, model=dataclasses.replace(config.model, dim=20_000_000))
    with pytest.raises(ConfigError, match="GiB"):
        check_model_memory(huge, 1000, 1000)
    # in range, but the memory estimate says no: 10^6 users x 4096 dims is ~390 GiB
    with pytest.raises(ConfigError, match="GiB"):
        load_config(None, {"model.dim": 4096, "data.synthetic.n_users": 1_000_000})
    assert time.process_time() - started < 1.0
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(1 << 20))
    with pytest.raises(ConfigError, match="GiB"):
        check_model_memory(load_config(None, {"data.synthetic.n_users": 40}), 10_000, 10_000)


def test_real_data_is_sized_before_the_model_is_allocated(tmp_path, monkeypatch, capsys):
    """A ratings file's users and items are only known once it is read: the memory estimate
    runs in build_model_for, before any embedding table exists (the model builder must not
    be reached)."""
    from secure_fedrec import inputs

    ratings = tmp_path / "ratings.csv"
    rows = [f"{u},{i},{1 + (u * i) % 5}.0,{1000 + u * 50 + i}" for u in range(1, 31) for i in range(1, 21)
            if (u + i) % 3]
    ratings.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")

    def no_allocation(*args, **kwargs):
        raise AssertionError("the model was allocated before its memory was checked")

    monkeypatch.setattr(inputs, "build_model", no_allocation)
    monkeypatch.setenv("SECURE_FEDREC_MEMORY_LIMIT", str(1 << 16))
    code = main(["run", "--quiet", "--out", str(tmp_path / "run"), "--set", f'data.source="{ratings}"',
                 "--set", "privacy.unit=none", "--set", "aggregation.protocol=plaintext",
                 "--set", "model.dim=64", "--set", "training.rounds=1"])
    assert code == 2
    assert "GiB" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["lots", "-5", "0", "1e999"])
def test_a_malformed_memory_limit_is_a_config_error(monkeypatch, limit):
    monkeypatch.setenv("SECURE_FEDREC_MEMORY_LIMIT", limit)
    with pytest.raises(ConfigError, match="SECURE_FEDREC_MEMORY_LIMIT"):
        load_config(None)


def test_an_empty_or_folder_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        load_config("")
    with pytest.raises(ConfigError, match="folder"):
        load_config(tmp_path)


def test_a_diverging_run_stops_with_a_clear_error_and_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--quiet", "--out", str(out), "--set", "privacy.unit=none",
                 "--set", "aggregation.protocol=plaintext", "--set", "training.sampling=fixed",
                 "--set", "data.synthetic.n_users=40", "--set", "data.synthetic.n_items=60",
                 "--set", "training.clients_per_round=10", "--set", "model.dim=4",
                 "--set", "training.optimizer=sgd", "--set", "training.lr=10", "--set", "model.init_std=10",
                 "--set", "training.rounds=6"])
    assert code == 2
    assert "training diverged in round" in capsys.readouterr().err
    assert (out / "checkpoint.npz").exists()


@pytest.mark.parametrize(("field", "value"), [("parallel", 10**9), ("parallel", 0), ("seeds", (-1,)),
                                              ("seeds", (2**70,))])
def test_a_study_has_finite_ranges_too(field, value):
    from secure_fedrec.studies.spec import StudyError, StudySpec

    with pytest.raises(StudyError, match=f"study.{field}"):
        StudySpec(name="s", grids=({},), **{field: value})
