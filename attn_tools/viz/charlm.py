"""Figures for character models and for comparing languages, with Hebrew shown right to left.

Right-to-left text. Older matplotlib draws a string's characters in memory order, left to right,
so Hebrew comes out backwards; matplotlib 3.11 lays text out with libraqm, which applies the
Unicode Bidirectional Algorithm itself (checked here by rendering, not assumed from a version
number: `matplotlib_applies_bidi`). `display_text` is what every figure in this module draws: the
string unchanged where matplotlib reorders it, else `bidi_text` of it. `bidi_text` reorders one
line of plain text into *visual* order with UAX #9: paragraph level from the first strong
character (P2–P3), weak types W1–W7, bracket pairs N0 (the common paired brackets), neutrals
N1–N2, levels I1–I2, trailing whitespace L1, reversal L2 and mirrored brackets L4. It leaves out
explicit embeddings and isolates (their controls are treated as neutrals), which plain labels do
not hold. Against python-bidi 0.6 on 22,827 strings (fuzzed mixed text and Bible verses) the
glyph order agreed on every one; python-bidi does not mirror brackets, which L4 requires.

Fonts. `missing_glyphs` asks the font matplotlib picks (DejaVu Sans by default, which has the
Hebrew block) whether it has a glyph for each character, so a figure refuses to print tofu.

Axis order. Attention matrices keep *logical* order for every language: position 0 (the first
character typed) at the left and at the top, so a causal head stays lower-triangular and the
previous character is always one cell to the left. A Hebrew sentence therefore runs left to
right along the axes, its letters reversed with respect to reading order; the title shows the
sentence in reading order, and each tick label is one character, which needs no reordering.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from attn_tools.viz.canvas import finish, fit_text, new_figure
from attn_tools.viz.colors import NONE_COLOR, pattern_color
from attn_tools.viz.grid import MAX_TIED_COLORS, _cell_patches, head_labels, style_head_axes

if TYPE_CHECKING:
    from attn_tools.compare import LanguageComparison
    from attn_tools.extract import SentenceAttention

__all__ = [
    "LANGUAGE_COLORS",
    "bidi_text",
    "display_text",
    "matplotlib_applies_bidi",
    "missing_glyphs",
    "plot_char_head",
    "plot_language_comparison",
]

#: bar colours of the languages, in the order a comparison lists them (then hatched repeats)
LANGUAGE_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3")
_HATCHES = ("", "//", "..", "xx")

# ----------------------------------------------------------------------------- bidi

_STRONG_R = {"R", "AL"}
_NEUTRAL = {"B", "S", "WS", "ON", "LRE", "LRO", "RLE", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"}
_MIRROR = dict(zip("()[]{}<>«»‹›", ")(][}{><»«›‹"))
#: paired brackets (UAX #9 BD14–BD16), opening → closing: the common ones
_PAIRS = dict(zip("([{⁅⁽₍⌈⌊〈❨❪❬❮❰❲❴⟅⟦⟨⟪", ")]}⁆⁾₎⌉⌋〉❩❫❭❯❱❳❵⟆⟧⟩⟫"))
_SIDE = {"L": "L", "R": "R", "EN": "R", "AN": "R"}


def _bracket_pairs(text: str, types: list[str]) -> list[tuple[int, int]]:
    """BD16: the positions of matching bracket pairs (neutral brackets only), by opening."""
    stack: list[tuple[str, int]] = []
    pairs = []
    for i, c in enumerate(text):
        if types[i] != "ON":
            continue
        if c in _PAIRS:
            if len(stack) == 63:  # the algorithm's limit: stop looking
                break
            stack.append((_PAIRS[c], i))
        else:
            for depth in range(len(stack) - 1, -1, -1):
                if stack[depth][0] == c:
                    pairs.append((stack[depth][1], i))
                    del stack[depth:]
                    break
    return sorted(pairs)


def _resolve_brackets(text: str, types: list[str], sos: str) -> None:
    """N0: a bracket pair takes the paragraph direction when it holds text of that direction,
    else the other direction when it holds that and the context before the pair has it too
    (else the paragraph direction); a pair holding no strong text is left to N1–N2."""
    for open_, close in _bracket_pairs(text, types):
        inside = {_SIDE[t] for t in types[open_ + 1 : close] if t in _SIDE}
        if sos in inside:
            direction = sos
        elif inside:
            before = next((_SIDE[t] for t in reversed(types[:open_]) if t in _SIDE), sos)
            direction = before
        else:
            continue
        types[open_] = types[close] = direction


def _resolved_types(text: str, base: int) -> list[str]:
    """Each character's bidi type after the weak (W1–W7) and neutral (N1–N2) rules:
    ``"L"``, ``"R"``, ``"EN"`` or ``"AN"``."""
    types = [unicodedata.bidirectional(c) or "ON" for c in text]
    sos = "R" if base else "L"
    # W1: a mark takes the type of the character before it
    for i, t in enumerate(types):
        if t == "NSM":
            types[i] = types[i - 1] if i else sos
    # W2, W3: European digits after Arabic letters are Arabic digits; AL is R
    last = sos
    for i, t in enumerate(types):
        if t in ("L", "R", "AL"):
            last = t
        elif t == "EN" and last == "AL":
            types[i] = "AN"
    types = ["R" if t == "AL" else t for t in types]
    # W4: one separator between two numbers of the same kind joins them (1.5, 1,000)
    for i in range(1, len(types) - 1):
        t, a, b = types[i], types[i - 1], types[i + 1]
        if t == "ES" and a == b == "EN" or t == "CS" and a == b and a in ("EN", "AN"):
            types[i] = a
    # W5: terminators next to European digits are digits (5%, $5)
    for i, t in enumerate(types):
        if t == "EN":
            for step in (-1, 1):
                j = i + step
                while 0 <= j < len(types) and types[j] == "ET":
                    types[j] = "EN"
                    j += step
    # W6: every other separator or terminator is a neutral; BN too
    types = ["ON" if t in ("ES", "ET", "CS", "BN") else t for t in types]
    # W7: European digits after an L context are L
    last = sos
    for i, t in enumerate(types):
        if t in ("L", "R"):
            last = t
        elif t == "EN" and last == "L":
            types[i] = "L"
    _resolve_brackets(text, types, sos)
    # N1, N2: a run of neutrals between two strong sides of one direction takes it (digits count
    # as R), otherwise the paragraph direction
    i = 0
    while i < len(types):
        if types[i] not in _NEUTRAL:
            i += 1
            continue
        j = i
        while j < len(types) and types[j] in _NEUTRAL:
            j += 1
        before = sos if i == 0 else types[i - 1]
        after = sos if j == len(types) else types[j]
        a, b = _SIDE.get(before, sos), _SIDE.get(after, sos)
        fill = a if a == b else sos
        types[i:j] = [fill] * (j - i)
        i = j
    return types


def bidi_text(text: str, base: Literal["auto", "ltr", "rtl"] = "auto") -> str:
    """``text`` in visual (left-to-right display) order, for matplotlib, one line at a time.

    ``base`` is the paragraph direction: ``"auto"`` takes it from the first strong character
    (a Hebrew sentence is right to left, an English title with a Hebrew word left to right).

    Example:
        >>> bidi_text("שלום.")       # the full stop ends up at the left
        '.םולש'
        >>> bidi_text("Hebrew (עברית)")
        'Hebrew (תירבע)'
    """
    if not isinstance(text, str):
        raise TypeError(f"bidi_text needs a str, got {type(text).__name__} ({text!r:.40}).")
    if base not in ("auto", "ltr", "rtl"):
        raise ValueError(f"base must be 'auto', 'ltr' or 'rtl', got {base!r}.")
    if "\n" in text:
        return "\n".join(bidi_text(line, base) for line in text.split("\n"))
    if not any(unicodedata.bidirectional(c) in _STRONG_R | {"AN"} for c in text) and base != "rtl":
        return text  # nothing right to left: the common case costs one scan
    if base == "auto":
        first = next(
            (unicodedata.bidirectional(c) for c in text
             if unicodedata.bidirectional(c) in ("L", "R", "AL")), "L"
        )  # fmt: skip
        level0 = 1 if first in _STRONG_R else 0
    else:
        level0 = 1 if base == "rtl" else 0
    types = _resolved_types(text, level0)
    # I1, I2: embedding levels
    if level0 == 0:
        levels = [0 if t == "L" else 1 if t == "R" else 2 for t in types]
    else:
        levels = [1 if t == "R" else 2 for t in types]
    # L1: whitespace at the end of the line goes back to the paragraph level
    end = len(text)
    while end and unicodedata.bidirectional(text[end - 1]) in ("WS", "S", "B"):
        end -= 1
    levels[end:] = [level0] * (len(text) - end)
    chars = [_MIRROR.get(c, c) if lv % 2 else c for c, lv in zip(text, levels)]  # L4
    # L2: from the highest level down to the lowest odd one, reverse every run at or above it
    order = list(range(len(text)))
    lowest_odd = min((lv for lv in levels if lv % 2), default=None)
    if lowest_odd is not None:
        for level in range(max(levels), lowest_odd - 1, -1):
            i = 0
            while i < len(order):
                if levels[order[i]] >= level:
                    j = i
                    while j < len(order) and levels[order[j]] >= level:
                        j += 1
                    order[i:j] = order[i:j][::-1]
                    i = j
                else:
                    i += 1
    return "".join(chars[k] for k in order)


def _ink(text: str) -> np.ndarray:
    """Which pixels ``text`` inks when matplotlib draws it (bool [rows, cols], cropped)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(1.2, 0.5), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.1, 0.25, text, fontsize=20)
    fig.canvas.draw()
    ink = np.asarray(fig.canvas.buffer_rgba())[..., 0] < 128
    cols = np.flatnonzero(ink.any(axis=0))
    return ink[:, cols.min() : cols.max() + 1] if cols.size else ink[:, :0]


