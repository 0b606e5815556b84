"""Figures: one head, one head against a pattern, a layer, score maps, top heads, the best-fit grid.

Every ``plot_*`` function returns a matplotlib `Figure` and takes ``save=`` (a path; see
`save_figure`) to write it as PNG, SVG or PDF. Attention matrices are drawn with queries on the y
axis (row ``q`` attends *from* token ``q``) and keys on the x axis; layer × head grids put layer 0
at the bottom. Each pattern has one colour everywhere (`pattern_color`), whatever else is drawn.

Example:
    >>> recs = extract(load_model("minilm"), load_sentences("story")[:12])
    >>> scores = score_heads(recs)
    >>> plot_best_fit_grid(scores, save="outputs/minilm_best_fit.png")
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Polygon, Rectangle

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

    from attn_tools.extract import SentenceAttention
    from attn_tools.patterns.base import Pattern, PatternContext
    from attn_tools.text import Parse, WordAttention

__all__ = [
    "NONE_COLOR",
    "NONE_LABEL",
    "FigureFormat",
    "pattern_color",
    "pattern_table",
    "default_best_fit",
    "plot_alignment",
    "plot_best_fit_grid",
    "plot_consistency",
    "plot_head",
    "plot_head_vs_pattern",
    "plot_layer",
    "plot_linear_fit",
    "plot_pattern_scores",
    "plot_patterns",
    "plot_top_heads",
    "save_figure",
    "thin_ticks",
    "write_figures",
]

FigureFormat = Literal["png", "svg", "pdf"]
Scale = Literal["linear", "sqrt", "auto"]
FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
NONE_LABEL = "none"
NONE_COLOR = "#ffffff"
ATTENTION_CMAP = "Blues"

# ----------------------------------------------------------------------------- colours

# Curated colours for the built-in patterns; a name not listed here gets a colour from a hash of
# its name, so the mapping never depends on which patterns a figure happens to show.
_CURATED: dict[str, str] = {
    # positional
    "first_token": "#d62728",
    "previous_token": "#1f77b4",
    "next_token": "#ff7f0e",
    "self": "#2ca02c",
    "last_token": "#9467bd",
    "uniform": "#8c564b",
    "offset(-2)": "#aec7e8",
    "offset(2)": "#ffbb78",
    # lexical
    "punctuation": "#bcbd22",
    "repetition": "#17becf",
    "previous_token_head": "#393b79",
    "duplicate_token_head": "#9edae5",
    "induction_head": "#e377c2",
    # linguistic
    "pos_alignment": "#637939",
    "dependency": "#843c39",
    "dependency_to_head": "#ad494a",
    "dependency_to_children": "#e7969c",
    "noun_modifier": "#98df8a",
    "pronoun": "#ff9896",
    "preposition": "#c5b0d5",
    "dep(det)": "#7b4173",
    "dep(nsubj)": "#a55194",
    "dep(nsubjpass)": "#ce6dbd",
    "dep(dobj)": "#de9ed6",
    "dep(pobj)": "#5254a3",
    "dep(prep)": "#6b6ecf",
    "dep(amod)": "#9c9ede",
    "dep(advmod)": "#8ca252",
    "dep(aux)": "#b5cf6b",
    "dep(auxpass)": "#cedb9c",
    "dep(poss)": "#8c6d31",
    "dep(compound)": "#bd9e39",
    "dep(conj)": "#e7ba52",
    "dep(cc)": "#e7cb94",
    # special
    "special_tokens": "#c49c94",
    "punctuation_sink": "#dbdb8d",
    "special_or_punctuation": "#f7b6d2",
    # character
    "same_word": "#31a354",
    "word_start": "#3182bd",
    "same_text": "#e6550d",
}


def pattern_color(name: str) -> str:
    """The colour of a pattern, as ``"#rrggbb"``: the same in every figure and for every model.

    Built-in patterns have curated, well-separated colours; any other name (a parametrised
    ``offset(3)``, a user or LLM pattern) gets a saturated colour derived from a hash of its name.
    ``"none"`` is white.
    """
    if name == NONE_LABEL:
        return NONE_COLOR
    if name in _CURATED:
        return _CURATED[name]
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    hue = digest[0] / 256 + digest[1] / 65536
    sat = 0.50 + 0.35 * digest[2] / 255
    val = 0.55 + 0.35 * digest[3] / 255  # never close to white, which means "no pattern"
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _rgb(color: str) -> tuple[float, float, float]:
    return matplotlib.colors.to_rgb(color)


def _text_color_on(color: str) -> str:
    r, g, b = _rgb(color)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def pattern_table(patterns: Sequence[str | Pattern] | None = None) -> pd.DataFrame:
    """Patterns as a table: ``name, family, description, needs_parse, color`` (default: all
    registered), in registry order; ``color`` is the colour every figure uses for it."""
    from attn_tools.patterns.base import resolve_patterns

    return pd.DataFrame(
        [
            {
                "name": p.name,
                "family": p.family,
                "description": p.description,
                "needs_parse": p.needs_parse,
                "color": pattern_color(p.name),
            }
            for p in resolve_patterns(patterns)
        ]
    )


# ----------------------------------------------------------------------------- saving


def save_figure(
    fig: Figure,
    path: str | Path,
    *,
    formats: Iterable[FigureFormat] | None = None,
    dpi: int = 150,
) -> list[Path]:
    """Write ``fig`` to ``path`` and return the files written.

    A path ending in ``.png``, ``.svg`` or ``.pdf`` is written in that format; a path without one
    of those suffixes is written once per format in ``formats`` (default: all three).
    """
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS and formats is None:
        targets = [path]
    else:
        chosen = tuple(formats) if formats is not None else FORMATS
        bad = [f for f in chosen if f not in FORMATS]
        if bad:
            raise ValueError(f"unknown figure format(s) {bad}; choose from {list(FORMATS)}")
        base = path.with_suffix("") if suffix in FORMATS else path
        targets = [base.with_name(f"{base.name}.{f}") for f in chosen]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        # every figure here uses constrained layout, so "tight" bboxes would only add a second draw
        fig.savefig(target, dpi=dpi, metadata=_metadata(target))
    return targets


def _metadata(target: Path) -> dict[str, Any] | None:
    # fixed metadata keeps SVG/PDF output byte-stable across runs (no creation dates)
    if target.suffix == ".svg":
        return {"Date": None}
    if target.suffix == ".pdf":
        return {"CreationDate": None}
    return None


def _new_figure(**kwargs: Any) -> Figure:
    """A Figure outside pyplot (no global state, no leak) with an Agg canvas, ready to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _register_notebook_display() -> None:
    """Let a notebook show a returned `Figure` as an image even when pyplot was never imported."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook stack
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "display_formatter"):
        shell.display_formatter.formatters["image/png"].for_type(Figure, _figure_png)


_register_notebook_display()


def _finish(fig: Figure, save: str | Path | None) -> Figure:
    if save is not None:
        save_figure(fig, save)
    return fig


# ----------------------------------------------------------------------------- token labels

_MAX_LABEL_CHARS = 14


def _clean_label(label: str) -> str:
    """Make a token printable as a tick label: no mathtext, no control characters, not too long."""
    label = label.replace("\n", "⏎").replace("\t", "⇥").replace("\r", "")
    label = "".join(ch if ch.isprintable() else "·" for ch in label) or "␣"
    if len(label) > _MAX_LABEL_CHARS:
        label = label[: _MAX_LABEL_CHARS - 1] + "…"
    return label.replace("$", r"\$")


def thin_ticks(n: int, max_labels: int) -> list[int]:
    """Indices of the tick labels to show for ``n`` tokens when at most ``max_labels`` fit.

    Every token when they fit; otherwise every ``k``-th token starting at 0, with the smallest
    ``k`` that keeps the count at or under ``max_labels``.
    """
    if n <= 0:
        return []
    max_labels = max(1, int(max_labels))
    step = max(1, math.ceil(n / max_labels))
    return list(range(0, n, step))


def _label_fontsize(n: int) -> float:
    return 9.0 if n <= 24 else 8.0 if n <= 48 else 7.0


def _axis_points(ax: Axes) -> tuple[float, float]:
    """Width and height of an axes in points (1/72 inch)."""
    fig = ax.get_figure()
    w_in, h_in = fig.get_size_inches()
    pos = ax.get_position()
    return pos.width * w_in * 72, pos.height * h_in * 72


def _set_token_ticks(
    ax: Axes,
    labels: Sequence[str],
    *,
    max_labels: int | None = None,
    x: bool = True,
    y: bool = True,
    fontsize: float | None = None,
) -> tuple[list[int], list[int]]:
    """Token tick labels on both axes, thinned so that neighbouring labels never overlap.

    With ``max_labels=None`` the limit comes from the axes' size: a label needs about 1.5 × its
    font size of room across the axis. Thinned labels carry their token index (``"37:sun"``).
    """
    n = len(labels)
    fs = fontsize or _label_fontsize(n)
    width_pt, height_pt = _axis_points(ax)
    shown = []
    for is_x, axis_on, length in ((True, x, width_pt), (False, y, height_pt)):
        setter = ax.set_xticks if is_x else ax.set_yticks
        if not axis_on:
            setter([])
            shown.append([])
            continue
        # 0.85: constrained layout may shrink the axes after the ticks are chosen
        fit = max(1, int(0.85 * length / (fs * 1.5)))
        limit = fit if max_labels is None else min(fit, max_labels)
        idx = thin_ticks(n, limit)
        thinned = len(idx) < n
        texts = [
            f"{i}:{_clean_label(labels[i])}" if thinned else _clean_label(labels[i]) for i in idx
        ]
        if is_x:
            ax.set_xticks(idx, texts, rotation=90, fontsize=fs)
        else:
            ax.set_yticks(idx, texts, fontsize=fs)
        shown.append(idx)
    ax.tick_params(length=2, pad=1)
    return shown[0], shown[1]


def _auto_scale(scale: Scale, n: int) -> Scale:
    if scale == "auto":
        return "sqrt" if n > 64 else "linear"
    return scale


def _cbar_label(scale: Scale) -> str:
    return "attention weight" + (" (√ scale)" if scale == "sqrt" else "")


def _matrix_side_inches(n: int) -> float:
    return float(np.clip(1.6 + 0.26 * n, 3.2, 8.5))


def _draw_matrix(
    ax: Axes,
    matrix: np.ndarray,
    labels: Sequence[str],
    *,
    cmap: str = ATTENTION_CMAP,
    vmax: float | None = None,
    max_labels: int | None = None,
    ticks: bool = True,
    axis_names: bool = True,
    scale: Scale = "linear",
) -> AxesImage:
    """Draw one ``[n, n]`` matrix (queries on y, keys on x) with token tick labels."""
    top = float(matrix.max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0
    if scale == "sqrt":
        norm: Normalize = PowerNorm(gamma=0.5, vmin=0.0, vmax=top)
    elif scale == "linear":
        norm = Normalize(vmin=0.0, vmax=top)
    else:
        raise ValueError(f"scale must be 'linear' or 'sqrt', got {scale!r}")
    im = ax.imshow(matrix, cmap=cmap, norm=norm, interpolation="nearest", aspect="equal")
    if ticks:
        _set_token_ticks(ax, labels, max_labels=max_labels)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if axis_names:
        ax.set_xlabel("key (attended to)", fontsize=9)
        ax.set_ylabel("query (attending)", fontsize=9)
    return im


# ----------------------------------------------------------------------------- single heads


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
    `to_word_level`). Queries are on the y axis (row ``q`` is where token ``q`` attends), keys on
    the x axis. Token labels are thinned for long sentences so they never overlap (see
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
    matrix = attention[layer, head]
    labels = list(record.labels)
    n = len(labels)
    scale = _auto_scale(scale, n)
    if ax is None:
        side = _matrix_side_inches(n)
        fig = _new_figure(figsize=(side + 1.3, side + 0.4), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()
    im = _draw_matrix(ax, matrix, labels, cmap=cmap, vmax=vmax, max_labels=max_labels, scale=scale)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label=_cbar_label(scale))
    model = getattr(record, "model", None)
    level = "" if model is not None else " (word level)"
    default = f"{model or 'attention'} · layer {layer}, head {head}{level}"
    ax.set_title(title or default, fontsize=10)
    return _finish(fig, save)


# The TransformerLens-style metrics score a pattern's raw weights, the others its normalised rows
# (see attn_tools.scoring); figures draw the normalised prediction either way.
_RAW_METRICS = frozenset({"mul", "abs"})


def _score_pair(
    actual: np.ndarray, pattern: Pattern, ctx: PatternContext, metric: str, normalized: tuple
) -> float:
    from attn_tools import scoring
    from attn_tools.patterns.base import predict

    predicted, has_mass = (
        predict(pattern, ctx, normalize=False) if metric in _RAW_METRICS else normalized
    )
    return float(scoring.score_pair(actual, predicted, metric=metric, has_mass=has_mass))


def _direction(metric: str) -> str:
    from attn_tools import scoring

    return "higher is better" if scoring.higher_is_better(metric) else "lower is better"


def _metric_name(metric: str) -> str:
    return {"jsd": "JS distance", "mul": "mul score", "abs": "abs score"}.get(metric, metric)


def plot_head_vs_pattern(
    record: SentenceAttention,
    layer: int,
    head: int,
    pattern: str | Pattern,
    *,
    metric: str = "jsd",
    context: PatternContext | None = None,
    max_labels: int | None = None,
    scale: Scale = "auto",
    save: str | Path | None = None,
) -> Figure:
    """The head's attention and the pattern's prediction side by side, the score in the title.

    The score is this head against the pattern on *this* sentence (`scoring.score_pair`), not the
    mean over a sentence set. ``context`` reuses a `build_context` result (skips the parse).
    """
    from attn_tools.patterns.base import build_context, get_pattern, predict

    pat = get_pattern(pattern)
    ctx = context if context is not None else build_context(record)
    predicted, has_mass = predict(pat, ctx)
    actual = record.head(layer, head)
    score = _score_pair(actual, pat, ctx, metric, (predicted, has_mass))
    n = record.n_tokens
    side = _matrix_side_inches(n)
    fig = _new_figure(figsize=(2 * side + 1.6, side + 0.9), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    scale = _auto_scale(scale, n)
    im = _draw_matrix(left, actual, record.labels, max_labels=max_labels, scale=scale)
    _draw_matrix(right, predicted, record.labels, vmax=1.0, max_labels=max_labels, scale=scale)
    right.set_ylabel("")
    left.set_title(f"actual: layer {layer}, head {head}", fontsize=10)
    fallback = int((~has_mass).sum())
    note = f"  ({fallback} row(s) without mass → self)" if fallback else ""
    right.set_title(f"predicted: {pat.name}{note}", fontsize=10)
    fig.colorbar(im, ax=[left, right], fraction=0.03, pad=0.02, label=_cbar_label(scale))
    fig.suptitle(
        f"{record.model} · L{layer} H{head} vs {pat.name}: "
        f"{_metric_name(metric)} = {score:.3f} on this sentence ({_direction(metric)})",
        fontsize=11,
    )
    return _finish(fig, save)


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
    fig = _new_figure(
        figsize=(ncols * panel + (1.0 if labelled else 0.3), nrows * panel + 0.6),
        layout="constrained",
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for h, ax in enumerate(axes):
        if h >= n_heads:
            ax.set_axis_off()
            continue
        row, col = divmod(h, ncols)
        _draw_matrix(
            ax,
            record.head(layer, h),
            record.labels,
            ticks=False,
            axis_names=False,
            scale=_auto_scale("auto", n),
        )
        if labelled:
            _set_token_ticks(
                ax,
                record.labels,
                x=row == nrows - 1 or h + ncols >= n_heads,
                y=col == 0,
                fontsize=6,
            )
        ax.set_title(f"head {h}", fontsize=9)
    fig.supxlabel("key (attended to)", fontsize=9)
    fig.supylabel("query (attending)", fontsize=9)
    fig.suptitle(
        f"{record.model} · layer {layer}: all {n_heads} heads\n{record.text[:90]!r}", fontsize=10
    )
    return _finish(fig, save)


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
    fig = _new_figure(figsize=(width, 2.9), layout="constrained")
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
        ax.text(x_tok[t], 1.0, _clean_label(tok), ha="center", va="bottom", fontsize=8,
                rotation=60 if n_tok > 24 else 0, bbox={**box, "facecolor": face}, zorder=2)  # fmt: skip
    for w, word in enumerate(parsed.words):
        face = "#fdd9b5" if w in split_words else "#eef5e9"
        ax.text(x_word[w], 0.0, f"{_clean_label(word.text)}\n{word.pos}", ha="center", va="top",
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
    return _finish(fig, save)


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
        raise ValueError("no patterns to draw")
    ctx = context if context is not None else build_context(record)
    mats, masks = predict_many(pats, ctx)
    n = record.n_tokens
    ncols = min(ncols, len(pats))
    nrows = math.ceil(len(pats) / ncols)
    panel = 2.1
    fig = _new_figure(
        figsize=(ncols * panel + 0.4, nrows * (panel + 0.25) + 0.9), layout="constrained"
    )
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    labelled = n <= 16
    for i, ax in enumerate(axes):
        if i >= len(pats):
            ax.set_axis_off()
            continue
        _draw_matrix(ax, mats[i], record.labels, vmax=1.0, ticks=False, axis_names=False)
        if labelled and i % ncols == 0:
            _set_token_ticks(ax, record.labels, x=False, fontsize=5.5)
        ax.set_title(f"{pats[i].name}\n{int(masks[i].sum())}/{n} rows", fontsize=7.5)
    fig.suptitle(
        f"{len(pats)} patterns on {record.text[:80]!r} ({record.model}, {record.kind}); "
        "rows = query, columns = key",
        fontsize=10,
    )
    return _finish(fig, save)


# ----------------------------------------------------------------------------- score tables


def _one(values: pd.Series, what: str, hint: str) -> str:
    uniq = list(dict.fromkeys(values.astype(str)))
    if len(uniq) != 1:
        raise ValueError(f"the score table holds several {what}s ({uniq}); pass {hint}")
    return uniq[0]


def _select(
    scores: pd.DataFrame,
    *,
    model: str | None = None,
    metric: str | None = None,
    pattern: str | None = None,
) -> tuple[pd.DataFrame, str, str | None]:
    """Filter a score table to one model (and metric/pattern), checking that they exist."""
    need = {"layer", "head"}
    missing = need - set(scores.columns)
    if missing:
        raise ValueError(
            f"the table has no {sorted(missing)} column(s) (columns: {list(scores.columns)}). "
            "Fix: pass the output of scoring.score_heads or classify.best_fit."
        )
    sub, model = _keep(scores, "model", model)
    model = model or "model"
    sub, chosen_metric = _keep(sub, "metric", metric)
    if pattern is not None:
        sub = sub[sub["pattern"] == pattern]
        if sub.empty:
            known = sorted(scores["pattern"].unique())
            raise ValueError(f"pattern {pattern!r} is not in the score table (patterns: {known})")
    return sub, model, chosen_metric


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


def _shape(sub: pd.DataFrame, n_layers: int | None, n_heads: int | None) -> tuple[int, int]:
    return (
        n_layers or int(sub["layer"].max()) + 1,
        n_heads or int(sub["head"].max()) + 1,
    )


def _grid(sub: pd.DataFrame, column: str, n_layers: int, n_heads: int) -> np.ndarray:
    grid = np.full((n_layers, n_heads), np.nan)
    grid[sub["layer"].to_numpy(int), sub["head"].to_numpy(int)] = sub[column].to_numpy(float)
    return grid


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

    sub, model, metric = _select(scores, model=model, metric=metric, pattern=pattern)
    n_layers, n_heads = _shape(sub, None, None)
    grid = _grid(sub, "mean", n_layers, n_heads)
    higher = _higher(metric)
    if annotate is None:
        annotate = n_layers * n_heads <= 160
    cell = float(np.clip(min(9.0 / n_heads, 8.0 / n_layers), 0.28, 0.6))
    fig = _new_figure(figsize=(n_heads * cell + 2.2, n_layers * cell + 1.2), layout="constrained")
    ax = fig.add_subplot()
    frame = pd.DataFrame(
        grid,
        index=pd.RangeIndex(n_layers, name="layer"),
        columns=pd.RangeIndex(n_heads, name="head"),
    )
    sns.heatmap(
        frame,
        ax=ax,
        cmap="mako" if higher else "mako_r",
        annot=annotate,
        fmt=".2f",
        annot_kws={"fontsize": 7},
        linewidths=0.4,
        linecolor="white",
        cbar_kws={
            "label": f"{_metric_name(metric or 'score')} ({_direction(metric) if metric else ''})"
        },
        square=False,
    )
    ax.invert_yaxis()  # layer 0 at the bottom, as in the best-fit grid
    ax.tick_params(axis="y", rotation=0, labelsize=7 if n_layers > 16 else 9)
    ax.tick_params(axis="x", labelsize=8)
    best = np.nanargmax(grid) if higher else np.nanargmin(grid)
    bl, bh = np.unravel_index(best, grid.shape)
    ax.add_patch(Rectangle((bh, bl), 1, 1, fill=False, edgecolor="#e4572e", linewidth=2.2))
    n_sent = int(sub["n_sentences"].max()) if "n_sentences" in sub.columns else None
    ax.set_title(
        f"{model} · how well each head fits {pattern!r}\n"
        f"mean over {n_sent} sentences; best: layer {bl}, head {bh} ({grid[bl, bh]:.3f})",
        fontsize=10,
    )
    return _finish(fig, save)


def _higher(metric: str | None) -> bool:
    if metric is None:
        return False
    from attn_tools import scoring

    return bool(scoring.higher_is_better(metric))


def plot_top_heads(
    scores: pd.DataFrame,
    pattern: str,
    *,
    k: int = 10,
    model: str | None = None,
    metric: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Horizontal bars of the ``k`` heads that fit ``pattern`` best (± std over sentences)."""
    from attn_tools import classify

    sub, model, metric = _select(scores, model=model, metric=metric)
    top = classify.top_heads(sub, pattern, k=k).reset_index(drop=True)
    color = pattern_color(pattern)
    fig = _new_figure(figsize=(6.4, 0.38 * len(top) + 1.5), layout="constrained")
    ax = fig.add_subplot()
    names = [f"L{int(r.layer)} H{int(r.head)}" for r in top.itertuples()]
    ypos = np.arange(len(top))[::-1]  # best at the top
    std = top["std"].to_numpy(float) if "std" in top.columns else None
    ax.barh(ypos, top["mean"].to_numpy(float), xerr=std, color=color, edgecolor="black",
            linewidth=0.5, error_kw={"elinewidth": 0.8, "capsize": 2, "ecolor": "#333333"})  # fmt: skip
    ax.set_yticks(ypos, names, fontsize=9)
    means = top["mean"].to_numpy(float)
    ends = means + (np.nan_to_num(std) if std is not None else 0.0)
    for y, v, end in zip(ypos, means, ends):
        ax.text(end, y, f"  {v:.3f}", va="center", ha="left", fontsize=8)
    right = float(np.nanmax(ends)) if len(ends) else 1.0
    ax.set_xlim(0, max(1.0, right * 1.15) if metric == "jsd" else right * 1.2)
    n_sent = int(top["n_sentences"].max()) if "n_sentences" in top.columns and len(top) else None
    ax.set_xlabel(f"mean {_metric_name(metric or 'score')} over {n_sent} sentences "
                  f"({_direction(metric) if metric else ''}); bars: ± std")  # fmt: skip
    ax.set_title(f"{model} · top {len(top)} heads for {pattern!r}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return _finish(fig, save)


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
    sub, model, _ = _select(table, model=model)
    fig = _new_figure(figsize=(6.6, 5.2), layout="constrained")
    ax = fig.add_subplot()
    xs, ys = sub["score_a"].to_numpy(float), sub["score_b"].to_numpy(float)
    lo = float(np.nanmin([xs.min(), ys.min()]))
    hi = float(np.nanmax([xs.max(), ys.max()]))
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#999999", linewidth=0.8, zorder=0)
    counts = sub["pattern_a"].value_counts()
    for name in counts.index:
        part = sub[sub["pattern_a"] == name]
        color = pattern_color(str(name))
        agree = part["agree"].astype(bool).to_numpy()
        ax.scatter(part["score_a"][agree], part["score_b"][agree], s=22, color=color,
                   edgecolor="black", linewidth=0.3, label=f"{name} ({len(part)})")  # fmt: skip
        ax.scatter(part["score_a"][~agree], part["score_b"][~agree], s=22, facecolor="none",
                   edgecolor=color, linewidth=1.0)  # fmt: skip
    metric = table.attrs.get("metric", "jsd")
    n_a = int(sub["n_a"].iloc[0]) if "n_a" in sub.columns else None
    n_b = int(sub["n_b"].iloc[0]) if "n_b" in sub.columns else None
    ax.set_xlabel(f"{_metric_name(metric)} on the {n_a} sentences it was chosen on")
    ax.set_ylabel(f"{_metric_name(metric)} on {n_b} held-out sentences")
    agree = float(sub["agree"].astype(bool).mean())
    ax.set_title(
        f"{model} · does each head's best pattern hold on unseen text?\n"
        f"same best pattern on both halves: {agree:.0%} of heads (filled = same, hollow = changed)",
        fontsize=10,
    )
    ax.legend(title="best pattern (heads)", fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)  # fmt: skip
    return _finish(fig, save)


def plot_linear_fit(
    table: pd.DataFrame,
    *,
    model: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Mixtures of patterns (`classify.linear_fit`) against the best single pattern, both scored
    on the evaluation sentences: a point below the diagonal is a head that a mixture explains
    better. Points are coloured by the mixture's largest weight."""
    need = {"eval_score", "single_eval_score", "top_pattern"}
    if not need <= set(table.columns):
        raise ValueError(
            f"expected a classify.linear_fit table (columns {sorted(need)}), got "
            f"{list(table.columns)}"
        )
    sub, model, _ = _select(table, model=model)
    metric = str(sub["metric"].iloc[0]) if "metric" in sub.columns else "jsd"
    xs, ys = sub["single_eval_score"].to_numpy(float), sub["eval_score"].to_numpy(float)
    fig = _new_figure(figsize=(6.6, 5.2), layout="constrained")
    ax = fig.add_subplot()
    lo, hi = float(np.nanmin([xs, ys])), float(np.nanmax([xs, ys]))
    pad = 0.03 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#999999", linewidth=0.8, zorder=0)
    for name, part in sub.groupby("top_pattern", sort=False):
        ax.scatter(part["single_eval_score"], part["eval_score"], s=22,
                   color=pattern_color(str(name)), edgecolor="black", linewidth=0.3,
                   label=f"{name} ({len(part)})")  # fmt: skip
    better = ys < xs if not _higher(metric) else ys > xs
    ax.set_xlabel(f"best single pattern: {_metric_name(metric)} on evaluation sentences")
    ax.set_ylabel(f"pattern mixture: {_metric_name(metric)} on evaluation sentences")
    ax.set_title(
        f"{model} · do mixtures of patterns explain heads better?\n"
        f"mixture better on held-out text for {np.mean(better):.0%} of heads "
        f"({_direction(metric)})",
        fontsize=10,
    )
    ax.legend(title="largest weight (heads)", fontsize=7, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)  # fmt: skip
    return _finish(fig, save)


# ----------------------------------------------------------------------------- best-fit grid


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
        return [
            Rectangle(
                (x - 0.5, y - 0.5),
                1,
                1,
                facecolor=colors[0] if colors else NONE_COLOR,
                edgecolor="none",
            )
        ]
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


def _as_best_fit(
    scores: pd.DataFrame, model: str | None, best_fit_kwargs: dict[str, Any]
) -> pd.DataFrame:
    if "label" in scores.columns:
        if best_fit_kwargs:
            raise ValueError(
                f"{sorted(best_fit_kwargs)} only apply to a score table; this is already a best-fit "
                "table. Fix: pass score_heads output, or call classify.best_fit yourself."
            )
        return scores
    sub, _, _ = _select(scores, model=model)
    return default_best_fit(sub, **best_fit_kwargs)


def default_best_fit(scores: pd.DataFrame, **best_fit_kwargs: Any) -> pd.DataFrame:
    """`classify.best_fit` with its defaults, except that a table without the ``uniform`` pattern
    (the default baseline) is classified with ``baseline=None`` instead of failing; the rule
    printed on the figure says which rule was used."""
    from attn_tools import classify

    if "baseline" not in best_fit_kwargs and "uniform" not in set(scores["pattern"]):
        best_fit_kwargs["baseline"] = None
    return classify.best_fit(scores, **best_fit_kwargs)


MAX_TIED_COLORS = 4  # a cell shows at most this many tied patterns (the best ones)


def _ties(row: Any) -> tuple[str, ...]:
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


def plot_best_fit_grid(
    scores: pd.DataFrame,
    *,
    model: str | None = None,
    n_layers: int | None = None,
    n_heads: int | None = None,
    annotate: bool | None = None,
    highlight: tuple[int, int] | None = None,
    title: str | None = None,
    save: str | Path | None = None,
    **best_fit_kwargs: Any,
) -> Figure:
    """The poster figure: each head coloured by the pattern it fits best.

    Args:
        scores: a `scoring.score_heads` table (then `classify.best_fit` is applied with
            ``best_fit_kwargs``, e.g. ``threshold=0.5``) or a `classify.best_fit` table.
        model: which model, when the table holds several.
        n_layers, n_heads: grid size (default: from the table).
        annotate: print each head's best score in its cell (default: when cells are big enough).
        highlight: ``(layer, head)`` to outline (the explorer uses it).
        title: replaces the default "What is <model> doing? — ..." title.

    A cell is white when the head fits no pattern under the rule, split diagonally when two
    patterns tie (more than two: equal wedges). Layer 0 is at the bottom. The rule (threshold,
    baseline) is printed under the grid; the legend counts heads per pattern.
    """
    best = _as_best_fit(scores, model, best_fit_kwargs)
    sub, model, _ = _select(best, model=model)
    n_layers, n_heads = _shape(sub, n_layers, n_heads)
    cell = float(np.clip(min(9.0 / n_heads, 8.0 / n_layers), 0.26, 0.62))
    full_title = title or best_fit_title(model)
    labels_seen: dict[str, int] = {}
    for row in sub.itertuples():
        for name in _ties(row)[:MAX_TIED_COLORS]:
            labels_seen[name] = labels_seen.get(name, 0) + 1
    legend_names = sorted(labels_seen, key=lambda nm: (-labels_seen[nm], nm))
    # patterns that predicted exactly the same thing on these sentences share one entry
    aliases = (best.attrs.get("aliases") or {}).get(str(model), {})
    alias_lines = [", ".join(aliases[n]) for n in legend_names if aliases.get(n)]
    legend_width = 0.3 + 0.075 * max(
        [len(n) + 5 for n in legend_names] + [len(a) + 4 for a in alias_lines] + [18]
    )
    width = max(n_heads * cell + 0.9 + legend_width, 0.105 * len(full_title) + 0.5)
    # cells stay square: shrink them if the title made the figure wider than the grid needs
    cell = min(cell, (width - 0.9 - legend_width) / n_heads)
    height = n_layers * cell + 1.7
    if annotate is None:
        annotate = cell >= 0.45
    fig = _new_figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    for row in sub.itertuples():
        layer, head = int(row.layer), int(row.head)
        names = _ties(row)
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
                    fontsize=6.5, color=_text_color_on(colors[0]))  # fmt: skip
    # grid lines so white cells stay visible
    for x in np.arange(-0.5, n_heads, 1.0):
        ax.axvline(x, color="#bbbbbb", linewidth=0.5)
    for y in np.arange(-0.5, n_layers, 1.0):
        ax.axhline(y, color="#bbbbbb", linewidth=0.5)
    if highlight is not None:
        hl, hh = highlight
        ax.add_patch(
            Rectangle(
                (hh - 0.5, hl - 0.5),
                1,
                1,
                fill=False,
                edgecolor="black",
                linewidth=2.5,
                zorder=5,
                gid="highlight",
            )  # fmt: skip
        )
    ax.set_xlim(-0.5, n_heads - 0.5)
    ax.set_ylim(-0.5, n_layers - 0.5)  # layer 0 at the bottom
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.tick_params(labelsize=7 if n_layers > 16 else 9, length=0)
    ax.set_xlabel("head")
    ax.set_ylabel("layer (0 = nearest the input)")
    for spine in ax.spines.values():
        spine.set_visible(False)
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
    handles.append(
        Patch(
            facecolor=NONE_COLOR, edgecolor="#666666", linewidth=0.5, label=f"no pattern ({n_none})"
        )
    )
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
              title="best fit (number of heads)", title_fontsize=8, frameon=False)  # fmt: skip
    fig.suptitle(full_title, fontsize=12, fontweight="bold")
    fig.text(
        0.01,
        0.002,
        _rule_text(best, sub),
        fontsize=7.5,
        ha="left",
        va="bottom",
        wrap=True,
        color="#333333",
    )
    fig.get_layout_engine().set(h_pad=0.25)
    return _finish(fig, save)


