"""Render a study folder as a self-contained HTML page and as Markdown.

The HTML has no external reference at all: plots are embedded as base64 PNG,
styles are inline, so a reviewer can open the single file anywhere. The
Markdown twin links the PNGs in ``plots/`` instead.
"""

from __future__ import annotations

import base64
import html
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import dump_toml
from ..studies.environment import environment
from .data import StudyData, load_study_data
from .plots import PlotOutcome, make_plots

__all__ = ["epsilon_statements", "render_html", "render_markdown", "summary_table", "write_report"]

_UNIT_WORDS = {
    "user": "any one user (all of that person's ratings together)",
    "client": "any one user (all of that person's ratings together)",
    "record": "any single rating",
    "example": "any single rating",
    "rating": "any single rating",
}
_SUMMARY_METRICS = ("metric.", "attack.")
#: what the privacy module says about a run, quoted next to our wording
_RUN_WORDS = (("privacy.statement", "The run's own statement"), ("privacy.assumptions", "Assumptions"))
_SUMMARY_COLUMNS = ("epsilon", "delta", "bytes_sent_per_client_mean", "wall_time_seconds")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:.4g}"
    return str(value)


def epsilon_statements(rows: pd.DataFrame) -> list[str]:
    """What each (mechanism, ε, δ) in the table promises, in plain language."""
    if rows.empty:
        return ["No run has finished yet, so nothing can be said about privacy."]
    statements = []
    eps = pd.to_numeric(rows["epsilon"], errors="coerce") if "epsilon" in rows else pd.Series(float("nan"), index=rows.index)
    if eps.isna().any():
        mechanisms = sorted(rows.loc[eps.isna(), "mechanism"].astype(str).unique()) if "mechanism" in rows else []
        statements.append(
            "Runs without differential privacy (ε = ∞; " + (", ".join(mechanisms) or "no DP") + "): "
            "secure aggregation, when used, hides each user's individual update from the server, "
            "but the trained model itself carries no formal limit on what it reveals about any user. "
            "Attack results for these runs are measurements, not guarantees."
        )
    finite = rows[eps.notna()]
    if not finite.empty:
        keys = ["mechanism", "epsilon", "delta"] + (["privacy.unit"] if "privacy.unit" in finite else [])
        keys = [k for k in keys if k in finite]
        for _, first in finite.drop_duplicates(subset=keys).sort_values(keys).iterrows():
            e = float(first["epsilon"])
            d = first.get("delta")
            unit = str(first.get("privacy.unit", "") or "")
            who = _UNIT_WORDS.get(unit.lower(), f"any one {unit}" if unit else "any one protected unit")
            delta_text = (f"except with probability at most δ = {float(d):.2g}"
                          if d is not None and not pd.isna(d) else "(δ not reported)")
            statements.append(
                f"{first.get('mechanism', 'DP')} at ε = {e:.3g}: whether or not the data of {who} was "
                f"used changes the probability of any outcome of the released model (and of anything "
                f"computed from it) by at most a factor "
                f"e^ε ≈ {math.exp(min(e, 700)):.3g}, {delta_text}. For example, an attacker who "
                f"starts 50/50 on whether someone took part can end at most "
                f"{100 * math.exp(e) / (1 + math.exp(e)):.1f}% sure (ignoring δ)."
                + "".join(f" {label}: {first[column]}." for column, label in _RUN_WORDS
                          if isinstance(first.get(column), str) and first[column])
            )
    return statements


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds for every grid point (one row per group_id)."""
    if rows.empty:
        return pd.DataFrame()
    params = [c for c in rows.columns if c.startswith("param.")]
    keys = ["mechanism"] if "mechanism" in rows else []
    measures = [c for c in rows.columns if c.startswith(_SUMMARY_METRICS) or c in _SUMMARY_COLUMNS]
    out = []
    for group_id, group in rows.groupby("group_id", sort=False):
        record: dict[str, Any] = {c.removeprefix("param."): group[c].iloc[0] for c in params}
        record.update({k: group[k].iloc[0] for k in keys})
        record["seeds"] = len(group)
        for column in measures:
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            if column == "epsilon" and values.empty:
                record["ε"] = "∞"
                continue
            if values.empty:
                continue
            name = {"epsilon": "ε", "delta": "δ"}.get(column, column.removeprefix("metric."))
            std = f" ± {values.std():.3g}" if len(values) > 1 else ""
            record[name] = f"{values.mean():.4g}{std}"
        out.append(record)
    return pd.DataFrame(out)


@dataclass
class _Sections:
    data: StudyData
    plots: list[PlotOutcome]
    statements: list[str]
    summary: pd.DataFrame
    generated: str
    now_env: dict[str, dict[str, str]]


def _collect(study_dir: Path) -> _Sections:
    data = load_study_data(study_dir)
    plots = make_plots(study_dir, data.rows)
    return _Sections(
        data=data, plots=plots, statements=epsilon_statements(data.rows), summary=summary_table(data.rows),
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), now_env=environment(),
    )


def _group_configs(data: StudyData) -> list[tuple[str, str, str]]:
    """(group id, params label, resolved TOML without the seed) for every grid point."""
    seen: dict[str, tuple[str, str, str]] = {}
    for cell in data.manifest.get("cells", []):
        if cell["group_id"] in seen:
            continue
        config = {k: v for k, v in cell["config"].items() if k != "seed"}
        label = ", ".join(f"{k}={v}" for k, v in cell["params"].items()) or "base"
        seen[cell["group_id"]] = (cell["group_id"], label, dump_toml(config))
    return list(seen.values())


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #345;padding-bottom:.2em} h2{margin-top:1.8em;color:#234}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0} th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#eef2f6} .scroll{overflow-x:auto} img{max-width:100%;border:1px solid #ddd}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em} .note{color:#7a4b00;background:#fff6e0;padding:.4em .8em}
.privacy{background:#eef7ee;border-left:4px solid #3a7;padding:.6em 1em} .fail{color:#a00}
"""


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p><em>(empty)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _kv_table(mapping: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"name": list(mapping), "value": [str(v) for v in mapping.values()]})


