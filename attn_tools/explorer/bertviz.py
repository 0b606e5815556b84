"""The hand-off to BertViz: a `SentenceAttention` in the format ``head_view``/``model_view`` want."""

from __future__ import annotations

import importlib.util
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from attn_tools.extract import SentenceAttention
    from attn_tools.models import ModelBundle

__all__ = ["BERTVIZ_TOKEN_LIMITS", "offline_scripts", "show_bertviz"]

# Above these token counts BertViz draws so many lines that the browser stalls (head view: n²
# lines per head; model view: n² lines in each of layers × heads thumbnails).
BERTVIZ_TOKEN_LIMITS: dict[str, int] = {"head": 128, "model": 48}


# Where installed packages keep the two libraries BertViz's views need (BertViz itself fetches
# them, and require.js, from a CDN): d3 5.7.0 in mpld3 (BSD-3-Clause), jQuery 3 in XStatic-jQuery
# (MIT). Found with find_spec: neither package is imported.
_VENDOR_FILES = {
    "d3": ("mpld3", "js/d3.v5.min.js"),
    "jquery": ("xstatic.pkg.jquery", "data/jquery.min.js"),
}
_CDN_SCRIPT = re.compile(r"<script src=\"https?://[^\"]*\"></script>")
_INLINE_SCRIPT = '<script type="text/javascript">'


def _vendor_file(module: str, relative: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent namespace package is missing
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def offline_scripts() -> dict[str, Path] | None:
    """The d3 and jQuery files that make BertViz work offline, or None when one is missing."""
    found = {name: _vendor_file(*where) for name, where in _VENDOR_FILES.items()}
    if any(path is None for path in found.values()):
        return None
    return found  # type: ignore[return-value]


def _inline_libraries(html: str, scripts: dict[str, Path]) -> str:
    """BertViz's HTML with its CDN loads replaced by d3 and jQuery inlined in a private scope.

    BertViz's script calls ``require.config`` (CDN paths) and ``requirejs(["jquery", "d3"], f)``.
    Here the libraries are evaluated inside a function whose ``define``/``exports``/``module``
    are undefined (so neither registers with a page's own require.js), jQuery hands the page's
    ``$`` back (``noConflict``), and BertViz's script runs with a local ``require``/``requirejs``
    that pass the two libraries straight to its callback. Nothing is fetched; nothing on the page
    is replaced.
    """
    html = _CDN_SCRIPT.sub("", html)
    if html.count(_INLINE_SCRIPT) != 1:
        raise RuntimeError(
            "this BertViz version's HTML has an unexpected shape (expected one inline script). "
            "Fix: show_bertviz(..., offline=False) for BertViz's own CDN output"
        )
    d3_src = scripts["d3"].read_text(encoding="utf-8")
    jq_src = scripts["jquery"].read_text(encoding="utf-8")
    # the sources are inlined verbatim; "</script" cannot occur in a minified library's code, but
    # a stray one would end the tag early, so it is escaped the way HTML parsers require
    d3_src, jq_src = (src.replace("</script", "<\\/script") for src in (d3_src, jq_src))
    vendor = (
        '<script type="text/javascript">\n'
        "window.__attnToolsBertviz = window.__attnToolsBertviz || (function () {\n"
        "  var holder = {};\n"
        "  (function (define, exports, module) {\n" + d3_src + "\n  }).call(holder);\n"
        "  var jq = (function (define, exports, module) {\n"
        + jq_src
        + "\n    return window.jQuery.noConflict(true);\n  })();\n"
        "  return {d3: holder.d3, jquery: jq};\n"
        "})();\n</script>\n"
    )
    start = html.index(_INLINE_SCRIPT) + len(_INLINE_SCRIPT)
    end = html.rindex("</script>")
    body = html[start:end]
    wrapped = (
        "(function (require, requirejs) {\n" + body + "\n})({config: function () {}}, "
        "function (names, callback) {\n"
        "  var libs = window.__attnToolsBertviz;\n"
        "  callback.apply(null, names.map(function (n) { return libs[n]; }));\n"
        "});\n"
    )
    before = html[: start - len(_INLINE_SCRIPT)]
    return vendor + before + _INLINE_SCRIPT + wrapped + html[end:]


def show_bertviz(
    record_or_text: SentenceAttention | str,
    view: Literal["head", "model"] = "head",
    *,
    bundle: ModelBundle | str | None = None,
    layer: int | None = None,
    heads: Sequence[int] | None = None,
    include_layers: Sequence[int] | None = None,
    html_action: Literal["view", "return"] = "view",
    offline: bool | None = None,
) -> Any:
    """Show a sentence's attention in BertViz's ``head_view`` or ``model_view``.

    BertViz wants a tuple with one ``torch`` tensor per layer, each ``[1, heads, n, n]``, and the
    token strings; this builds exactly that from a `SentenceAttention` (or extracts ``text`` with
    ``bundle``). Above `BERTVIZ_TOKEN_LIMITS` tokens a `UserWarning` says the view will be too slow
    to use (pass ``include_layers`` to draw fewer layers).

    BertViz itself loads require.js, d3 and jQuery from a CDN, so offline its view stays empty
    ("require is not defined"). Here d3 and jQuery are read from installed packages (mpld3,
    XStatic-jQuery; dependencies of attn_tools) and inlined into the output (about 330 kB per
    view), so the view draws with no network at all.

    Args:
        offline: True inlines the libraries (an error if their packages are missing); False gives
            BertViz's own output (CDN); None (default) inlines them when the packages are there
            and otherwise warns that the view needs network and names the fix.

    Returns:
        An ``IPython.display.HTML`` with ``html_action="return"``; None when displayed.
    """
    import torch

    from attn_tools.explorer.app import as_bundle
    from attn_tools.extract import SentenceAttention, extract

    if view not in BERTVIZ_TOKEN_LIMITS:
        raise ValueError(f"view must be 'head' or 'model', got {view!r}")
    if html_action not in ("view", "return"):
        raise ValueError(f"html_action must be 'view' or 'return', got {html_action!r}")
    scripts = offline_scripts() if offline is not False else None
    if offline and scripts is None:
        raise ValueError(
            "offline=True needs d3 and jQuery from the packages mpld3 and XStatic-jQuery. "
            "Fix: pip install mpld3 XStatic-jQuery (or offline=False to load them from a CDN)"
        )
    if offline is None and scripts is None:
        warnings.warn(
            "mpld3 / XStatic-jQuery are not installed, so BertViz loads require.js, d3 and jQuery "
            "from a CDN: without network the view stays empty. Fix: pip install mpld3 "
            "XStatic-jQuery, or use attn_tools.explore (needs no network)",
            UserWarning,
            stacklevel=2,
        )
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

        out = head_view(
            attention, tokens, layer=layer, heads=list(heads) if heads is not None else None,
            include_layers=layers, html_action="return",
        )  # fmt: skip
    else:
        from bertviz import model_view

        out = model_view(
            attention, tokens, include_layers=layers,
            include_heads=list(heads) if heads is not None else None, html_action="return",
        )  # fmt: skip
    if scripts is not None:
        from IPython.display import HTML

        out = HTML(_inline_libraries(out.data, scripts))
    if html_action == "return":
        return out
    from IPython.display import display

    display(out)
    return None
