"""The study plots: privacy–utility, leakage vs budget, protocol cost (PNG and SVG).

Each ``*_figure(rows)`` takes the tidy table (a DataFrame) and returns a
matplotlib Figure, or raises :class:`PlotSkipped` saying which columns it
needed — a study without DP, or without an attack, still gets the other plots
and a note in the report. Column names are those of
:func:`secure_fedrec.studies.store.result_row`.

ε = ∞ (a run without DP, or one whose ε is absent) is drawn at the right edge,
past a break mark on the x axis, with the tick labelled ∞.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, workers, notebooks alike)
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "UTILITY_METRICS",
    "PlotOutcome",
    "PlotSkipped",
    "leakage_figure",
    "make_plots",
    "privacy_utility_figure",
    "protocol_cost_figure",
]

#: utility metrics plotted against ε, when present: column -> (label, lower is better)
UTILITY_METRICS = {
    "metric.rmse": ("RMSE", True),
    "metric.hr@10": ("HR@10, full ranking", False),
    "metric.ndcg@10": ("NDCG@10, full ranking", False),
    "metric.sampled_hr@10": ("HR@10, sampled 1+99", False),
    "metric.sampled_ndcg@10": ("NDCG@10, sampled 1+99", False),
}
EPSILON_HAT_COLUMNS = ("attack.epsilon_lower_bound", "attack.epsilon_hat", "attack.eps_hat",
                       "attack.empirical_epsilon")
AUC_COLUMNS = ("attack.auc", "attack.roc_auc", "attack.membership_auc")


class PlotSkipped(Exception):
    """A plot that the table cannot support; the message says why (shown in the report)."""


@dataclass(frozen=True)
class PlotOutcome:
    name: str
    title: str
    png: Path | None = None
    svg: Path | None = None
    note: str = ""  # why it was skipped, or a caveat

    @property
    def ok(self) -> bool:
        return self.png is not None


def _first_column(rows: pd.DataFrame, candidates: tuple[str, ...], suffix: str | None = None) -> str | None:
    for name in candidates:
        if name in rows and rows[name].notna().any():
            return name
    if suffix is not None:
        for name in rows.columns:
            if name.startswith("attack.") and name.endswith(suffix) and rows[name].notna().any():
                return name
    return None


def _epsilon(rows: pd.DataFrame) -> pd.Series:
    if "epsilon" not in rows:
        return pd.Series(np.inf, index=rows.index)
    return pd.to_numeric(rows["epsilon"], errors="coerce").fillna(np.inf)


def _text(values: pd.Series, missing: str = "") -> pd.Series:
    """``values`` as strings, ``missing`` where absent: pandas >= 3 keeps NaN through ``astype(str)``."""
    return values.astype(object).where(values.notna(), missing).map(str)


def _series_label(rows: pd.DataFrame) -> pd.Series:
    """Mechanism plus every varying grid value that is not a privacy knob (one line each).

    A grid that does not set a key another grid sets (its rows hold no value there) gets no
    ``key=value`` for it: the key has its default in those runs.
    """
    base = _text(rows["mechanism"] if "mechanism" in rows else rows.get("protocol", pd.Series("runs", index=rows.index)),
                 "runs")
    extra = [c for c in rows.columns if c.startswith("param.") and not c.startswith("param.privacy.")
             and c != "param.aggregation.protocol" and _text(rows[c]).nunique() > 1]
    label = base.copy()
    for column in extra:
        given = rows[column].notna()
        label = label.where(~given, label + ", " + column.removeprefix("param.") + "=" + _text(rows[column]))
    return label


class _InfinityAxis:
    """Maps ε to x: finite values as they are (log scale), ∞ to a slot past the largest."""

    def __init__(self, eps: pd.Series) -> None:
        finite = eps[np.isfinite(eps) & (eps > 0)]
        self.has_finite = not finite.empty
        self.lo = float(finite.min()) if self.has_finite else 1.0
        self.hi = float(finite.max()) if self.has_finite else 1.0
        self.inf_x = self.hi * (4.0 if self.hi > self.lo else 10.0)
        self.has_inf = bool(np.isinf(eps).any())
        self.values = sorted(set(finite.tolist()))

    def x(self, eps: float) -> float:
        return self.inf_x if math.isinf(eps) else eps

    def decorate(self, ax: plt.Axes) -> None:
        ax.set_xscale("log")
        # ticks at the budgets actually run (few, in a study grid), else matplotlib's decades
        ticks = self.values if len(self.values) <= 8 else \
            [t for t in ax.get_xticks() if self.lo / 1.5 <= t <= self.hi * 1.5]
        ax.minorticks_off()
        if not self.has_inf:
            ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
            return
        ax.set_xticks([*ticks, self.inf_x], [*(f"{t:.3g}" for t in ticks), "∞"])
        ax.set_xlim(self.lo / 1.5, self.inf_x * 1.5)
        if self.has_finite:
            gap = math.sqrt(self.hi * self.inf_x)  # the axis break: two slashes between max ε and ∞
            kwargs = {"transform": ax.get_xaxis_transform(), "color": "k", "clip_on": False, "lw": 1}
            for offset in (0.93, 1.07):
                ax.plot([gap * offset / 1.03, gap * offset * 1.03], [-0.02, 0.02], **kwargs)


def _colors(labels: pd.Series) -> dict[str, str]:
    """One colour per series, the same in every panel of a figure."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(sorted(labels.unique()))}


