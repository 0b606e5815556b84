"""Predicted "interpretable" attention patterns: the `Pattern` type, the registry, the families.

Importing this package registers the built-in families (positional, lexical, linguistic,
special, character), which ``list_patterns()`` shows, and the opt-in ``charlevel`` family for
character-level models (in `OPT_IN`, not in the default set: see `attn_tools.patterns.charlevel`;
``list_patterns("charlevel")``). ``get_pattern("offset(3)")``, ``get_pattern("dep(nsubj)")`` and
``get_pattern("shuffled(previous_token)")`` build parametrised ones by name.
"""

from __future__ import annotations

# isort: off
# Import order is registration order, which is the order list_patterns() and tables use.
from attn_tools.patterns import positional, lexical, linguistic, special, character, charlevel

# isort: on
from attn_tools.patterns.base import (
    OPT_IN,
    REGISTRY,
    Pattern,
    PatternContext,
    PatternError,
    build_context,
    build_contexts,
    get_pattern,
    is_punctuation,
    list_patterns,
    pattern,
    pattern_factory,
    predict,
    predict_many,
    resolve_patterns,
    shuffled,
)
from attn_tools.patterns.charlevel import char_context, char_patterns
from attn_tools.patterns.linguistic import dep, dep_rev
from attn_tools.patterns.positional import offset

__all__ = [
    "OPT_IN",
    "REGISTRY",
    "Pattern",
    "PatternContext",
    "PatternError",
    "build_context",
    "build_contexts",
    "char_context",
    "char_patterns",
    "character",
    "charlevel",
    "dep",
    "dep_rev",
    "get_pattern",
    "is_punctuation",
    "lexical",
    "linguistic",
    "list_patterns",
    "offset",
    "pattern",
    "pattern_factory",
    "positional",
    "predict",
    "predict_many",
    "resolve_patterns",
    "shuffled",
    "special",
]
