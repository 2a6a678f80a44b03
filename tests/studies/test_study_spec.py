"""The study file: parsing, validation errors that name the key, and cell expansion."""

from __future__ import annotations

import pytest

from secure_fedrec.studies import StudyError, expand_cells, parse_study

TINY = """
[study]
name = "t"
seeds = [0, 1]
[base]
training.rounds = 2
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
