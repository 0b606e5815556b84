"""Attention matrices: one head, one head against a pattern, a layer, the alignment, pattern panels.

Queries are on the y axis (row ``q`` is where token ``q`` attends), keys on the x axis.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from attn_tools.viz.canvas import (
    ATTENTION_CMAP,
    Scale,
    clean_label,
    colorbar_label,
    draw_fallback_rows,
    draw_matrix,
    fallback_legend_handle,
    finish,
    fit_text,
    matrix_side_inches,
    metric_spec,
    new_figure,
    resolve_scale,
    set_token_ticks,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from attn_tools.extract import SentenceAttention
    from attn_tools.patterns.base import Pattern, PatternContext
    from attn_tools.report import HeadComparison
    from attn_tools.text import Parse, WordAttention

__all__ = ["plot_alignment", "plot_head", "plot_head_vs_pattern", "plot_layer", "plot_patterns"]


def plot_head(
    record: SentenceAttention | WordAttention,
    layer: int,
    head: int,
    *,
    ax: Axes | None = None,
    max_labels: int | None = None,
    vmax: float | None = None,
    scale: Scale = "auto",
    cmap: str = ATTENTION_CMAP,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Heatmap of one head's attention on one sentence.

    ``record`` is a `SentenceAttention` (model tokens) or a `text.WordAttention` (word level, from
    `to_word_level`). Token labels are thinned for long sentences so they never overlap (see
    `thin_ticks`); ``max_labels`` caps them further. ``vmax`` fixes the colour scale (default:
    the matrix maximum); ``scale`` is ``"linear"``, ``"sqrt"`` (shows the small weights that
    long sentences spread attention into) or ``"auto"`` (sqrt above 64 tokens; the colour bar
    says which).
    """
    attention = record.attention
    n_layers, n_heads = attention.shape[:2]
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise IndexError(
            f"layer {layer}, head {head} is outside this model's {n_layers} layers × {n_heads} heads"
        )
    labels = list(record.labels)
    n = len(labels)
    scale = resolve_scale(scale, n)
    if ax is None:
        side = matrix_side_inches(n)
        fig = new_figure(figsize=(side + 1.3, side + 0.4), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()
    im = draw_matrix(
        ax, attention[layer, head], labels, cmap=cmap, vmax=vmax, max_labels=max_labels,
        scale=scale,
    )  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=colorbar_label(scale))
    model = getattr(record, "model", None)
    level = "" if model is not None else " (word level)"
    default = f"{model or 'attention'} · layer {layer}, head {head}{level}"
    # the panel is the figure less the colour bar; a long model id wraps instead of spilling out
    width = fig.get_size_inches()[0] - 1.3
    ax.set_title(title or fit_text(fig, default, width, fontsize=10), fontsize=10)
    return finish(fig, save)


def _legacy_comparison(args: tuple, kwargs: dict[str, Any]) -> HeadComparison:
    warnings.warn(
        "plot_head_vs_pattern(record, layer, head, pattern, ...) is deprecated: figures no longer "
        "compute scores. Fix: viz.plot_head_vs_pattern(report.compare_head(record, layer, head, "
        "pattern, metric=..., context=...))",
        DeprecationWarning,
        stacklevel=3,
    )
    from attn_tools.report import compare_head

    return compare_head(*args, **kwargs)


