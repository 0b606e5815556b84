"""The interactive explorer (ipywidgets) and the hand-off to BertViz.

`explore` returns an `Explorer`: sliders for layer and head, dropdowns for pattern and sentence,
a box to type a new sentence, and a live picture of the head's attention beside the pattern's
prediction with the score; a second tab shows the head's scores across every pattern and where it
sits in the best-fit grid. Pictures are PNG bytes in an `ipywidgets.Image`, drawn with matplotlib's
Agg backend, so nothing is fetched from a CDN to render them (Voilà and JupyterLab ship the
ipywidgets front end).

A slider move redraws without rebuilding anything: the figure, its artists and each sentence's
predictions are kept, and only the image data and titles change (see
``benchmarks/bench_explorer.py`` for the measured time).

`show_bertviz` passes a record's attention to BertViz's ``head_view`` / ``model_view`` in the
format they expect.
"""

from __future__ import annotations

import html
import io
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import ipywidgets as W
import numpy as np
import pandas as pd

from attn_tools import viz
from attn_tools.extract import SentenceAttention, extract
from attn_tools.models import ModelBundle, load_model
from attn_tools.patterns.base import (
    Pattern,
    PatternContext,
    build_contexts,
    predict,
    resolve_patterns,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BERTVIZ_TOKEN_LIMITS", "Explorer", "explore", "show_bertviz"]

DEFAULT_SENTENCES = 12
# Above these token counts BertViz draws so many lines that the browser stalls (head view: n²
# lines per head; model view: n² lines in each of layers × heads thumbnails).
BERTVIZ_TOKEN_LIMITS: dict[str, int] = {"head": 128, "model": 48}


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class Explorer(W.VBox):
    """The explorer app; display it in a notebook (it is an ipywidgets ``VBox``).

    Its controls are attributes, so code (and tests) can drive it like a user: ``layer``,
    ``head`` (``IntSlider``), ``pattern``, ``sentence`` (``Dropdown``), ``new_sentence``
    (``Text``) with ``add_button``, ``image`` (the head-vs-pattern PNG), ``score`` (``HTML``),
    ``status`` (errors appear here), ``tabs``, ``scores_image`` and ``grid_image`` (second tab).
    ``last_redraw_ms`` is the time of the latest redraw.
    """

    def __init__(
        self,
        bundle: ModelBundle | None,
        records: Sequence[SentenceAttention],
        patterns: Sequence[Pattern],
        *,
        metric: str = "jsd",
        scores: pd.DataFrame | None = None,
        scale: Literal["sqrt", "linear"] = "sqrt",
        dpi: int = 80,
    ) -> None:
        if not records:
            raise ValueError("the explorer needs at least one sentence; pass sentences=[...]")
        if not patterns:
            raise ValueError("the explorer needs at least one pattern; pass patterns=[...]")
        self.bundle = bundle
        self.records: list[SentenceAttention] = list(records)
        self.patterns: dict[str, Pattern] = {p.name: p for p in patterns}
        self.metric = metric
        self.scale = scale
        self.dpi = dpi
        self.last_redraw_ms = float("nan")
        self._scored_records = len(self.records)
        self._scores = scores
        self._score_index: dict[tuple[int, int, str], tuple[float, int]] | None = None
        self._best: pd.DataFrame | None = None
        self._contexts: dict[int, PatternContext] = {}
        self._predictions: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
        self._fig: Figure | None = None
        self._fig_sentence = -1
        self._view: _Blit | None = None
        self._bars_blit: _Blit | None = None
        self._grid_marker: Any = None
        self._busy = False

        first = self.records[0]
        style = {"description_width": "64px"}
        wide = W.Layout(width="340px")
        self.layer = W.IntSlider(
            0, 0, first.n_layers - 1, description="layer", style=style, layout=wide
        )
        self.head = W.IntSlider(
            0, 0, first.n_heads - 1, description="head", style=style, layout=wide
        )
        self.pattern = W.Dropdown(
            options=list(self.patterns), description="pattern", style=style, layout=wide
        )
        self.sentence = W.Dropdown(
            options=self._sentence_options(), value=0, description="sentence", style=style,
            layout=W.Layout(width="700px"),
        )  # fmt: skip
        self.new_sentence = W.Text(
            placeholder="Type a new sentence and press Enter (or Add)",
            continuous_update=False,
            description="new",
            style=style,
            layout=W.Layout(width="600px"),
            disabled=bundle is None,
        )
        self.add_button = W.Button(description="Add", disabled=bundle is None)
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
        self.score = W.HTML()
        self.status = W.HTML()
        self.scores_image = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
        self.grid_image = W.Image(format="png", layout=W.Layout(max_width="100%", height="auto"))
        self.scores_note = W.HTML()
        for widget, cls in (
            (self.layer, "attn-layer-slider"),
            (self.head, "attn-head-slider"),
            (self.pattern, "attn-pattern"),
            (self.sentence, "attn-sentence"),
            (self.new_sentence, "attn-new-sentence"),
            (self.image, "attn-view"),
            (self.score, "attn-score"),
            (self.status, "attn-status"),
            (self.scores_image, "attn-scores"),
            (self.grid_image, "attn-grid"),
            (self.scores_note, "attn-scores-note"),
        ):
            widget.add_class(cls)

        view_tab = W.VBox([self.score, self.image])
        scores_tab = W.VBox(
            [
                self.scores_note,
                W.HBox(
                    [self.scores_image, self.grid_image],
                    # no stretching: each picture keeps its own aspect ratio
                    layout=W.Layout(flex_flow="row wrap", align_items="flex-start"),
                ),
            ]
        )
        self.tabs = W.Tab(children=[view_tab, scores_tab])
        self.tabs.set_title(0, "head vs pattern")
        self.tabs.set_title(1, "scores & best-fit grid")
        controls = W.VBox(
            [
                W.HBox([self.layer, self.head, self.pattern]),
                self.sentence,
                W.HBox([self.new_sentence, self.add_button]),
            ]
        )
        super().__init__([controls, self.status, self.tabs])

        for control in (self.layer, self.head, self.pattern, self.sentence):
            control.observe(self._on_change, names="value")
        self.tabs.observe(self._on_change, names="selected_index")
        self.new_sentence.observe(self._on_submit, names="value")
        self.add_button.on_click(lambda _: self.add_sentence(self.new_sentence.value))
        self.redraw()

    # ------------------------------------------------------------------ data

    def _sentence_options(self) -> list[tuple[str, int]]:
        return [
            (f"{i}: {_short(r.text)} ({r.n_tokens} tokens)", i) for i, r in enumerate(self.records)
        ]

    def _context(self, index: int) -> PatternContext:
        if index not in self._contexts:
            missing = [i for i in range(len(self.records)) if i not in self._contexts]
            # one batched parse for all sentences the first time, then one at a time
            for i, ctx in zip(missing, build_contexts([self.records[i] for i in missing])):
                self._contexts[i] = ctx
        return self._contexts[index]

    def prediction(self, index: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The cached ``(matrix [n, n], has_mass [n])`` of pattern ``name`` on sentence ``index``."""
        key = (index, name)
        if key not in self._predictions:
            self._predictions[key] = predict(self.patterns[name], self._context(index))
        return self._predictions[key]

    def scores(self) -> pd.DataFrame:
        """The score table of the loaded sentences (computed on first use, then kept)."""
        if self._scores is None:
            from attn_tools import scoring

            pats: list[Pattern | str] = list(self.patterns.values())
            if "uniform" not in self.patterns:
                pats.append("uniform")  # classify.best_fit's default baseline
            self._scores = scoring.score_heads(
                self.records[: self._scored_records],
                pats,
                metric=self.metric,
            )
        return self._scores

    def best_fit(self) -> pd.DataFrame:
        """`classify.best_fit` of `scores` (kept)."""
        if self._best is None:
            self._best = viz.default_best_fit(self.scores())
        return self._best

    def add_sentence(self, text: str) -> int:
        """Extract a new sentence (cached), add it to the dropdown and select it; its index."""
        text = (text or "").strip()
        if not text:
            self._error("type a sentence first")
            return -1
        if self.bundle is None:
            self._error("this explorer was built from records only; pass a model to add sentences")
            return -1
        try:
            record = extract(self.bundle, [text], progress=False)[0]
        except Exception as exc:  # shown to the user, not raised into the event loop
            self._error(f"could not add the sentence: {exc}")
            return -1
        self.records.append(record)
        index = len(self.records) - 1
        self.sentence.options = self._sentence_options()
        self.sentence.value = index  # triggers a redraw
        self.new_sentence.value = ""
        return index

    # ------------------------------------------------------------------ events

    def _on_submit(self, change: dict) -> None:
        if change["new"].strip():
            self.add_sentence(change["new"])

    def _on_change(self, _change: dict) -> None:
        self.redraw()

    def _error(self, message: str) -> None:
        self.status.value = (
            f'<div class="attn-error" style="color:#b00020">⚠ {html.escape(message)}</div>'
        )

    def redraw(self) -> None:
        """Redraw the visible tab for the current controls; errors go to ``status``."""
        if self._busy:
            return
        self._busy = True
        start = time.perf_counter()
        try:
            self.status.value = ""
            self._draw_view()
            if self.tabs.selected_index == 1:
                self._draw_scores_tab()
        except Exception as exc:
            self._error(f"{type(exc).__name__}: {exc}")
        finally:
            self._busy = False
            self.last_redraw_ms = (time.perf_counter() - start) * 1000

    # ------------------------------------------------------------------ drawing

    def _build_view(self, index: int) -> None:
        """Build the two-panel figure for one sentence (only when the sentence changes).

        Both panels share one fixed colour scale (0 to 1, square-root by default so that diffuse
        heads stay visible), so the background — axes, token labels, colour bar — never changes
        and a redraw only paints the two images and their titles over it.
        """
        record = self.records[index]
        n = record.n_tokens
        side = float(np.clip(1.4 + 0.2 * n, 3.0, 6.0))
        fig = viz._new_figure(
            figsize=(2 * side + 1.4, side + 0.8), layout="constrained", dpi=self.dpi
        )
        left, right = fig.subplots(1, 2, sharey=True)
        zeros = np.zeros((n, n))
        self._im_actual = viz._draw_matrix(left, zeros, record.labels, vmax=1.0, scale=self.scale)
        self._im_pred = viz._draw_matrix(right, zeros, record.labels, vmax=1.0, scale=self.scale)
        right.set_ylabel("")
        fig.colorbar(
            self._im_actual, ax=[left, right], fraction=0.03, pad=0.02,
            label=viz._cbar_label(self.scale),
        )  # fmt: skip
        self._title_actual = left.set_title("actual", fontsize=10)
        self._title_pred = right.set_title("predicted", fontsize=10)
        artists = [self._im_actual, self._im_pred, self._title_actual, self._title_pred]
        self._view = _Blit(fig, artists)
        self._fig, self._fig_sentence = fig, index

    def _draw_view(self) -> None:
        index, layer, head, name = (
            self.sentence.value, self.layer.value, self.head.value, self.pattern.value
        )  # fmt: skip
        if self._fig is None or self._fig_sentence != index:
            self._build_view(index)
        record = self.records[index]
        actual = record.head(layer, head)
        predicted, has_mass = self.prediction(index, name)
        self._im_actual.set_data(actual)
        self._im_pred.set_data(predicted)
        self._title_actual.set_text(f"actual: layer {layer}, head {head}")
        fallback = int((~has_mass).sum())
        note = f" ({fallback} row{'s' * (fallback != 1)} → self)" if fallback else ""
        self._title_pred.set_text(f"predicted: {name}{note}")
        self.image.value = self._view.png()
        value = viz._score_pair(
            actual, self.patterns[name], self._context(index), self.metric, (predicted, has_mass)
        )
        direction = viz._direction(self.metric)
        mean = self._mean_score(layer, head, name)
        self.score.value = (
            f"<b>{html.escape(record.model)}</b> · layer {layer}, head {head} vs "
            f"<b>{html.escape(name)}</b>: {viz._metric_name(self.metric)} = "
            f"<b class='attn-score-value'>{value:.3f}</b> on this sentence ({direction})"
            f"{mean}"
        )

    def _mean_score(self, layer: int, head: int, name: str) -> str:
        if self._scores is None:
            return ""
        if self._score_index is None:
            t = self._scores
            self._score_index = {
                (int(r.layer), int(r.head), str(r.pattern)): (float(r.mean), int(r.n_sentences))
                for r in t[["layer", "head", "pattern", "mean", "n_sentences"]].itertuples()
            }
        hit = self._score_index.get((layer, head, name))
        if hit is None:
            return ""
        return f"; mean over {hit[1]} sentences: {hit[0]:.3f}"

    def _build_scores_tab(self) -> None:
        """The per-pattern bar chart and the best-fit grid, built once; redraws move data only.

        Bars keep the registry order (patterns grouped by family) so the axis never changes; the
        best pattern's bar is outlined and named in the title.
        """
        table = self.scores()
        best = self.best_fit()
        names = list(dict.fromkeys(table["pattern"].astype(str)))
        self._bar_names = names
        self._mean_grid = {
            name: viz._grid(table[table["pattern"] == name], "mean", *self._shape())
            for name in names
        }
        fig = viz._new_figure(
            figsize=(5.4, 0.22 * len(names) + 1.3), layout="constrained", dpi=self.dpi
        )
        ax = fig.add_subplot()
        y = np.arange(len(names))[::-1]
        bars = ax.barh(
            y, np.zeros(len(names)), color=[viz.pattern_color(n) for n in names],
            edgecolor="black", linewidth=0.4,
        )  # fmt: skip
        ax.set_yticks(y, names, fontsize=7)
        values = table["mean"].to_numpy(float)
        if self.metric == "jsd":
            ax.set_xlim(0.0, 1.0)
        else:
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            ax.set_xlim(min(0.0, lo), hi + 0.05 * (hi - min(0.0, lo) or 1.0))
        threshold = best["threshold"].iloc[0] if "threshold" in best.columns else None
        if isinstance(threshold, (int, float)) and np.isfinite(threshold):
            ax.axvline(float(threshold), color="#444444", linestyle="--", linewidth=0.8)
        ax.set_xlabel(
            f"mean {viz._metric_name(self.metric)} over {self._scored_records} sentences "
            f"({viz._direction(self.metric)})",
            fontsize=8,
        )
        ax.grid(axis="x", alpha=0.3)
        self._bars = list(bars)
        # placeholder text of full length so the layout keeps room for the live title
        self._bar_title = ax.set_title("layer 0, head 0: closest is a pattern (0.000)", fontsize=9)
        self._bars_blit = _Blit(fig, [*self._bars, self._bar_title])
        grid = viz.plot_best_fit_grid(best, highlight=(0, 0))
        grid.set_dpi(self.dpi)
        self._grid_marker = next(p for p in grid.axes[0].patches if p.get_gid() == "highlight")
        self._grid_blit = _Blit(grid, [self._grid_marker])

    def _shape(self) -> tuple[int, int]:
        return self.records[0].n_layers, self.records[0].n_heads

    def _draw_scores_tab(self) -> None:
        if self._bars_blit is None:
            self._build_scores_tab()
        layer, head = self.layer.value, self.head.value
        values = np.array([self._mean_grid[n][layer, head] for n in self._bar_names])
        higher = viz._higher(self.metric)
        best_i = int(np.nanargmax(values) if higher else np.nanargmin(values))
        for i, (bar, v) in enumerate(zip(self._bars, values)):
            bar.set_width(0.0 if np.isnan(v) else float(v))
            bar.set_linewidth(2.0 if i == best_i else 0.4)
        self._bar_title.set_text(
            f"layer {layer}, head {head}: closest is {self._bar_names[best_i]} "
            f"({values[best_i]:.3f})"
        )
        self.scores_image.value = self._bars_blit.png()
        best = self.best_fit()
        row = best[(best["layer"] == layer) & (best["head"] == head)]
        label = str(row["label"].iloc[0]) if len(row) else "?"
        self.scores_note.value = (
            f"Layer {layer}, head {head} is labelled <b>{html.escape(label)}</b> in the best-fit "
            f"grid (outlined; scores over the first {self._scored_records} sentences)"
        )
        self._grid_marker.set_xy((head - 0.5, layer - 0.5))
        self.grid_image.value = self._grid_blit.png()


class _Blit:
    """A figure drawn once; afterwards only its ``artists`` are repainted over the background.

    The layout is frozen after the first draw, and the background (everything but ``artists``)
    is kept as pixels, so a redraw costs a few image blits and one PNG encode.
    """

    def __init__(self, fig: Figure, artists: Sequence[Any]) -> None:
        for artist in artists:
            artist.set_animated(True)
        fig.canvas.draw()  # settles the constrained layout; animated artists are skipped
        fig.set_layout_engine("none")
        self.fig, self.artists = fig, list(artists)
        self.background = fig.canvas.copy_from_bbox(fig.bbox)

    def png(self) -> bytes:
        from PIL import Image

        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        for artist in self.artists:
            self.fig.draw_artist(artist)
        width, height = canvas.get_width_height(physical=True)
        image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        buf = io.BytesIO()
        image.save(buf, format="png", compress_level=1)
        return buf.getvalue()


def _as_bundle(bundle_or_name: ModelBundle | str) -> ModelBundle:
    if isinstance(bundle_or_name, ModelBundle):
        return bundle_or_name
    if isinstance(bundle_or_name, str):
        from transformers.utils import logging as hf_logging

        # the weight-loading progress bar would otherwise stay printed above the app
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            return load_model(bundle_or_name)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
    raise TypeError(
        f"expected a ModelBundle or a model name, got {type(bundle_or_name).__name__}. "
        "Fix: pass load_model(...) or an alias such as 'minilm'."
    )


def explore(
    bundle_or_name: ModelBundle | str,
    sentences: Sequence[str] | str | None = None,
    patterns: Sequence[str | Pattern] | None = None,
    *,
    records: Sequence[SentenceAttention] | None = None,
    scores: pd.DataFrame | None = None,
    metric: str = "jsd",
) -> Explorer:
    """Build the explorer for a model.

    Args:
        bundle_or_name: a `ModelBundle` or a name for `load_model` (``"minilm"``).
        sentences: the sentences to explore (a list, or a built-in set name such as ``"story"``);
            default: the first 12 ``story`` sentences.
        patterns: pattern names or `Pattern` objects (default: every registered pattern).
        records: already extracted records (skips extraction; ``sentences`` is then ignored).
        scores: a `scoring.score_heads` table of these records, if you have one (the second tab
            computes it on first use otherwise).
        metric: the metric shown (``"jsd"`` by default).

    Example:
        >>> app = explore("minilm", "story", ["previous_token", "first_token"])
        >>> app  # displays the app in a notebook
    """
    from attn_tools.data import load_sentences

    bundle = _as_bundle(bundle_or_name)
    if records is None:
        if sentences is None:
            sentences = load_sentences("story")[:DEFAULT_SENTENCES]
        elif isinstance(sentences, str):
            sentences = load_sentences(sentences)[:DEFAULT_SENTENCES]
        records = extract(bundle, list(sentences), progress=False)
    return Explorer(bundle, records, resolve_patterns(patterns), metric=metric, scores=scores)


# ----------------------------------------------------------------------------- BertViz


def show_bertviz(
    record_or_text: SentenceAttention | str,
    view: Literal["head", "model"] = "head",
    *,
    bundle: ModelBundle | str | None = None,
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    include_layers: Sequence[int] | None = None,
    html_action: Literal["view", "return"] = "view",
) -> Any:
    """Show a sentence's attention in BertViz's ``head_view`` or ``model_view``.

    BertViz wants a tuple with one ``torch`` tensor per layer, each ``[1, heads, n, n]``, and the
    token strings; this builds exactly that from a `SentenceAttention` (or extracts ``text`` with
    ``bundle``). Above `BERTVIZ_TOKEN_LIMITS` tokens a `UserWarning` says the view will be too slow
    to use (pass ``include_layers`` to draw fewer layers). Note that BertViz itself loads
    require.js and d3 from a CDN, so its views need network access in the browser (the
    `explore` app does not).

    Returns:
        BertViz's ``IPython.display.HTML`` with ``html_action="return"``; None when displayed.
    """
    import torch

    if view not in BERTVIZ_TOKEN_LIMITS:
        raise ValueError(f"view must be 'head' or 'model', got {view!r}")
    if isinstance(record_or_text, str):
        if bundle is None:
            raise ValueError("pass bundle= (a ModelBundle or model name) to show a text in BertViz")
        record = extract(_as_bundle(bundle), [record_or_text], progress=False)[0]
    elif isinstance(record_or_text, SentenceAttention):
        record = record_or_text
    else:
        raise TypeError(
            f"expected a SentenceAttention or a string, got {type(record_or_text).__name__}"
        )
    limit = BERTVIZ_TOKEN_LIMITS[view]
    if record.n_tokens > limit:
        warnings.warn(
            f"this sentence has {record.n_tokens} tokens; BertViz's {view} view becomes unusable "
            f"(the browser stalls drawing lines) above about {limit} tokens. Fix: a shorter "
            "sentence, include_layers=[...], or viz.plot_head for long inputs.",
            UserWarning,
            stacklevel=2,
        )
    attention = tuple(torch.from_numpy(np.ascontiguousarray(a))[None] for a in record.attention)
    tokens = list(record.tokens)
    layers = list(include_layers) if include_layers is not None else None
    if view == "head":
        from bertviz import head_view

        return head_view(
            attention, tokens, layer=layer, heads=list(heads) if heads is not None else None,
            include_layers=layers, html_action=html_action,
        )  # fmt: skip
    from bertviz import model_view

    return model_view(
        attention, tokens, include_layers=layers,
        include_heads=list(heads) if heads is not None else None, html_action=html_action,
    )  # fmt: skip
