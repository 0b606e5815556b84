"""Lexical patterns: where a token attends depends on what the tokens are.

``punctuation`` and ``repetition`` are this project's definitions; ``previous_token_head``,
``duplicate_token_head`` and ``induction_head`` reproduce TransformerLens's detection patterns
(`transformer_lens.head_detector`) on the model's token ids, so scores computed with them and the
``mul``/``abs`` metrics equal ``detect_head``'s. Those three are lower-triangular by definition
(they only look back), for encoders too.

Tokens and pieces: ``punctuation`` and the three TransformerLens patterns work on model tokens —
each word piece is its own position, and special tokens are ordinary positions (never
punctuation; a [CLS] or BOS id can still repeat). ``repetition`` is word-level: pieces of a word
share its row, attention to a word is spread over its pieces, special tokens get the self
fallback.
"""

from __future__ import annotations

import numpy as np

from attn_tools.patterns.base import PatternContext, pattern

__all__: list[str] = []

_FAMILY = "lexical"


@pattern(name="punctuation", family=_FAMILY, color="#bcbd22", phrase="the punctuation after it")
def punctuation(ctx: PatternContext) -> np.ndarray:
    """Each token attends evenly to the punctuation tokens after it (``k > q``).

    A token is punctuation when its text, without ``##``/``Ġ`` markers, is all punctuation
    characters (``,`` ``.`` ``"`` ``'s`` is not); special tokens never are. Rows with no
    punctuation ahead — every row of a decoder — fall back to self.
    """
    ahead = np.triu(np.ones((ctx.n, ctx.n)), k=1)
    return ahead * ctx.punct_mask[None, :]


@pattern(
    name="repetition",
    family=_FAMILY,
    needs_parse=True,
    color="#17becf",
    phrase="other occurrences of its word",
)
def repetition(ctx: PatternContext) -> np.ndarray:
    """Each word attends evenly to the *other* occurrences of the same word (case-insensitive).

    Words are spaCy words; punctuation words are not counted (see ``punctuation``). Pieces of a
    word share its row and attention to a word is spread over its pieces; special tokens and
    words that occur once get the self fallback.
    """
    texts = np.array([w.text.lower() for w in ctx.words])
    if texts.size == 0:
        return np.zeros((ctx.n, ctx.n))
    content = ~ctx.word_attr("is_punct").astype(bool)
    same = (texts[:, None] == texts[None, :]) & content[:, None] & content[None, :]
    np.fill_diagonal(same, False)
    return ctx.words_to_tokens(same.astype(np.float64))


def _duplicates(ctx: PatternContext) -> np.ndarray:
    """``[n, n]`` 1 where key ``k < q`` has the same token id as query ``q``."""
    ids = np.asarray(ctx.token_ids)
    return np.tril(ids[:, None] == ids[None, :], k=-1).astype(np.float64)


@pattern(name="previous_token_head", family=_FAMILY, color="#393b79", phrase="the previous token")
def previous_token_head(ctx: PatternContext) -> np.ndarray:
    """TransformerLens previous-token head: token ``q`` attends to ``q - 1`` (row 0 empty)."""
    return np.eye(ctx.n, k=-1)


@pattern(
    name="duplicate_token_head",
    family=_FAMILY,
    color="#9edae5",
    phrase="earlier copies of its token",
)
def duplicate_token_head(ctx: PatternContext) -> np.ndarray:
    """TransformerLens duplicate-token head: each token attends to earlier tokens with its id.

    Token ids, not text: ``The`` and ``Ġthe`` differ. Special tokens count like any other id.
    """
    return _duplicates(ctx)


@pattern(
    name="induction_head",
    family=_FAMILY,
    color="#e377c2",
    phrase="the token after an earlier copy of itself",
)
def induction_head(ctx: PatternContext) -> np.ndarray:
    """TransformerLens induction head: token ``q`` attends to the token *after* each earlier
    occurrence of its id (``A B ... A`` → the second ``A`` attends to ``B``)."""
    dup = _duplicates(ctx)
    out = np.zeros_like(dup)
    out[:, 1:] = dup[:, :-1]
    return out
