"""Reports: valid self-contained HTML whose images load, Markdown twin, plots and ε wording."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from secure_fedrec.cli import main
from secure_fedrec.reports import load_study_data, make_plots, write_report
from secure_fedrec.reports.render import (
    epsilon_statements,
    format_epsilon,
    summary_table,
)
from secure_fedrec.studies import (
    ResultStore,
    expand_cells,
    parse_study,
    result_row,
    run_study,
)
from secure_fedrec.studies.execute import write_manifest

BASE = """
[study]
name = "tiny-report"
description = "report test"
seeds = [0, 1]
[base]
training.rounds = 2
training.local_epochs = 1
training.sampling = "poisson"
model.dim = 4
data.synthetic.n_users = 30
data.synthetic.n_items = 40
data.synthetic.mean_ratings_per_user = 15
privacy.noise = "central"  # pinned: the user-level cells below use central noise on plaintext
"""
# a no-DP baseline at two sizes, and real user-level DP runs at two budgets
TINY = BASE + """
[[grid]]
"privacy.unit" = ["none"]
"training.clients_per_round" = [5, 10]
[[grid]]
"privacy.unit" = ["user"]
"privacy.accountant" = ["rdp"]  # the faster accountant; PLD is the default
"privacy.noise_multiplier" = [0.7, 2.0]
"training.clients_per_round" = [10]
"""
FAKE = BASE + """
[grid]
"training.clients_per_round" = [5, 10, 20]
"""

VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}


class StrictHTML(HTMLParser):
    """Collects elements and checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[dict[str, str]] = []
        self.refs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs)
        for name in ("src", "href"):
            if name in attrs:
                self.refs.append(attrs[name])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> StrictHTML:
    parser = StrictHTML()
    parser.feed(text)
    parser.close()
    assert parser.doctype, "missing <!DOCTYPE html>"
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed: {parser.stack}"
    return parser


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    outcome = run_study(parse_study(TINY), root, progress=False)
    assert outcome.complete
    return root


def fake_dp_study(root: Path) -> Path:
    """A study folder whose runs report privacy and attack results the way run_job will."""
    spec = parse_study(FAKE)
    cells = expand_cells(spec)
    store = ResultStore(root)
    store.prepare()
    write_manifest(spec, cells, store)
    epsilon_of = {5.0: 0.5, 10.0: 2.0, 20.0: None}
    for cell in cells:
        n = cell.config["training"]["clients_per_round"]
        eps = epsilon_of[n]
        result = {
            "config": cell.config, "protocol": "plaintext", "model": "mf",
            "final": {"rmse": 1.0 + (0.5 / eps if eps else 0.0) + 0.01 * cell.seed, "mae": 0.8},
            "bytes_sent_per_client_mean": 100.0 * n, "wall_time_seconds": 0.01 * n + 0.001 * cell.seed,
            "rounds": [{"round": 1, "seconds": 0.1, "bytes_sent_per_client": 100.0 * n}],
            "attack": {"auc": 0.5 + (0.05 * eps if eps else 0.3), "epsilon_lower_bound": 0.3 * eps if eps else 3.0},
        }
        if eps is not None:
            result["privacy"] = {"epsilon": eps, "delta": 1e-5, "unit": "user", "noise": "central"}
        store.save_cell(result_row(spec.name, cell, result, 0.1), result)
    store.rebuild_tables([c.cell_id for c in cells])
    return root