@functools.cache
def matplotlib_applies_bidi() -> bool:
    """True when this matplotlib lays out right-to-left text itself (3.11 does, with libraqm).

    Checked once by drawing: ``"בא"`` (bet, then alef in memory) is drawn with alef at the left
    exactly when matplotlib reorders it.
    """
    pair, alef, bet = _ink("\u05d1\u05d0"), _ink("\u05d0"), _ink("\u05d1")
    width = min(alef.shape[1], bet.shape[1])
    left = pair[:, :width]
    return bool((left == alef[:, :width]).mean() > (left == bet[:, :width]).mean())


def display_text(text: str) -> str:
    """``text`` as a matplotlib figure must receive it to show it in reading order: unchanged
    where matplotlib applies the bidi algorithm itself, else `bidi_text` of it."""
    return text if matplotlib_applies_bidi() else bidi_text(text)


# ----------------------------------------------------------------------------- fonts


def missing_glyphs(text: str, *, family: str | Sequence[str] | None = None) -> list[str]:
    """The characters of ``text`` that the font matplotlib picks for ``family`` (default: the
    rcParams font) has no glyph for; whitespace and control characters are not checked.

    Example:
        >>> missing_glyphs("שלום")   # DejaVu Sans has the Hebrew block
        []
    """
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    props = font_manager.FontProperties(family=[family] if isinstance(family, str) else family)
    font = FT2Font(font_manager.findfont(props, fallback_to_default=True))
    out = []
    for c in dict.fromkeys(text):
        if c.isspace() or unicodedata.category(c).startswith("C"):
            continue
        if font.get_char_index(ord(c)) == 0:
            out.append(c)
    return out


