"""Figures from score tables: a pattern's score map, top heads, held-out consistency, linear fits.

They take computed tables (`scoring.score_heads`, `classify.top_heads`, `classify.consistency`,
`classify.linear_fit`) and only draw them. Metric names, directions and ranges come from the metric
registry (`scoring.get_metric`). Top heads (bars) share `draw_bars`; consistency and linear fits
share `draw_diagonal_scatter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from attn_tools.viz.canvas import (
    finish,
    higher_is_better,
    metric_axis_label,
    metric_display,
    metric_limits,
    metric_spec,
    new_figure,
)
from attn_tools.viz.colors import pattern_color

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.container import BarContainer

__all__ = [
    "draw_bars",
    "draw_diagonal_scatter",
    "head_grid",
    "plot_consistency",
    "plot_linear_fit",
    "plot_pattern_scores",
    "plot_top_heads",
    "select_table",
]


# ----------------------------------------------------------------------------- table selection


def _one(values: pd.Series, what: str, hint: str) -> str:
    uniq = list(dict.fromkeys(values.astype(str)))
    if len(uniq) != 1:
        raise ValueError(f"the table holds several {what}s ({uniq}). Fix: pass {hint}")
    return uniq[0]


def _keep(table: pd.DataFrame, column: str, value: str | None) -> tuple[pd.DataFrame, str | None]:
    """Rows whose ``column`` equals ``value`` (checked to exist); the one value left, or None."""
    if column not in table.columns:
        return table, None
    sub = table
    if value is not None:
        sub = table[table[column] == value]
        if sub.empty:
            raise ValueError(
                f"{column} {value!r} is not in the table ({column}s: {sorted(table[column].unique())})"
            )
    return sub, _one(sub[column], column, f"{column}=...")


def select_table(
    table: pd.DataFrame,
    *,
    model: str | None = None,
    metric: str | None = None,
    pattern: str | None = None,
) -> tuple[pd.DataFrame, str, str | None]:
    """Rows of one model (and metric, pattern) of a score or best-fit table.

    Returns ``(rows, model name, metric or None)``. A table holding several models or metrics
    needs ``model=`` / ``metric=``; a name that is not in the table is a `ValueError` listing
    the names that are.
    """
    missing = {"layer", "head"} - set(table.columns)
    if missing:
        raise ValueError(
            f"the table has no {sorted(missing)} column(s) (columns: {list(table.columns)}). "
            "Fix: pass the output of scoring.score_heads or classify.best_fit."
        )
    sub, chosen_model = _keep(table, "model", model)
    sub, chosen_metric = _keep(sub, "metric", metric)
    if chosen_metric is None:
        chosen_metric = metric or table.attrs.get("metric")
    if pattern is not None:
        sub = sub[sub["pattern"] == pattern]
        if sub.empty:
            known = sorted(table["pattern"].unique())
            raise ValueError(f"pattern {pattern!r} is not in the score table (patterns: {known})")
    return sub, chosen_model or "model", chosen_metric


def grid_shape(
    sub: pd.DataFrame, n_layers: int | None = None, n_heads: int | None = None
) -> tuple[int, int]:
    """``(layers, heads)`` of a table's layer × head grid (given sizes win)."""
    return (
        n_layers or int(sub["layer"].max()) + 1,
        n_heads or int(sub["head"].max()) + 1,
    )


def head_grid(table: pd.DataFrame, column: str, n_layers: int, n_heads: int) -> np.ndarray:
    """``[n_layers, n_heads]`` array of ``column`` (NaN where the table has no row)."""
    grid = np.full((n_layers, n_heads), np.nan)
    grid[table["layer"].to_numpy(int), table["head"].to_numpy(int)] = table[column].to_numpy(float)
    return grid


# ----------------------------------------------------------------------------- shared drawing