def check_images(parser: StrictHTML) -> None:
    for image in parser.images:
        assert image.get("alt")
        match = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", image["src"])
        assert match, image["src"][:60]
        raw = base64.b64decode(match.group(1), validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        pixels = matplotlib.image.imread(io.BytesIO(raw), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0  # not a blank canvas


def test_report_of_the_tiny_study_is_valid_self_contained_html(tiny_study):
    assert main(["report", str(tiny_study)]) == 0
    text = (tiny_study / "report.html").read_text(encoding="utf-8")
    parser = parse(text)
    assert len(parser.images) == 2  # privacy-utility and protocol cost; no attack in this grid
    check_images(parser)
    assert all(ref.startswith("data:") for ref in parser.refs), "the report must not load anything"
    body = " ".join(parser.text)
    assert "What the privacy numbers mean" in body and "ε = ∞" in body
    assert "not drawn" in body and "no attack" in body
    # results first: the privacy-utility plot and the summary come before the ε statements
    assert text.index("<img") < text.index("Summary (mean") < text.index("What the privacy numbers mean")
    assert text.count('class="privacy"') == 2  # one per privacy unit (user) plus one for no DP
    data = load_study_data(tiny_study)
    dp = data.rows.dropna(subset=["epsilon"])
    assert len(dp) == 4 and (dp["delta"] > 0).all()
    by_noise = dp.groupby("param.privacy.noise_multiplier")["epsilon"].mean()
    assert by_noise[0.7] > by_noise[2.0] > 0  # more noise, smaller ε
    finite = dp["epsilon"]
    assert "any one user" in body and f"ε = {format_epsilon(round(finite.min(), 2))}" in body
    for group_id in data.rows["group_id"]:
        assert group_id in body
    import torch
    assert torch.__version__ in body
    assert 'name = "tiny-report"' in body  # the study file, verbatim
    rows = [json.loads(line) for line in (tiny_study / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    for row in rows:
        assert row["cell_id"] in body


def test_markdown_report_links_existing_plots(tiny_study):
    (md,) = write_report(tiny_study, formats=("md",))
    text = md.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all((tiny_study / link).exists() for link in links)
    assert "| mechanism |" in text and "| ε |" in text
    assert text.index("![") < text.index("## Summary") < text.index("## What the privacy numbers mean")


def test_report_with_dp_and_attacks_draws_every_plot(tmp_path):
    root = fake_dp_study(tmp_path)
    outcomes = {p.name: p for p in make_plots(root)}
    assert all(p.ok for p in outcomes.values()), {n: p.note for n, p in outcomes.items()}
    for plot in outcomes.values():
        assert plot.png.stat().st_size > 1000
        assert plot.svg.read_text().lstrip().startswith("<?xml")
    (html_path,) = write_report(root, formats=("html",))
    parser = parse(html_path.read_text(encoding="utf-8"))
    assert len(parser.images) == 3
    check_images(parser)
    body = " ".join(parser.text)
    assert "any one user" in body and "ε = 0.5" in body and "δ = 1e-05" in body


def test_epsilon_is_rounded_for_people_and_tables_stay_narrow():
    import pandas as pd

    rows = pd.DataFrame([{"group_id": "g", "mechanism": "user/central (plaintext)", "epsilon": 0.5 - 1e-12 * i,
                          "delta": 1e-3, "privacy.unit": "user", "metric.rmse": 1.0 + 0.01 * i,
                          "privacy.statement": "a long statement " * 20, "param.x": 1} for i in range(3)])
    table = summary_table(rows)
    assert table["ε"].tolist() == ["0.5"]
    assert list(table.columns) == ["mechanism", "ε", "RMSE", "seeds"]  # constant params and prose left out
    assert format_epsilon(5.3612, 0.21) == "5.36 ± 0.21" and format_epsilon(8.0) == "8"
    statements = epsilon_statements(rows)
    assert len(statements) == 1 and "ε = 0.5:" in statements[0]


def test_a_grid_that_leaves_out_a_key_other_grids_vary_is_plotted_under_its_mechanism():
    """Regression: the record-distributed study's SecAgg+ grid sets no ``study.job``; under pandas 3
    ``astype(str)`` kept that NaN, the series label became NaN and sorting the labels raised."""
    import pandas as pd

    from secure_fedrec.reports.plots import _series_label, privacy_utility_figure

    rows = pd.DataFrame([{"group_id": f"g{job}", "mechanism": mechanism, "epsilon": 1.0, "metric.rmse": 0.95,
                          "param.study.job": job}
                         for mechanism, job in [("record/distributed (plaintext)", "run"),
                                                ("record/central DP-SGD twin (central)", "dpsgd-twin"),
                                                ("record/distributed (secagg+)", None)]])
    assert _series_label(rows).tolist() == ["record/distributed (plaintext), study.job=run",
                                            "record/central DP-SGD twin (central), study.job=dpsgd-twin",
                                            "record/distributed (secagg+)"]
    privacy_utility_figure(rows)


def test_epsilon_statement_bounds_the_attackers_confidence():
    import pandas as pd

    rows = pd.DataFrame([{"mechanism": "user/central (plaintext)", "epsilon": 1.0, "delta": 1e-6,
                          "privacy.unit": "user"}])
    (statement,) = epsilon_statements(rows)
    assert "73.1%" in statement  # e / (1 + e) for ε = 1
    assert "2.72" in statement


def test_report_of_a_folder_that_is_not_a_study_fails_clearly(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a study folder" in capsys.readouterr().err


def _chromium() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium on this machine "
                    "(apt-get install chromium; .ci/run installs it)")
def test_report_renders_in_a_headless_browser_results_first_and_fits(tiny_study, tmp_path):
    """A 1000-px window: the first screen shows the plot, and nothing is wider than the page."""
    import subprocess

    (html_path,) = write_report(tiny_study, formats=("html",))
    shot = tmp_path / "shot.png"
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--window-size=1000,900"]
    subprocess.run([*browser, f"--screenshot={shot}", html_path.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (900, 1000)
    # the first screen holds the plot: its coloured lines and markers (text, tables and the
    # privacy boxes are grey or pale; a page opening with prose has next to no such pixels)
    rgb = pixels[..., :3]
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.3
    assert coloured.sum() > 500
    # the widths the browser laid out: a copy of the page whose script writes them into the DOM
    probe = tmp_path / "probe.html"
    probe.write_text(html_path.read_text(encoding="utf-8").replace(
        "</body>", "<script>var e = document.documentElement, over = e.scrollWidth - e.clientWidth;"
                   "document.querySelectorAll('.scroll').forEach(function (d) {"
                   "over = Math.max(over, d.scrollWidth - d.clientWidth); });"
                   "document.body.setAttribute('data-overflow', String(over));</script></body>"),
        encoding="utf-8")
    dom = subprocess.run([*browser, "--dump-dom", probe.resolve().as_uri()], check=True,
                         capture_output=True, timeout=120, text=True).stdout
    overflow = re.search(r'data-overflow="(-?\d+)"', dom)
    assert overflow is not None and int(overflow.group(1)) <= 0, "a table or the page scrolls sideways"