def _rule_text(best: pd.DataFrame, sub: pd.DataFrame) -> str:
    rule = best.attrs.get("rule")
    if not rule and "rule" in sub.columns and len(sub):
        rule = str(sub["rule"].iloc[0])
    parts = [f"Rule: {rule}" if rule else "Rule: lowest mean score wins"]
    n_tied = sum(1 for row in sub.itertuples() if len(_ties(row)) > 1)
    if n_tied:
        parts.append(
            f"{n_tied} cell(s) split: patterns tied within tolerance (counted for each in the legend)"
        )
    return " · ".join(parts)


# ----------------------------------------------------------------------------- batch output


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _example_records(contexts: Sequence[PatternContext], patterns: Sequence[Pattern]) -> list[int]:
    """For each pattern, the sentence where it predicts the largest share of rows itself.

    The choice depends on the pattern only, never on how well a head fits it, so an example
    panel is not a cherry-picked best case. One `predict_many` pass per sentence.
    """
    from attn_tools.patterns.base import predict_many

    best_i = np.zeros(len(patterns), dtype=int)
    best_frac = np.full(len(patterns), -1.0)
    for i, ctx in enumerate(contexts):
        _, masks = predict_many(patterns, ctx)  # [P, n]
        frac = masks.mean(axis=1) if masks.shape[1] else np.zeros(len(patterns))
        better = frac > best_frac + 1e-9
        best_i[better], best_frac[better] = i, frac[better]
    return [int(i) for i in best_i]


