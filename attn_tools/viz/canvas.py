"""Figure plumbing shared by every plot: creation, notebook display, saving, token ticks, metrics.

Figures are created outside pyplot (no global state, nothing leaks between calls) as
`NotebookFigure`, a matplotlib `Figure` that shows itself as a PNG in a notebook through its own
``_repr_png_``; nothing is registered with IPython at import.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from matplotlib.colors import Normalize, PowerNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.image import AxesImage

    from attn_tools.scoring import MetricSpec

__all__ = [
    "ATTENTION_CMAP",
    "FALLBACK_LABEL",
    "FORMATS",
    "FigureFormat",
    "NotebookFigure",
    "Scale",
    "clean_label",
    "colorbar_label",
    "draw_fallback_rows",
    "draw_matrix",
    "fallback_legend_handle",
    "figure_png",
    "fit_text",
    "matrix_side_inches",
    "metric_axis_label",
    "metric_display",
    "metric_spec",
    "new_figure",
    "resolve_scale",
    "save_figure",
    "set_token_ticks",
    "thin_ticks",
]

FigureFormat = Literal["png", "svg", "pdf"]
Scale = Literal["linear", "sqrt", "auto"]
FORMATS: tuple[str, ...] = ("png", "svg", "pdf")
ATTENTION_CMAP = "Blues"
# rows a pattern leaves empty (the framework falls back to self): grey and hatched, never blue,
# so that a fallback is never read as the pattern's own prediction
FALLBACK_FACE = "#e6e6e6"
FALLBACK_SELF = "#8c8c8c"
FALLBACK_HATCH = "////"
FALLBACK_LABEL = "row the pattern leaves empty: falls back to self (grey)"

# ----------------------------------------------------------------------------- figures


class NotebookFigure(Figure):
    """A matplotlib `Figure` that a notebook displays as a PNG, with or without pyplot.

    Every ``plot_*`` function returns one; it is a plain `Figure` in every other respect.
    """

    def _repr_png_(self) -> bytes:
        return figure_png(self)


def new_figure(**kwargs: Any) -> NotebookFigure:
    """A figure with an Agg canvas, ready to draw (keyword arguments go to `Figure`).

    Example:
        >>> fig = new_figure(figsize=(4, 3), layout="constrained")
        >>> ax = fig.add_subplot()
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = NotebookFigure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (tight bounding box), as shown in a notebook."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


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


def finish(fig: Figure, save: str | Path | None) -> Figure:
    """Save ``fig`` when ``save`` is a path; return it (the last line of every ``plot_*``)."""
    if save is not None:
        save_figure(fig, save)
    return fig


def fit_text(
    fig: Figure, text: str, width_in: float, *, fontsize: float, weight: str = "normal"
) -> str:
    """``text`` wrapped so that no line is wider than ``width_in`` inches at ``fontsize``.

    Lines are measured with the figure's own renderer (not guessed from a character count), break
    at spaces, and a word wider than the line (a long model id) is split between characters. Used
    for every title that holds a model name, so no name length can push a title off the figure.
    """
    from matplotlib.font_manager import FontProperties

    renderer = fig.canvas.get_renderer()
    prop = FontProperties(size=fontsize, weight=weight)
    # measured at the figure's dpi; saved at another (150 for PNGs) hinted glyphs come out a few
    # per cent wider, so keep a margin rather than fill the line to the last pixel
    limit = 0.93 * max(width_in, 0.5) * fig.dpi

    def width(s: str) -> float:
        return renderer.get_text_width_height_descent(s, prop, ismath=False)[0]

    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if width(candidate) <= limit:
                line = candidate
                continue
            if line:
                lines.append(line)
            # a word longer than a whole line is cut between characters
            while width(word) > limit and len(word) > 1:
                cut = next(i for i in range(len(word), 0, -1) if width(word[:i]) <= limit or i == 1)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- metrics


def metric_spec(metric: str | None) -> MetricSpec | None:
    """The registry entry of ``metric`` (None for a table without a metric column)."""
    if metric is None:
        return None
    from attn_tools.scoring import get_metric

    return get_metric(metric)


def metric_display(metric: str | None) -> str:
    """The human name of a metric for titles and axes ("JS distance"); "score" when unknown."""
    spec = metric_spec(metric)
    return spec.display if spec is not None else "score"


def metric_axis_label(metric: str | None, prefix: str = "") -> str:
    """``"<prefix>JS distance (lower is better)"``: an axis or colour-bar label for a metric."""
    spec = metric_spec(metric)
    if spec is None:
        return f"{prefix}score"
    return f"{prefix}{spec.display} ({spec.direction})"


def higher_is_better(metric: str | None) -> bool:
    """Whether larger values of ``metric`` mean a better fit (False when the metric is unknown)."""
    spec = metric_spec(metric)
    return bool(spec.higher_is_better) if spec is not None else False


