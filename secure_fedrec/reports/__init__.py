"""Plots and reviewer-facing reports of a study folder.

``secure-fedrec report DIR`` reads what ``secure-fedrec study`` wrote and
renders a self-contained HTML page (plots embedded) and a Markdown twin.
See docs/reports.md.
"""

from .data import StudyData, load_study_data
from .plots import PlotOutcome, PlotSkipped, make_plots
from .render import render_html, render_markdown, write_report

__all__ = [
    "PlotOutcome",
    "PlotSkipped",
    "StudyData",
    "load_study_data",
    "make_plots",
    "render_html",
    "render_markdown",
    "write_report",
]
