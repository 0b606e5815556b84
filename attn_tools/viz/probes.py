"""Figures for the probe tables of `attn_tools.probes`: effect maps, volcano plots, a summary.

Layer × head maps put layer 0 at the bottom (as the best-fit grid does); effects use a diverging
colormap centred at 0 with symmetric limits, so colour intensity compares across heads. Heads
with BH q < α are outlined in black; those that also replicated on the held-out half get a
thicker outline and a dot. These functions draw results; they compute no statistic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from attn_tools.viz.canvas import finish, new_figure

__all__ = ["plot_probe_map", "plot_probe_summary", "plot_volcano"]

_EFFECT_CMAP = "RdBu_r"
_LABELS = {
    "sentiment": "Pearson r (keyword attention vs positive label)",
    "bias": "mean Δ attention (his − her)",
    "instruction": "mean Δ attention (directive − prose)",
}


def _grid(table: pd.DataFrame, column: str) -> np.ndarray:
    n_layers = int(table.layer.max()) + 1
    n_heads = int(table["head"].max()) + 1
    grid = np.full((n_layers, n_heads), np.nan)
    grid[table.layer.to_numpy(int), table["head"].to_numpy(int)] = table[column].to_numpy(float)
    return grid


def _check_table(table: object, needs: tuple[str, ...]) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame) or not set(needs) <= set(table.columns):
        raise ValueError(
            f"expected a probe table with columns {list(needs)}, got "
            f"{type(table).__name__} with {list(getattr(table, 'columns', []))[:8]}. "
            "Fix: pass the DataFrame from sentiment_heads / bias_heads / instruction_heads."
        )
    if table.empty:
        raise ValueError("the probe table is empty. Fix: run the probe on at least 3 texts.")
    return table


def _draw_map(ax: Axes, table: pd.DataFrame, alpha: float, title: str, label: str) -> None:
    effect = _grid(table, "effect")
    limit = float(np.nanmax(np.abs(effect))) or 1.0
    image = ax.imshow(
        effect, cmap=_EFFECT_CMAP, vmin=-limit, vmax=limit, origin="lower", aspect="auto"
    )
    q = _grid(table, "q_value")
    rep = _grid(table, "replicated") if "replicated" in table else np.zeros_like(q)
    for layer, head in zip(*np.nonzero(q < alpha)):
        strong = bool(rep[layer, head])
        ax.add_patch(
            Rectangle(
                (head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="black",
                linewidth=2.2 if strong else 0.9,
            )
        )  # fmt: skip
        if strong:
            ax.plot(head, layer, marker="o", markersize=2.5, color="black")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(effect.shape[1]))
    ax.set_yticks(range(effect.shape[0]))
    ax.tick_params(labelsize=7)
    n_sig = int(np.nansum(q < alpha))
    ax.set_title(f"{title}\n{n_sig} heads with q < {alpha:g} (thick: replicated)", fontsize=9)
    cbar = ax.figure.colorbar(image, ax=ax, shrink=0.85)
    cbar.set_label(label, fontsize=8)


def plot_probe_map(
    table: pd.DataFrame,
    *,
    alpha: float = 0.05,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Layer × head map of ``effect``; heads with q < ``alpha`` outlined (thick = replicated)."""
    table = _check_table(table, ("layer", "head", "effect", "q_value"))
    probe = str(table.probe.iloc[0]) if "probe" in table else "probe"
    fig = new_figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    name = title or f"{probe} · {table.model.iloc[0] if 'model' in table else ''}"
    _draw_map(ax, table, alpha, name, _LABELS.get(probe, "effect"))
    return finish(fig, save)


def plot_volcano(
    table: pd.DataFrame,
    *,
    alpha: float = 0.05,
    label_top: int = 5,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Effect (x) against −log10 q (y), one point per head; the α line dashed, top heads named.

    q-values are floored by the permutation count (q ≥ 1 / (P + 1)), so the highest points form
    a flat ceiling: more permutations lift it, they do not change which heads pass α.
    """
    table = _check_table(table, ("layer", "head", "effect", "q_value"))
    fig = new_figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.add_subplot()
    y = -np.log10(table.q_value.to_numpy(float))
    sig = table.q_value.to_numpy(float) < alpha
    rep = table.replicated.to_numpy(bool) if "replicated" in table else np.zeros_like(sig)
    ax.scatter(table.effect[~sig], y[~sig], s=12, color="#9e9e9e", label="q ≥ α")
    ax.scatter(table.effect[sig & ~rep], y[sig & ~rep], s=16, color="#f28e2b", label="q < α")
    ax.scatter(table.effect[rep], y[rep], s=22, color="#c0392b", label="q < α, replicated")
    ax.axhline(-np.log10(alpha), linestyle="--", color="black", linewidth=0.8)
    ax.axvline(0.0, color="black", linewidth=0.5)
    # strongest evidence first, ties (the permutation ceiling) broken by the larger |effect|
    order = np.lexsort((-np.abs(table.effect.to_numpy(float)), -y))[:label_top]
    for i in order:
        row = table.iloc[int(i)]
        ax.annotate(
            f"L{int(row.layer)}H{int(row['head'])}", (row.effect, y[i]), fontsize=7,
            xytext=(3, 2), textcoords="offset points",
        )  # fmt: skip
    probe = str(table.probe.iloc[0]) if "probe" in table else "probe"
    ax.set_xlabel(_LABELS.get(probe, "effect"))
    ax.set_ylabel("−log10 q (BH)")
    ax.set_title(title or f"{probe}: effect vs significance", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return finish(fig, save)


def plot_probe_summary(
    entropy: pd.DataFrame | None,
    tables: Mapping[str, pd.DataFrame],
    *,
    alpha: float = 0.05,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """The 4-panel summary: mean attention entropy per head, then the sentiment, bias and
    instruction effect maps (a probe that was skipped leaves its panel with a note).

    Args:
        entropy: `attn_tools.probes.results.head_entropy` output (``layer, head,
            entropy_bits``), or None.
        tables: probe name → probe table.
    """
    fig = new_figure(figsize=(11.0, 8.0), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    if entropy is not None:
        grid = _grid(entropy.rename(columns={"entropy_bits": "effect"}), "effect")
        image = axes[0].imshow(grid, cmap="viridis", origin="lower", aspect="auto")
        axes[0].set_title("mean attention entropy per head (bits)", fontsize=9)
        axes[0].set_xlabel("head")
        axes[0].set_ylabel("layer")
        fig.colorbar(image, ax=axes[0], shrink=0.85).set_label("bits", fontsize=8)
    else:
        axes[0].text(0.5, 0.5, "entropy not computed", ha="center", va="center")
        axes[0].set_axis_off()
    for ax, probe in zip(axes[1:], ("sentiment", "bias", "instruction")):
        table = tables.get(probe)
        if table is None:
            ax.text(0.5, 0.5, f"{probe}: skipped", ha="center", va="center")
            ax.set_axis_off()
            continue
        _draw_map(ax, _check_table(table, ("layer", "head", "effect", "q_value")), alpha,
                  probe, _LABELS[probe])  # fmt: skip
    if title:
        fig.suptitle(title)
    return finish(fig, save)
