"""``secure-fedrec study``: run a grid of configurations, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["cmd_study", "register"]

DESCRIPTION = """\
Run every cell of a study grid (a TOML file with [study], [base] and [grid]) and
append one row per cell and seed to DIR/results.csv and DIR/results.jsonl.
Re-running the same command skips finished cells; a killed run loses at most
the cells in progress. See docs/studies.md.
"""


def register(subparsers) -> dict:
    p = subparsers.add_parser("study", help="run a grid of configurations (resumable) into a results table",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="the study TOML file")
    p.add_argument("--out", type=Path, required=True, help="the study folder (created; reused to resume)")
    p.add_argument("--parallel", type=int, default=None,
                   help="worker processes (default: study.parallel from the file)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("--no-plots", action="store_true", help="do not draw DIR/plots/ at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return {"study": cmd_study}


def cmd_study(args: argparse.Namespace) -> int:
    from ..studies.cells import expand_cells
    from ..studies.execute import run_study
    from ..studies.spec import StudyError, load_study
    from ..studies.store import ResultStore

    spec = load_study(args.config)
    if args.parallel is not None and args.parallel < 1:
        raise StudyError(f"--parallel must be >= 1; got {args.parallel}")
    if args.dry_run:
        done = ResultStore(args.out).finished_ids()
        for cell in expand_cells(spec):
            mark = "done" if cell.cell_id in done else "todo"
            print(f"{cell.cell_id}  {mark}  {cell.label()}")
        return 0
    outcome = run_study(spec, args.out, parallel=args.parallel, progress=not args.quiet)
    print(f"{spec.name}: {len(outcome.rows)}/{outcome.total} runs finished "
          f"({outcome.skipped} from earlier invocations, {outcome.ran} now, {len(outcome.failed)} failed)")
    print(f"wrote {args.out / 'results.csv'} and {args.out / 'results.jsonl'}")
    if not args.no_plots and outcome.rows:
        from ..reports.plots import make_plots

        made = make_plots(args.out)
        print(f"drew {sum(1 for p in made if p.ok)} plot(s) in {args.out / 'plots'}")
    for failure in outcome.failed:
        print(f"failed: {failure['cell_id']} {failure['params']} seed={failure['seed']}: {failure['error']}")
    return 0 if outcome.complete else 1
