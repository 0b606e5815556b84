"""Predicted "interpretable" attention patterns: the `Pattern` type, the registry, the families."""

from __future__ import annotations

from attn_tools.patterns.base import (
    REGISTRY,
    Pattern,
    PatternContext,
    PatternError,
    build_context,
    build_contexts,
    get_pattern,
    list_patterns,
    pattern,
    pattern_factory,
    predict,
    predict_many,
    resolve_patterns,
)

__all__ = [
    "REGISTRY",
    "Pattern",
    "PatternContext",
    "PatternError",
    "build_context",
    "build_contexts",
    "get_pattern",
    "list_patterns",
    "pattern",
    "pattern_factory",
    "predict",
    "predict_many",
    "resolve_patterns",
]