def draw_bars(
    ax: Axes,
    labels: Sequence[str],
    values: Sequence[float] | np.ndarray,
    colors: Sequence[str] | str,
    *,
    errors: np.ndarray | None = None,
    metric: str | None = None,
    fontsize: float = 9,
    annotate: bool = True,
) -> BarContainer:
    """Horizontal bars, first label at the top, on the metric's axis range.

    Args:
        labels, values: one bar each; NaN draws an empty bar.
        colors: one colour for all bars or one per bar.
        errors: ± half-widths (e.g. the std over sentences).
        metric: sets the x range from the registry (``jsd`` 0–1) so bar lengths compare.
        annotate: print each value at the end of its bar.
    """
    values = np.asarray(values, dtype=float)
    ypos = np.arange(len(values))[::-1]
    bars = ax.barh(ypos, np.nan_to_num(values), xerr=errors, color=colors, edgecolor="black",
                   linewidth=0.5, error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"})  # fmt: skip
    ax.set_yticks(ypos, list(labels), fontsize=fontsize)
    ends = values + (np.nan_to_num(errors) if errors is not None else 0.0)
    if annotate:
        for y, v, end in zip(ypos, values, ends):
            if np.isfinite(v):
                ax.text(end, y, f"  {v:.3f}", va="center", ha="left", fontsize=fontsize - 1)
    # room for the printed values to the right of the longest bar
    ax.set_xlim(*metric_limits(metric, ends * (1.15 if annotate else 1.0)))
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return bars


def draw_diagonal_scatter(
    ax: Axes,
    table: pd.DataFrame,
    x: str,
    y: str,
    group: str,
    *,
    filled: str | None = None,
) -> None:
    """Points ``(x, y)`` coloured by the pattern in ``group``, with the y = x diagonal.

    ``filled`` names a boolean column: False points are drawn hollow. The legend counts points
    per pattern.
    """
    xs, ys = table[x].to_numpy(float), table[y].to_numpy(float)
    lo, hi = float(np.nanmin([xs, ys])), float(np.nanmax([xs, ys]))
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#999999", linewidth=0.8, zorder=0)
    counts = table[group].value_counts()
    for name in counts.index:
        part = table[table[group] == name]
        color = pattern_color(str(name))
        full = part[filled].astype(bool).to_numpy() if filled else np.ones(len(part), bool)
        ax.scatter(part[x][full], part[y][full], s=22, color=color, edgecolor="black",
                   linewidth=0.3, label=f"{name} ({len(part)})")  # fmt: skip
        if (~full).any():
            ax.scatter(part[x][~full], part[y][~full], s=22, facecolor="none", edgecolor=color,
                       linewidth=1.0)  # fmt: skip


# ----------------------------------------------------------------------------- figures


def plot_pattern_scores(
    scores: pd.DataFrame,
    pattern: str,
    *,
    model: str | None = None,
    metric: str | None = None,
    annotate: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Layers × heads heatmap of one pattern's mean score (layer 0 at the bottom).

    The colour scale is oriented so that the better fit is always the darker colour, whatever
    the metric's direction; the best head is outlined. ``annotate`` writes each value in its cell
    (default: when the grid is small enough to read them).
    """
    import seaborn as sns

    sub, model, metric = select_table(scores, model=model, metric=metric, pattern=pattern)
    n_layers, n_heads = grid_shape(sub)
    grid = head_grid(sub, "mean", n_layers, n_heads)
    higher = higher_is_better(metric)
    if annotate is None:
        annotate = n_layers * n_heads <= 160
    cell = float(np.clip(min(9.0 / n_heads, 8.0 / n_layers), 0.28, 0.6))
    fig = new_figure(figsize=(n_heads * cell + 2.2, n_layers * cell + 1.2), layout="constrained")
    ax = fig.add_subplot()
    frame = pd.DataFrame(
        grid,
        index=pd.RangeIndex(n_layers, name="layer"),
        columns=pd.RangeIndex(n_heads, name="head"),
    )
    sns.heatmap(frame, ax=ax, cmap="mako" if higher else "mako_r", annot=annotate, fmt=".2f",
                annot_kws={"fontsize": 7}, linewidths=0.4, linecolor="white",
                cbar_kws={"label": metric_axis_label(metric)}, square=False)  # fmt: skip
    ax.invert_yaxis()  # layer 0 at the bottom, as in the best-fit grid
    ax.tick_params(axis="y", rotation=0, labelsize=7 if n_layers > 16 else 9)
    ax.tick_params(axis="x", labelsize=8)
    spec = metric_spec(metric)
    flat = grid.ravel()
    best = spec.best(flat) if spec is not None else int(np.nanargmin(flat))
    bl, bh = np.unravel_index(best, grid.shape)
    ax.add_patch(Rectangle((bh, bl), 1, 1, fill=False, edgecolor="#e4572e", linewidth=2.2))
    n_sent = int(sub["n_sentences"].max()) if "n_sentences" in sub.columns else None
    ax.set_title(
        f"{model} · how well each head fits {pattern!r}\n"
        f"mean over {n_sent} sentences; best: layer {bl}, head {bh} ({grid[bl, bh]:.3f})",
        fontsize=10,
    )
    return finish(fig, save)


def plot_top_heads(
    top: pd.DataFrame,
    *,
    model: str | None = None,
    metric: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Horizontal bars of the heads in a `classify.top_heads` table, best at the top (± std).

    Example:
        >>> viz.plot_top_heads(classify.top_heads(scores, "first_token", k=8))
    """
    if "rank" not in top.columns or "pattern" not in top.columns:
        raise ValueError(
            f"expected a classify.top_heads table (with 'rank' and 'pattern' columns), got "
            f"columns {list(top.columns)}. Fix: viz.plot_top_heads(classify.top_heads(scores, "
            "'previous_token', k=10))"
        )
    sub, model, metric = select_table(top, model=model, metric=metric)
    sub = sub.sort_values("rank", kind="stable")
    pattern = _one(sub["pattern"], "pattern", "a top_heads table of one pattern")
    fig = new_figure(figsize=(6.4, 0.38 * len(sub) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    names = [f"L{int(r.layer)} H{int(r.head)}" for r in sub.itertuples()]
    std = sub["std"].to_numpy(float) if "std" in sub.columns else None
    draw_bars(ax, names, sub["mean"].to_numpy(float), pattern_color(pattern), errors=std,
              metric=metric)  # fmt: skip
    n_sent = int(sub["n_sentences"].max()) if "n_sentences" in sub.columns and len(sub) else None
    ax.set_xlabel(metric_axis_label(metric, "mean ") + f" over {n_sent} sentences; bars: ± std")
    ax.set_title(f"{model} · top {len(sub)} heads for {pattern!r}", fontsize=10)
    return finish(fig, save)


def plot_consistency(
    table: pd.DataFrame,
    *,
    model: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Held-out check (`classify.consistency`): each head's best-pattern score on the sentences it
    was chosen on (x) against unseen sentences (y), coloured by that pattern.

    Points on the diagonal held up; filled points kept the same best pattern on the held-out
    half, hollow ones did not.
    """
    need = {"score_a", "score_b", "pattern_a", "agree"}
    if not need <= set(table.columns):
        raise ValueError(
            f"expected a classify.consistency table (columns {sorted(need)}), got "
            f"{list(table.columns)}"
        )
    sub, model, metric = select_table(table, model=model)
    fig = new_figure(figsize=(6.6, 5.2), layout="constrained")
    ax = fig.add_subplot()
    draw_diagonal_scatter(ax, sub, "score_a", "score_b", "pattern_a", filled="agree")
    n_a = int(sub["n_a"].iloc[0]) if "n_a" in sub.columns else None
    n_b = int(sub["n_b"].iloc[0]) if "n_b" in sub.columns else None
    name = metric_display(metric)
    ax.set_xlabel(f"{name} on the {n_a} sentences it was chosen on")
    ax.set_ylabel(f"{name} on {n_b} held-out sentences")
    agree = float(sub["agree"].astype(bool).mean())
    ax.set_title(
        f"{model} · does each head's best pattern hold on unseen text?\n"
        f"same best pattern on both halves: {agree:.0%} of heads (filled = same, hollow = changed)",
        fontsize=10,
    )
    ax.legend(title="best pattern (heads)", fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)  # fmt: skip
    return finish(fig, save)


def plot_linear_fit(
    table: pd.DataFrame,
    *,
    model: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Mixtures of patterns (`classify.linear_fit`) against the best single pattern, both scored
    on the evaluation sentences: a point on the better side of the diagonal is a head that a
    mixture explains better. Points are coloured by the mixture's largest weight."""
    need = {"eval_score", "single_eval_score", "top_pattern"}
    if not need <= set(table.columns):
        raise ValueError(
            f"expected a classify.linear_fit table (columns {sorted(need)}), got "
            f"{list(table.columns)}"
        )
    sub, model, metric = select_table(table, model=model)
    fig = new_figure(figsize=(6.6, 5.2), layout="constrained")
    ax = fig.add_subplot()
    draw_diagonal_scatter(ax, sub, "single_eval_score", "eval_score", "top_pattern")
    xs, ys = sub["single_eval_score"].to_numpy(float), sub["eval_score"].to_numpy(float)
    better = ys > xs if higher_is_better(metric) else ys < xs
    name = metric_display(metric)
    ax.set_xlabel(f"best single pattern: {name} on evaluation sentences")
    ax.set_ylabel(f"pattern mixture: {name} on evaluation sentences")
    spec = metric_spec(metric)
    ax.set_title(
        f"{model} · do mixtures of patterns explain heads better?\n"
        f"mixture better on held-out text for {np.mean(better):.0%} of heads"
        + (f" ({spec.direction})" if spec is not None else ""),
        fontsize=10,
    )
    ax.legend(title="largest weight (heads)", fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)  # fmt: skip
    return finish(fig, save)
