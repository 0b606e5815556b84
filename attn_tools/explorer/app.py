"""The interactive explorer (ipywidgets): sliders, dropdowns and live pictures over `ExplorerState`.

`explore` returns an `Explorer`: sliders for layer and head, dropdowns for pattern and sentence,
a box to type a new sentence, and a live picture of the head's attention beside the pattern's
prediction with the score; a second tab shows the head's scores across every pattern and where it
sits in the best-fit grid. Pictures are PNG bytes in an `ipywidgets.Image`, drawn with matplotlib's
Agg backend through public `attn_tools.viz` functions, so nothing is fetched from a CDN to render
them (Voilà and JupyterLab ship the ipywidgets front end). Under a dark theme the pictures are
shown through a CSS filter that ships with the package (`png_tabs_style` says what a reader sees);
the PNG bytes are the same in both themes.

A slider move redraws without rebuilding anything: the figure, its artists and each sentence's
predictions are kept, and only the image data and titles change (see
``benchmarks/bench_explorer.py`` for the measured time).
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import ipywidgets as W
import numpy as np

from attn_tools import viz
from attn_tools.explorer.state import ExplorerState

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from attn_tools.extract import SentenceAttention
    from attn_tools.models import ModelBundle
    from attn_tools.patterns.base import Pattern

__all__ = ["DEFAULT_SENTENCES", "PNG_TABS_CSS", "Explorer", "explore", "png_tabs_style"]

DEFAULT_SENTENCES = 12
PNG_TABS_CSS = Path(__file__).with_name("static") / "png_tabs.css"


def png_tabs_style() -> str:
    """The ``<style>`` element that shows the PNG tabs dark under a dark theme.

    The CSS (``static/png_tabs.css``, package data, no network) applies only when JupyterLab says
    its theme is dark (``body[data-jp-theme-light="false"]``) or, on a page without a JupyterLab
    theme (an exported HTML file), when the browser prefers a dark colour scheme. A light theme
    shows the PNGs exactly as drawn.

    What a reader sees in a dark theme: each figure through ``invert(0.9) hue-rotate(180deg)``
    in a frame of the same colour. The white background becomes near-black (#1a1a1a) and black
    text light grey (#e6e6e6). Attention runs from dark (weight 0) to light blue (weight 1):
    lighter means more attention, the reverse of the light theme, and the colour bar inside the
    image passes through the same filter, so every cell still matches its own colour bar (the
    luminance order of the scale is kept, reversed). The grey hatched fallback rows stay grey and
    hatched. Pattern colours in the bar chart and the static grid keep their hue but flip their
    lightness; read them against the legend in the same image, not against the interactive grid
    above. Downloads and the PNG bytes themselves are unchanged.
    """
    return f"<style>{PNG_TABS_CSS.read_text(encoding='utf-8')}</style>"


def anywidget_available() -> bool:
    """Whether the interactive (anywidget) view can be shown: anywidget is importable."""
    import importlib.util

    return importlib.util.find_spec("anywidget") is not None


class Explorer(W.VBox):
    """The explorer app; display it in a notebook (it is an ipywidgets ``VBox``).

    Its controls are attributes, so code (and tests) can drive it like a user: ``layer``,
    ``head`` (``IntSlider``), ``pattern``, ``sentence`` (``Dropdown``), ``new_sentence``
    (``Text``) with ``add_button``, ``image`` (the head-vs-pattern PNG), ``score`` (``HTML``),
    ``status`` (errors appear here), ``tabs``, ``scores_image`` and ``grid_image`` (second tab);
    the three images carry the class ``attn-png`` and ``theme_style`` (hidden) holds the CSS that
    shows them dark in a dark theme (`png_tabs_style`).
    ``state`` is the `ExplorerState` it draws from; ``last_redraw_ms`` the time of the latest
    redraw.
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
        drop_keys: Any = None,
        interactive: bool = False,
        note: str = "",
    ) -> None:
        self.state = ExplorerState(
            records, patterns, metric=metric, scores=scores, drop_keys=drop_keys
        )
        self.bundle = bundle
        self.scale = scale
        self.dpi = dpi
        self.last_redraw_ms = float("nan")
        self._fig: Figure | None = None
        self._fig_sentence = -1
        self._view: _Blit | None = None
        self._bars_blit: _Blit | None = None
        self._grid_marker: Any = None
        self._busy = False

        n_layers, n_heads = self.state.shape
        style = {"description_width": "64px"}
        wide = W.Layout(width="340px")
        self.layer = W.IntSlider(0, 0, n_layers - 1, description="layer", style=style, layout=wide)
        self.head = W.IntSlider(0, 0, n_heads - 1, description="head", style=style, layout=wide)
        self.pattern = W.Dropdown(
            options=list(self.state.patterns), description="pattern", style=style, layout=wide
        )
        self.sentence = W.Dropdown(
            options=self.state.sentence_options(), value=0, description="sentence", style=style,
            layout=W.Layout(width="700px"),
        )  # fmt: skip
        self.new_sentence = W.Text(
            placeholder="Type a new sentence and press Enter (or Add)", continuous_update=False,
            description="new", style=style, layout=W.Layout(width="600px"),
            disabled=bundle is None,
        )  # fmt: skip
        self.add_button = W.Button(description="Add", disabled=bundle is None)
        picture = W.Layout(max_width="100%", height="auto")
        self.image = W.Image(format="png", layout=picture)
        self.score = W.HTML()
        self.status = W.HTML()
        self.note = W.HTML(f"<div class='attn-note'>{html.escape(note)}</div>" if note else "")
        self.scores_image = W.Image(format="png", layout=picture)
        self.grid_image = W.Image(format="png", layout=picture)
        self.scores_note = W.HTML()
        # hidden: a <style> applies from a display:none element and takes no room in the layout
        self.theme_style = W.HTML(png_tabs_style(), layout=W.Layout(display="none"))
        for image in (self.image, self.scores_image, self.grid_image):
            image.add_class("attn-png")
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
            (self.note, "attn-sentences-note"),
        ):
            widget.add_class(cls)

        view_tab = W.VBox([self.score, self.image])
        # no stretching: each picture keeps its own aspect ratio
        pictures = W.HBox(
            [self.scores_image, self.grid_image],
            layout=W.Layout(flex_flow="row wrap", align_items="flex-start"),
        )
        self.tabs = W.Tab(children=[view_tab, W.VBox([self.scores_note, pictures])])
        self.tabs.set_title(0, "head vs pattern")
        self.tabs.set_title(1, "scores & best-fit grid")
        controls = W.VBox(
            [
                W.HBox([self.layer, self.head, self.pattern]),
                self.sentence,
                W.HBox([self.new_sentence, self.add_button]),
            ]
        )
        self.view = self.grid = self.top = None
        children: list[W.Widget] = [controls, self.note, self.status]
        if interactive:
            children.append(self._build_interactive())
        super().__init__([*children, self.theme_style, self.tabs])

        for control in (self.layer, self.head, self.pattern, self.sentence):
            control.observe(self._on_change, names="value")
        self.tabs.observe(self._on_change, names="selected_index")
        self.new_sentence.observe(self._on_submit, names="value")
        self.add_button.on_click(lambda _: self.add_sentence(self.new_sentence.value))
        self.redraw()

    def _build_interactive(self) -> W.Widget:
        """The anywidget view, the clickable best-fit grid and the top-patterns table, linked to
        the sliders (a grid click moves the sliders, which move the view and the PNG tabs)."""
        import traitlets

        if not anywidget_available():
            raise ImportError(
                "explore(..., interactive=True) needs anywidget, which is not installed. "
                "Fix: pip install 'anywidget>=0.9', or pass interactive=False for the PNG explorer."
            )
        from attn_tools.explorer.view import AttentionView, head_grid

        self.status.value = _BUSY.format("scoring every head for the best-fit grid")
        self.view = AttentionView(self.state.records)  # the same list: typed sentences appear
        self.grid = head_grid(self.state.best_fit())
        self.status.value = ""
        self.top = W.HTML()
        self.top.add_class("attn-top-patterns-box")
        for a, b in (
            ((self.layer, "value"), (self.view, "layer")),
            ((self.head, "value"), (self.view, "head")),
            ((self.sentence, "value"), (self.view, "sentence")),
            ((self.layer, "value"), (self.grid, "layer")),
            ((self.head, "value"), (self.grid, "head")),
        ):
            traitlets.link(a, b)
        self.layer.observe(self._on_head, names="value")
        self.head.observe(self._on_head, names="value")
        self._on_head()
        return W.HBox(
            [self.view, W.VBox([self.grid, self.top])],
            layout=W.Layout(flex_flow="row wrap", align_items="flex-start"),
        )

    def _on_head(self, _change: dict | None = None) -> None:
        from attn_tools.explorer.view import top_patterns_html

        if self.top is None:
            return
        layer, head = self.layer.value, self.head.value
        mine = self.state.head_scores(layer, head)
        baseline = None
        if "uniform" in mine.names:
            value = mine.values[mine.names.index("uniform")]
            baseline = float(value) if np.isfinite(value) else None
        spec = self.state.spec
        self.top.value = top_patterns_html(
            mine.names, mine.values, baseline, layer=layer, head=head,
            label=self.state.label(layer, head), display=spec.display,
            direction=spec.direction, lower_is_better=spec.sort_ascending,
        )  # fmt: skip

    @property
    def records(self) -> list[SentenceAttention]:
        """The loaded sentences' attention (`ExplorerState.records`)."""
        return self.state.records

    # ------------------------------------------------------------------ events

    def add_sentence(self, text: str) -> int:
        """Extract a new sentence (cached), add it to the dropdown and select it; its index."""
        from attn_tools.extract import extract

        text = (text or "").strip()
        if not text:
            self._error("type a sentence first")
            return -1
        if self.bundle is None:
            self._error("this explorer was built from records only; pass a model to add sentences")
            return -1
        try:
            index = self.state.add_record(extract(self.bundle, [text], progress=False)[0])
        except Exception as exc:  # shown to the user, not raised into the event loop
            self._error(f"could not add the sentence: {exc}")
            return -1
        self.sentence.options = self.state.sentence_options()
        if self.view is not None:
            self.view.refresh_sentences()
        self.sentence.value = index  # triggers a redraw
        self.new_sentence.value = ""
        return index

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

    # ------------------------------------------------------------------ first tab

    def _build_view(self, index: int) -> None:
        """Build the two-panel figure for one sentence (only when the sentence changes).

        Both panels share one fixed colour scale (0 to 1, square-root by default so that diffuse
        heads stay visible), so the background — axes, token labels, colour bar — never changes
        and a redraw only paints the two images and their titles over it.
        """
        record = self.records[index]
        n = record.n_tokens
        side = float(np.clip(1.4 + 0.2 * n, 3.0, 6.0))
        fig = viz.new_figure(
            figsize=(2 * side + 1.4, side + 0.8), layout="constrained", dpi=self.dpi
        )
        left, right = fig.subplots(1, 2, sharey=True)
        zeros = np.zeros((n, n))
        self._im_actual = viz.draw_matrix(left, zeros, record.labels, vmax=1.0, scale=self.scale)
        self._im_pred = viz.draw_matrix(right, zeros, record.labels, vmax=1.0, scale=self.scale)
        right.set_ylabel("")
        fig.colorbar(self._im_actual, ax=[left, right], fraction=0.03, pad=0.02,
                     label=viz.colorbar_label(self.scale))  # fmt: skip
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
            # a new sentence rebuilds the figure (over a second on a busy machine): say so first
            self.status.value = _BUSY.format("drawing the new sentence")
            self._build_view(index)
            self.status.value = ""
        cmp = self.state.compare(index, layer, head, name)
        self._im_actual.set_data(cmp.actual)
        self._im_pred.set_data(cmp.predicted)
        self._title_actual.set_text(f"actual: layer {layer}, head {head}")
        fallback = int((~cmp.has_mass).sum())
        note = f" ({fallback} row{'s' * (fallback != 1)} → self)" if fallback else ""
        self._title_pred.set_text(f"predicted: {name}{note}")
        self.image.value = self._view.png()
        spec = self.state.spec
        mean = self.state.mean_score(layer, head, name)
        over = f"; mean over {mean[1]} sentences: {mean[0]:.3f}" if mean else ""
        self.score.value = (
            f"<b>{html.escape(cmp.model)}</b> · layer {layer}, head {head} vs "
            f"<b>{html.escape(name)}</b>: {spec.display} = "
            f"<b class='attn-score-value'>{cmp.score:.3f}</b> on this sentence ({spec.direction})"
            f"{over}"
        )

    # ------------------------------------------------------------------ second tab

    def _build_scores_tab(self) -> None:
        """The per-pattern bar chart and the best-fit grid, built once; redraws move data only.

        Bars keep the registry order (patterns grouped by family) so the axis never changes; the
        best pattern's bar is outlined and named in the title.
        """
        table, best = self.state.scores(), self.state.best_fit()
        names = self.state.head_scores(0, 0).names
        fig = viz.new_figure(
            figsize=(5.4, 0.22 * len(names) + 1.3), layout="constrained", dpi=self.dpi
        )
        ax = fig.add_subplot()
        colors = [viz.pattern_color(self.state.patterns.get(n, n)) for n in names]
        bars = viz.draw_bars(ax, names, np.zeros(len(names)), colors, metric=self.state.metric,
                             fontsize=7, annotate=False)  # fmt: skip
        ax.set_xlim(*viz.metric_limits(self.state.metric, table["mean"].to_numpy(float)))
        threshold = best["threshold"].iloc[0] if "threshold" in best.columns else None
        if isinstance(threshold, (int, float)) and np.isfinite(threshold):
            ax.axvline(float(threshold), color="#444444", linestyle="--", linewidth=0.8)
        ax.set_xlabel(
            viz.metric_axis_label(self.state.metric, "mean ")
            + f" over {self.state.scored_records} sentences",
            fontsize=8,
        )
        self._bar_names = list(names)
        self._bars = list(bars)
        # placeholder text of full length so the layout keeps room for the live title
        self._bar_title = ax.set_title("layer 0, head 0: closest is a pattern (0.000)", fontsize=9)
        self._bars_blit = _Blit(fig, [*self._bars, self._bar_title])
        grid = viz.plot_best_fit_grid(best, highlight=(0, 0))
        grid.set_dpi(self.dpi)
        self._grid_marker = next(p for p in grid.axes[0].patches if p.get_gid() == "highlight")
        self._grid_blit = _Blit(grid, [self._grid_marker])

    def _draw_scores_tab(self) -> None:
        if self._bars_blit is None:
            self.status.value = _BUSY.format("scoring every head against every pattern")
            self._build_scores_tab()
            self.status.value = ""
        layer, head = self.layer.value, self.head.value
        mine = self.state.head_scores(layer, head)
        for i, (bar, v) in enumerate(zip(self._bars, mine.values)):
            bar.set_width(0.0 if np.isnan(v) else float(v))
            bar.set_linewidth(2.0 if i == mine.best else 0.4)
        closest = (
            f"closest is {mine.best_name} ({mine.values[mine.best]:.3f})"
            if mine.best_name
            else "no pattern has a score"
        )
        self._bar_title.set_text(f"layer {layer}, head {head}: {closest}")
        self.scores_image.value = self._bars_blit.png()
        label = self.state.label(layer, head)
        self.scores_note.value = (
            f"Layer {layer}, head {head} is labelled <b>{html.escape(label)}</b> in the best-fit "
            f"grid (outlined; scores over the first {self.state.scored_records} sentences)"
        )
        self._grid_marker.set_xy((head - 0.5, layer - 0.5))
        self.grid_image.value = self._grid_blit.png()


