"""The charlevel patterns on short English and Hebrew strings, with every expected matrix written
out by hand, plus the opt-in rule (they never enter a word-piece model's default set).

Contexts come from a one-token-per-character tokenizer written here (offsets ``(i, i + 1)``), the
shape a character model's records have. Expectations are the framework's normalised predictions:
``spec`` maps a query row to the keys it attends to (evenly); every row not listed is the self
fallback and must be reported as having no mass of its own.
"""

from __future__ import annotations

import numpy as np
import pytest

from attn_tools.extract import SentenceAttention
from attn_tools.patterns import (
    OPT_IN,
    REGISTRY,
    PatternContext,
    PatternError,
    build_context,
    char_context,
    char_patterns,
    get_pattern,
    list_patterns,
    predict,
    resolve_patterns,
)
from attn_tools.patterns.charlevel import characters, is_character_level, vowel_mask
from attn_tools.patterns.context import PlainAlignment


def char_tokenize(text: str, bos: str | None = None) -> dict:
    """The test's character tokenizer: one token per character, offsets ``(i, i + 1)``."""
    lead = [bos] if bos else []
    return {
        "tokens": tuple(lead + list(text)),
        "token_ids": tuple([1] * len(lead) + [ord(c) for c in text]),
        "offsets": tuple([(0, 0)] * len(lead) + [(i, i + 1) for i in range(len(text))]),
        "special_mask": np.array([True] * len(lead) + [False] * len(text)),
    }


def char_record(text: str, attention: np.ndarray | None = None, *, kind: str = "causal",
                bos: str | None = None, model: str = "char") -> SentenceAttention:  # fmt: skip
    enc = char_tokenize(text, bos)
    n = len(enc["tokens"])
    att = np.full((1, 1, n, n), 1.0 / n, dtype=np.float32) if attention is None else attention
    return SentenceAttention(text=text, attention=att.astype(np.float32), model=model,
                             kind=kind, **enc)  # fmt: skip


def ctx_of(text: str, kind: str = "causal", bos: str | None = None) -> PatternContext:
    return build_context(char_record(text, kind=kind, bos=bos), with_parse=False)


def expected(n: int, spec: dict[int, list[int] | int]) -> tuple[np.ndarray, np.ndarray]:
    out = np.eye(n)
    mass = np.zeros(n, dtype=bool)
    for q, keys in spec.items():
        keys = [keys] if isinstance(keys, int) else keys
        out[q] = 0.0
        out[q, keys] = 1.0 / len(keys)
        mass[q] = True
    return out, mass


def check(name: str, ctx: PatternContext, spec: dict) -> None:
    got, mass = predict(get_pattern(name), ctx)
    want, want_mass = expected(ctx.n, spec)
    np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"{name} on {ctx.text!r}")
    np.testing.assert_array_equal(mass, want_mass, err_msg=f"{name} rows on {ctx.text!r}")


def rng(a: int, b: int, key: int) -> dict[int, int]:
    return {q: key for q in range(a, b + 1)}


# "we see a bee."   w0 e1 _2 s3 e4 e5 _6 a7 _8 b9 e10 e11 .12
EN = "we see a bee."
# "no, yes; ok."    n0 o1 ,2 _3 y4 e5 s6 ;7 _8 o9 k10 .11
EN_PUNCT = "no, yes; ok."
# "הילד אכל."  (the boy ate)  ה0 י1 ל2 ד3 _4 א5 כ6 ל7 .8
HE = "הילד אכל."
# "בית־ספר גדול" (a big school; maqaf joins the pair)  ב0 י1 ת2 ־3 ס4 פ5 ר6 _7 ג8 ד9 ו10 ל11
HE_MAQAF = "בית־ספר גדול"


def test_strings_are_what_the_specs_index() -> None:
    assert [EN[i] for i in (2, 6, 8, 12)] == [" ", " ", " ", "."]
    assert [EN_PUNCT[i] for i in (2, 4, 7, 11)] == [",", "y", ";", "."]
    assert [HE[i] for i in (0, 1, 4, 5, 7, 8)] == ["ה", "י", " ", "א", "ל", "."]
    assert [HE_MAQAF[i] for i in (3, 7, 10)] == ["־", " ", "ו"]


@pytest.mark.parametrize("kind", ["causal", "encoder"])
def test_previous_and_offsets(kind: str) -> None:
    ctx = ctx_of(EN, kind)
    check("char_previous", ctx, {q: q - 1 for q in range(1, 13)})
    check("char_offset(-2)", ctx, {q: q - 2 for q in range(2, 13)})
    check("char_offset(-3)", ctx, {q: q - 3 for q in range(3, 13)})
    assert get_pattern("char_offset( -2 )") is get_pattern("char_offset(-2)")
    if kind == "encoder":
        check("char_offset(2)", ctx, {q: q + 2 for q in range(0, 11)})
    else:  # a decoder cannot look ahead: every row is the fallback
        check("char_offset(2)", ctx, {})


