"""The study file: parsing, validation errors that name the key, and cell expansion."""

from __future__ import annotations

import pytest

from secure_fedrec.config import ConfigError, TrainingConfig
from secure_fedrec.studies import StudyError, expand_cells, parse_study

TINY = """
[study]
name = "t"
seeds = [0, 1]
[base]
training.rounds = 2
privacy.unit = "none"  # pinned: a non-private grid, not the private default
[grid]
"aggregation.protocol" = ["plaintext", "secagg"]
training.clients_per_round = [5, 10, 15]
"""


def test_grid_is_the_cartesian_product_times_seeds():
    spec = parse_study(TINY)
    cells = expand_cells(spec)
    assert spec.n_cells == 6 and spec.n_runs == 12 and len(cells) == 12
    assert spec.grid_keys == ("aggregation.protocol", "training.clients_per_round")
    points = {(c.params, c.seed) for c in cells}
    assert len(points) == 12
    assert all(c.config["training"]["rounds"] == 2 for c in cells)
    assert {c.config["seed"] for c in cells} == {0, 1}


def test_cell_ids_are_stable_and_seed_specific():
    a, b = expand_cells(parse_study(TINY)), expand_cells(parse_study(TINY))
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    assert len({c.cell_id for c in a}) == len(a)
    by_point = {}
    for cell in a:
        by_point.setdefault(cell.params, set()).add(cell.group_id)
    assert all(len(groups) == 1 for groups in by_point.values())  # seeds share a group
    assert len({c.group_id for c in a}) == 6


def test_the_grid_order_in_the_file_does_not_change_ids():
    reordered = TINY.replace('"aggregation.protocol" = ["plaintext", "secagg"]\n', "") + \
        '"aggregation.protocol" = ["plaintext", "secagg"]\n'
    assert {c.cell_id for c in expand_cells(parse_study(TINY))} == \
        {c.cell_id for c in expand_cells(parse_study(reordered))}


@pytest.mark.parametrize("text, needle", [
    ("[study]\nseeds=[0]\n", "study.name"),
    ('[study]\nname="x"\nseeds=[0,0]\n', "duplicates"),
    ('[study]\nname="x"\nparallel=0\n', "study.parallel"),
    ('[study]\nname="x"\nbogus=1\n', "study.bogus"),
    ('[study]\nname="x"\n[grid]\n"training.rounds"=3\n', "grid.training.rounds must be a list"),
    ('[study]\nname="x"\n[grid]\n"training.rounds"=[]\n', "at least one value"),
    ('[study]\nname="x"\n[grid]\nseed=[1,2]\n', "study.seeds"),
    ('[study]\nname="x"\n[base]\n"training.rounds"=2\n[grid]\n"training.rounds"=[2]\n', "both"),
    ('[study]\nname="x"\n[extra]\n', "unknown table"),
    ('[study\n', "not valid TOML"),
])
def test_invalid_study_files_say_what_is_wrong(text, needle):
    with pytest.raises(StudyError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        parse_study(text)


@pytest.mark.parametrize("grid, needle", [
    ('"training.nonsense" = [1]', "training.nonsense"),
    ('"aggregation.protocol" = ["carrier-pigeon"]', "aggregation.protocol"),
    ('"training.rounds" = [0]', "training.rounds"),
])
def test_invalid_run_config_values_name_the_cell(grid, needle):
    spec = parse_study(f'[study]\nname="x"\n[grid]\n{grid}\n')
    with pytest.raises(StudyError, match=needle):
        expand_cells(spec)


UNION = """
[study]
name = "u"
seeds = [0, 1]
[base]
training.sampling = "poisson"
[[grid]]
"privacy.unit" = ["none"]
"training.clients_per_round" = [5, 10]
[[grid]]
"privacy.unit" = ["user"]
"privacy.target_epsilon" = [1.0, 4.0]
[[grid]]
"privacy.unit" = ["none"]
"training.clients_per_round" = [10, 20]
"""


def test_several_grids_make_a_union_without_repeating_shared_points():
    spec = parse_study(UNION)
    cells = expand_cells(spec)
    points = {c.params for c in cells}
    assert len(points) == 2 + 2 + 1  # (none, 10) is in the first and the third grid: run once
    assert len(cells) == 5 * 2
    assert len({c.cell_id for c in cells}) == len(cells)
    assert spec.grid_keys == ("privacy.unit", "training.clients_per_round", "privacy.target_epsilon")
    dp = [c for c in cells if dict(c.params)["privacy.unit"] == "user"]
    assert {c.config["privacy"]["target_epsilon"] for c in dp} == {1.0, 4.0}
    default = TrainingConfig().clients_per_round
    assert all(c.config["training"]["clients_per_round"] == default for c in dp)  # the default


def test_a_grid_must_be_a_table():
    with pytest.raises(StudyError, match="grid"):
        parse_study('grid = 3\n[study]\nname="x"\n')


@pytest.mark.parametrize("text, needle", [
    ('[study]\nname="x"\njob="train"\n', "study.job"),
    ('[study]\nname="x"\n[audit]\ncanaries=10\n', "needs study.job"),
    ('[study]\nname="x"\njob="audit"\n[audit]\ncanaries=-1\n', "audit.canaries"),
])
def test_audit_studies_are_validated(text, needle):
    with pytest.raises(ConfigError, match=needle):  # StudyError, or the audit module's own error
        parse_study(text)


def test_audit_options_are_part_of_the_run_id():
    text = '[study]\nname="x"\njob="audit"\n[audit]\ncanaries={}\n'
    a, b = (expand_cells(parse_study(text.format(n)))[0] for n in (10, 20))
    plain = expand_cells(parse_study('[study]\nname="x"\n'))[0]
    assert len({a.cell_id, b.cell_id, plain.cell_id}) == 3
    assert a.config == plain.config  # same training run, different job
