"""Character and word-piece patterns: how tokens are spelled and how words are split.

These look at the characters each token covers (its text span) and at how the tokenizer cut
spaCy words into pieces (the alignment's units: a word's pieces, or words sharing a token such as
``doesn`` in ``does|n't``, form one unit). Special tokens have no text and no unit mates: their rows
are empty (→ self fallback) and nothing attends to them.
"""

from __future__ import annotations

import numpy as np

from attn_tools.patterns.base import PatternContext, pattern

__all__: list[str] = []

_FAMILY = "character"


def _unit_of_token(ctx: PatternContext) -> np.ndarray:
    """``[n]`` unit index of each token, -1 for tokens outside any word (special tokens)."""
    unit = np.full(ctx.n, -1, dtype=np.int64)
    for u, (toks, words) in enumerate(ctx.alignment.units):
        if words:
            unit[list(toks)] = u
    return unit


@pattern(
    name="same_word",
    family=_FAMILY,
    needs_parse=True,
    color="#31a354",
    phrase="the other pieces of its word",
)
def same_word(ctx: PatternContext) -> np.ndarray:
    """Each word piece attends evenly to the *other* pieces of its word (``un ##bel ##ie``).

    Tokens of one-piece words fall back to self.
    """
    unit = _unit_of_token(ctx)
    out = (unit[:, None] == unit[None, :]) & (unit[:, None] >= 0)
    np.fill_diagonal(out, False)
    return out.astype(np.float64)


@pattern(
    name="word_start",
    family=_FAMILY,
    needs_parse=True,
    color="#3182bd",
    phrase="the first piece of its word",
)
def word_start(ctx: PatternContext) -> np.ndarray:
    """Each token attends to the first piece of its word (a first piece attends to itself)."""
    out = np.zeros((ctx.n, ctx.n))
    for toks, words in ctx.alignment.units:
        if words:
            out[list(toks), toks[0]] = 1.0
    return out


@pattern(name="same_text", family=_FAMILY, color="#e6550d", phrase="tokens with the same text")
def same_text(ctx: PatternContext) -> np.ndarray:
    """Each token attends evenly to the *other* tokens that spell the same text, ignoring case
    and tokenizer markers (``The`` and ``Ġthe`` match; ids need not). Unique tokens: self."""
    texts = np.array([t.lower() for t in ctx.token_texts])
    out = (texts[:, None] == texts[None, :]) & ~ctx.special_mask[:, None]
    out &= ~ctx.special_mask[None, :]
    np.fill_diagonal(out, False)
    return out.astype(np.float64)
