"""Positional patterns: where a token attends depends only on its position.

Every token counts, special tokens included: for BERT-style input ``[CLS]`` is position 0 and
``[SEP]`` the last position; for a decoder the prepended BOS is position 0. Word pieces are
ordinary positions too (``play ##ing``: ``##ing``'s previous token is ``play``). Rows that would
point outside the sentence are left empty, so the framework's fallback (attend to self) applies;
for decoders the framework also removes every key after the query, so ``next_token`` and
``last_token`` are self-attention there except where the key is the query itself.
"""

from __future__ import annotations

import numpy as np

from attn_tools.patterns.base import Pattern, PatternContext, PatternError, pattern, pattern_factory

__all__ = ["offset"]

_FAMILY = "positional"


@pattern(name="next_token", family=_FAMILY, color="#ff7f0e", phrase="the next token")
def next_token(ctx: PatternContext) -> np.ndarray:
    """Each token attends to the token right after it (the last token: self fallback)."""
    return np.eye(ctx.n, k=1)


@pattern(name="previous_token", family=_FAMILY, color="#1f77b4", phrase="the previous token")
def previous_token(ctx: PatternContext) -> np.ndarray:
    """Each token attends to the token right before it (the first token: self fallback)."""
    return np.eye(ctx.n, k=-1)


@pattern(name="self", family=_FAMILY, color="#2ca02c", phrase="itself")
def self_(ctx: PatternContext) -> np.ndarray:
    """Each token attends to itself."""
    return np.eye(ctx.n)


@pattern(name="first_token", family=_FAMILY, color="#d62728", phrase="the first token")
def first_token(ctx: PatternContext) -> np.ndarray:
    """Every token attends to position 0 ([CLS] or the BOS: the usual attention sink)."""
    out = np.zeros((ctx.n, ctx.n))
    out[:, 0] = 1.0
    return out


@pattern(name="last_token", family=_FAMILY, color="#9467bd", phrase="the last token")
def last_token(ctx: PatternContext) -> np.ndarray:
    """Every token attends to the last position ([SEP]/EOS when the tokenizer appends one).

    In a decoder only the last row can see the last token; the other rows fall back to self.
    """
    out = np.zeros((ctx.n, ctx.n))
    out[:, -1] = 1.0
    return out


@pattern(name="uniform", family=_FAMILY, color="#8c564b", phrase="all visible tokens evenly")
def uniform(ctx: PatternContext) -> np.ndarray:
    """Every token attends evenly to every token it can see (all, or ``k ≤ q`` in a decoder)."""
    return np.ones((ctx.n, ctx.n))


_OFFSET_COLORS = {-2: "#aec7e8", 2: "#ffbb78"}  # the default offsets' figure colours


@pattern_factory("offset", example="offset(-2)")
def offset(k: str | int) -> Pattern:
    """``offset(k)``: each token ``q`` attends to ``q + k`` (any integer ``k``).

    ``offset(-1)`` is `previous_token`, ``offset(1)`` `next_token`, ``offset(0)`` `self`. Rows
    whose target is outside the sentence (or after the query in a decoder) fall back to self.
    """
    try:
        step = int(str(k).strip())
    except ValueError:
        raise PatternError(
            f"offset needs an integer, got {k!r}. Fix: write offset(2) or offset(-3)."
        ) from None

    def fn(ctx: PatternContext) -> np.ndarray:
        return np.eye(ctx.n, k=step)

    where = "before" if step < 0 else "after"
    ahead = "back" if step < 0 else "ahead"
    return Pattern(
        name=f"offset({step})",
        family=_FAMILY,
        description=(
            f"Each token attends to the token {abs(step)} place(s) {where} it"
            if step
            else "Each token attends to itself"
        ),
        fn=fn,
        color=_OFFSET_COLORS.get(step, ""),
        phrase=f"the token {abs(step)} {ahead}" if step else "itself",
    )


# Two non-adjacent offsets are part of the default set; any other k is available by name.
for _k in (-2, 2):
    _made = offset(_k)
    pattern(
        name=_made.name, family=_FAMILY, description=_made.description, color=_made.color,
        phrase=_made.phrase,
    )(_made.fn)  # fmt: skip
