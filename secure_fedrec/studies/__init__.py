"""Trade-off studies: a grid of run configurations, run cell by cell, resumable.

``secure-fedrec study --config study.toml --out DIR`` expands the grid of a
:class:`StudySpec`, runs every (cell, seed) with :func:`secure_fedrec.runner.run_job`
and keeps one tidy row per finished run. See docs/studies.md.
"""

from .cells import Cell, config_hash, expand_cells
from .execute import StudyOutcome, run_study
from .spec import StudyError, StudySpec, load_study, parse_study
from .store import ResultStore, result_row

__all__ = [
    "Cell",
    "ResultStore",
    "StudyError",
    "StudyOutcome",
    "StudySpec",
    "config_hash",
    "expand_cells",
    "load_study",
    "parse_study",
    "result_row",
    "run_study",
]
