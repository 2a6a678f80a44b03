"""One ``--set`` parser for every command: TOML values, bare words as strings."""

import pytest

from secure_fedrec.cli import build_parser
from secure_fedrec.config import ConfigError, load_config, parse_override


@pytest.mark.parametrize("text, expected", [
    ("data.implicit=true", ("data.implicit", True)),
    ("data.implicit=True", ("data.implicit", True)),
    ("data.implicit=false", ("data.implicit", False)),
    ('privacy.unit="record"', ("privacy.unit", "record")),
    ("privacy.unit=none", ("privacy.unit", "none")),
    ("training.rounds=10", ("training.rounds", 10)),
    ("training.lr=0.5", ("training.lr", 0.5)),
    ("privacy.target_epsilon=1e3", ("privacy.target_epsilon", 1000.0)),
    (" seed = 3 ", ("seed", 3)),
])
def test_values_parse_as_toml(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["no-equals-sign", "=3"])
def test_malformed_overrides_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_readme_implicit_flag_is_accepted():
    # README: --set data.implicit=true (issue 18: literal_eval rejected TOML's lowercase booleans)
    args = build_parser().parse_args(["run", "--set", "data.implicit=true", "--set", "model.dim=4"])
    config = load_config(None, dict(args.overrides))
    assert config.data.implicit is True and config.model.dim == 4
