"""Figures for head statistics and generation traces.

`plot_head_type_grid` draws a `stats.head_stats` table in the visual language of the best-fit grid
(same cells, layer 0 at the bottom, legend with head counts, rule printed underneath; positional
types share the colour of the matching pattern, "mixed" is white like "no pattern").
`plot_layer_progression` shows how the heads' strategy changes with depth. The three trace
figures read an `interventions.GenerationTrace`. None of them computes a statistic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from attn_tools.viz.canvas import ATTENTION_CMAP, draw_matrix, finish, fit_text, new_figure
from attn_tools.viz.colors import NONE_COLOR, pattern_color, text_color_on
from attn_tools.viz.grid import _cell_patches, style_head_axes
from attn_tools.viz.tables import grid_shape, select_table

if TYPE_CHECKING:
    from attn_tools.interventions.trace import GenerationTrace

__all__ = [
    "head_type_color",
    "plot_first_token_share",
    "plot_generation_attention",
    "plot_head_type_grid",
    "plot_layer_progression",
    "plot_norm_growth",
]

_TYPE_PATTERN = {"previous-token": "previous_token", "first-token": "first_token", "self": "self"}
_TYPE_FIXED = {"focused": "#7b3294", "broad": "#bdbdbd", "mixed": NONE_COLOR}
# the statistic that earned each type, printed in its cell
_TYPE_VALUE = {
    "previous-token": "prev_mass", "first-token": "first_mass", "self": "self_mass",
    "focused": "focus", "broad": "entropy_norm", "mixed": "entropy_norm",
}  # fmt: skip


def head_type_color(head_type: str) -> str:
    """One colour per head type; a positional type has the colour of the matching pattern."""
    if head_type in _TYPE_PATTERN:
        return pattern_color(_TYPE_PATTERN[head_type])
    if head_type in _TYPE_FIXED:
        return _TYPE_FIXED[head_type]
    raise ValueError(f"unknown head type {head_type!r}. Fix: use one of stats.HEAD_TYPES.")


def _check_stats(stats: Any, fn: str) -> None:
    if not isinstance(stats, pd.DataFrame) or "head_type" not in stats.columns:
        cols = list(stats.columns) if isinstance(stats, pd.DataFrame) else type(stats).__name__
        raise ValueError(
            f"{fn} draws a stats.head_stats table (a 'head_type' column per head), got {cols}. "
            f"Fix: viz.{fn}(stats.head_stats(records))."
        )


def plot_head_type_grid(
    stats: pd.DataFrame,
    *,
    model: str | None = None,
    annotate: bool | None = None,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Each head coloured by its `head_type`, in the layout of the best-fit grid.

    Cells print the statistic that earned the type (the positional mass, ``focus`` for focused,
    normalised entropy for broad and mixed) when they are big enough (``annotate``).
    """
    from attn_tools.stats import HEAD_TYPES

    _check_stats(stats, "plot_head_type_grid")
    sub, model, _ = select_table(stats, model=model)
    n_layers, n_heads = grid_shape(sub)
    cell = float(np.clip(min(9.0 / n_heads, 8.0 / n_layers), 0.26, 0.62))
    types = sub["head_type"].astype(str)
    counts = types.value_counts()
    legend_width = 2.1
    full_title = title or f"What kind of head is each head of {model}? — head types"
    width = max(n_heads * cell + 0.9 + legend_width, min(0.105 * len(full_title) + 0.5, 12.0))
    cell = min(cell, (width - 0.9 - legend_width) / n_heads)
    height = n_layers * cell + 1.7
    if annotate is None:
        annotate = cell >= 0.45
    fig = new_figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    for row, kind in zip(sub.itertuples(), types):
        layer, head = int(row.layer), int(row.head)
        color = head_type_color(kind)
        for patch in _cell_patches(head, layer, [color]):
            patch.set_gid(f"cell-{layer}-{head}")
            ax.add_patch(patch)
        value = getattr(row, _TYPE_VALUE[kind])
        if annotate and np.isfinite(value):
            ax.text(head, layer, f"{float(value):.2f}", ha="center", va="center", fontsize=6.5,
                    color=text_color_on(color))  # fmt: skip
    for x in np.arange(-0.5, n_heads, 1.0):
        ax.axvline(x, color="#bbbbbb", linewidth=0.5)
    for y in np.arange(-0.5, n_layers, 1.0):
        ax.axhline(y, color="#bbbbbb", linewidth=0.5)
    style_head_axes(ax, n_layers, n_heads)
    handles = [
        Patch(facecolor=head_type_color(t), edgecolor="#666666", linewidth=0.5,
              label=f"{t} ({int(counts.get(t, 0))})")
        for t in HEAD_TYPES
    ]  # fmt: skip
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
              title="head type (number of heads)", title_fontsize=8, frameon=False)  # fmt: skip
    fig.suptitle(fit_text(fig, full_title, width - 0.3, fontsize=12, weight="bold"), fontsize=12,
                 fontweight="bold")  # fmt: skip
    caption = _caption(sub)
    fig.supxlabel(fit_text(fig, caption, width - 0.3, fontsize=7.5), x=0.01, ha="left",
                  fontsize=7.5, color="#333333")  # fmt: skip
    return finish(fig, save)


def _caption(sub: pd.DataFrame) -> str:
    parts = []
    if "type_rule" in sub.columns and len(sub):
        parts.append(f"Rule: {sub['type_rule'].iloc[0]}")
    if "drop_keys" in sub.columns and len(sub) and str(sub["drop_keys"].iloc[0]) != "none":
        parts.append(f"keys dropped: {sub['drop_keys'].iloc[0]}")
    if "n_sentences" in sub.columns and len(sub):
        parts.append(f"{int(sub['n_sentences'].max())} sentences")
    parts.append("cell value: the statistic that earned the type")
    return " · ".join(parts)


