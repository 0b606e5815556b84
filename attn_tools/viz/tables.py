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
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from attn_tools.viz.canvas import (
    finish,
    fit_text,
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
    "score_cmap",
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


def score_cmap(metric: str | None) -> str:
    """The colormap of a score map for ``metric``: the better end is always the darker one.

    ``mako`` runs from dark (low values) to light, so a lower-is-better metric (``jsd``) uses it
    as is and a higher-is-better one (``mul``) uses it reversed; the direction comes from the
    metric registry.
    """
    return "mako_r" if higher_is_better(metric) else "mako"


def plot_pattern_scores(
    scores: pd.DataFrame,
    pattern: str,
    *,
    model: str | None = None,
    metric: str | None = None,
    annotate: bool | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    fits: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Layers × heads heatmap of one pattern's mean score (layer 0 at the bottom).

    The darker cell is always the better fit, whatever the metric's direction (`score_cmap`):
    the best head is the darkest cell and is outlined, and the colour bar puts "better" (dark) at
    its top.

    Args:
        scores: a `scoring.score_heads` table.
        pattern, model, metric: which rows to draw.
        annotate: write each value in its cell (default: when the grid is small enough to read).
        vmin, vmax: the colour range (default: this pattern's own range); pass the same pair to
            every map of a set so that colours compare across patterns (``write_figures(...,
            shared_range=True)`` does).
        fits: whether any head fits the pattern (``classify.top_heads(...)["fits"].any()``).
            False titles the map "no head fits" and outlines the closest head dashed instead of
            naming a best head; None (unknown) names the best-scoring head.
    """
    import seaborn as sns

    sub, model, metric = select_table(scores, model=model, metric=metric, pattern=pattern)
    n_layers, n_heads = grid_shape(sub)
    grid = head_grid(sub, "mean", n_layers, n_heads)
    if annotate is None:
        annotate = n_layers * n_heads <= 160
    cell = float(np.clip(min(9.0 / n_heads, 8.0 / n_layers), 0.28, 0.6))
    width = n_heads * cell + 2.2
    fig = new_figure(figsize=(width, n_layers * cell + 1.2), layout="constrained")
    ax = fig.add_subplot()
    frame = pd.DataFrame(
        grid,
        index=pd.RangeIndex(n_layers, name="layer"),
        columns=pd.RangeIndex(n_heads, name="head"),
    )
    higher = higher_is_better(metric)
    sns.heatmap(frame, ax=ax, cmap=score_cmap(metric), vmin=vmin, vmax=vmax, annot=annotate,
                fmt=".2f", annot_kws={"fontsize": 7}, linewidths=0.4, linecolor="white",
                cbar_kws={"label": metric_axis_label(metric) + "; darker = better"},
                square=False)  # fmt: skip
    cbar = ax.collections[0].colorbar
    if not higher:
        cbar.ax.invert_yaxis()  # the better (dark) end at the top, as for higher-is-better
    cbar.ax.set_title("better", fontsize=7)
    ax.invert_yaxis()  # layer 0 at the bottom, as in the best-fit grid
    ax.tick_params(axis="y", rotation=0, labelsize=7 if n_layers > 16 else 9)
    ax.tick_params(axis="x", labelsize=8)
    spec = metric_spec(metric)
    flat = grid.ravel()
    best = spec.best(flat) if spec is not None else int(np.nanargmin(flat))
    bl, bh = np.unravel_index(best, grid.shape)
    ax.add_patch(Rectangle((bh, bl), 1, 1, fill=False, edgecolor="#e4572e", linewidth=2.2,
                           linestyle="--" if fits is False else "-"))  # fmt: skip
    n_sent = int(sub["n_sentences"].max()) if "n_sentences" in sub.columns else None
    verdict = (
        f"no head fits (none beats its uniform baseline); closest: layer {bl}, head {bh}"
        if fits is False
        else f"best: layer {bl}, head {bh}"
    )
    title = (
        f"{model} · how well each head fits {pattern!r}\n"
        f"mean over {n_sent} sentences; {verdict} ({grid[bl, bh]:.3f})"
    )
    # the axes is the figure less the colour bar and the layer labels
    ax.set_title(fit_text(fig, title, width - 1.9, fontsize=10), fontsize=10)
    return finish(fig, save)


def plot_top_heads(
    top: pd.DataFrame,
    *,
    baseline: pd.DataFrame | None = None,
    model: str | None = None,
    metric: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Horizontal bars of the heads in a `classify.top_heads` table, best at the top (± std).

    Each bar carries a black tick at *that head's own* ``uniform`` score (the baseline the
    ``fits`` column is judged against), read from a ``baseline_score`` column of ``top`` or from
    the ``uniform`` rows of ``baseline`` (the score table ``top`` came from). Heads whose ``fits``
    is False are drawn pale and hatched; when none fits the title says "no head fits".

    Example:
        >>> viz.plot_top_heads(classify.top_heads(scores, "first_token", k=8), baseline=scores)
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
    width = 6.4
    fig = new_figure(figsize=(width, 0.38 * len(sub) + 1.7), layout="constrained")
    ax = fig.add_subplot()
    names = [f"L{int(r.layer)} H{int(r.head)}" for r in sub.itertuples()]
    std = sub["std"].to_numpy(float) if "std" in sub.columns else None
    color = pattern_color(pattern)
    bars = draw_bars(ax, names, sub["mean"].to_numpy(float), color, errors=std, metric=metric)
    fits = _fits(sub)
    handles: list[Patch | Line2D] = []
    if fits is not None and not fits.all():
        for bar, ok in zip(bars, fits):
            if not ok:
                bar.set_facecolor(_pale(color))
                bar.set_hatch("///")
        handles.append(Patch(facecolor=_pale(color), hatch="///", edgecolor="black",
                             linewidth=0.5, label="does not beat its uniform baseline"))  # fmt: skip
    base = _baseline_scores(sub, baseline)
    if base is not None and np.isfinite(base).any():
        for bar, b in zip(bars, base):
            if np.isfinite(b):
                y, h = bar.get_y(), bar.get_height()
                ax.plot([b, b], [y - 0.12 * h, y + 1.12 * h], color="black", linewidth=1.6,
                        solid_capstyle="butt", zorder=4, gid="baseline")  # fmt: skip
        ax.set_xlim(*metric_limits(metric, np.r_[ax.get_xlim(), base]))
        handles.append(Line2D([], [], color="black", linewidth=1.6,
                              label="this head's uniform-pattern score (baseline)"))  # fmt: skip
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize=7.5, frameon=False,
                   ncols=len(handles))  # fmt: skip
    n_sent = int(sub["n_sentences"].max()) if "n_sentences" in sub.columns and len(sub) else None
    ax.set_xlabel(metric_axis_label(metric, "mean ") + f" over {n_sent} sentences; bars: ± std")
    verdict = (
        f"no head fits {pattern!r} — closest {len(sub)} heads"
        if fits is not None and not (fits.any())
        else f"top {len(sub)} heads for {pattern!r}"
    )
    # the axes starts after the "L12 H3" labels
    ax.set_title(fit_text(fig, f"{model} · {verdict}", width - 1.2, fontsize=10), fontsize=10)
    return finish(fig, save)


def _fits(sub: pd.DataFrame) -> np.ndarray | None:
    """The ``fits`` verdicts as bools, or None when the table has none (no column, or all NA)."""
    if "fits" not in sub.columns:
        return None
    col = pd.array(sub["fits"], dtype="boolean")
    if col.isna().all():
        return None
    return col.fillna(False).to_numpy(bool)


def _pale(color: str) -> tuple[float, float, float]:
    import matplotlib.colors as mcolors

    r, g, b = mcolors.to_rgb(color)
    return (1 - 0.35 * (1 - r), 1 - 0.35 * (1 - g), 1 - 0.35 * (1 - b))


def _baseline_scores(sub: pd.DataFrame, baseline: pd.DataFrame | None) -> np.ndarray | None:
    """Each bar's head's ``uniform`` score: looked up in ``baseline`` when given, else ``top``'s
    own ``baseline_score`` column (`classify.top_heads` adds it) when it holds any value."""
    if baseline is None:
        if "baseline_score" in sub.columns:
            values = sub["baseline_score"].to_numpy(float)
            return values if np.isfinite(values).any() else None
        return None
    uni = baseline[baseline["pattern"].astype(str) == "uniform"]
    if uni.empty:
        raise ValueError(
            "baseline= has no 'uniform' rows, so there is no baseline score to draw. Fix: score "
            "'uniform' too (score_heads(records, [..., 'uniform'])) or leave baseline=None"
        )
    keys = [k for k in ("model", "layer", "head") if k in uni.columns and k in sub.columns]
    if "metric" in uni.columns and "metric" in sub.columns:
        uni = uni[uni["metric"].isin(sub["metric"].unique())]
    merged = sub[keys].merge(uni[[*keys, "mean"]].drop_duplicates(keys), on=keys, how="left")
    return merged["mean"].to_numpy(float)


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
