"""Character-level patterns: for models whose tokens are single characters (``attn_tools.charlm``).

An **opt-in** family (``"charlevel"``): these patterns live in `attn_tools.patterns.OPT_IN`, not in
the default set, so a BERT or GPT-2 analysis (``patterns=None``) never scores them. Ask for them
by name (``score_heads(records, char_patterns("hebrew"))``) or by family
(``list_patterns("charlevel")``). On a context whose tokens are not single characters they raise
a `PatternError` naming the first offending token, rather than score something meaningless.

Conventions shared by every pattern here:

- Positions are the *character* tokens: a token whose span ``offsets[i]`` covers one character
  of ``ctx.text``, plus any combining marks on it (the character tokenizer keeps niqqud in its
  letter's span; the letter is what the patterns read). Special tokens (a BOS, padding) are not characters: their rows are
  empty (→ the self fallback) and nothing attends to them, so ``char_previous`` of the first
  character is the self fallback, not the BOS.
- Patterns that look back (``char_previous``, ``char_offset(-k)``, ``char_last_*``, ``char_same``)
  put mass only on keys ``k < q``; they mean the same for encoders and decoders.
  ``char_next_space`` looks ahead: for a decoder the framework's causal mask empties every row
  (coverage 0), so it only means something for encoders.
- A *space* is any whitespace character (``str.isspace``); *punctuation* is Unicode category
  ``P*`` (Hebrew maqaf ``־``, geresh ``׳`` and sof pasuq ``׃`` included); a *word* is a maximal run
  of characters that are neither space nor punctuation.
- Vowels are language-aware (`vowel_mask`): English ``a e i o u`` plus ``y`` when it is not the
  first letter of its word and not followed by a vowel (``my``, ``gym``, ``happy``: vowel;
  ``yes``, ``beyond``, ``player``: consonant). Hebrew: the four matres lectionis ``א ה ו י``
  count as vowel letters (in unpointed text they are the only written trace of vowels, even
  though each is also a consonant in some words); every other Hebrew letter, final forms
  included, is a consonant. Niqqud marks (category ``Mn``) are neither. A consonant is any other
  letter (``str.isalpha``).
"""

from __future__ import annotations

import unicodedata
from typing import Literal, get_args

import numpy as np

from attn_tools.patterns.base import (
    OPT_IN,
    Pattern,
    PatternContext,
    PatternError,
    pattern,
    pattern_factory,
)
from attn_tools.patterns.context import is_punctuation

__all__ = [
    "ENGLISH_VOWELS",
    "HEBREW_VOWEL_LETTERS",
    "LANGUAGES",
    "Language",
    "char_context",
    "char_last_consonant",
    "char_last_vowel",
    "char_offset",
    "char_patterns",
    "characters",
    "is_character_level",
    "vowel_mask",
]

_FAMILY = "charlevel"

Language = Literal["english", "hebrew"]
#: the languages the vowel patterns know, in the order `char_patterns` documents them
LANGUAGES: tuple[str, ...] = get_args(Language)
ENGLISH_VOWELS = frozenset("aeiou")
#: the matres lectionis: the letters unpointed Hebrew uses to write vowels
HEBREW_VOWEL_LETTERS = frozenset("אהוי")


# ----------------------------------------------------------------------------- characters


def _span_ok(span: str) -> bool:
    """One character: a single code point, or a base character followed only by combining marks
    (pointed Hebrew ``דָ``: the character tokenizer keeps niqqud in its letter's span)."""
    return len(span) == 1 or (
        len(span) > 1 and all(unicodedata.category(c).startswith("M") for c in span[1:])
    )


def is_character_level(ctx: PatternContext) -> bool:
    """True when every non-special token of ``ctx`` covers one character (plus any combining
    marks on it)."""
    return all(
        special or _span_ok(ctx.text[s:e]) for (s, e), special in zip(ctx.offsets, ctx.special_mask)
    )


