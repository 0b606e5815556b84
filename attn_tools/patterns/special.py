"""Sink patterns: attention parked on tokens that carry little content.

Heads often send attention they "do not need" to special tokens ([CLS], [SEP], a BOS) or to
punctuation — a no-op (Clark et al. 2019; Xiao et al. 2023 on attention sinks). Every row is the
same distribution over the sink tokens; a decoder row sees only the sinks at or before it and falls
back to self when there is none. Special tokens are the tokenizer's (the record's
``special_mask``); punctuation is as in `attn_tools.patterns.base.is_punctuation`. Word pieces are
ordinary tokens here.
"""

from __future__ import annotations

import numpy as np

from attn_tools.patterns.base import PatternContext, pattern

__all__: list[str] = []

_FAMILY = "special"


def _columns(ctx: PatternContext, mask: np.ndarray) -> np.ndarray:
    return np.broadcast_to(mask.astype(np.float64)[None, :], (ctx.n, ctx.n)).copy()


@pattern(name="special_tokens", family=_FAMILY, color="#c49c94", phrase="the special tokens")
def special_tokens(ctx: PatternContext) -> np.ndarray:
    """Every token attends evenly to the special tokens ([CLS] and [SEP], or the BOS/EOS)."""
    return _columns(ctx, ctx.special_mask)


@pattern(name="punctuation_sink", family=_FAMILY, color="#dbdb8d", phrase="the punctuation tokens")
def punctuation_sink(ctx: PatternContext) -> np.ndarray:
    """Every token attends evenly to all punctuation tokens, before or after it."""
    return _columns(ctx, ctx.punct_mask)


@pattern(
    name="special_or_punctuation",
    family=_FAMILY,
    color="#f7b6d2",
    phrase="the special and punctuation tokens",
)
def special_or_punctuation(ctx: PatternContext) -> np.ndarray:
    """Every token attends evenly to the special and punctuation tokens together."""
    return _columns(ctx, ctx.special_mask | ctx.punct_mask)
