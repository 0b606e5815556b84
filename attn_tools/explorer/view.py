"""The interactive attention view and the clickable best-fit grid (anywidget, offline).

Both widgets are `anywidget.AnyWidget` subclasses whose JavaScript and CSS ship inside this
package (``attn_tools/explorer/static/``): nothing is fetched from a CDN and nothing probes the
network. Python does every computation (which head, token or word level, the best-fit labels and
colours) and sends plain lists; the browser only draws them on a ``<canvas>`` at the device's pixel
ratio and reports hovers and clicks.

- `attention_view` → `AttentionView`: one head's attention (``attention[layer, head, q, k]``,
  rows = queries) with hover read-outs, every token label drawn (rotated, scrollable, zoomable),
  a token/word toggle (`attn_tools.text` pooling: to a word = sum, from a word = mean), and an
  optional second panel (another head, or the same head of another model).
- `head_grid` → `HeadGrid`: the best-fit grid, cells coloured as `viz.plot_best_fit_grid`
  colours them; a click sets its ``layer``/``head`` traits, which `explore` links to the view.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anywidget
import numpy as np
import traitlets as T

if TYPE_CHECKING:
    import pandas as pd

    from attn_tools.extract import SentenceAttention
    from attn_tools.models import ModelBundle
    from attn_tools.text import WordAttention

__all__ = [
    "STATIC",
    "AttentionView",
    "HeadGrid",
    "Level",
    "attention_view",
    "grid_data",
    "head_grid",
    "panel_data",
    "word_attention",
]

STATIC = Path(__file__).with_name("static")
Level = Literal["token", "word"]
LEVELS: tuple[str, ...] = ("token", "word")


def word_attention(record: SentenceAttention) -> WordAttention:
    """The record's attention pooled to words (spaCy parse, cached on disk by `text.parse`)."""
    from attn_tools.text import align, parse, to_word_level

    return to_word_level(record, align(record, parse(record.text)[0]))