# shown while a slow first computation runs (ipywidgets sends it before the work starts)
_BUSY = "<div class='attn-busy-note'><i>working: {}…</i></div>"


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


def as_bundle(bundle_or_name: ModelBundle | str) -> ModelBundle:
    """A `ModelBundle` as given, or loaded from a name without the weight-loading progress bar
    (which would otherwise stay printed above the app)."""
    from attn_tools.models import ModelBundle, load_model

    if isinstance(bundle_or_name, ModelBundle):
        return bundle_or_name
    if isinstance(bundle_or_name, str):
        from transformers.utils import logging as hf_logging

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
    drop_keys: Any = None,
    interactive: bool | None = None,
    max_sentences: int = DEFAULT_SENTENCES,
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
        metric: the metric shown (a registry name, ``"jsd"`` by default).
        drop_keys: remove sink keys before scoring (``"first"``, ``"special"``,
            ``"special+punct"``): what the heads do besides the sink.
        interactive: add the anywidget view (canvas with hover, token/word toggle), the clickable
            best-fit grid and the head's top patterns above the PNG tabs; default: when anywidget
            is installed. The PNG tabs stay (the static fallback, and what exported notebooks
            show).
        max_sentences: how many sentences of a built-in set to use (a list is used whole). The
            app says how many it took and why (``app.sentences_note``).

    Example:
        >>> app = explore("minilm", "story", ["previous_token", "first_token"])
        >>> app  # displays the app in a notebook
    """
    from attn_tools.data import load_sentences
    from attn_tools.extract import extract
    from attn_tools.patterns.base import resolve_patterns

    if max_sentences < 1:
        raise ValueError(
            f"max_sentences={max_sentences} must be at least 1. Fix: max_sentences=12."
        )
    bundle = as_bundle(bundle_or_name)
    name = bundle_or_name if isinstance(bundle_or_name, str) else bundle.name
    if records is not None:
        note = f"explore({name!r}, records=...) uses the {len(records)} records given"
    elif sentences is None or isinstance(sentences, str):
        set_name = sentences or "story"
        loaded = load_sentences(set_name)
        sentences = loaded[:max_sentences]
        why = (
            f"max_sentences={max_sentences}; pass max_sentences=... for more"
            if len(loaded) > max_sentences
            else "the whole set"
        )
        note = (
            f"explore({name!r}, {set_name!r}) uses the first {len(sentences)} of {len(loaded)} "
            f"sentences ({why})"
        )
    else:
        sentences = list(sentences)
        note = f"explore({name!r}, [...]) uses the {len(sentences)} sentences given"
    if records is None:
        records = extract(bundle, list(sentences), progress=False)
    if interactive is None:
        interactive = anywidget_available()
    app = Explorer(
        bundle, records, resolve_patterns(patterns), metric=metric, scores=scores,
        drop_keys=drop_keys, interactive=interactive, note=note,
    )  # fmt: skip
    app.sentences_note = note
    return app