def _legend_outside(ax: plt.Axes) -> None:
    """Below the axes, so that no legend hides a point (files are saved with a tight box)."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)


def _errorbar_lines(ax: plt.Axes, rows: pd.DataFrame, axis: _InfinityAxis, y: str) -> None:
    eps = _epsilon(rows)
    labels = _series_label(rows)
    colors = _colors(labels)
    data = pd.DataFrame({"series": labels, "eps": eps, "y": pd.to_numeric(rows[y], errors="coerce"),
                         "point": rows.get("group_id", eps)})
    data = data.dropna(subset=["y"])
    for name, group in data.groupby("series", sort=True):
        # one point per grid point at its mean ε: seeds of one cell whose accountants end at
        # slightly different ε (record level) are one point, not a zigzag
        stats = group.groupby("point").agg(eps=("eps", "mean"), mean=("y", "mean"), std=("y", "std"),
                                           count=("y", "count")).set_index("eps").sort_index()
        xs = [axis.x(e) for e in stats.index]
        ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0.0), marker="o", capsize=3, label=name,
                    color=colors[name])


def privacy_utility_figure(rows: pd.DataFrame) -> plt.Figure:
    """ε vs utility (mean ± std over seeds), one line per mechanism."""
    metrics = [m for m in UTILITY_METRICS if m in rows and rows[m].notna().any()]
    if not metrics:
        raise PlotSkipped("no utility metric column (metric.rmse, metric.hr@10 or metric.ndcg@10)")
    eps = _epsilon(rows)
    if not np.isfinite(eps).any():
        raise PlotSkipped("no run reports a finite ε (no DP in this grid, or result['privacy'] "
                          "is absent), so there is no privacy–utility trade-off to draw")
    axis = _InfinityAxis(eps)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        label, lower_better = UTILITY_METRICS[metric]
        protocols = rows.get("metric.ranking_protocol")
        if protocols is not None and protocols.astype(str).str.startswith("sampled").all():
            label = label.replace("full ranking", "sampled 1+99")  # studies that named it per run
        _errorbar_lines(ax, rows, axis, metric)
        axis.decorate(ax)
        ax.set_xlabel("ε (privacy budget; ∞ = no DP)")
        ax.set_ylabel(f"{label} ({'lower' if lower_better else 'higher'} is better)")
        ax.grid(alpha=0.3)
    _legend_outside(axes[0][-1])
    fig.suptitle("Privacy–utility trade-off (error bars: std over seeds)")
    fig.tight_layout(w_pad=3.0)  # room for the second panel's y label
    return fig


def leakage_figure(rows: pd.DataFrame) -> plt.Figure:
    """ε vs attack AUC, and audited ε̂ vs the accountant's ε against the y = x bound."""
    auc = _first_column(rows, AUC_COLUMNS, suffix="auc")
    eps_hat = _first_column(rows, EPSILON_HAT_COLUMNS, suffix="epsilon_lower_bound")
    if auc is None and eps_hat is None:
        raise PlotSkipped("no attack columns (attack.auc, attack.epsilon_lower_bound): "
                          "the grid ran no attack or audit")
    eps = _epsilon(rows)
    axis = _InfinityAxis(eps)
    panels = [p for p in (auc, eps_hat) if p is not None]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, column in zip(axes[0], panels):
        if column == auc:
            _errorbar_lines(ax, rows, axis, column)
            axis.decorate(ax)
            ax.axhline(0.5, color="grey", ls=":", label="chance (AUC 0.5)")
            ax.set_ylabel("membership attack AUC")
            ax.set_xlabel("ε (∞ = no DP)")
            ax.set_title("Leakage vs budget")
        else:
            finite = np.isfinite(eps)
            if not finite.any():
                ax.text(0.5, 0.5, "no finite ε to compare ε̂ with", ha="center", transform=ax.transAxes)
            else:
                sub = rows[finite]
                colors = _colors(_series_label(rows))
                data = pd.DataFrame({"series": _series_label(sub), "eps": eps[finite],
                                     "hat": pd.to_numeric(sub[column], errors="coerce")}).dropna()
                for name, group in data.groupby("series"):
                    stats = group.groupby("eps")["hat"].agg(["mean", "std"]).sort_index()
                    ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0.0),
                                marker="o", capsize=3, label=name, color=colors[name])
                top = float(max(data["eps"].max(), data["hat"].max() if len(data) else 0.0)) * 1.1
                ax.plot([0, top], [0, top], "k--", lw=1, label="y = x (ε̂ above it = violation)")
                ax.set_xlim(0, top)
                ax.set_ylim(0, top)
            ax.set_xlabel("accountant ε")
            ax.set_ylabel("audited lower bound ε̂")
            ax.set_title("Audit: ε̂ must stay below ε")
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    fig.tight_layout()
    return fig