def plot_head_vs_pattern(
    comparison: HeadComparison,
    *args: Any,
    max_labels: int | None = None,
    scale: Scale = "auto",
    fits: bool | None = None,
    save: str | Path | None = None,
    **kwargs: Any,
) -> Figure:
    """A head's attention and a pattern's prediction side by side, the score in the title.

    Rows that the pattern leaves empty (``has_mass`` False: the framework falls back to self) are
    drawn grey and hatched in the prediction, with a legend entry, so a fallback is never read as
    the pattern.

    Args:
        comparison: a `report.compare_head` result (the head, the prediction, the score of the
            head against the pattern on *this* sentence and the metric).
        max_labels, scale: as in `plot_head`.
        fits: whether any head fits the pattern (e.g. ``classify.top_heads(...)["fits"].any()``);
            False titles the figure "no head fits" and calls the head the closest one.

    Example:
        >>> cmp = report.compare_head(record, 0, 2, "previous_token")
        >>> viz.plot_head_vs_pattern(cmp)

    The old form ``plot_head_vs_pattern(record, layer, head, pattern, metric=, context=)`` still
    works for now (it warns and calls `report.compare_head`).
    """
    if args or kwargs or not hasattr(comparison, "predicted"):
        comparison = _legacy_comparison((comparison, *args), kwargs)
    c = comparison
    n = len(c.labels)
    side = matrix_side_inches(n)
    width = 2 * side + 1.6
    fig = new_figure(figsize=(width, side + 0.9), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    scale = resolve_scale(scale, n)
    im = draw_matrix(left, c.actual, c.labels, max_labels=max_labels, scale=scale)
    draw_matrix(right, c.predicted, c.labels, vmax=1.0, max_labels=max_labels, scale=scale)
    right.set_ylabel("")
    left.set_title(fit_text(fig, f"actual: layer {c.layer}, head {c.head}", side, fontsize=10),
                   fontsize=10)  # fmt: skip
    has_mass = np.asarray(c.has_mass, dtype=bool)
    fallback = int((~has_mass).sum())
    note = f" ({fallback} of {n} rows fall back to self)" if fallback else ""
    right.set_title(fit_text(fig, f"predicted: {c.pattern}{note}", side, fontsize=10),
                    fontsize=10)  # fmt: skip
    if fallback:
        draw_fallback_rows(right, has_mass)
        fig.legend(handles=[fallback_legend_handle()], loc="outside lower center", fontsize=8,
                   frameon=False)  # fmt: skip
    fig.colorbar(im, ax=[left, right], fraction=0.03, pad=0.02, label=colorbar_label(scale))
    spec = metric_spec(c.metric)
    lead = f"no head fits {c.pattern!r} — closest: " if fits is False else ""
    title = (
        f"{lead}{c.model} · L{c.layer} H{c.head} vs {c.pattern}: "
        f"{spec.display} = {c.score:.3f} on this sentence ({spec.direction})"
    )
    fig.suptitle(fit_text(fig, title, width - 0.3, fontsize=11), fontsize=11)
    return finish(fig, save)


def plot_layer(
    record: SentenceAttention,
    layer: int,
    *,
    ncols: int | None = None,
    save: str | Path | None = None,
) -> Figure:
    """All heads of one layer on one sentence, in a grid (each panel on its own colour scale)."""
    if not 0 <= layer < record.n_layers:
        raise IndexError(f"layer {layer} is outside this model's {record.n_layers} layers")
    n_heads, n = record.n_heads, record.n_tokens
    ncols = ncols or math.ceil(math.sqrt(n_heads))
    nrows = math.ceil(n_heads / ncols)
    panel = 2.4 if n <= 24 else 2.0
    labelled = n <= 24
    fig = new_figure(
        figsize=(ncols * panel + (1.0 if labelled else 0.3), nrows * panel + 0.6),
        layout="constrained",
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for h, ax in enumerate(axes):
        if h >= n_heads:
            ax.set_axis_off()
            continue
        row, col = divmod(h, ncols)
        draw_matrix(
            ax, record.head(layer, h), record.labels, ticks=False, axis_names=False, scale="auto"
        )
        if labelled:
            set_token_ticks(
                ax, record.labels, x=row == nrows - 1 or h + ncols >= n_heads, y=col == 0,
                fontsize=6,
            )  # fmt: skip
        ax.set_title(f"head {h}", fontsize=9)
    fig.supxlabel("key (attended to)", fontsize=9)
    fig.supylabel("query (attending)", fontsize=9)
    fig.suptitle(
        f"{record.model} · layer {layer}: all {n_heads} heads\n{record.text[:90]!r}", fontsize=10
    )
    return finish(fig, save)


def plot_alignment(
    record: SentenceAttention,
    parsed: Parse | None = None,
    *,
    save: str | Path | None = None,
) -> Figure:
    """How model tokens map onto spaCy words: tokens on top, words below, a line per overlap.

    Words split into several pieces are drawn in orange, tokens that cover several words (e.g.
    ``"don't"`` as one token, two spaCy words) in purple, special tokens in grey (no word).
    """
    from attn_tools.text import align, parse

    parsed = parsed if parsed is not None else parse(record.text)[0]
    al = align(record, parsed)
    n_tok, n_word = al.n_tokens, len(parsed.words)
    width = float(np.clip(0.62 * max(n_tok, n_word) + 1.0, 5.0, 30.0))
    fig = new_figure(figsize=(width, 2.9), layout="constrained")
    ax = fig.add_subplot()
    span = max(n_tok, n_word) - 1 or 1
    x_tok = np.linspace(0, span, n_tok) if n_tok > 1 else np.zeros(1)
    x_word = np.linspace(0, span, n_word) if n_word > 1 else np.zeros(1)
    split_words = {w for w, toks in enumerate(al.word_tokens) if len(toks) > 1}
    for t, words in enumerate(al.token_words):
        for w in words:
            ax.plot([x_tok[t], x_word[w]], [1.0, 0.0], color="#888888", linewidth=0.9, zorder=1)
    box = {"boxstyle": "round,pad=0.25", "linewidth": 0.6}
    for t, tok in enumerate(record.tokens):
        special = bool(record.special_mask[t])
        multi = len(al.token_words[t]) > 1
        face = "#dddddd" if special else "#d9c2ec" if multi else "#dbe9f6"
        ax.text(x_tok[t], 1.0, clean_label(tok), ha="center", va="bottom", fontsize=8,
                rotation=60 if n_tok > 24 else 0, bbox={**box, "facecolor": face}, zorder=2)  # fmt: skip
    for w, word in enumerate(parsed.words):
        face = "#fdd9b5" if w in split_words else "#eef5e9"
        ax.text(x_word[w], 0.0, f"{clean_label(word.text)}\n{word.pos}", ha="center", va="top",
                fontsize=8, bbox={**box, "facecolor": face}, zorder=2)  # fmt: skip
    ax.set_xlim(-0.8, span + 0.8)
    ax.set_ylim(-0.45, 1.35)
    ax.set_axis_off()
    ax.text(-0.8, 1.0, "model tokens", ha="right", va="bottom", fontsize=8, style="italic")
    ax.text(-0.8, 0.0, "spaCy words", ha="right", va="top", fontsize=8, style="italic")
    fig.suptitle(
        f"{record.model}: {n_tok} tokens ↔ {n_word} words "
        f"({len(split_words)} word(s) split into pieces, grey = special token)",
        fontsize=10,
    )
    return finish(fig, save)


def plot_patterns(
    record: SentenceAttention,
    patterns: Sequence[str | Pattern] | None = None,
    *,
    context: PatternContext | None = None,
    ncols: int = 6,
    save: str | Path | None = None,
) -> Figure:
    """Every pattern's prediction on one sentence, one small panel each (default: all built-ins).

    Predictions go through the framework (causal mask for decoders, rows renormalised, empty rows
    fall back to self); the panel title counts the rows a pattern fills itself.
    """
    from attn_tools.patterns.base import build_context, predict_many, resolve_patterns

    pats = resolve_patterns(patterns)
    if not pats:
        raise ValueError("no patterns to draw. Fix: pass pattern names, or None for all of them")
    ctx = context if context is not None else build_context(record)
    mats, masks = predict_many(pats, ctx)
    n = record.n_tokens
    ncols = min(ncols, len(pats))
    nrows = math.ceil(len(pats) / ncols)
    panel = 2.1
    fig = new_figure(
        figsize=(ncols * panel + 0.4, nrows * (panel + 0.25) + 0.9), layout="constrained"
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    labelled = n <= 16
    for i, ax in enumerate(axes):
        if i >= len(pats):
            ax.set_axis_off()
            continue
        draw_matrix(ax, mats[i], record.labels, vmax=1.0, ticks=False, axis_names=False)
        if not masks[i].all():
            draw_fallback_rows(ax, masks[i])
        if labelled and i % ncols == 0:
            set_token_ticks(ax, record.labels, x=False, fontsize=5.5)
        ax.set_title(f"{pats[i].name}\n{int(masks[i].sum())}/{n} rows", fontsize=7.5)
    if not masks.all():
        fig.legend(handles=[fallback_legend_handle()], loc="outside lower center", fontsize=8,
                   frameon=False)  # fmt: skip
    title = (
        f"{len(pats)} patterns on {record.text[:80]!r} ({record.model}, {record.kind}); "
        "rows = query, columns = key"
    )
    fig.suptitle(fit_text(fig, title, ncols * panel + 0.1, fontsize=10), fontsize=10)
    return finish(fig, save)
