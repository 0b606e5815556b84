"""The interactive explorer: `explore` (ipywidgets app over an `ExplorerState`, with the anywidget
attention view and clickable best-fit grid on top) and the BertViz hand-off `show_bertviz`.

Modules: `state` (the explorer's model, no widgets), `app` (the ipywidgets UI and its PNG tabs,
drawn with public `attn_tools.viz` functions), `view` (the anywidget `attention_view` and
`head_grid`; their JavaScript and CSS ship in ``static/``), `bertviz`.
"""

from __future__ import annotations

from typing import Any

from attn_tools.explorer.app import (
    DEFAULT_SENTENCES,
    Explorer,
    anywidget_available,
    as_bundle,
    explore,
)
from attn_tools.explorer.bertviz import BERTVIZ_TOKEN_LIMITS, show_bertviz
from attn_tools.explorer.state import ExplorerState, HeadScores

__all__ = [
    "BERTVIZ_TOKEN_LIMITS",
    "DEFAULT_SENTENCES",
    "AttentionView",
    "Explorer",
    "ExplorerState",
    "HeadGrid",
    "HeadScores",
    "anywidget_available",
    "as_bundle",
    "attention_view",
    "explore",
    "head_grid",
    "show_bertviz",
]

_VIEW_NAMES = {"AttentionView", "HeadGrid", "attention_view", "head_grid"}


def __getattr__(name: str) -> Any:
    # the anywidget module is imported on first use, so the PNG explorer works without it
    if name in _VIEW_NAMES:
        from attn_tools.explorer import view

        return getattr(view, name)
    raise AttributeError(f"module 'attn_tools.explorer' has no attribute {name!r}")
