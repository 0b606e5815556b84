"""The interactive explorer: `explore` (ipywidgets app over an `ExplorerState`) and the BertViz
hand-off `show_bertviz`.

Modules: `state` (the explorer's model, no widgets), `app` (the ipywidgets UI, drawn with public
`attn_tools.viz` functions), `bertviz`.
"""

from __future__ import annotations

from attn_tools.explorer.app import DEFAULT_SENTENCES, Explorer, as_bundle, explore
from attn_tools.explorer.bertviz import BERTVIZ_TOKEN_LIMITS, show_bertviz
from attn_tools.explorer.state import ExplorerState, HeadScores

__all__ = [
    "BERTVIZ_TOKEN_LIMITS",
    "DEFAULT_SENTENCES",
    "Explorer",
    "ExplorerState",
    "HeadScores",
    "as_bundle",
    "explore",
    "show_bertviz",
]
