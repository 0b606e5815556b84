"""The best-fit grid: every head of a model coloured by the pattern it fits best."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Polygon, Rectangle

from attn_tools.viz.canvas import finish, fit_text, new_figure
from attn_tools.viz.colors import NONE_COLOR, NONE_LABEL, pattern_color, text_color_on
from attn_tools.viz.tables import grid_shape, select_table

__all__ = ["MAX_TIED_COLORS", "best_fit_title", "head_labels", "plot_best_fit_grid"]

MAX_TIED_COLORS = 4  # a cell shows at most this many tied patterns (the best ones)


def _perimeter_point(cx: float, cy: float, w: float, h: float, angle: float) -> tuple[float, float]:
    """Where a ray from the cell centre at ``angle`` (radians) leaves a ``w × h`` cell."""
    dx, dy = math.cos(angle) * w / 2, math.sin(angle) * h / 2
    scale = 1.0 / max(abs(math.cos(angle)), abs(math.sin(angle)))
    return cx + dx * scale, cy + dy * scale


def _wedge(
    cx: float, cy: float, w: float, h: float, a0: float, a1: float
) -> list[tuple[float, float]]:
    """Polygon of the part of a cell between two angles seen from its centre (a0 < a1)."""
    pts = [(cx, cy), _perimeter_point(cx, cy, w, h, a0)]
    for corner in (math.pi / 4, 3 * math.pi / 4, 5 * math.pi / 4, 7 * math.pi / 4):
        for turn in (0.0, 2 * math.pi, 4 * math.pi):
            c = corner + turn
            if a0 < c < a1:
                pts.append(_perimeter_point(cx, cy, w, h, c))
    pts.append(_perimeter_point(cx, cy, w, h, a1))
    return pts


def _cell_patches(x: float, y: float, colors: Sequence[str]) -> list[Polygon | Rectangle]:
    """One unit cell centred at (x, y): one colour, or wedges split along the diagonals.

    Two colours split the cell along its top-left → bottom-right diagonal (first colour at the
    top right, second at the bottom left); ``k > 2`` colours become ``k`` equal wedges.
    """
    if len(colors) <= 1:
        face = colors[0] if colors else NONE_COLOR
        return [Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=face, edgecolor="none")]
    k = len(colors)
    start = -math.pi / 4 if k == 2 else math.pi / 2
    out: list[Polygon | Rectangle] = []
    for i, c in enumerate(colors):
        a0 = start + 2 * math.pi * i / k
        a1 = start + 2 * math.pi * (i + 1) / k
        out.append(
            Polygon(_wedge(x, y, 1.0, 1.0, a0, a1), closed=True, facecolor=c, edgecolor="none")
        )
    return out


def style_head_axes(ax: Any, n_layers: int, n_heads: int) -> None:
    """The layers × heads axes every head grid shares: one cell per head, layer 0 at the bottom."""
    ax.set_xlim(-0.5, n_heads - 0.5)
    ax.set_ylim(-0.5, n_layers - 0.5)
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.tick_params(labelsize=7 if n_layers > 16 else 9, length=0)
    ax.set_xlabel("head")
    ax.set_ylabel("layer (0 = nearest the input)")
    for spine in ax.spines.values():
        spine.set_visible(False)


def head_labels(row: Any) -> tuple[str, ...]:
    """The patterns a best-fit row labels its head with: the label, then the tied ones (none for
    ``"none"``). ``tied`` may be a tuple or, after a CSV round trip, ``"a|b"`` text."""
    label = str(row.label)
    if label == NONE_LABEL:
        return ()
    tied = getattr(row, "tied", None)
    if tied is None or (isinstance(tied, float) and math.isnan(tied)):
        tied = ()
    if isinstance(tied, str):
        tied = tuple(t for t in re.split(r"[|,]", tied) if t)
    names = [label, *[str(t) for t in tied if str(t) != label]]
    return tuple(dict.fromkeys(names))


def best_fit_title(model: str) -> str:
    """The poster title of the best-fit grid."""
    return f"What is {model} doing? — best-fit patterns across attention heads"


def _check_best_fit(table: pd.DataFrame) -> None:
    if "label" not in table.columns:
        raise ValueError(
            "plot_best_fit_grid draws a classify.best_fit table (a 'label' column per head), got "
            f"columns {list(table.columns)}. Fix: viz.plot_best_fit_grid(classify.best_fit(scores"
            ", threshold=...)), or report.default_best_fit(scores) when the table has no "
            "'uniform' baseline."
        )


def plot_best_fit_grid(
    best: pd.DataFrame,
    *,
    model: str | None = None,
    n_layers: int | None = None,
    n_heads: int | None = None,
    annotate: bool | None = None,
    highlight: tuple[int, int] | None = None,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """The poster figure: each head coloured by the pattern it fits best.

    Args:
        best: a `classify.best_fit` table (one row per head with ``label``, ``tied``,
            ``best_score``; the rule in ``rule`` or ``attrs["rule"]``).
        model: which model, when the table holds several.
        n_layers, n_heads: grid size (default: from the table).
        annotate: print each head's best score in its cell (default: when cells are big enough).
        highlight: ``(layer, head)`` to outline (the explorer moves it; its gid is "highlight").
        title: replaces the default "What is <model> doing? — ..." title.

    A cell is white when the head fits no pattern under the rule, split diagonally when two
    patterns tie (more than two: equal wedges). Layer 0 is at the bottom. The rule (threshold,
    baseline) is printed under the grid; the legend counts heads per pattern. Each cell's patches
    carry the gid ``cell-<layer>-<head>``.
    """
    _check_best_fit(best)
    sub, model, _ = select_table(best, model=model)
    n_layers, n_heads = grid_shape(sub, n_layers, n_heads)
    cell = float(np.clip(min(9.0 / n_heads, 8.0 / n_layers), 0.26, 0.62))
    full_title = title or best_fit_title(model)
    labels_seen: dict[str, int] = {}
    for row in sub.itertuples():
        for name in head_labels(row)[:MAX_TIED_COLORS]:
            labels_seen[name] = labels_seen.get(name, 0) + 1
    legend_names = sorted(labels_seen, key=lambda nm: (-labels_seen[nm], nm))
    # patterns that predicted exactly the same thing on these sentences share one entry
    aliases = (best.attrs.get("aliases") or {}).get(str(model), {})
    alias_lines = [", ".join(aliases[n]) for n in legend_names if aliases.get(n)]
    legend_width = 0.3 + 0.085 * max(
        [len(n) + 5 for n in legend_names] + [len(a) + 7 for a in alias_lines] + [18]
    )
    # a long title widens the figure up to 12 in, then wraps (a 120-character model id would
    # otherwise ask for a 15 in poster)
    width = max(n_heads * cell + 0.9 + legend_width, min(0.105 * len(full_title) + 0.5, 12.0))
    # cells stay square: shrink them if the title made the figure wider than the grid needs
    cell = min(cell, (width - 0.9 - legend_width) / n_heads)
    height = n_layers * cell + 1.7
    if annotate is None:
        annotate = cell >= 0.45
    fig = new_figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    for row in sub.itertuples():
        layer, head = int(row.layer), int(row.head)
        names = head_labels(row)
        shown = names[:MAX_TIED_COLORS]
        colors = [pattern_color(nm) for nm in shown] or [NONE_COLOR]
        for patch in _cell_patches(head, layer, colors):
            patch.set_gid(f"cell-{layer}-{head}")
            ax.add_patch(patch)
        if len(names) > len(shown):
            ax.text(head + 0.45, layer - 0.45, f"+{len(names) - len(shown)}", ha="right",
                    va="bottom", fontsize=5.5, color="black", zorder=4)  # fmt: skip
        if annotate and names and "best_score" in sub.columns:
            ax.text(head, layer, f"{float(row.best_score):.2f}", ha="center", va="center",
                    fontsize=6.5, color=text_color_on(colors[0]))  # fmt: skip
    # grid lines so white cells stay visible
    for x in np.arange(-0.5, n_heads, 1.0):
        ax.axvline(x, color="#bbbbbb", linewidth=0.5)
    for y in np.arange(-0.5, n_layers, 1.0):
        ax.axhline(y, color="#bbbbbb", linewidth=0.5)
    if highlight is not None:
        hl, hh = highlight
        ax.add_patch(Rectangle((hh - 0.5, hl - 0.5), 1, 1, fill=False, edgecolor="black",
                               linewidth=2.5, zorder=5, gid="highlight"))  # fmt: skip
    style_head_axes(ax, n_layers, n_heads)
    handles = [
        Patch(
            facecolor=pattern_color(nm),
            edgecolor="#666666",
            linewidth=0.5,
            label=f"{nm} ({labels_seen[nm]})"
            + (f"\n  = {', '.join(aliases[nm])}" if aliases.get(nm) else ""),
        )
        for nm in legend_names
    ]
    n_none = int((sub["label"].astype(str) == NONE_LABEL).sum())
    handles.append(Patch(facecolor=NONE_COLOR, edgecolor="#666666", linewidth=0.5,
                         label=f"no pattern ({n_none})"))  # fmt: skip
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
              title="best fit (number of heads)", title_fontsize=8, frameon=False)  # fmt: skip
    fig.suptitle(fit_text(fig, full_title, width - 0.3, fontsize=12, weight="bold"), fontsize=12,
                 fontweight="bold")  # fmt: skip
    # the caption is a figure-level x label, so constrained layout makes room for all its lines
    caption = fit_text(fig, _rule_text(best, sub), width - 0.3, fontsize=7.5)
    fig.supxlabel(caption, x=0.01, ha="left", fontsize=7.5, color="#333333")
    return finish(fig, save)


def _rule_text(best: pd.DataFrame, sub: pd.DataFrame) -> str:
    rule = best.attrs.get("rule")
    if not rule and "rule" in sub.columns and len(sub):
        rule = str(sub["rule"].iloc[0])
    parts = [f"Rule: {rule}" if rule else "Rule: the best mean score wins"]
    interval = _interval_text(best, sub)
    if interval:
        parts.append(interval)
    n_tied = sum(1 for row in sub.itertuples() if len(head_labels(row)) > 1)
    if n_tied:
        parts.append(
            f"{n_tied} cell(s) split: patterns tied within tolerance (counted for each in the legend)"
        )
    return " · ".join(parts)


def _interval_text(best: pd.DataFrame, sub: pd.DataFrame) -> str:
    """The calibrated rule's intervals in one line: the labelled heads' effects and intervals.

    Empty for a table without them (the fast rule). The interval level comes from
    ``attrs["ci"]``; after a CSV round trip (no attrs) it is called "the interval".
    """
    if not {"effect", "ci_low", "ci_high"} <= set(sub.columns):
        return ""
    labelled = sub[sub["label"].astype(str) != NONE_LABEL]
    ci = best.attrs.get("ci")
    level = f"{float(ci):.0%} interval" if ci else "interval"
    if labelled.empty:
        return f"Calibrated: no head's {level} of its gain over the baseline lies above the cut-off"
    eff = labelled["effect"].astype(float)
    low = labelled["ci_low"].astype(float)
    high = labelled["ci_high"].astype(float)
    weakest = labelled.iloc[int(np.nanargmin(low.to_numpy()))]
    return (
        f"Calibrated effect (gain over the harder baseline) of the {len(labelled)} labelled "
        f"heads: median {np.nanmedian(eff):.3f}, median {level} [{np.nanmedian(low):.3f}, "
        f"{np.nanmedian(high):.3f}]; weakest L{int(weakest['layer'])} H{int(weakest['head'])} "
        f"{float(weakest['effect']):.3f} [{float(weakest['ci_low']):.3f}, "
        f"{float(weakest['ci_high']):.3f}]"
    )
