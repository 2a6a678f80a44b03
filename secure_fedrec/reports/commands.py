"""``secure-fedrec report DIR``: a reviewer-ready report of a study folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["cmd_report", "register"]


def register(subparsers) -> dict:
    p = subparsers.add_parser(
        "report", help="write a self-contained HTML (and Markdown) report of a study folder",
        description="Render DIR (written by `secure-fedrec study`) as report.html, with plots "
                    "embedded, tables, exact configs, library versions and what ε means; "
                    "and report.md. See docs/reports.md.")
    p.add_argument("study_dir", type=Path, metavar="DIR", help="the study folder")
    p.add_argument("--format", choices=("html", "md", "both"), default="both", help="default: both")
    p.add_argument("--out", type=Path, default=None, help="folder for the report (default: DIR)")
    return {"report": cmd_report}


def cmd_report(args: argparse.Namespace) -> int:
    from .data import ReportError
    from .render import write_report

    formats = ("html", "md") if args.format == "both" else (args.format,)
    try:
        written = write_report(args.study_dir, formats=formats, out=args.out)
    except ReportError as exc:
        print(f"secure-fedrec: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0
