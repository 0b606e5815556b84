"""Figures for the causal side: ablation matrices, attribution vs exact, explains_head, logit lens.

Every function takes a table computed by `attn_tools.interventions` (never computes one itself)
and returns a `NotebookFigure`; ``save=`` writes it (see `save_figure`). Layer × head maps put
layer 0 at the bottom, like the best-fit grid. Effects are diverging around 0 (red = removing or
replacing the head hurts, blue = it helps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm

from attn_tools.viz.canvas import NotebookFigure, finish, fit_text, new_figure

__all__ = ["plot_ablation_matrix", "plot_attribution", "plot_explains", "plot_logit_lens"]

_EFFECT_CMAP = "RdBu_r"


def _require(table: pd.DataFrame, columns: set[str], what: str, fix: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what} needs a DataFrame, got {type(table).__name__}. Fix: {fix}.")
    missing = columns - set(table.columns)
    if missing:
        raise ValueError(f"{what}: the table lacks columns {sorted(missing)}. Fix: {fix}.")


def _matrix(table: pd.DataFrame, value: str) -> np.ndarray:
    """``[layers, heads]`` from a long table (NaN where a head is missing)."""
    grid = table.pivot_table(index="layer", columns="head", values=value, aggfunc="mean")
    layers = np.arange(int(table.layer.max()) + 1)
    heads = np.arange(int(table["head"].max()) + 1)
    return grid.reindex(index=layers, columns=heads).to_numpy(dtype=float)


def _effect_map(ax: Axes, grid: np.ndarray, title: str, limit: float, label: str) -> None:
    norm = TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    image = ax.imshow(grid, origin="lower", cmap=_EFFECT_CMAP, norm=norm, aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    layers, heads = grid.shape
    ax.set_xticks(range(heads))
    ax.set_yticks(range(0, layers, max(1, layers // 10)))
    ax.figure.colorbar(image, ax=ax, label=label, shrink=0.85)


def _title(fig: NotebookFigure, text: str, share: float = 0.9) -> str:
    """``text`` wrapped to ``share`` of the figure's width at the titles' 10 pt."""
    return fit_text(fig, text, share * fig.get_figwidth(), fontsize=10)


def _limit(*grids: np.ndarray) -> float:
    finite = np.concatenate([g[np.isfinite(g)].ravel() for g in grids])
    top = float(np.abs(finite).max()) if finite.size else 1.0
    return top if top > 0 else 1.0


def _measure_label(table: pd.DataFrame) -> str:
    measure = str(table.measure.iloc[0]) if "measure" in table.columns else ""
    return {
        "delta_next_token_ce_nats": "ΔLoss (next-token CE, nats)",
        "one_minus_cosine_final_hidden": "1 − cos(final hidden, clean)",
    }.get(measure, "effect")


def plot_ablation_matrix(
    table: pd.DataFrame, *, title: str | None = None, save: str | Path | None = None
) -> NotebookFigure:
    """The layers × heads ablation effect of an `ablate_heads` table."""
    _require(table, {"layer", "head", "delta_loss"}, "plot_ablation_matrix", "pass ablate_heads()")
    grid = _matrix(table, "delta_loss")
    fig = new_figure(figsize=(1.2 + 0.38 * grid.shape[1], 1.4 + 0.2 * grid.shape[0]))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    method = str(table.method.iloc[0]) if "method" in table.columns else ""
    heading = title or f"{method} ablation of each head".strip()
    _effect_map(ax, grid, _title(fig, heading, 0.75), _limit(grid), _measure_label(table))
    return finish(fig, save)


def plot_attribution(
    table: pd.DataFrame, *, title: str | None = None, save: str | Path | None = None
) -> NotebookFigure:
    """Exact ablation vs attribution estimate: two layer × head maps and a scatter with ρ.

    ``table`` is `compare_attribution` output (``exact``, ``estimate``, ``spearman_rho``).
    """
    _require(
        table,
        {"layer", "head", "exact", "estimate", "spearman_rho"},
        "plot_attribution",
        "pass compare_attribution()",
    )
    exact, estimate = _matrix(table, "exact"), _matrix(table, "estimate")
    limit = _limit(exact, estimate)
    fig = new_figure(figsize=(12, 1.8 + 0.16 * exact.shape[0]))
    fig.set_layout_engine("constrained")
    axes = fig.subplots(1, 3)
    label = _measure_label(table)
    _effect_map(axes[0], exact, "exact (ablate_heads)", limit, label)
    _effect_map(axes[1], estimate, "estimate (attribution patching)", limit, label)
    ax = axes[2]
    ax.scatter(table.exact, table.estimate, s=12, color="#4c72b0", alpha=0.8)
    lo = float(np.nanmin([table.exact.min(), table.estimate.min()]))
    hi = float(np.nanmax([table.exact.max(), table.estimate.max()]))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="estimate = exact")
    ax.set_xlabel("exact " + label)
    ax.set_ylabel("estimate")
    rho = float(table.spearman_rho.iloc[0])
    ax.set_title(f"Spearman ρ = {rho:.2f} over {len(table)} heads", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(_title(fig, title))
    return finish(fig, save)


def plot_explains(
    table: pd.DataFrame, *, title: str | None = None, save: str | Path | None = None
) -> NotebookFigure:
    """`explains_head` as bars with their intervals; heads with nothing to explain are marked."""
    _require(
        table,
        {"layer", "head", "pattern", "explained", "ci_low", "ci_high"},
        "plot_explains",
        "pass explains_head()",
    )
    labels = [f"L{r.layer}H{r.head} {r.pattern}" for r in table.itertuples()]
    y = np.arange(len(table))
    fig = new_figure(figsize=(6.5, 1.0 + 0.32 * len(table)))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    value = table.explained.to_numpy(dtype=float)
    shown = np.nan_to_num(value)
    ax.barh(y, shown, color=np.where(np.isfinite(value), "#55a868", "#cccccc"))
    err = np.vstack([shown - table.ci_low.to_numpy(float), table.ci_high.to_numpy(float) - shown])
    ok = np.isfinite(err).all(axis=0)
    ax.errorbar(shown[ok], y[ok], xerr=np.abs(err[:, ok]), fmt="none", color="black", lw=1)
    for yi in y[~np.isfinite(value)]:
        ax.text(0.02, yi, "ablation effect too small", va="center", fontsize=8, color="#555555")
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(1, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the ablation effect the pattern recovers (1 = all)")
    ax.set_title(
        _title(fig, title or "does the label explain what the head does?", 0.6), fontsize=10
    )
    return finish(fig, save)


def plot_logit_lens(
    table: pd.DataFrame,
    *,
    layers: int | None = None,
    title: str | None = None,
    save: str | Path | None = None,
) -> NotebookFigure:
    """A `logit_lens` table: layers × positions, coloured by the top token's probability and
    annotated with the top token (``layers`` keeps only the last that many, for deep models)."""
    _require(
        table, {"layer", "position", "token", "top_token", "prob"}, "plot_logit_lens", "logit_lens"
    )
    if layers is not None:
        table = table[table.layer > table.layer.max() - layers]
    probs = table.pivot(index="layer", columns="position", values="prob")
    tops = table.pivot(index="layer", columns="position", values="top_token")
    tokens = table.drop_duplicates("position").sort_values("position").token.tolist()
    n_layers, n_pos = probs.shape
    fig = new_figure(figsize=(1.6 + 0.85 * n_pos, 1.2 + 0.32 * n_layers))
    fig.set_layout_engine("constrained")
    ax = fig.add_subplot()
    image = ax.imshow(probs.to_numpy(float), origin="lower", cmap="Blues", vmin=0, vmax=1,
                      aspect="auto")  # fmt: skip
    for i in range(n_layers):
        for j in range(n_pos):
            p = float(probs.iloc[i, j])
            text = str(tops.iloc[i, j]).replace("Ġ", "·").replace("\n", "⏎")[:8]
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                    color="white" if p > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(n_pos), [t.replace("Ġ", "·") for t in tokens], rotation=60, fontsize=8)
    ax.set_yticks(range(n_layers), [str(v) for v in probs.index], fontsize=7)
    ax.set_xlabel("input token (the lens predicts the token after it)")
    ax.set_ylabel("layer (residual after block; 0 = embeddings)")
    fig.colorbar(image, ax=ax, label="top token probability", shrink=0.85)
    ax.set_title(
        _title(fig, title or "logit lens: top next-token guess per layer", 0.8), fontsize=10
    )
    return finish(fig, save)