def protocol_cost_figure(
    rows: pd.DataFrame,
    *,
    n_column: str | None = None,
    m_column: str | None = None,
    time_column: str = "wall_time_seconds",
    bytes_column: str = "bytes_sent_per_client_mean",
    group_column: str = "mechanism",
) -> plt.Figure:
    """Time and bytes vs the number of clients n and the vector length m, one line per protocol.

    Defaults find n in ``clients_per_round`` / ``param.training.clients_per_round`` and m
    in ``round_mean.vector_length`` / ``param.model.dim`` — whichever varies. Lines are
    per ``mechanism`` (protocol, and DP mode: DP runs also pay for noise and accounting),
    falling back to ``protocol``.
    """
    def varying(candidates: tuple[str, ...]) -> str | None:
        for c in candidates:
            if c in rows and pd.to_numeric(rows[c], errors="coerce").dropna().nunique() > 1:
                return c
        return None

    n_column = n_column or varying(("param.training.clients_per_round", "clients_per_round", "n"))
    m_column = m_column or varying(("round_mean.vector_length", "param.model.dim", "m"))
    axes_x = [c for c in (n_column, m_column) if c is not None]
    costs = [c for c in (time_column, bytes_column) if c in rows and rows[c].notna().any()]
    if not axes_x or not costs:
        raise PlotSkipped("protocol cost needs a grid over clients per round (n) or model size (m) "
                          "and the time/bytes columns")
    fig, axes = plt.subplots(len(costs), len(axes_x), figsize=(5 * len(axes_x), 3.6 * len(costs)),
                             squeeze=False)
    if group_column not in rows:
        group_column = "protocol"
    groups = rows[group_column].astype(str) if group_column in rows else pd.Series("runs", index=rows.index)
    for j, x in enumerate(axes_x):
        for i, y in enumerate(costs):
            ax = axes[i][j]
            data = pd.DataFrame({"g": groups, "x": pd.to_numeric(rows[x], errors="coerce"),
                                 "y": pd.to_numeric(rows[y], errors="coerce")}).dropna()
            for name, group in data.groupby("g"):
                stats = group.groupby("x")["y"].agg(["mean", "std"]).sort_index()
                ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0.0),
                            marker="o", capsize=3, label=name)
            ax.set_xlabel(x.removeprefix("param."))
            ax.set_ylabel({time_column: "wall time (s)", bytes_column: "bytes sent per client"}.get(y, y))
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        _legend_outside(axes[-1][j])
    fig.suptitle("Protocol cost")
    fig.tight_layout()
    return fig


PLOTS: dict[str, tuple[str, Callable[[pd.DataFrame], plt.Figure]]] = {
    "privacy_utility": ("Privacy–utility trade-off", privacy_utility_figure),
    "leakage": ("Leakage vs privacy budget", leakage_figure),
    "protocol_cost": ("Protocol cost", protocol_cost_figure),
}


def save_figure(fig: plt.Figure, stem: Path) -> tuple[Path, Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    fig.savefig(png, dpi=110, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    plt.close(fig)
    return png, svg


def make_plots(study_dir: str | Path, rows: pd.DataFrame | None = None) -> list[PlotOutcome]:
    """Draw every plot the study's table supports into ``study_dir/plots``."""
    study_dir = Path(study_dir)
    if rows is None:
        from .data import load_study_data

        rows = load_study_data(study_dir).rows
    outcomes = []
    for name, (title, draw) in PLOTS.items():
        stale = [study_dir / "plots" / f"{name}.{ext}" for ext in ("png", "svg")]
        try:
            if rows.empty:
                raise PlotSkipped("no finished runs yet")
            fig = draw(rows)
        except PlotSkipped as skipped:
            for path in stale:
                path.unlink(missing_ok=True)
            outcomes.append(PlotOutcome(name, title, note=str(skipped)))
            continue
        png, svg = save_figure(fig, study_dir / "plots" / name)
        outcomes.append(PlotOutcome(name, title, png=png, svg=svg))
    return outcomes
