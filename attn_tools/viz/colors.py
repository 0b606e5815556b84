"""Pattern colours: one colour per pattern, the same in every figure and for every model."""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.colors as mcolors
import pandas as pd

if TYPE_CHECKING:
    from attn_tools.patterns.base import Pattern

__all__ = ["NONE_COLOR", "NONE_LABEL", "pattern_color", "pattern_table", "text_color_on"]

NONE_LABEL = "none"
NONE_COLOR = "#ffffff"


def _own_color(pattern: str | Pattern) -> str | None:
    """The ``color`` a pattern carries (set in ``@pattern``), or the registered pattern of the
    same name carries; None when neither has one."""
    if not isinstance(pattern, str):
        own = getattr(pattern, "color", None)
        if own:
            return own
        pattern = pattern.name
    # the registry (numpy only) holds the built-ins with their colours; a name that is not
    # registered (offset(3), a user or LLM pattern) has none
    from attn_tools.patterns.base import OPT_IN, REGISTRY

    return getattr(REGISTRY.get(pattern) or OPT_IN.get(pattern), "color", None) or None


def _hash_color(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    hue = digest[0] / 256 + digest[1] / 65536
    sat = 0.50 + 0.35 * digest[2] / 255
    val = 0.55 + 0.35 * digest[3] / 255  # never close to white, which means "no pattern"
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def pattern_color(pattern: str | Pattern) -> str:
    """The colour of a pattern (a name or a `Pattern`), as ``"#rrggbb"``.

    The pattern's own ``color`` (set where it is defined: every built-in has a curated one), or a
    saturated colour derived from a hash of its name (a parametrised ``offset(3)``, a user or LLM
    pattern), so a pattern has one colour in every figure whatever else the figure shows.
    ``"none"`` (no pattern fits) is white.
    """
    name = pattern if isinstance(pattern, str) else pattern.name
    if name == NONE_LABEL:
        return NONE_COLOR
    own = _own_color(pattern)
    if own:
        return mcolors.to_hex(own)
    return _hash_color(name)


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