def panel_data(
    record: SentenceAttention,
    layer: int,
    head: int,
    *,
    level: Level = "token",
    words: WordAttention | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """What one canvas panel receives: ``{"title", "tokens", "matrix", "level"}``.

    ``matrix`` is ``attention[layer, head]`` as nested lists ``[n][n]`` (rows are queries), at
    token level or pooled to words (``words``: a precomputed `word_attention`).
    """
    _check_head(record, layer, head)
    if level == "word":
        words = words if words is not None else word_attention(record)
        tokens, matrix = list(words.labels), words.attention[layer, head]
    elif level == "token":
        tokens, matrix = record.labels, record.attention[layer, head]
    else:
        raise ValueError(f"level={level!r} is not one of {LEVELS}. Fix: level='token' or 'word'.")
    return {
        "title": title or f"{record.model} · layer {layer}, head {head}",
        "tokens": [str(t) for t in tokens],
        "matrix": np.asarray(matrix, dtype=np.float64).tolist(),
        "level": level,
    }


def _check_head(record: SentenceAttention, layer: int, head: int) -> None:
    if not (0 <= layer < record.n_layers and 0 <= head < record.n_heads):
        raise ValueError(
            f"layer {layer}, head {head} is outside {record.model}'s {record.n_layers} layers × "
            f"{record.n_heads} heads. Fix: pick layer < {record.n_layers} and head < "
            f"{record.n_heads}."
        )


class _Source:
    """One model's records with a per-sentence cache of their word-level attention."""

    def __init__(self, records: list[SentenceAttention]) -> None:
        self.records = records  # shared with the caller (the explorer appends typed sentences)
        self._words: dict[int, WordAttention] = {}

    @property
    def model(self) -> str:
        return self.records[0].model

    @property
    def shape(self) -> tuple[int, int]:
        return self.records[0].n_layers, self.records[0].n_heads

    def has_words(self, index: int) -> bool:
        return index in self._words

    def panel(self, index: int, layer: int, head: int, level: Level) -> dict[str, Any]:
        record = self.records[index]
        words = None
        if level == "word":
            if index not in self._words:
                self._words[index] = word_attention(record)
            words = self._words[index]
        return panel_data(record, layer, head, level=level, words=words)


class AttentionView(anywidget.AnyWidget):
    """One head's attention on a canvas, optionally beside a second panel.

    Traits (synced with the browser): ``layer``, ``head``, ``sentence``, ``level`` (``"token"``
    or ``"word"``); ``compare_layer`` / ``compare_head`` choose the second panel's head (-1 =
    follow ``layer`` / ``head``, as when comparing two models). ``panels`` holds what is drawn
    (see `panel_data`), ``busy`` shows the busy badge (after 200 ms), ``note`` a line under it.
    """

    _esm = STATIC / "attention_view.js"
    _css = STATIC / "attention_view.css"

    layer = T.Int(0).tag(sync=True)
    head = T.Int(0).tag(sync=True)
    sentence = T.Int(0).tag(sync=True)
    level = T.Unicode("token").tag(sync=True)
    n_layers = T.Int(1).tag(sync=True)
    n_heads = T.Int(1).tag(sync=True)
    sentences = T.List(T.Unicode()).tag(sync=True)
    panels = T.List(T.Dict()).tag(sync=True)
    busy = T.Bool(False).tag(sync=True)
    note = T.Unicode("").tag(sync=True)
    compare_layer = T.Int(-1)
    compare_head = T.Int(-1)

    def __init__(
        self,
        records: list[SentenceAttention],
        *,
        layer: int = 0,
        head: int = 0,
        level: Level = "token",
        compare: tuple[int, int] | list[SentenceAttention] | None = None,
    ) -> None:
        if not records:
            raise ValueError("the view needs at least one sentence. Fix: pass sentences=[...]")
        if level not in LEVELS:
            raise ValueError(f"level={level!r} is not one of {LEVELS}. Fix: 'token' or 'word'.")
        _check_head(records[0], layer, head)
        self.source = _Source(records)
        self.other: _Source | None = None
        compare_layer = compare_head = -1
        if isinstance(compare, tuple):
            compare_layer, compare_head = (int(x) for x in compare)
            _check_head(records[0], compare_layer, compare_head)
        elif compare is not None:
            self.other = _Source(_same_texts(records, list(compare)))
        n_layers, n_heads = self.source.shape
        super().__init__(
            layer=layer, head=head, level=level, n_layers=n_layers, n_heads=n_heads,
            compare_layer=compare_layer, compare_head=compare_head,
        )  # fmt: skip
        self.refresh_sentences()
        self.observe(
            self._on_change,
            names=["layer", "head", "sentence", "level", "compare_layer", "compare_head"],
        )
        self.redraw()

    @property
    def records(self) -> list[SentenceAttention]:
        return self.source.records

    def refresh_sentences(self) -> None:
        """Re-read the sentence list (after the explorer added a sentence)."""
        self.sentences = [
            f"{i}: {_short(r.text)} ({r.n_tokens} tokens)" for i, r in enumerate(self.records)
        ]

    def _on_change(self, _change: dict) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Recompute ``panels`` for the current traits; an error becomes the ``note``."""
        index = self.sentence
        if not 0 <= index < len(self.records):
            self.note = f"sentence {index} does not exist (0 to {len(self.records) - 1})"
            return
        level: Level = "word" if self.level == "word" else "token"
        slow = level == "word" and not self.source.has_words(index)
        if slow:  # spaCy parses on first use: show the badge (the CSS waits 200 ms)
            self.busy = True
        try:
            panels = [self.source.panel(index, self.layer, self.head, level)]
            note = ""
            if self.other is not None:
                layer, head = self.layer, self.head
                n_l, n_h = self.other.shape
                if layer < n_l and head < n_h:
                    panels.append(self.other.panel(index, layer, head, level))
                else:
                    note = (
                        f"{self.other.model} has {n_l} layers × {n_h} heads: no layer {layer}, "
                        f"head {head} to compare"
                    )
            elif self.compare_layer >= 0 and self.compare_head >= 0:
                panels.append(
                    self.source.panel(index, self.compare_layer, self.compare_head, level)
                )
            self.panels, self.note = panels, note
        except Exception as exc:  # shown in the widget, not raised into the event loop
            self.note = f"{type(exc).__name__}: {exc}"
        finally:
            self.busy = False


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _same_texts(
    records: Sequence[SentenceAttention], other: Sequence[SentenceAttention]
) -> list[SentenceAttention]:
    texts, others = [r.text for r in records], [r.text for r in other]
    if texts != others[: len(texts)] or len(others) < len(texts):
        raise ValueError(
            f"compare= holds {len(others)} records whose texts differ from the view's "
            f"{len(texts)} sentences. Fix: extract the same sentences with the second model, or "
            "pass the model itself (compare='smollm2')."
        )
    return list(other[: len(texts)])


def _records_of(
    source: Sequence[SentenceAttention] | ModelBundle | str,
    sentences: Sequence[str] | str | None,
    max_sentences: int,
) -> list[SentenceAttention]:
    from attn_tools.extract import SentenceAttention

    if isinstance(source, (list, tuple)) and source and isinstance(source[0], SentenceAttention):
        return list(source)
    from attn_tools.data import load_sentences
    from attn_tools.explorer.app import as_bundle
    from attn_tools.extract import extract

    bundle = as_bundle(source)  # type: ignore[arg-type]
    if sentences is None:
        sentences = load_sentences("story")[:max_sentences]
    elif isinstance(sentences, str):
        sentences = load_sentences(sentences)[:max_sentences]
    return extract(bundle, list(sentences), progress=False)


def attention_view(
    records_or_bundle: Sequence[SentenceAttention] | ModelBundle | str,
    sentences: Sequence[str] | str | None = None,
    *,
    layer: int = 0,
    head: int = 0,
    compare: tuple[int, int] | Sequence[SentenceAttention] | ModelBundle | str | None = None,
    level: Level = "token",
    max_sentences: int = 12,
) -> AttentionView:
    """The interactive attention view of a model's heads (an anywidget; display it).

    Args:
        records_or_bundle: extracted records, a `ModelBundle`, or a model name (``"minilm"``).
        sentences: sentences to extract when given a model (a list, or a built-in set name; the
            first ``max_sentences`` of a set); default: the first ``max_sentences`` ``story``
            sentences. Ignored for records.
        layer, head: the head shown first.
        compare: a second panel: ``(layer, head)`` of the same model, or another model (a name,
            bundle, or records of the same sentences) shown at the same layer and head.
        level: ``"token"`` (model tokens) or ``"word"`` (Clark et al. 2019 pooling).

    Example:
        >>> view = attention_view("minilm", ["The cat sat on the mat."], layer=2, head=3,
        ...                       compare="smollm2")
        >>> view.head = 4  # the browser redraws
    """
    records = _records_of(records_or_bundle, sentences, max_sentences)
    other: tuple[int, int] | list[SentenceAttention] | None
    if compare is None or isinstance(compare, tuple):
        other = compare
    elif isinstance(compare, list) and compare and not isinstance(compare[0], str):
        other = list(compare)
    else:
        other = _records_of(compare, [r.text for r in records], len(records))  # type: ignore[arg-type]
    return AttentionView(records, layer=layer, head=head, level=level, compare=other)


# ----------------------------------------------------------------------------- best-fit grid


def grid_data(best: pd.DataFrame, *, model: str | None = None) -> dict[str, Any]:
    """What `HeadGrid` draws from a `classify.best_fit` table: sizes, cells, legend, captions.

    Each cell is ``{"layer", "head", "labels", "colors", "text", "score"}``; colours are
    `viz.pattern_color` (white for no pattern), as in `viz.plot_best_fit_grid`.
    """
    from attn_tools.viz import NONE_COLOR, pattern_color
    from attn_tools.viz.colors import text_color_on
    from attn_tools.viz.grid import (
        MAX_TIED_COLORS,
        _check_best_fit,
        _rule_text,
        best_fit_title,
        head_labels,
    )
    from attn_tools.viz.tables import grid_shape, select_table

    _check_best_fit(best)
    sub, name, _ = select_table(best, model=model)
    n_layers, n_heads = grid_shape(sub)
    cells, counts = [], {}
    for row in sub.itertuples():
        labels = list(head_labels(row))
        colors = [pattern_color(n) for n in labels[:MAX_TIED_COLORS]] or [NONE_COLOR]
        for label in labels[:MAX_TIED_COLORS]:
            counts[label] = counts.get(label, 0) + 1
        score = getattr(row, "best_score", None)
        cells.append({
            "layer": int(row.layer),
            "head": int(row.head),
            "labels": labels,
            "colors": colors,
            "text": text_color_on(colors[0]),
            "score": float(score) if score is not None and np.isfinite(score) else None,
        })  # fmt: skip
    legend = [
        {"label": n, "color": pattern_color(n), "count": c, "none": False}
        for n, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    n_none = sum(1 for c in cells if not c["labels"])
    legend.append({"label": "no pattern", "color": NONE_COLOR, "count": n_none, "none": True})
    return {
        "n_layers": n_layers,
        "n_heads": n_heads,
        "cells": cells,
        "legend": legend,
        "title": best_fit_title(name) + " (click a head)",
        "caption": _rule_text(best, sub),
    }


class HeadGrid(anywidget.AnyWidget):
    """The clickable best-fit grid; ``layer`` and ``head`` follow clicks (link them to a view)."""

    _esm = STATIC / "head_grid.js"
    _css = STATIC / "attention_view.css"

    layer = T.Int(0).tag(sync=True)
    head = T.Int(0).tag(sync=True)
    n_layers = T.Int(1).tag(sync=True)
    n_heads = T.Int(1).tag(sync=True)
    cells = T.List(T.Dict()).tag(sync=True)
    legend = T.List(T.Dict()).tag(sync=True)
    title = T.Unicode("").tag(sync=True)
    caption = T.Unicode("").tag(sync=True)


def head_grid(
    best: pd.DataFrame, *, layer: int = 0, head: int = 0, model: str | None = None
) -> HeadGrid:
    """A `HeadGrid` of a `classify.best_fit` table (``model=`` when it holds several)."""
    return HeadGrid(layer=layer, head=head, **grid_data(best, model=model))


def top_patterns_html(
    names: Sequence[str],
    values: np.ndarray,
    baseline: float | None,
    *,
    layer: int,
    head: int,
    label: str,
    display: str,
    direction: str,
    lower_is_better: bool,
    k: int = 5,
) -> str:
    """An HTML table of a head's ``k`` best patterns and the uniform baseline's score."""
    from attn_tools.viz import pattern_color

    vals = np.asarray(values, dtype=float)
    # the baseline has its own row under the table, so it is not ranked with the patterns
    order = [
        int(i)
        for i in np.argsort(vals if lower_is_better else -vals, kind="stable")
        if np.isfinite(vals[i]) and names[i] != "uniform"
    ]
    rows = []
    for rank, i in enumerate(order[:k], 1):
        beats = baseline is None or (vals[i] < baseline if lower_is_better else vals[i] > baseline)
        rows.append(
            f"<tr class='attn-top-row' data-pattern='{html.escape(names[i])}'><td>{rank}</td>"
            f"<td><span class='attn-swatch' style='background:{pattern_color(names[i])}'></span> "
            f"{html.escape(names[i])}</td><td>{vals[i]:.3f}</td>"
            f"<td>{'' if beats else 'not better than uniform'}</td></tr>"
        )
    if baseline is not None:
        rows.append(
            "<tr class='attn-baseline'><td></td><td>uniform (baseline)</td>"
            f"<td>{baseline:.3f}</td><td></td></tr>"
        )
    return (
        f"<div class='attn-iv attn-top-patterns'><b>layer {layer}, head {head}</b>: best fit "
        f"<b>{html.escape(label)}</b>. Top {min(k, len(order))} of {len(order)} patterns by "
        f"{html.escape(display)} ({html.escape(direction)}):"
        f"<table class='attn-top'><tr><th>#</th><th>pattern</th><th>mean</th><th></th></tr>"
        f"{''.join(rows)}</table></div>"
    )