def plot_layer_progression(
    stats: pd.DataFrame,
    *,
    model: str | None = None,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """How the heads change with depth: share of each head type per layer (stacked bars), and
    normalised entropy and mean attended distance per layer (each head a dot, the mean a line)."""
    from attn_tools.stats import HEAD_TYPES, type_shares

    _check_stats(stats, "plot_layer_progression")
    sub, model, _ = select_table(stats, model=model)
    shares = type_shares(sub)
    layers = shares["layer"].to_numpy()
    fig = new_figure(figsize=(13, 3.8), layout="constrained")
    ax_type, ax_ent, ax_dist = fig.subplots(1, 3)
    bottom = np.zeros(len(layers))
    for t in HEAD_TYPES:
        values = shares[t].to_numpy()
        ax_type.bar(layers, values, bottom=bottom, color=head_type_color(t), edgecolor="#666666",
                    linewidth=0.4, label=t, width=0.85)  # fmt: skip
        bottom += values
    ax_type.set_ylim(0, 1)
    ax_type.set_xlabel("layer")
    ax_type.set_ylabel("share of the layer's heads")
    ax_type.set_title("head types by layer", fontsize=10)
    ax_type.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    for ax, column, label in (
        (ax_ent, "entropy_norm", "normalised entropy (1 = uniform)"),
        (ax_dist, "distance", "mean attended distance (tokens)"),
    ):
        ax.scatter(sub["layer"], sub[column], s=10, color="#9ecae1", label="one head")
        mean = sub.groupby("layer")[column].mean()
        ax.plot(mean.index, mean.to_numpy(), color="#08519c", marker="o", markersize=3,
                label="layer mean")  # fmt: skip
        ax.set_xlabel("layer")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, frameon=False)
    ax_ent.set_ylim(0, 1.02)
    ax_ent.set_title("how spread out the rows are", fontsize=10)
    ax_dist.set_title("how far heads look", fontsize=10)
    full_title = title or f"{model}: attention strategy by depth"
    fig.suptitle(fit_text(fig, full_title, 12.5, fontsize=12, weight="bold"), fontsize=12,
                 fontweight="bold")  # fmt: skip
    return finish(fig, save)


# ----------------------------------------------------------------------------- generation traces


def plot_norm_growth(
    trace: GenerationTrace, *, title: str | None = None, save: str | Path | None = None
) -> Figure:
    """Hidden-state norm of each step's newest token by layer, one line per step (darker =
    later); step 0 shows the last prompt token."""
    norms = trace.norms()
    last = norms.groupby("step")["position"].transform("max") == norms["position"]
    newest = norms[last]
    fig = new_figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    n_steps = int(newest["step"].max()) + 1
    cmap = _cmap("viridis_r")
    for step, rows in newest.groupby("step"):
        color = cmap(0.15 + 0.8 * step / max(n_steps - 1, 1))
        token = rows["position"].iloc[0]
        ax.plot(rows["layer"], rows["norm"], marker="o", markersize=3, color=color,
                label=f"step {step}: {trace.labels[token]!r}")  # fmt: skip
    ax.set_xlabel("layer (0 = embeddings, l = after block l-1)")
    ax.set_ylabel("hidden-state L2 norm")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"{trace.model}: residual norm of the newest token", fontsize=11)
    return finish(fig, save)


def plot_generation_attention(
    trace: GenerationTrace,
    layer: int,
    head: int,
    *,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """One head's attention over the whole generation (queries on y, keys on x): the prompt
    block, then one new row per generated token; a line marks where generation starts."""
    matrix = trace.attention_matrix(layer, head)
    n = trace.n_tokens
    side = float(np.clip(0.3 * n + 1.5, 4.0, 10.0))
    fig = new_figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    im = draw_matrix(ax, matrix, list(trace.labels), cmap=ATTENTION_CMAP, vmax=1.0)
    edge = trace.n_prompt - 0.5
    ax.axhline(edge, color="#d62728", linewidth=1.0)
    ax.axvline(edge, color="#d62728", linewidth=1.0, linestyle=":")
    fig.colorbar(im, ax=ax, shrink=0.7, label="attention weight")
    ax.set_title(
        title
        or f"{trace.model} L{layer} H{head}: each new token's attention (red: generation starts)",
        fontsize=10,
    )
    return finish(fig, save)


def plot_first_token_share(
    trace: GenerationTrace, *, title: str | None = None, save: str | Path | None = None
) -> Figure:
    """Mean attention to position 0 over the heads of each layer (y) at each step (x), for the
    query that predicts the next token."""
    share = trace.first_token_share()
    grid = share.pivot_table(index="layer", columns="step", values="share", aggfunc="mean")
    fig = new_figure(figsize=(max(4.5, 0.5 * grid.shape[1] + 2.5), 4.5), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(grid.to_numpy(), cmap=ATTENTION_CMAP, vmin=0, vmax=1, origin="lower",
                   aspect="auto", interpolation="nearest")  # fmt: skip
    steps = list(grid.columns)
    ax.set_xticks(range(len(steps)))
    positions = share.groupby("step")["position"].first()
    ax.set_xticklabels([f"{s}\n{trace.labels[int(positions[s])]!s:.8}" for s in steps], fontsize=7)
    ax.set_xlabel("step (and the token that attends)")
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="mean share to the first token")
    ax.set_title(title or f"{trace.model}: first-token share by layer over steps", fontsize=10)
    return finish(fig, save)


def _cmap(name: str) -> Any:
    from matplotlib import colormaps

    return colormaps[name]