def test_spaces() -> None:
    check("char_last_space", ctx_of(EN), {**rng(3, 6, 2), **rng(7, 8, 6), **rng(9, 12, 8)})
    enc = ctx_of(EN, "encoder")
    check("char_next_space", enc, {0: 2, 1: 2, **rng(2, 5, 6), 6: 8, 7: 8})
    check("char_next_space", ctx_of(EN), {})  # causal: looking ahead is masked away
    check("char_last_space", ctx_of(HE), rng(5, 8, 4))
    check("char_next_space", ctx_of(HE, "encoder"), rng(0, 3, 4))


def test_word_start_and_punctuation() -> None:
    check("char_word_start", ctx_of(EN),
          {0: 0, 1: 0, 3: 3, 4: 3, 5: 3, 7: 7, 9: 9, 10: 9, 11: 9})  # fmt: skip
    check("char_word_start", ctx_of(HE), {**rng(0, 3, 0), **rng(5, 7, 5)})
    # the maqaf is punctuation: it splits the pair into two words and is a punctuation key
    check("char_word_start", ctx_of(HE_MAQAF), {**rng(0, 2, 0), **rng(4, 6, 4), **rng(8, 11, 8)})
    check("char_last_punct", ctx_of(HE_MAQAF), rng(4, 11, 3))
    check("char_last_punct", ctx_of(EN_PUNCT), {**rng(3, 7, 2), **rng(8, 11, 7)})
    check("char_last_punct", ctx_of(EN), {})  # the only mark is the last character


def test_same_character() -> None:
    check("char_same", ctx_of(EN), {4: 1, 5: [1, 4], 10: [1, 4, 5], 11: [1, 4, 5, 10]})
    check("char_same", ctx_of(HE), {7: 2})  # ל twice; the spaces never count
    check("char_same", ctx_of("Tot t"), {2: 0, 4: [0, 2]})  # case folded
    # earlier occurrences only, for encoders too
    check("char_same", ctx_of(EN, "encoder"), {4: 1, 5: [1, 4], 10: [1, 4, 5], 11: [1, 4, 5, 10]})


def test_english_vowels_and_consonants() -> None:
    vowels = {2: 1, 3: 1, 4: 1, 5: 4, 6: 5, 7: 5, 8: 7, 9: 7, 10: 7, 11: 10, 12: 11}
    check("char_last_vowel(english)", ctx_of(EN), vowels)
    check("char_last_consonant(english)", ctx_of(EN), {**rng(1, 3, 0), **rng(4, 9, 3),
                                                       **rng(10, 12, 9)})  # fmt: skip
    # the y of "yes" starts its word: a consonant
    check("char_last_vowel(english)", ctx_of(EN_PUNCT), {**rng(2, 5, 1), **rng(6, 9, 5),
                                                         10: 9, 11: 9})  # fmt: skip
    check("char_last_consonant(english)", ctx_of(EN_PUNCT),
          {**rng(1, 4, 0), 5: 4, 6: 4, **rng(7, 10, 6), 11: 10})  # fmt: skip


@pytest.mark.parametrize(
    ("word", "vowels"),
    [
        ("my gym", [0, 1, 0, 0, 1, 0]),
        ("happy", [0, 1, 0, 0, 1]),
        ("Yes", [0, 1, 0]),  # word-initial y (any case): consonant
        ("player", [0, 0, 1, 0, 1, 0]),  # y before a vowel: consonant
        ("beyond", [0, 1, 0, 1, 0, 0]),
        ("rhythm", [0, 0, 1, 0, 0, 0]),
        ("x-ray", [0, 0, 0, 1, 1]),  # y after a letter, at the end: a vowel
    ],
)
def test_english_y_rule(word: str, vowels: list[int]) -> None:
    vowel, consonant = vowel_mask(list(word), "english")
    assert vowel.astype(int).tolist() == vowels
    letters = [c.isalpha() for c in word]
    assert (vowel | consonant).tolist() == letters and not (vowel & consonant).any()


def test_hebrew_vowel_letters() -> None:
    check("char_last_vowel(hebrew)", ctx_of(HE), {1: 0, **rng(2, 5, 1), **rng(6, 8, 5)})
    check("char_last_consonant(hebrew)", ctx_of(HE), {3: 2, **rng(4, 6, 3), 7: 6, 8: 7})
    # under the English rule Hebrew letters are all consonants: no vowel row at all
    check("char_last_vowel(english)", ctx_of(HE), {})
    # final mem is a consonant; the two yods are vowel letters
    vowel, consonant = vowel_mask(list("ילדים"), "hebrew")
    assert vowel.tolist() == [True, False, False, True, False]
    assert consonant.tolist() == [False, True, True, False, True]
    # niqqud marks (here a qamats, U+05B8) are neither vowel letters nor consonants
    vowel, consonant = vowel_mask(list("דָג"), "hebrew")
    assert vowel.tolist() == [False, False, False] and consonant.tolist() == [True, False, True]


