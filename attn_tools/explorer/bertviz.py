"""The hand-off to BertViz: a `SentenceAttention` in the format ``head_view``/``model_view`` want."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from attn_tools.extract import SentenceAttention
    from attn_tools.models import ModelBundle

__all__ = ["BERTVIZ_TOKEN_LIMITS", "show_bertviz"]

# Above these token counts BertViz draws so many lines that the browser stalls (head view: n²
# lines per head; model view: n² lines in each of layers × heads thumbnails).
BERTVIZ_TOKEN_LIMITS: dict[str, int] = {"head": 128, "model": 48}


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

    from attn_tools.explorer.app import as_bundle
    from attn_tools.extract import SentenceAttention, extract

    if view not in BERTVIZ_TOKEN_LIMITS:
        raise ValueError(f"view must be 'head' or 'model', got {view!r}")
    if isinstance(record_or_text, str):
        if bundle is None:
            raise ValueError("pass bundle= (a ModelBundle or model name) to show a text in BertViz")
        record = extract(as_bundle(bundle), [record_or_text], progress=False)[0]
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