def write_figures(
    records: Sequence[SentenceAttention],
    scores: pd.DataFrame,
    out: str | Path,
    *,
    model_name: str | None = None,
    patterns: Sequence[str] | None = None,
    formats: Sequence[FigureFormat] = ("png",),
    best: pd.DataFrame | None = None,
    top_k: int = 10,
    max_examples: int = 240,
) -> list[Path]:
    """Write every figure of one model into ``out`` and return the paths written.

    Files (``<p>`` is a pattern name made file-safe; give each model its own ``out``):
    ``best_fit_grid.<fmt>``, ``scores-<p>.<fmt>`` (layers × heads map), ``top_heads-<p>.<fmt>``,
    ``example-<p>.<fmt>`` (the pattern's best head drawn against it on one sentence: the sentence
    where the pattern predicts the most rows of its own), ``scores.csv`` (the score table) and
    ``best_fit.csv`` (one row per head; ``tied`` joined with ``|``). That is one grid and three
    figures per pattern: with all 54 built-in patterns, 163 figures, about 80 s per model on two
    CPU cores (pass ``patterns=`` for fewer).

    Args:
        records: that model's `SentenceAttention` records (examples are drawn from the first
            ``max_examples``).
        scores: `scoring.score_heads` output; rows of other models are ignored.
        out: the folder (created).
        model_name: which model (default: the only one in ``scores``).
        patterns: patterns to draw per-pattern figures for (default: every pattern in ``scores``).
        formats: any of ``"png"``, ``"svg"``, ``"pdf"``.
        best: a `classify.best_fit` table to draw (default: ``classify.best_fit(scores)``).
    """
    from attn_tools import classify
    from attn_tools.patterns.base import build_contexts, get_pattern

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sub, model, metric = _select(scores, model=model_name)
    names = (
        list(patterns) if patterns is not None else list(dict.fromkeys(sub["pattern"].astype(str)))
    )
    # a pattern with no score on any head predicts no row on this model (next_token on a decoder
    # scored on its own rows): there is nothing to draw for it
    scored = set(sub.loc[np.isfinite(sub["mean"].astype(float)), "pattern"].astype(str))
    skipped = [n for n in names if n not in scored]
    names = [n for n in names if n in scored]
    if skipped:
        warnings.warn(
            f"no per-pattern figures for {', '.join(skipped)}: no head has a score "
            f"(the pattern predicts no row of {model}'s sentences)",
            stacklevel=2,
        )
    if best is None:
        best = default_best_fit(sub)
    else:
        best, _, _ = _select(best, model=model)
    written: list[Path] = []

    def emit(fig: Figure, name: str) -> None:
        written.extend(save_figure(fig, out / name, formats=formats))

    emit(plot_best_fit_grid(best, model=model), "best_fit_grid")
    model_records = [r for r in records if r.model == model][:max_examples] or list(
        records[:max_examples]
    )
    pats = [get_pattern(name) for name in names]
    contexts = build_contexts(model_records) if model_records else []
    examples = _example_records(contexts, pats) if contexts else []
    for k, (name, pat) in enumerate(zip(names, pats)):
        slug = _slug(name)
        emit(plot_pattern_scores(sub, name, model=model, metric=metric), f"scores-{slug}")
        emit(plot_top_heads(sub, name, k=top_k, model=model, metric=metric), f"top_heads-{slug}")
        if examples:
            top = classify.top_heads(sub, name, k=1).iloc[0]
            i = examples[k]
            fig = plot_head_vs_pattern(
                model_records[i], int(top["layer"]), int(top["head"]), pat,
                metric=metric or "jsd", context=contexts[i],
            )  # fmt: skip
            emit(fig, f"example-{slug}")
    csv_scores = out / "scores.csv"
    sub.to_csv(csv_scores, index=False)
    table = best.copy()
    if "tied" in table.columns:
        table["tied"] = table["tied"].map(
            lambda t: "|".join(t) if isinstance(t, (tuple, list)) else t
        )
    csv_best = out / "best_fit.csv"
    table.to_csv(csv_best, index=False)
    written += [csv_scores, csv_best]
    return written
