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

__all__ = ["cost_table", "epsilon_statements", "format_epsilon", "render_html", "render_markdown",
           "summary_table", "write_report"]

_UNIT_WORDS = {
    "user": ("User level", "any one user (all of that person's ratings together)"),
    "client": ("User level", "any one user (all of that person's ratings together)"),
    "record": ("Record level", "any single training example (a rating; on implicit feedback one interaction or one sampled negative, so an interaction with its negatives is protected as a group)"),
    "example": ("Record level", "any single training example (a rating; on implicit feedback one interaction or one sampled negative, so an interaction with its negatives is protected as a group)"),
    "rating": ("Record level", "any single training example (a rating; on implicit feedback one interaction or one sampled negative, so an interaction with its negatives is protected as a group)"),
}
#: metric columns shown in the summary, in this order (others are in results.csv)
_SUMMARY_METRICS = ("metric.rmse", "metric.mae", "metric.hr@10", "metric.ndcg@10", "metric.recall@20",
                    "metric.sampled_hr@10", "metric.sampled_ndcg@10", "metric.sampled_recall@20",
                    "attack.auc", "attack.epsilon_lower_bound")
#: what the privacy module says about a run, listed once per mechanism under the statements
_RUN_WORDS = (("privacy.statement", "statement"), ("privacy.assumptions", "assumptions"))
#: the narrow view of every run (all columns: results.csv)
_RUN_COLUMNS = ("cell_id", "mechanism", "seed", "epsilon", "delta", *_SUMMARY_METRICS, "wall_time_seconds")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:.4g}"
    return str(value)


def format_epsilon(mean: float, std: float = 0.0) -> str:
    """ε for people: 3 significant digits at most, trailing zeros dropped, and a spread only
    when it is visible at that precision (``0.4998 ± 6.8e-17`` prints as ``0.5``).

    >>> format_epsilon(0.49980000000001)
    '0.5'
    >>> format_epsilon(5.3612, 0.21)
    '5.36 ± 0.21'
    >>> format_epsilon(float("inf"))
    '∞'
    """
    if math.isinf(mean):
        return "∞"
    text = f"{mean:.3g}" if abs(mean - round(mean, 2)) > 5e-3 * max(1.0, abs(mean)) else f"{round(mean, 2):g}"
    if std and std >= 5e-3 * max(abs(mean), 1e-12):
        text += f" ± {std:.2g}"
    return text


def _metric_label(column: str, rows: pd.DataFrame) -> str:
    """``metric.sampled_hr@10`` -> ``HR@10 (sampled 1+99)``: every ranking column names its protocol."""
    name = column.removeprefix("metric.").removeprefix("attack.")
    if column.startswith("attack."):
        return {"auc": "attack AUC", "epsilon_lower_bound": "audited ε̂"}.get(name, name)
    sampled = name.startswith("sampled_")
    base = name.removeprefix("sampled_")
    label = {"rmse": "RMSE", "mae": "MAE"}.get(base, base.upper().replace("NDCG", "NDCG").replace("RECALL", "Recall"))
    if base in ("rmse", "mae"):
        return label
    protocols = rows.get("metric.ranking_protocol")
    old_sampled = protocols is not None and protocols.astype(str).str.startswith("sampled").all()
    if sampled or old_sampled:  # studies before the protocols were side by side named it per run
        negatives = 99
        return f"{label} (sampled 1+{negatives})"
    return f"{label} (full ranking)"