def _check_glyphs(text: str, where: str) -> None:
    missing = missing_glyphs(text)
    if missing:
        raise ValueError(
            f"the figure font has no glyph for {''.join(missing)!r} in {where} {text[:40]!r}: "
            "matplotlib would draw empty boxes. Fix: set rcParams['font.family'] to a font "
            "that has them (DejaVu Sans covers Latin and Hebrew), or rename the label."
        )


# ----------------------------------------------------------------------------- one head


def plot_char_head(
    record: SentenceAttention,
    layer: int,
    head: int,
    *,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """One head of a character model on one sentence (`viz.plot_head`), titled with the sentence
    in reading order (right to left for Hebrew) and axes in logical order (see module docstring).
    """
    from attn_tools.viz.matrices import plot_head

    fig = plot_head(record, layer, head)
    ax = fig.axes[0]
    text = record.text if len(record.text) <= 60 else record.text[:57] + "..."
    default = f"{display_text(f'{record.model} · L{layer} H{head}')}\n{display_text(text)}"
    shown = display_text(title) if title else default
    _check_glyphs(shown, "the title")
    ax.set_title(shown, fontsize=10)
    ax.set_xlabel("key (attended to) · position 0 at the left, in typing order")
    ax.set_ylabel("query (attending) · position 0 at the top")
    return finish(fig, save)


# ----------------------------------------------------------------------------- comparison


def _color_of(label: str) -> str:
    """A label's colour: its pattern's own curated colour, opt-in patterns included.

    `viz.pattern_color` given a *name* looks in the default registry only, so until it also
    looks in `patterns.OPT_IN` a single-model grid shows charlevel patterns in colours derived
    from their names (too alike to tell apart on a poster), not these.
    """
    from attn_tools.patterns import PatternError, get_pattern

    try:
        return pattern_color(get_pattern(label))
    except PatternError:  # "none", or a user pattern no longer registered
        return pattern_color(label)


def _draw_grid(ax: Any, best: Any, heading: str) -> dict[str, int]:
    """One best-fit grid on ``ax`` (cells as `viz.plot_best_fit_grid` draws them); returns the
    number of heads per label, for the shared legend."""
    n_layers = int(best["layer"].max()) + 1
    n_heads = int(best["head"].max()) + 1
    seen: dict[str, int] = {}
    for row in best.itertuples():
        names = head_labels(row)[:MAX_TIED_COLORS]
        for nm in names:
            seen[nm] = seen.get(nm, 0) + 1
        colors = [_color_of(nm) for nm in names] or [NONE_COLOR]
        for patch in _cell_patches(int(row.head), int(row.layer), colors):
            patch.set_gid(f"cell-{int(row.layer)}-{int(row.head)}")
            ax.add_patch(patch)
    for x in np.arange(-0.5, n_heads, 1.0):
        ax.axvline(x, color="#bbbbbb", linewidth=0.5)
    for y in np.arange(-0.5, n_layers, 1.0):
        ax.axhline(y, color="#bbbbbb", linewidth=0.5)
    style_head_axes(ax, n_layers, n_heads)
    ax.set_aspect("equal")
    ax.set_title(heading, fontsize=11, fontweight="bold")
    return seen


def _paired_bars(
    ax: Any, table: Any, key: str, languages: list[str], shown: dict[str, str], ylabel: str
) -> None:
    """Bars of ``share`` per ``key`` value, one bar per language side by side."""
    names = list(dict.fromkeys(table[key]))
    width = 0.8 / len(languages)
    x = np.arange(len(names))
    for i, lang in enumerate(languages):
        sub = table[table["language"] == lang].set_index(key).reindex(names)
        bars = ax.bar(
            x - 0.4 + width * (i + 0.5), sub["share"].to_numpy(), width,
            color=LANGUAGE_COLORS[i % len(LANGUAGE_COLORS)],
            hatch=_HATCHES[(i // len(LANGUAGE_COLORS)) % len(_HATCHES)],
            edgecolor="white", linewidth=0.5, label=shown[lang],
        )  # fmt: skip
        for bar, n in zip(bars, sub["n_heads"].to_numpy()):
            if n:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), str(int(n)),
                        ha="center", va="bottom", fontsize=6.5, color="#333333")  # fmt: skip
    ax.set_xticks(x)
    ax.set_xticklabels([display_text(n) for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(ylabel)
    top = float(table["share"].max()) if len(table) else 1.0
    ax.set_ylim(0, min(1.0, top * 1.18 + 0.02))
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper right")


def plot_language_comparison(
    comparison: LanguageComparison,
    *,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """The poster figure of a `compare.compare_languages` result.

    Top: each language's best-fit grid side by side (layer 0 at the bottom, one shared legend,
    colours as in every other figure). Middle: the share of heads labelled with each pattern,
    languages side by side (language-specific names such as ``char_last_vowel(hebrew)`` are
    paired under ``char_last_vowel``; the number over a bar counts heads). Bottom (when head
    statistics were given): the share of each head type. Hebrew in language names and titles
    is drawn right to left (`bidi_text`); a label the font cannot draw is an error, not tofu.
    """
    from attn_tools.compare import LanguageComparison

    if not isinstance(comparison, LanguageComparison):
        raise TypeError(
            f"plot_language_comparison draws a compare.compare_languages result, got "
            f"{type(comparison).__name__}. Fix: viz.plot_language_comparison("
            "compare_languages({'English': fit_en, 'Hebrew': fit_he}))."
        )
    langs = comparison.languages
    shown = {lang: display_text(lang) for lang in langs}
    for lang in langs:
        _check_glyphs(lang, "the language name")
    full_title = display_text(title or f"{' vs '.join(langs)}: what do the attention heads do?")
    _check_glyphs(full_title, "the title")
    sizes = [
        (int(b["layer"].max()) + 1, int(b["head"].max()) + 1) for b in comparison.best.values()
    ]
    cell = float(np.clip(min(4.2 / max(h for _, h in sizes), 4.0 / max(n for n, _ in sizes)),
                         0.2, 0.5))  # fmt: skip
    grid_h = max(n for n, _ in sizes) * cell + 0.9
    grids_w = sum(h * cell + 0.9 for _, h in sizes) + 2.6  # + the legend
    width = max(grids_w, 8.0)
    has_types = comparison.types is not None
    heights = [grid_h, 2.6] + ([2.2] if has_types else [])
    fig = new_figure(figsize=(width, sum(heights) + 0.8), layout="constrained")
    gs = fig.add_gridspec(len(heights), len(langs) + 1, height_ratios=heights,
                          width_ratios=[h for _, h in sizes] + [max(2.2 / cell, 1.0)])  # fmt: skip
    seen: dict[str, int] = {}
    for i, lang in enumerate(langs):
        ax = fig.add_subplot(gs[0, i])
        best = comparison.best[lang]
        heading = display_text(f"{lang} · {comparison.models.get(lang, '')}")
        for name, count in _draw_grid(ax, best, heading).items():
            seen[name] = seen.get(name, 0) + count
        if i:
            ax.set_ylabel("")
    legend_ax = fig.add_subplot(gs[0, -1])
    legend_ax.axis("off")
    order = sorted(seen, key=lambda nm: (-seen[nm], nm))
    handles = [Patch(facecolor=_color_of(nm), edgecolor="#666666", linewidth=0.5, label=nm)
               for nm in order]  # fmt: skip
    handles.append(Patch(facecolor=NONE_COLOR, edgecolor="#666666", linewidth=0.5,
                         label="no pattern"))  # fmt: skip
    legend_ax.legend(handles=handles, loc="upper left", fontsize=7.5, frameon=False,
                     title="best fit", title_fontsize=8)  # fmt: skip
    _paired_bars(fig.add_subplot(gs[1, :]), comparison.shares, "pattern", langs, shown,
                 "share of heads")  # fmt: skip
    if has_types:
        _paired_bars(fig.add_subplot(gs[2, :]), comparison.types, "head_type", langs, shown,
                     "share of heads (head type)")  # fmt: skip
    fig.suptitle(fit_text(fig, full_title, width - 0.3, fontsize=12, weight="bold"),
                 fontsize=12, fontweight="bold")  # fmt: skip
    rules = {str(b["rule"].iloc[0]) for b in comparison.best.values() if "rule" in b and len(b)}
    rule = ", ".join(sorted(rules)) if rules else "as given"
    caption = (
        f"Best-fit rule: {rule}. Bars: share of each model's heads; the number on a bar counts "
        "heads. Vowel patterns use each language's vowel rule (docs/charpatterns.md)."
    )
    fig.supxlabel(fit_text(fig, caption, width - 0.3, fontsize=7.5), x=0.01, ha="left",
                  fontsize=7.5, color="#333333")  # fmt: skip
    return finish(fig, save)
