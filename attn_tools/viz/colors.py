"""Pattern colours: one colour per pattern, the same in every figure and for every model."""

from __future__ import annotations

import colorsys
import hashlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.colors as mcolors
import pandas as pd

if TYPE_CHECKING:
    from attn_tools.patterns.base import Pattern

__all__ = ["NONE_COLOR", "NONE_LABEL", "pattern_color", "pattern_table", "text_color_on"]

NONE_LABEL = "none"
NONE_COLOR = "#ffffff"

# Curated colours for the built-in patterns, used when a pattern does not carry its own ``color``;
# any other name gets a colour from a hash of the name, so the mapping never depends on which
# patterns a figure happens to show.
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


def _own_color(pattern: str | Pattern) -> str | None:
    """The ``color`` a pattern carries itself (set in ``@pattern``), if any."""
    if not isinstance(pattern, str):
        return getattr(pattern, "color", None) or None
    # a name can only be registered once the patterns module is loaded; never import it here
    base = sys.modules.get("attn_tools.patterns.base")
    registered = getattr(base, "REGISTRY", {}).get(pattern)
    return getattr(registered, "color", None) or None


def _hash_color(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    hue = digest[0] / 256 + digest[1] / 65536
    sat = 0.50 + 0.35 * digest[2] / 255
    val = 0.55 + 0.35 * digest[3] / 255  # never close to white, which means "no pattern"
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def pattern_color(pattern: str | Pattern) -> str:
    """The colour of a pattern (a name or a `Pattern`), as ``"#rrggbb"``.

    In order: the pattern's own ``color`` (set where it is defined), the curated colour of a
    built-in, or a saturated colour derived from a hash of its name (a parametrised
    ``offset(3)``, a user or LLM pattern). ``"none"`` (no pattern fits) is white.
    """
    name = pattern if isinstance(pattern, str) else pattern.name
    if name == NONE_LABEL:
        return NONE_COLOR
    own = _own_color(pattern)
    if own:
        return mcolors.to_hex(own)
    return _CURATED.get(name) or _hash_color(name)


def text_color_on(color: str) -> str:
    """``"black"`` or ``"white"``, whichever reads better on a cell of ``color``."""
    r, g, b = mcolors.to_rgb(color)
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
                "color": pattern_color(p),
            }
            for p in resolve_patterns(patterns)
        ]
    )