def test_special_tokens_are_skipped() -> None:
    ctx = ctx_of("ab a", bos="<s>")  # <s>0 a1 b2 _3 a4
    check("char_previous", ctx, {2: 1, 3: 2, 4: 3})  # the first character has no previous one
    check("char_same", ctx, {4: 1})
    check("char_word_start", ctx, {1: 1, 2: 1, 4: 4})
    check("char_last_space", ctx, {4: 3})
    assert characters(ctx) == [None, "a", "b", " ", "a"]
    # the public helper builds the same context as a record does
    public = char_context("ab a", bos="<s>")
    for name in char_patterns(kind="encoder"):
        np.testing.assert_array_equal(predict(name, public)[0], predict(name, ctx)[0])


def test_word_piece_context_is_refused() -> None:
    words = PatternContext(
        text="dogs bark", tokens=("[CLS]", "dogs", "bark", "[SEP]"), token_ids=(1, 2, 3, 4),
        offsets=((0, 0), (0, 4), (5, 9), (0, 0)), special_mask=np.array([1, 0, 0, 1], bool),
        kind="encoder", words=(), alignment=PlainAlignment((), (), ()),
    )  # fmt: skip
    assert not is_character_level(words) and is_character_level(ctx_of(EN))
    with pytest.raises(PatternError, match=r"token 1 \('dogs'\) covers 4 characters.*Fix:"):
        predict("char_previous", words)
    with pytest.raises(PatternError, match="char_last_vowel\\(hebrew\\)"):
        predict("char_last_vowel(hebrew)", words)


def test_bad_names_and_languages() -> None:
    with pytest.raises(PatternError, match="char_last_vowel\\(english\\)"):
        get_pattern("char_last_vowel(french)")
    with pytest.raises(PatternError, match="integer"):
        get_pattern("char_offset(two)")
    with pytest.raises(ValueError, match="language"):
        char_patterns("klingon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        char_patterns("english", kind="decoder")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        char_context("")


def test_opt_in_not_in_default_set() -> None:
    """A BERT/GPT-2 analysis with patterns=None must score exactly what it did before."""
    defaults = resolve_patterns(None)
    assert len(REGISTRY) == 54 and [p.name for p in defaults] == list(REGISTRY)
    assert not any(p.family == "charlevel" for p in defaults + list_patterns())
    listed = [p.name for p in list_patterns("charlevel")]
    assert listed == list(OPT_IN) and len(listed) == 12
    assert all(get_pattern(n).family in ("charlevel", "positional") for n in char_patterns())
    # the word-piece character family keeps its names
    assert [p.name for p in list_patterns("character")] == ["same_word", "word_start", "same_text"]


def test_rows_only_look_left_for_decoders() -> None:
    ctx = ctx_of("abba, a baa; ab ba.")
    for name in char_patterns("english"):
        m, _ = predict(name, ctx)
        assert np.allclose(np.triu(m, k=1), 0.0), name
        np.testing.assert_allclose(m.sum(axis=1), 1.0)


def test_pointed_hebrew_marks_stay_on_their_letter() -> None:
    """The character tokenizer keeps niqqud in the span of the letter under it: one token per
    letter, whose character is the letter (a qamats does not make a consonant a vowel)."""
    text = "דָּג יָם"  # dag yam: dalet + dagesh + qamats, gimel, space, yod + qamats, final mem
    spans = [(0, 3), (3, 4), (4, 5), (5, 7), (7, 8)]
    ctx = PatternContext(
        text=text, tokens=tuple(text[s:e] for s, e in spans), token_ids=(1, 2, 3, 4, 5),
        offsets=tuple(spans), special_mask=np.zeros(5, bool), kind="causal", words=(),
        alignment=PlainAlignment((), (), ()),
    )  # fmt: skip
    assert is_character_level(ctx)
    assert characters(ctx) == ["ד", "ג", " ", "י", "ם"]
    check("char_previous", ctx, {1: 0, 2: 1, 3: 2, 4: 3})
    check("char_word_start", ctx, {0: 0, 1: 0, 3: 3, 4: 3})
    check("char_last_vowel(hebrew)", ctx, {4: 3})
    check("char_last_consonant(hebrew)", ctx, {1: 0, 2: 1, 3: 1, 4: 1})
    # a span of two letters is not one character
    two = PatternContext(
        text="אב", tokens=("אב",), token_ids=(1,), offsets=((0, 2),),
        special_mask=np.zeros(1, bool), kind="causal", words=(),
        alignment=PlainAlignment((), (), ()),
    )  # fmt: skip
    assert not is_character_level(two)
    with pytest.raises(PatternError, match="covers 2 characters"):
        predict("char_previous", two)


def test_unknown_name_points_to_the_opt_in_family() -> None:
    with pytest.raises(PatternError, match=r"unknown pattern 'char_prevous'.*charlevel"):
        get_pattern("char_prevous")


def test_the_program_library_refuses_a_charlevel_name(tmp_path):
    # a saved program named like an opt-in pattern would shadow it once registered
    from attn_tools.automate.library import UserLibrary

    lib = UserLibrary(tmp_path / "lib")
    src = "def predict(ctx):\n    return np.eye(ctx.n)\n"
    with pytest.raises(ValueError, match="built-in pattern name"):
        lib.add("char_previous", src, "the previous character", {})
    assert lib.entries == []