def render_html(study_dir: str | Path) -> str:
    s = _collect(Path(study_dir))
    d = s.data
    esc = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Study report: {esc(d.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Study report: {esc(d.name)}</h1>",
        f"<p>{esc(d.manifest.get('description', ''))}</p>",
        (f"<p>{len(d.rows)} of {d.expected_runs} runs finished; {len(d.failures)} failed. "
         f"Generated {esc(s.generated)} from <code>{esc(str(d.root))}</code>.</p>"),
        "<h2>What the privacy numbers mean</h2>",
        *(f'<p class="privacy">{esc(t)}</p>' for t in s.statements),
        "<h2>Plots</h2>",
    ]
    for plot in s.plots:
        parts.append(f"<h3>{esc(plot.title)}</h3>")
        if plot.ok:
            encoded = base64.b64encode(plot.png.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{esc(plot.title)}" src="data:image/png;base64,{encoded}">')
        else:
            parts.append(f'<p class="note">Not drawn: {esc(plot.note)}.</p>')
    parts += ["<h2>Summary (mean ± std over seeds)</h2>", _html_table(s.summary)]
    parts += ["<h2>Every run</h2>", "<p>The same rows as <code>results.csv</code>.</p>", _html_table(d.rows)]
    if d.failures:
        parts.append("<h2>Failed runs</h2>")
        parts.append(_html_table(pd.DataFrame(
            [{"cell_id": f["cell_id"], "params": f["params"], "seed": f["seed"], "error": f["error"]}
             for f in d.failures])))
    parts += ["<h2>Study file</h2>", f"<pre>{esc(d.source_text or '(not recorded)')}</pre>",
              "<h2>Exact configuration of every grid point</h2>",
              ("<p>Resolved run configs (every default filled in); each ran once per seed "
               f"{esc(str(d.manifest.get('seeds', [])))}.</p>")]
    for group_id, label, toml_text in _group_configs(d):
        parts.append(f"<details><summary><code>{esc(group_id)}</code> {esc(label)}</summary>"
                     f"<pre>{esc(toml_text)}</pre></details>")
    recorded = d.manifest.get("environment", {})
    parts += ["<h2>Environment</h2>", "<h3>When the study ran</h3>",
              _html_table(_kv_table({**recorded.get("libraries", {}), **recorded.get("machine", {})})),
              "<h3>When this report was generated</h3>",
              _html_table(_kv_table({**s.now_env["libraries"], **s.now_env["machine"]})),
              "</body></html>"]
    return "\n".join(parts)


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(empty)_\n"
    cells = lambda values: "| " + " | ".join(_fmt(v).replace("|", "\\|") for v in values) + " |"
    lines = [cells(frame.columns), "| " + " | ".join("---" for _ in frame.columns) + " |"]
    lines += [cells(row) for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def render_markdown(study_dir: str | Path) -> str:
    s = _collect(Path(study_dir))
    d = s.data
    out = [f"# Study report: {d.name}\n", d.manifest.get("description", "") + "\n",
           (f"{len(d.rows)} of {d.expected_runs} runs finished; {len(d.failures)} failed. "
            f"Generated {s.generated}.\n"), "## What the privacy numbers mean\n",
           *(f"> {t}\n" for t in s.statements), "## Plots\n"]
    for plot in s.plots:
        if plot.ok:
            out.append(f"![{plot.title}](plots/{plot.png.name})\n")
        else:
            out.append(f"**{plot.title}** not drawn: {plot.note}.\n")
    out += ["## Summary (mean ± std over seeds)\n", _md_table(s.summary),
            "Every run: see `results.csv` / `results.jsonl`.\n"]
    if d.failures:
        out.append("## Failed runs\n")
        out.append(_md_table(pd.DataFrame([{"cell_id": f["cell_id"], "seed": f["seed"], "error": f["error"]}
                                           for f in d.failures])))
    out += ["## Study file\n", "```toml\n" + (d.source_text or "(not recorded)\n") + "```\n",
            "## Exact configuration of every grid point\n"]
    for group_id, label, toml_text in _group_configs(d):
        out.append(f"<details><summary>{group_id} {label}</summary>\n\n```toml\n{toml_text}```\n</details>\n")
    recorded = d.manifest.get("environment", {})
    out += ["## Environment (when the study ran)\n",
            _md_table(_kv_table({**recorded.get("libraries", {}), **recorded.get("machine", {})}))]
    return "\n".join(out)


def write_report(study_dir: str | Path, *, formats: tuple[str, ...] = ("html", "md"),
                 out: str | Path | None = None) -> list[Path]:
    """Write ``report.html`` / ``report.md`` (into ``out``, default the study folder)."""
    from ..studies.store import write_atomic

    study_dir = Path(study_dir)
    target = Path(out) if out is not None else study_dir
    written = []
    if "html" in formats:
        path = target / "report.html"
        write_atomic(path, render_html(study_dir))
        written.append(path)
    if "md" in formats:
        path = target / "report.md"
        write_atomic(path, render_markdown(study_dir))
        written.append(path)
    return written