def characters(ctx: PatternContext, name: str = "charlevel") -> list[str | None]:
    """The character of each token (None for special tokens): the first code point of its span,
    so a letter with niqqud counts as the letter.

    Raises:
        PatternError: a non-special token covers no character or several (a word-piece model).
    """
    out: list[str | None] = []
    for i, ((s, e), special, tok) in enumerate(zip(ctx.offsets, ctx.special_mask, ctx.tokens)):
        if special:
            out.append(None)
            continue
        span = ctx.text[s:e]
        if not _span_ok(span):
            raise PatternError(
                f"pattern {name!r} needs one character per token, but token {i} ({tok!r}) covers "
                f"{e - s} characters ({span!r}) of {ctx.text[:40]!r}. Fix: use the charlevel "
                "patterns on a character-level model only; for word-piece models use "
                "previous_token, offset(k), punctuation or word_start."
            )
        out.append(span[0])
    return out


def _masks(chars: list[str | None]) -> dict[str, np.ndarray]:
    """Boolean ``[n]`` masks of the character classes (special tokens are in none)."""
    is_char = np.array([c is not None for c in chars])
    space = np.array([c is not None and c.isspace() for c in chars])
    punct = np.array([c is not None and is_punctuation(c) for c in chars])
    return {"char": is_char, "space": space, "punct": punct, "word": is_char & ~space & ~punct}


