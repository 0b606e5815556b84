"""Deprecated alias of `attn_tools.explorer` (kept so that old notebooks keep working).

Fix: ``from attn_tools.explorer import explore, show_bertviz``.
"""

from __future__ import annotations

import warnings

from attn_tools.explorer import BERTVIZ_TOKEN_LIMITS, Explorer, explore, show_bertviz

__all__ = ["BERTVIZ_TOKEN_LIMITS", "Explorer", "explore", "show_bertviz"]

warnings.warn(
    "attn_tools.widgets is deprecated; import from attn_tools.explorer instead",
    DeprecationWarning,
    stacklevel=2,
)