def metric_limits(
    metric: str | None, values: np.ndarray, *, pad: float = 0.05
) -> tuple[float, float]:
    """Axis limits for bars of ``values``: the metric's own range where it has one (so bars of
    different heads compare), the data's range otherwise, always including 0."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    lo_data = min(0.0, float(finite.min())) if finite.size else 0.0
    hi_data = float(finite.max()) if finite.size else 1.0
    spec = metric_spec(metric)
    lo, hi = spec.range if spec is not None else (None, None)
    lo = lo_data if lo is None else float(lo)
    hi = hi_data + pad * (hi_data - lo or 1.0) if hi is None else max(float(hi), hi_data)
    return lo, hi


# ----------------------------------------------------------------------------- token labels

_MAX_LABEL_CHARS = 14


def clean_label(label: str) -> str:
    """A token made printable as a tick label: no mathtext, no control characters, ≤ 14 chars."""
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


def set_token_ticks(
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
    Returns the indices shown on x and on y.
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
            f"{i}:{clean_label(labels[i])}" if thinned else clean_label(labels[i]) for i in idx
        ]
        if is_x:
            ax.set_xticks(idx, texts, rotation=90, fontsize=fs)
        else:
            ax.set_yticks(idx, texts, fontsize=fs)
        shown.append(idx)
    ax.tick_params(length=2, pad=1)
    return shown[0], shown[1]


# ----------------------------------------------------------------------------- matrices


def resolve_scale(scale: Scale, n: int) -> Literal["linear", "sqrt"]:
    """``"auto"`` becomes ``"sqrt"`` above 64 tokens (long rows spread thin) and ``"linear"``
    otherwise; an explicit choice is kept."""
    if scale == "auto":
        return "sqrt" if n > 64 else "linear"
    if scale not in ("linear", "sqrt"):
        raise ValueError(f"scale must be 'linear', 'sqrt' or 'auto', got {scale!r}")
    return scale


def colorbar_label(scale: Scale) -> str:
    """The colour-bar label of an attention matrix drawn with ``scale``."""
    return "attention weight" + (" (√ scale)" if scale == "sqrt" else "")


def matrix_side_inches(n: int) -> float:
    """Side of a square matrix panel for ``n`` tokens, in inches (3.2 to 8.5)."""
    return float(np.clip(1.6 + 0.26 * n, 3.2, 8.5))


def draw_matrix(
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
    """Draw one ``[n, n]`` matrix on ``ax`` (queries on y, keys on x) with token tick labels.

    Args:
        matrix: ``[n, n]``, row ``q`` is where token ``q`` attends.
        labels: ``n`` token labels.
        vmax: top of the colour scale (default: the matrix maximum).
        scale: ``"linear"`` or ``"sqrt"`` (``"auto"`` picks by size, see `resolve_scale`).

    Returns the image, whose data a caller may replace with ``set_data`` to redraw quickly.
    """
    scale = resolve_scale(scale, len(labels))
    top = float(matrix.max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0
    norm: Normalize = (
        PowerNorm(gamma=0.5, vmin=0.0, vmax=top) if scale == "sqrt" else Normalize(0.0, top)
    )
    im = ax.imshow(matrix, cmap=cmap, norm=norm, interpolation="nearest", aspect="equal")
    if ticks:
        set_token_ticks(ax, labels, max_labels=max_labels)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if axis_names:
        ax.set_xlabel("key (attended to)", fontsize=9)
        ax.set_ylabel("query (attending)", fontsize=9)
    return im


def draw_fallback_rows(ax: Axes, has_mass: np.ndarray) -> list[Rectangle]:
    """Cover the rows of a prediction panel that the pattern leaves empty (``has_mass`` False).

    Such a row holds only the framework's fallback (attend to self), not the pattern: it is drawn
    light grey and hatched, with its self cell in darker grey, over the image (whose data stay the
    full prediction). Consecutive rows share one patch. Returns the patches (gid "fallback").
    """
    empty = ~np.asarray(has_mass, dtype=bool)
    n = len(empty)
    patches: list[Rectangle] = []
    q = 0
    while q < n:
        if not empty[q]:
            q += 1
            continue
        end = q
        while end + 1 < n and empty[end + 1]:
            end += 1
        patches.append(
            Rectangle(
                (-0.5, q - 0.5),
                n,
                end - q + 1,
                facecolor=FALLBACK_FACE,
                edgecolor="#a6a6a6",
                hatch=FALLBACK_HATCH,
                linewidth=0.0,
                zorder=3,
                gid="fallback",
            )  # fmt: skip
        )
        patches += [
            Rectangle(
                (r - 0.5, r - 0.5),
                1,
                1,
                facecolor=FALLBACK_SELF,
                edgecolor="#a6a6a6",
                hatch=FALLBACK_HATCH,
                linewidth=0.0,
                zorder=3,
                gid="fallback-self",
            )  # fmt: skip
            for r in range(q, end + 1)
        ]
        q = end + 1
    for patch in patches:
        ax.add_patch(patch)
    return patches


def fallback_legend_handle() -> Patch:
    """The legend entry for `draw_fallback_rows`."""
    return Patch(facecolor=FALLBACK_FACE, edgecolor="#a6a6a6", hatch=FALLBACK_HATCH,
                 label=FALLBACK_LABEL)  # fmt: skip