def _nearest_before(target: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``[n, n]`` one-hot: each ``allowed`` row ``q`` → the last ``k < q`` with ``target[k]``."""
    n = len(target)
    idx = np.where(target, np.arange(n), -1)
    last = np.maximum.accumulate(idx) if n else idx
    before = np.concatenate([[-1], last[:-1]]) if n else idx
    out = np.zeros((n, n))
    rows = np.flatnonzero(allowed & (before >= 0))
    out[rows, before[rows]] = 1.0
    return out


def _nearest_after(target: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``[n, n]`` one-hot: each ``allowed`` row ``q`` → the first ``k > q`` with ``target[k]``."""
    flipped = _nearest_before(target[::-1], allowed[::-1])
    return flipped[::-1, ::-1].copy()


def _shift(is_char: np.ndarray, step: int) -> np.ndarray:
    """``[n, n]``: character ``q`` → the character ``step`` characters away (specials skipped)."""
    n = len(is_char)
    pos = np.flatnonzero(is_char)
    out = np.zeros((n, n))
    if step == 0:
        out[pos, pos] = 1.0
    elif abs(step) < len(pos):
        src = pos[max(0, -step) : len(pos) - max(0, step)]
        out[src, pos[max(0, step) : len(pos) - max(0, -step)]] = 1.0
    return out


def vowel_mask(chars: list[str | None], language: Language) -> tuple[np.ndarray, np.ndarray]:
    """``(vowel [n], consonant [n])`` masks of a character sequence under ``language``'s rule.

    See the module docstring for the rules (English ``y``; Hebrew matres lectionis).
    """
    if language not in LANGUAGES:
        raise PatternError(
            f"unknown language {language!r} for the vowel patterns. Fix: use one of {LANGUAGES}."
        )
    n = len(chars)
    letter = np.array([c is not None and c.isalpha() for c in chars])
    low = [c.lower() if c is not None else "" for c in chars]
    if language == "hebrew":
        vowel = np.array([c in HEBREW_VOWEL_LETTERS for c in low])
    else:
        vowel = np.array([c in ENGLISH_VOWELS for c in low])
        for i in range(n):
            if low[i] != "y":
                continue
            starts_word = i == 0 or not letter[i - 1]
            before_vowel = i + 1 < n and low[i + 1] in ENGLISH_VOWELS
            vowel[i] = not starts_word and not before_vowel
    vowel &= letter
    return vowel, letter & ~vowel


# ----------------------------------------------------------------------------- patterns


def _registered(name: str, color: str, phrase: str):  # type: ignore[no-untyped-def]
    return pattern(name=name, family=_FAMILY, color=color, phrase=phrase, registry=OPT_IN)


@_registered("char_previous", "#08519c", "the previous character")
def char_previous(ctx: PatternContext) -> np.ndarray:
    """Each character attends to the character right before it (the first: self fallback)."""
    return _shift(_masks(characters(ctx, "char_previous"))["char"], -1)


@_registered("char_last_space", "#01665e", "the last space before it")
def char_last_space(ctx: PatternContext) -> np.ndarray:
    """Each character attends to the nearest space before it (none yet: self fallback)."""
    m = _masks(characters(ctx, "char_last_space"))
    return _nearest_before(m["space"], m["char"])


@_registered("char_next_space", "#80cdc1", "the next space after it")
def char_next_space(ctx: PatternContext) -> np.ndarray:
    """Each character attends to the nearest space after it (encoders only: a decoder's causal
    mask leaves every row to the self fallback)."""
    m = _masks(characters(ctx, "char_next_space"))
    return _nearest_after(m["space"], m["char"])


@_registered("char_word_start", "#6a51a3", "the first character of its word")
def char_word_start(ctx: PatternContext) -> np.ndarray:
    """Each character of a word attends to the word's first character (which attends to itself);
    spaces and punctuation are in no word (self fallback)."""
    word = _masks(characters(ctx, "char_word_start"))["word"]
    out = np.zeros((ctx.n, ctx.n))
    start = -1
    for i, inside in enumerate(word):
        if not inside:
            # a special token between two characters does not split a word; a space does
            if ctx.special_mask[i]:
                continue
            start = -1
            continue
        if start < 0:
            start = i
        out[i, start] = 1.0
    return out


@_registered("char_last_punct", "#bf812d", "the last punctuation mark before it")
def char_last_punct(ctx: PatternContext) -> np.ndarray:
    """Each character attends to the nearest punctuation character before it (none: self)."""
    m = _masks(characters(ctx, "char_last_punct"))
    return _nearest_before(m["punct"], m["char"])


@_registered("char_same", "#d94801", "earlier copies of the same character")
def char_same(ctx: PatternContext) -> np.ndarray:
    """Each character attends evenly to the earlier occurrences of the same character, ignoring
    case (``T`` matches ``t``); spaces are left out (``char_last_space`` covers them) and a
    character seen for the first time falls back to self."""
    chars = characters(ctx, "char_same")
    m = _masks(chars)
    keys = np.array([c.casefold() if c is not None else "" for c in chars])
    ok = m["char"] & ~m["space"]
    same = (keys[:, None] == keys[None, :]) & ok[:, None] & ok[None, :]
    return np.tril(same, k=-1).astype(np.float64)


def _vowel_pattern(kind: Literal["vowel", "consonant"], language: str) -> Pattern:
    lang = str(language).strip().lower()
    if lang not in LANGUAGES:
        raise PatternError(
            f"char_last_{kind} needs a language, got {language!r}. Fix: write "
            f"char_last_{kind}(english) or char_last_{kind}(hebrew)."
        )
    name = f"char_last_{kind}({lang})"

    def fn(ctx: PatternContext) -> np.ndarray:
        chars = characters(ctx, name)
        vowel, consonant = vowel_mask(chars, lang)  # type: ignore[arg-type]
        return _nearest_before(vowel if kind == "vowel" else consonant, _masks(chars)["char"])

    rule = "a e i o u, y after a letter and not before a vowel" if lang == "english" else "א ה ו י"
    return Pattern(
        name=name,
        family=_FAMILY,
        description=f"Each character attends to the nearest {kind} before it ({lang}: vowels "
        f"are {rule})",
        fn=fn,
        color={"vowel": "#c51b8a", "consonant": "#f1b6da"}[kind],
        phrase=f"the last {kind} before it",
    )


@pattern_factory("char_last_vowel", example="char_last_vowel(hebrew)")
def char_last_vowel(language: str) -> Pattern:
    """``char_last_vowel(english|hebrew)``: each character → the nearest vowel before it."""
    return _vowel_pattern("vowel", language)


@pattern_factory("char_last_consonant", example="char_last_consonant(english)")
def char_last_consonant(language: str) -> Pattern:
    """``char_last_consonant(english|hebrew)``: each character → the nearest consonant before it."""
    return _vowel_pattern("consonant", language)


@pattern_factory("char_offset", example="char_offset(-3)")
def char_offset(k: str | int) -> Pattern:
    """``char_offset(k)``: each character attends to the character ``k`` places away
    (special tokens are skipped; ``char_offset(-1)`` is ``char_previous``)."""
    try:
        step = int(str(k).strip())
    except ValueError:
        raise PatternError(
            f"char_offset needs an integer, got {k!r}. Fix: write char_offset(-2)."
        ) from None
    name = f"char_offset({step})"

    def fn(ctx: PatternContext) -> np.ndarray:
        return _shift(_masks(characters(ctx, name))["char"], step)

    where = "before" if step < 0 else "after"
    return Pattern(
        name=name,
        family=_FAMILY,
        description=f"Each character attends to the character {abs(step)} place(s) {where} it",
        fn=fn,
        color={-2: "#4292c6", -3: "#9ecae1"}.get(step, ""),
        phrase=f"the character {abs(step)} {'back' if step < 0 else 'ahead'}",
    )


# the fixed offsets and both languages' vowel patterns are listed by list_patterns("charlevel")
for _made in (
    char_offset(-2),
    char_offset(-3),
    *(f(lang) for lang in LANGUAGES for f in (char_last_vowel, char_last_consonant)),
):
    OPT_IN[_made.name] = _made

#: the positional patterns that keep their meaning on characters and that `best_fit` needs
#: (``uniform`` is its default baseline; ``first_token`` catches a BOS sink)
_SHARED = ("self", "first_token", "uniform")


def char_patterns(
    language: Language = "english",
    *,
    kind: Literal["causal", "encoder"] = "causal",
    shared: bool = True,
) -> list[str]:
    """The pattern names to score a character model with.

    Args:
        language: ``"english"`` or ``"hebrew"`` (picks the vowel patterns' rule).
        kind: ``"causal"`` (the character models of `attn_tools.charlm`) leaves out
            ``char_next_space``, which a decoder's mask turns into pure self fallback (it would
            only tie with ``self``); ``"encoder"`` keeps it.
        shared: also list ``self``, ``first_token`` and ``uniform`` (positional patterns that
            mean the same on characters; ``best_fit``'s default baseline needs ``uniform``).

    Example:
        >>> scores = score_heads(records, char_patterns("hebrew"))
        >>> fit = best_fit(scores)
    """
    if language not in LANGUAGES:
        raise ValueError(
            f"language must be one of {LANGUAGES}, got {language!r}. Fix: pass 'english' or "
            "'hebrew'."
        )
    if kind not in ("causal", "encoder"):
        raise ValueError(f"kind must be 'causal' or 'encoder', got {kind!r}.")
    names = [
        "char_previous", "char_offset(-2)", "char_offset(-3)", "char_last_space",
        "char_next_space", "char_word_start", "char_last_punct", "char_same",
        f"char_last_vowel({language})", f"char_last_consonant({language})",
    ]  # fmt: skip
    if kind == "causal":
        names.remove("char_next_space")
    return names + list(_SHARED) if shared else names


def char_context(
    text: str, *, kind: Literal["encoder", "causal"] = "causal", bos: str | None = None
) -> PatternContext:
    """A `PatternContext` with one token per character of ``text`` (no parse), optionally led by
    a special ``bos`` token: what a character model's record gives, without a model.

    Example:
        >>> predict("char_last_space", char_context("a cat"))[0]
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r}. Fix: pass a sentence.")
    if kind not in ("encoder", "causal"):
        raise ValueError(f"kind must be 'encoder' or 'causal', got {kind!r}.")
    from attn_tools.patterns.context import PlainAlignment

    lead = [bos] if bos else []
    tokens = tuple(lead + list(text))
    offsets = tuple([(0, 0)] * len(lead) + [(i, i + 1) for i in range(len(text))])
    special = np.array([True] * len(lead) + [False] * len(text))
    ids = tuple([0] * len(lead) + [ord(c) for c in text])
    empty = PlainAlignment(token_words=(), word_tokens=(), units=())
    return PatternContext(
        text=text,
        tokens=tokens,
        token_ids=ids,
        offsets=offsets,
        special_mask=special,
        kind=kind,
        words=(),
        alignment=empty,
    )
