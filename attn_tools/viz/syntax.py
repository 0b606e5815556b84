"""Figures for `attn_tools.syntax`: the per-relation syntax table and the map of heads.

Both only draw tables computed there: `plot_syntax_table` takes `syntax.syntax_table`'s output
(Clark et al. 2019, Figure 5: the best head per relation against the fixed-offset baseline),
`plot_head_embedding` takes `syntax.embed_heads`'s output (their Figure 6: heads placed by how
alike their attention is), coloured by layer and, optionally, by any per-head label column
(a head type from `attn_tools.stats`, a cluster from `syntax.cluster_heads`, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from attn_tools.viz.canvas import finish, fit_text, new_figure

__all__ = ["plot_head_embedding", "plot_syntax_table"]

_HEAD_COLOR = "#3b6ea5"
_BASELINE_COLOR = "#bdbdbd"
_UNLABELLED = "#dddddd"
_ARROW = {"dep->head": "→", "head->dep": "←"}


def _need(table: pd.DataFrame, columns: tuple[str, ...], what: str, fix: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what} is {type(table).__name__}, not a DataFrame. Fix: {fix}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing}. Fix: {fix}")


def _model_title(fig: Figure, table: pd.DataFrame, what: str, width_in: float) -> str:
    models = list(dict.fromkeys(table["model"].astype(str))) if "model" in table else []
    text = f"{what} — {', '.join(models)}" if models else what
    return fit_text(fig, text, width_in, fontsize=11, weight="bold")


def plot_syntax_table(
    table: pd.DataFrame,
    *,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Bars per relation: the best head's accuracy next to the best fixed offset's, with CIs.

    Each relation gets two bars (best head, offset baseline) with their bootstrap intervals as
    whiskers; above the head's bar its layer-head (``L2-H8``) and direction (``→`` dependent
    attends to its head, ``←`` the transposed mode); under the relation name its arc count and
    the baseline's offset ``k``.

    Args:
        table: `attn_tools.syntax.syntax_table` output (one model).
        title: the figure title (default: the model name).
        save: a path to write the figure to (see `attn_tools.viz.save_figure`).
    """
    cols = ("relation", "n_arcs", "layer", "head", "direction", "accuracy", "accuracy_low",
            "accuracy_high", "offset", "baseline", "baseline_low", "baseline_high")  # fmt: skip
    _need(table, cols, "table", "pass attn_tools.syntax.syntax_table(records).")
    if table.empty:
        raise ValueError(
            "the syntax table is empty (no relation has min_arcs arcs). "
            "Fix: use more sentences or a smaller min_arcs."
        )
    if "model" in table and table["model"].nunique() > 1:
        raise ValueError("the table holds several models. Fix: plot one model at a time.")
    n = len(table)
    fig = new_figure(figsize=(max(5.0, 0.75 * n + 1.5), 4.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(n)
    width = 0.38
    acc = table["accuracy"].to_numpy(float)
    base = table["baseline"].to_numpy(float)

    def whiskers(mid: np.ndarray, low: str, high: str) -> np.ndarray:
        lo, hi = table[low].to_numpy(float), table[high].to_numpy(float)
        return np.clip(np.vstack([mid - lo, hi - mid]), 0.0, None)

    kw = {"edgecolor": "black", "linewidth": 0.5, "capsize": 2,
          "error_kw": {"elinewidth": 0.8, "ecolor": "#333333"}}  # fmt: skip
    ax.bar(x - width / 2, acc, width, yerr=whiskers(acc, "accuracy_low", "accuracy_high"),
           color=_HEAD_COLOR, label="best head", **kw)  # fmt: skip
    ax.bar(x + width / 2, base, width, yerr=whiskers(base, "baseline_low", "baseline_high"),
           color=_BASELINE_COLOR, label="best fixed offset", **kw)  # fmt: skip
    for i, row in enumerate(table.itertuples(index=False)):
        top = max(float(row.accuracy_high), float(row.accuracy))
        arrow = _ARROW.get(str(row.direction), "")
        ax.text(i - width / 2, min(top + 0.02, 1.06), f"L{row.layer}-H{row.head}{arrow}",
                ha="center", va="bottom", fontsize=7, rotation=90)  # fmt: skip
    labels = [
        f"{r}\n{int(k)} arcs\nk={int(o):+d}"
        for r, k, o in zip(table["relation"], table["n_arcs"], table["offset"])
    ]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("accuracy (share of arcs)")
    ax.set_xlabel("relation (spaCy label), its arcs and the best offset k")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    handles = [
        Line2D([], [], color=_HEAD_COLOR, lw=6, label="best head (L-H, → dep→head, ← head→dep)"),
        Line2D([], [], color=_BASELINE_COLOR, lw=6, label="best fixed offset (±k words)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False, ncol=2)
    ci = float(table["ci"].iloc[0]) if "ci" in table else None
    what = title or "Dependency accuracy per relation"
    if ci is not None and title is None:
        what += f" ({ci:.0%} bootstrap intervals over sentences)"
    ax.set_title(_model_title(fig, table, what, fig.get_figwidth() - 0.3), fontsize=11,
                 fontweight="bold", loc="left")  # fmt: skip
    return finish(fig, save)


def plot_head_embedding(
    embedding: pd.DataFrame,
    labels: pd.DataFrame | None = None,
    *,
    label_column: str = "head_type",
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """The heads on their 2-D map, coloured by layer and, with ``labels``, by a label column.

    Args:
        embedding: `attn_tools.syntax.embed_heads` output of a `HeadDistances` (columns
            ``layer, head, mds1, mds2``).
        labels: any table with ``layer``, ``head`` and ``label_column`` (one row per head; a
            head without a row is drawn as "unlabelled"), e.g. ``cluster_heads(...)`` with
            ``label_column="cluster"`` or a head-type table.
        label_column: the column of ``labels`` to colour by.
        title: the figure title (default: the model name); ``save``: a path to write to.
    """
    _need(embedding, ("layer", "head", "mds1", "mds2"), "embedding",
          "pass attn_tools.syntax.embed_heads(head_distances(records)).")  # fmt: skip
    panels = 1
    merged = embedding
    if labels is not None:
        _need(labels, ("layer", "head", label_column), "labels",
              f"pass a table with layer, head and {label_column!r} columns (label_column=...).")  # fmt: skip
        if labels.duplicated(["layer", "head"]).any():
            raise ValueError(
                "labels has several rows for one (layer, head). Fix: pass one model's table, "
                "one row per head."
            )
        merged = embedding.merge(
            labels[["layer", "head", label_column]], on=["layer", "head"], how="left"
        )
        panels = 2
    fig = new_figure(figsize=(4.6 * panels + 0.6, 4.4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    xy = merged[["mds1", "mds2"]].to_numpy(float)
    layers = merged["layer"].to_numpy(int)
    n_layers = int(layers.max()) + 1
    ax = axes[0]
    points = ax.scatter(xy[:, 0], xy[:, 1], c=layers, cmap="viridis", vmin=-0.5,
                        vmax=n_layers - 0.5, s=26, edgecolor="black", linewidth=0.3)  # fmt: skip
    bar = fig.colorbar(points, ax=ax, shrink=0.85)
    bar.set_label("layer")
    bar.set_ticks(np.unique(np.linspace(0, n_layers - 1, min(n_layers, 7)).round().astype(int)))
    ax.set_title("by layer", fontsize=9)
    if panels == 2:
        ax2 = axes[1]
        values = merged[label_column]
        known = values.dropna()
        names = list(pd.unique(known))
        import matplotlib

        palette = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
        for i, name in enumerate(names):
            part = (values == name).to_numpy()
            ax2.scatter(xy[part, 0], xy[part, 1], s=26, color=palette(i % palette.N),
                        edgecolor="black", linewidth=0.3, label=f"{name} ({part.sum()})")  # fmt: skip
        missing = values.isna().to_numpy()
        if missing.any():
            ax2.scatter(xy[missing, 0], xy[missing, 1], s=26, color=_UNLABELLED,
                        edgecolor="black", linewidth=0.3, label=f"unlabelled ({missing.sum()})")  # fmt: skip
        ax2.legend(fontsize=7, frameon=False, loc="best", title=label_column, title_fontsize=8)
        ax2.set_title(f"by {label_column}", fontsize=9)
    for a in axes:
        a.set_xlabel("MDS 1")
        a.set_ylabel("MDS 2")
        a.set_aspect("equal", adjustable="datalim")
        a.grid(alpha=0.25)
    explained = float(merged["explained"].iloc[0]) if "explained" in merged else float("nan")
    what = title or "Heads placed by Jensen–Shannon distance (classical MDS)"
    if np.isfinite(explained) and title is None:
        what += f"; the 2 axes hold {explained:.0%} of the variance"
    fig.suptitle(_model_title(fig, merged, what, fig.get_figwidth() - 0.3), fontsize=11,
                 fontweight="bold")  # fmt: skip
    return finish(fig, save)
