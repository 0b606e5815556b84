"""Figures for hint evaluation (`attn_tools.hints.evaluate_hints` results); they compute nothing.

- `plot_flip_matrix`: answer without the hint (rows) → answer with it (columns), item counts.
- `plot_hint_attention_map`: per head, hint score of flipped-to-hint items minus the others.
- `plot_hint_item_attention`: one head's attention on one prompt, hint keys and answer row marked.
- `plot_flip_rates`: flip-to-hint rate against the neutral control, per summary row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from attn_tools.viz.canvas import draw_matrix, finish, matrix_side_inches, new_figure

__all__ = [
    "plot_flip_matrix",
    "plot_flip_rates",
    "plot_hint_attention_map",
    "plot_hint_item_attention",
]

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def plot_flip_matrix(
    items: pd.DataFrame, *, title: str | None = None, save: str | Path | None = None
) -> Figure:
    """Counts of (answer without hint → answer with hint); the hinted cell of each item is not
    a single column, so the number of flips *to the hint* is written in the title.

    Args:
        items: ``HintResult.items`` (columns ``answer_without``, ``answer_with``,
            ``flipped_to_hint``).
    """
    for col in ("answer_without", "answer_with", "flipped_to_hint"):
        if col not in items:
            raise ValueError(f"items has no column {col!r}. Fix: pass HintResult.items.")
    k = int(max(items["answer_without"].max(), items["answer_with"].max(), 1)) + 1
    k = max(k, 2)
    counts = np.zeros((k + 1, k + 1), dtype=int)  # last row/column: unparsed (-1)
    for a, b in zip(items["answer_without"], items["answer_with"]):
        counts[a if a >= 0 else k, b if b >= 0 else k] += 1
    show = k + (1 if counts[k].any() or counts[:, k].any() else 0)
    counts = counts[:show, :show]
    labels = [_LETTERS[i] for i in range(k)] + (["?"] if show > k else [])
    fig = new_figure(figsize=(1.2 + 0.6 * show, 1.0 + 0.6 * show), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(1, counts.max()))
    for i in range(show):
        for j in range(show):
            dark = counts[i, j] > 0.6 * counts.max()
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(show), labels)
    ax.set_yticks(range(show), labels)
    ax.set_xlabel("answer with hint")
    ax.set_ylabel("answer without hint")
    n_flip = int(items["flipped_to_hint"].sum())
    ax.set_title(title or f"{len(items)} items, {n_flip} flipped to the hint", fontsize=9)
    return finish(fig, save)


def plot_hint_attention_map(
    head_attention: pd.DataFrame,
    *,
    score: str = "hint_mass",
    alpha: float = 0.05,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Layer × head map of ``<score>_diff`` (flipped-to-hint minus other eligible items).

    Layer 0 is at the bottom; a dot marks heads with permutation ``p < alpha`` (uncorrected, so
    expect about ``alpha`` × heads dots by chance). Diverging colours centred on 0.
    """
    col = f"{score}_diff"
    if col not in head_attention:
        raise ValueError(
            f"head_attention has no column {col!r}. Fix: score='hint_mass' or 'column_shift'."
        )
    n_layers = int(head_attention["layer"].max()) + 1
    n_heads = int(head_attention["head"].max()) + 1
    grid = np.full((n_layers, n_heads), np.nan)
    grid[head_attention["layer"], head_attention["head"]] = head_attention[col]
    fig = new_figure(figsize=(1.8 + 0.32 * n_heads, 1.2 + 0.16 * n_layers), layout="constrained")
    ax = fig.add_subplot()
    top = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    top = top if top > 0 else 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-top, vmax=top, origin="lower", aspect="auto")
    sig = head_attention[head_attention[f"{score}_p"] < alpha]
    ax.scatter(sig["head"], sig["layer"], s=6, c="black", marker="o", label=f"p < {alpha}")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    n1 = int(head_attention["n_flipped"].iloc[0])
    n0 = int(head_attention["n_not_flipped"].iloc[0])
    name = "attention to hint" if score == "hint_mass" else "column shift (TVD)"
    ax.set_title(title or f"{name}: flipped ({n1}) − not flipped ({n0})", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"Δ {name}")
    if len(sig):
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    return finish(fig, save)