def epsilon_statements(rows: pd.DataFrame) -> list[str]:
    """One plain statement per privacy unit in the table (and one for the runs without DP)."""
    if rows.empty:
        return ["No run has finished yet, so nothing can be said about privacy."]
    statements = []
    eps = pd.to_numeric(rows["epsilon"], errors="coerce") if "epsilon" in rows else pd.Series(float("nan"), index=rows.index)
    if eps.isna().any():
        statements.append(
            "Without differential privacy (ε = ∞): secure aggregation, when used, hides each user's "
            "individual update from the server, but the trained model itself carries no formal limit "
            "on what it reveals about any user. Attack results for these runs are measurements, not "
            "guarantees."
        )
    finite = rows[eps.notna()]
    units = finite["privacy.unit"].astype(str).str.lower() if "privacy.unit" in finite else \
        pd.Series("", index=finite.index)
    for unit in sorted(units.unique()):
        group = finite[units == unit]
        title, who = _UNIT_WORDS.get(unit, (f"{unit or 'DP'} level", f"any one {unit or 'protected unit'}"))
        values = sorted({round(float(e), 2) for e in pd.to_numeric(group["epsilon"])})
        deltas = pd.to_numeric(group.get("delta"), errors="coerce").dropna() if "delta" in group else pd.Series([])
        delta_text = (f"except with probability at most δ = {float(deltas.max()):.2g}" if len(deltas)
                      else "(δ not reported)")
        bounds = "; ".join(
            f"ε = {format_epsilon(e)}: factor {math.exp(min(e, 700)):.3g}, "
            f"at most {100 * math.exp(e) / (1 + math.exp(e)):.1f}% sure" for e in values)
        statements.append(
            f"{title} ({', '.join(sorted(group['mechanism'].astype(str).unique())) if 'mechanism' in group else 'DP'}): "
            f"whether or not the data of {who} was used changes the probability of any outcome of the "
            f"released model (and of anything computed from it) by at most a factor e^ε, {delta_text}; "
            f"an attacker who starts 50/50 on whether it was used can end at most e^ε / (1 + e^ε) sure "
            f"(ignoring δ). In this study — {bounds}."
        )
    return statements


