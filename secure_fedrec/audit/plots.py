"""The audit's figures: ROC curves (log-log) and audited ε̂ against the accountant's ε."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from attacks import RocCurve, plot_roc

__all__ = ["EpsilonPoint", "plot_epsilon_audit", "write_roc_plots"]

EpsilonPoint = tuple[float, float, str]  # (accountant's ε, audited ε̂, label)


def write_roc_plots(curves: Mapping[str, RocCurve], out: Path) -> list[Path]:
    """``roc.png`` with every curve, and ``roc_<name>.png`` per attack."""
    written = []
    if not curves:
        return written
    fig = plot_roc(dict(curves), title="membership attacks")
    fig.savefig(out / "roc.png", dpi=120)
    written.append(out / "roc.png")
    for name, curve in curves.items():
        path = out / f"roc_{name}.png"
        plot_roc({name: curve}, title=name).savefig(path, dpi=120)
        written.append(path)
    return written


def plot_epsilon_audit(points: Sequence[EpsilonPoint], path: Path, *, title: str | None = None,
                       estimates: Sequence[EpsilonPoint] = ()) -> Path:
    """ε̂ against ε with the line ε̂ = ε; a point above it is a privacy violation.

    A run without DP (ε = ∞) is drawn at the right edge, labelled "∞". ``estimates``
    (one-shot ε estimates, not bounds) are drawn as open grey markers and never as a
    violation, whichever side of the line they fall on; infinite ones are left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    estimates = [(e, h, label) for e, h, label in estimates if math.isfinite(e) and math.isfinite(h)]
    finite = [e for e, _, _ in points if math.isfinite(e)]
    hats = [h for _, h, _ in [*points, *estimates] if math.isfinite(h)]
    top = max([1.0, *finite, *hats]) * 1.15
    infinity_x = top * 1.08 if any(not math.isfinite(e) for e, _, _ in points) else None
    right = infinity_x * 1.08 if infinity_x else top
    ax.plot([0, top], [0, top], "k--", linewidth=0.8, label="ε̂ = ε (above: violation)")
    ax.fill_between([0, top], [0, top], [right, right], color="red", alpha=0.06)
    for eps, eps_hat, label in points:
        x = eps if math.isfinite(eps) else infinity_x
        violation = math.isfinite(eps) and eps_hat > eps
        ax.scatter([x], [eps_hat], marker="x" if violation else "o", s=40, zorder=3,
                   color="red" if violation else None, label=label)
    for (eps, estimate, label), marker in zip(estimates, "^vsD"):
        ax.scatter([eps], [estimate], marker=marker, s=40, zorder=3, facecolors="none", edgecolors="grey",
                   label=label)
    if infinity_x:
        ticks = [t for t in ax.get_xticks() if 0 <= t < top]
        ax.set_xticks([*ticks, infinity_x], [*(f"{t:g}" for t in ticks), "∞"])
    ax.set_xlim(0, right)
    ax.set_ylim(0, max(top, max(hats, default=0) * 1.1))
    ax.set_xlabel("accountant's ε")
    ax.set_ylabel("audited lower bound ε̂ (one run)")
    ax.set_title(title or "one-run audit: ε̂ vs ε")
    ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=120)
    return path