def plot_hint_item_attention(
    tokens: Sequence[str],
    attention: np.ndarray,
    hint_tokens: Sequence[int],
    *,
    title: str = "",
    save: str | Path | None = None,
) -> Figure:
    """One head's ``[n, n]`` attention on one prompt (queries y, keys x).

    The hint's key columns are outlined in red and the answer row (the last query, which
    predicts the letter) in green. Takes ``attn_tools.hints.item_attention``'s return values.
    """
    attention = np.asarray(attention)
    n = len(tokens)
    if attention.shape != (n, n):
        raise ValueError(
            f"attention has shape {attention.shape} for {n} tokens. Fix: pass the [n, n] matrix "
            "of the same prompt (item_attention returns both)."
        )
    side = matrix_side_inches(n)
    fig = new_figure(figsize=(side + 1.2, side + 0.4), layout="constrained")
    ax = fig.add_subplot()
    im = draw_matrix(ax, attention, tokens, scale="sqrt")
    hint = sorted(int(i) for i in hint_tokens)
    if hint:
        ax.add_patch(Rectangle((hint[0] - 0.5, -0.5), hint[-1] - hint[0] + 1, n,
                               fill=False, ec="red", lw=1.2, label="hint keys"))  # fmt: skip
    ax.add_patch(Rectangle((-0.5, n - 1.5), n, 1, fill=False, ec="green", lw=1.2,
                           label="answer query"))  # fmt: skip
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    mass = float(attention[-1, hint].sum()) if hint else 0.0
    ax.set_title(f"{title}  answer→hint mass {mass:.3f}".strip(), fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.6)
    return finish(fig, save)


def _wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z**2 / n
    mid = (p + z**2 / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / den
    return mid - half, mid + half


def plot_flip_rates(
    summary: pd.DataFrame, *, title: str | None = None, save: str | Path | None = None
) -> Figure:
    """Flip-to-hint rate (hint) next to the same rate under the neutral control, per row of
    ``summary`` (one or several ``HintResult.summary`` concatenated). Error bars: 95 % Wilson
    intervals of each rate; the label gives the paired difference and its bootstrap CI.
    """
    need = ("hint", "n_eligible", "flip_to_hint_rate", "neutral_flip_to_hint_rate")
    missing = [c for c in need if c not in summary]
    if missing:
        raise ValueError(f"summary lacks {missing}. Fix: pass HintResult.summary (or a concat).")
    rows = summary.reset_index(drop=True)
    fig = new_figure(figsize=(1.8 + 1.3 * len(rows), 3.2), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    for off, col, colour, label in (
        (-0.18, "flip_to_hint_rate", "#c0392b", "hint"),
        (0.18, "neutral_flip_to_hint_rate", "#7f8c8d", "neutral control"),
    ):
        rates = rows[col].to_numpy(float)
        n = rows["n_eligible"].to_numpy(float)
        ci = np.array([_wilson(r * m, m) for r, m in zip(rates, n)])
        err = np.abs(np.stack([rates - ci[:, 0], ci[:, 1] - rates]))
        ax.bar(x + off, rates, width=0.34, color=colour, label=label, yerr=err, capsize=3)
    names = []
    for _, r in rows.iterrows():
        diff = r.get("rate_difference", np.nan)
        lo, hi = r.get("difference_ci_low", np.nan), r.get("difference_ci_high", np.nan)
        names.append(f"{r['hint']}\nΔ {diff:+.2f} [{lo:+.2f}, {hi:+.2f}]\nn={int(r['n_eligible'])}")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("flip-to-hint rate")
    model = rows["model"].iloc[0] if "model" in rows else ""
    ax.set_title(title or f"{model}: flips to the hinted option", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return finish(fig, save)