def _run_words(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(mechanism, label, text) of each distinct statement and assumption the runs report."""
    out: list[tuple[str, str, str]] = []
    if "mechanism" not in rows:
        return out
    for mechanism, group in rows.groupby("mechanism", sort=True):
        for column, label in _RUN_WORDS:
            if column in group:
                for text in sorted({t for t in group[column] if isinstance(t, str) and t}):
                    out.append((str(mechanism), label, text))
    return out


#: grid keys the mechanism's name already spells out ("user/distributed (secagg+)")
_IN_MECHANISM = ("param.privacy.unit", "param.privacy.noise", "param.aggregation.protocol")
#: short column names for common grid keys
_PARAM_LABELS = {"param.privacy.target_epsilon": "target ε", "param.privacy.noise_multiplier": "z",
                 "param.training.clients_per_round": "clients per round"}


def _varying_params(rows: pd.DataFrame) -> list[str]:
    named = "mechanism" in rows
    return [c for c in rows.columns if c.startswith("param.") and rows[c].astype(str).nunique() > 1
            and not (named and c in _IN_MECHANISM)]


def _param_label(column: str) -> str:
    return _PARAM_LABELS.get(column, column.removeprefix("param."))


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds for every grid point (one row per group_id), narrow enough to read:
    the mechanism, the grid values that vary, ε, and the utility and attack metrics."""
    if rows.empty:
        return pd.DataFrame()
    params = _varying_params(rows)
    metrics = [c for c in _SUMMARY_METRICS if c in rows and pd.to_numeric(rows[c], errors="coerce").notna().any()]
    out = []
    for _, group in rows.groupby("group_id", sort=False):
        record: dict[str, Any] = {}
        if "mechanism" in group:
            record["mechanism"] = group["mechanism"].iloc[0]
        record.update({_param_label(c): group[c].iloc[0] for c in params})
        eps = pd.to_numeric(group["epsilon"], errors="coerce").dropna() if "epsilon" in group else pd.Series([])
        record["ε"] = format_epsilon(float(eps.mean()), float(eps.std()) if len(eps) > 1 else 0.0) \
            if len(eps) else "∞"
        for column in metrics:
            values = pd.to_numeric(group[column], errors="coerce").dropna()
            if values.empty:
                record[_metric_label(column, rows)] = ""
                continue
            std = f" ± {values.std():.2g}" if len(values) > 1 else ""
            record[_metric_label(column, rows)] = f"{values.mean():.4f}{std}"
        record["seeds"] = len(group)
        out.append(record)
    return pd.DataFrame(out)


def cost_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Bytes sent per client and wall time, mean over seeds, per grid point."""
    columns = [c for c in ("bytes_sent_per_client_mean", "wall_time_seconds") if c in rows]
    if rows.empty or not columns:
        return pd.DataFrame()
    out = []
    for _, group in rows.groupby("group_id", sort=False):
        record: dict[str, Any] = {"mechanism": group["mechanism"].iloc[0]} if "mechanism" in group else {}
        record.update({_param_label(c): group[c].iloc[0] for c in _varying_params(rows)})
        for column in columns:
            value = pd.to_numeric(group[column], errors="coerce").mean()
            label = {"bytes_sent_per_client_mean": "KB sent per client per round",
                     "wall_time_seconds": "wall time (s)"}[column]
            record[label] = f"{value / 1000:.1f}" if column.startswith("bytes") else f"{value:.1f}"
        out.append(record)
    return pd.DataFrame(out)


def _runs_table(rows: pd.DataFrame) -> pd.DataFrame:
    shown = [c for c in _RUN_COLUMNS if c in rows]
    frame = rows[shown].copy()
    if "epsilon" in frame:
        frame["epsilon"] = [format_epsilon(float(e)) if pd.notna(e) else "∞"
                            for e in pd.to_numeric(frame["epsilon"], errors="coerce")]
    return frame.rename(columns={c: _metric_label(c, rows) for c in shown
                                 if c.startswith(("metric.", "attack."))} | {"epsilon": "ε", "delta": "δ"})


@dataclass
class _Sections:
    data: StudyData
    plots: list[PlotOutcome]
    statements: list[str]
    summary: pd.DataFrame
    cost: pd.DataFrame
    words: list[tuple[str, str, str]]
    generated: str
    now_env: dict[str, dict[str, str]]


def _collect(study_dir: Path) -> _Sections:
    data = load_study_data(study_dir)
    plots = make_plots(study_dir, data.rows)
    return _Sections(
        data=data, plots=plots, statements=epsilon_statements(data.rows), summary=summary_table(data.rows),
        cost=cost_table(data.rows), words=_run_words(data.rows),
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), now_env=environment(),
    )


def _group_configs(data: StudyData) -> list[tuple[str, str, str]]:
    """(group id, params label, resolved TOML without the seed) for every grid point."""
    seen: dict[str, tuple[str, str, str]] = {}
    for cell in data.manifest.get("cells", []):
        if "config" not in cell or cell["group_id"] in seen:  # archived studies keep rows only
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
.meta{color:#555;font-size:.9em} td{white-space:nowrap} details{margin:.4em 0}
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


def _plot_html(plot: PlotOutcome) -> list[str]:
    esc = html.escape
    if plot.ok:
        encoded = base64.b64encode(plot.png.read_bytes()).decode("ascii")
        return [f'<img alt="{esc(plot.title)}" src="data:image/png;base64,{encoded}">']
    return [f'<p class="note">{esc(plot.title)} not drawn: {esc(plot.note)}.</p>']


def render_html(study_dir: str | Path) -> str:
    """Results first (the privacy–utility plot and the summary), then what ε means (one
    statement per privacy unit), the other plots, and the details."""
    s = _collect(Path(study_dir))
    d = s.data
    esc = html.escape
    first, *others = s.plots if s.plots else [None]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Study report: {esc(d.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Study report: {esc(d.name)}</h1>",
        f"<p>{esc(d.manifest.get('description', ''))}</p>",
        (f'<p class="meta">{len(d.rows)} of {d.expected_runs} runs finished; {len(d.failures)} failed. '
         f"Generated {esc(s.generated)} from <code>{esc(str(d.root))}</code>.</p>"),
        "<h2>Results</h2>",
        *(_plot_html(first) if first is not None else []),
        "<h3>Summary (mean ± std over seeds)</h3>", _html_table(s.summary),
        "<h2>What the privacy numbers mean</h2>",
        *(f'<p class="privacy">{esc(t)}</p>' for t in s.statements),
    ]
    if s.words:
        parts.append("<details><summary>What each mechanism's runs state about themselves</summary><ul>")
        parts += [f"<li><b>{esc(m)}</b>, {esc(label)}: {esc(text)}</li>" for m, label, text in s.words]
        parts.append("</ul></details>")
    if others:
        parts.append("<h2>More plots</h2>")
        for plot in others:
            parts += [f"<h3>{esc(plot.title)}</h3>", *_plot_html(plot)]
    if not s.cost.empty:
        parts += ["<h2>Cost (mean over seeds)</h2>", _html_table(s.cost)]
    parts += ["<h2>Every run</h2>",
              "<p>Main columns; every column is in <code>results.csv</code>.</p>",
              _html_table(_runs_table(d.rows))]
    if d.failures:
        parts.append("<h2>Failed runs</h2>")
        parts.append(_html_table(pd.DataFrame(
            [{"cell_id": f["cell_id"], "params": f["params"], "seed": f["seed"], "error": f["error"]}
             for f in d.failures])))
    parts += ["<h2>Study file</h2>", f"<pre>{esc(d.source_text or '(not recorded)')}</pre>",
              "<h2>Exact configuration of every grid point</h2>"]
    configs = _group_configs(d)
    if configs:
        parts.append("<p>Resolved run configs (every default filled in); each ran once per seed "
                     f"{esc(str(d.manifest.get('seeds', [])))}.</p>")
    else:
        parts.append("<p>Not kept with this archived study (its rows and study file are); "
                     "re-run the study to record them.</p>")
    for group_id, label, toml_text in configs:
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
            f"Generated {s.generated}.\n"), "## Results\n"]
    for index, plot in enumerate(s.plots):
        if index == 1:
            out += ["## Summary (mean ± std over seeds)\n", _md_table(s.summary),
                    "## What the privacy numbers mean\n", *(f"> {t}\n" for t in s.statements),
                    "## More plots\n"]
        if plot.ok:
            out.append(f"![{plot.title}](plots/{plot.png.name})\n")
        else:
            out.append(f"**{plot.title}** not drawn: {plot.note}.\n")
    if len(s.plots) < 2:
        out += ["## Summary (mean ± std over seeds)\n", _md_table(s.summary),
                "## What the privacy numbers mean\n", *(f"> {t}\n" for t in s.statements)]
    if s.words:
        out.append("What each mechanism's runs state about themselves:\n")
        out += [f"* **{m}**, {label}: {text}" for m, label, text in s.words]
        out.append("")
    if not s.cost.empty:
        out += ["## Cost (mean over seeds)\n", _md_table(s.cost)]
    out.append("Every run: see `results.csv` / `results.jsonl`.\n")
    if d.failures:
        out.append("## Failed runs\n")
        out.append(_md_table(pd.DataFrame([{"cell_id": f["cell_id"], "seed": f["seed"], "error": f["error"]}
                                           for f in d.failures])))
    out += ["## Study file\n", "```toml\n" + (d.source_text or "(not recorded)\n") + "```\n",
            "## Exact configuration of every grid point\n"]
    configs = _group_configs(d)
    if not configs:
        out.append("Not kept with this archived study (its rows and study file are).\n")
    for group_id, label, toml_text in configs:
        out.append(f"<details><summary>{group_id} {label}</summary>\n\n```toml\n{toml_text}```\n</details>\n")
    recorded = d.manifest.get("environment", {})
    if recorded:
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
