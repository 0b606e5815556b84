"""spaCy parsing and token ↔ word alignment on real tokenizers, including a unicode property test."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attn_tools import align, extract, parse, to_word_level
from attn_tools._cache import CacheWarning, cache_dir
from attn_tools.text import pooling_matrices


def _tokenized(bundle, text: str) -> SimpleNamespace:
    """What alignment needs from a record, straight from the real tokenizer (no forward pass)."""
    enc = bundle.tokenizer(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    return SimpleNamespace(
        text=text,
        tokens=bundle.tokenizer.convert_ids_to_tokens(enc["input_ids"]),
        offsets=[tuple(o) for o in enc["offset_mapping"]],
        special_mask=np.array(enc["special_tokens_mask"], dtype=bool),
    )


def test_parse_gives_pos_dependencies_and_is_cached():
    text = "The old farmer sold two goats."
    (p,) = parse(text)
    assert [w.text for w in p.words] == ["The", "old", "farmer", "sold", "two", "goats", "."]
    assert [w.pos for w in p.words] == ["DET", "ADJ", "NOUN", "VERB", "NUM", "NOUN", "PUNCT"]
    by = {w.text: w for w in p.words}
    assert by["farmer"].dep == "nsubj" and p.words[by["farmer"].head].text == "sold"
    assert by["The"].dep == "det" and p.words[by["The"].head].text == "farmer"
    assert by["sold"].dep == "ROOT" and p.words[by["sold"].head].text == "sold"
    files = list((cache_dir() / "parses").rglob("*.json"))
    assert any(json.loads(f.read_text())["text"] == text for f in files)
    assert parse([text])[0] == p


def test_corrupt_parse_cache_is_reparsed():
    text = "A corrupt cache must not be trusted."
    parse(text)
    path = next(f for f in (cache_dir() / "parses").rglob("*.json") if text in f.read_text("utf-8"))
    path.write_text("{broken", encoding="utf-8")
    with pytest.warns(UserWarning, match="corrupt"):
        (p,) = parse(text)
    assert p.words[1].text == "corrupt"


def test_wordpiece_alignment(minilm):
    rec = _tokenized(minilm, "Unbelievably, the tokenizer splits words.")
    p = parse(rec.text)[0]
    al = align(rec, p)
    words = [w.text for w in p.words]
    assert words[0] == "Unbelievably"
    pieces = [rec.tokens[t] for t in al.word_tokens[0]]
    assert len(pieces) > 1 and all(x.startswith("##") for x in pieces[1:])
    assert al.token_words[0] == () and al.token_words[-1] == ()  # [CLS], [SEP]
    # one unit per word plus one per special token
    assert al.n_units == len(words) + 2


def test_bpe_alignment_ignores_leading_space(smollm2):
    rec = _tokenized(smollm2, "The cat sat down.")
    p = parse(rec.text)[0]
    al = align(rec, p)
    # 'Ġcat' covers " cat": its space is not part of the word "The"
    assert [rec.tokens[t] for t in range(len(rec.tokens))][:3] == ["The", "Ġcat", "Ġsat"]
    assert al.token_words[:3] == ((0,), (1,), (2,))


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_contractions_and_punctuation(request, name):
    bundle = request.getfixturevalue(name)
    rec = _tokenized(bundle, "We don't know, do we?")
    p = parse(rec.text)[0]
    words = [w.text for w in p.words]
    assert words == ["We", "do", "n't", "know", ",", "do", "we", "?"]
    al = align(rec, p)
    # each of the words 'do' and "n't" is covered, and no token maps outside its characters
    assert al.word_tokens[1] and al.word_tokens[2]
    for t, ws in enumerate(al.token_words):
        s, e = rec.offsets[t]
        for w in ws:
            assert max(s, p.words[w].start) < min(e, p.words[w].end)
    comma = words.index(",")
    assert [rec.text[slice(*rec.offsets[t])].strip() for t in al.word_tokens[comma]] == [","]


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_non_ascii_and_emoji(request, name):
    bundle = request.getfixturevalue(name)
    rec = _tokenized(bundle, "Zoë drank a café crème 🙂 in São Paulo.")
    p = parse(rec.text)[0]
    al = align(rec, p)
    for w, word in enumerate(p.words):
        assert al.word_tokens[w], f"word {word.text!r} has no token"
        covered = "".join(rec.text[slice(*rec.offsets[t])] for t in al.word_tokens[w])
        assert word.text in covered or word.text.lower() in covered.lower()


def test_to_word_level_sums_and_means_pieces():
    """A hand-built case: tokens [CLS] play ##ing now [SEP] → units [CLS], playing, now, [SEP]."""
    rec = SimpleNamespace(
        text="playing now",
        tokens=["[CLS]", "play", "##ing", "now", "[SEP]"],
        offsets=[(0, 0), (0, 4), (4, 7), (8, 11), (0, 0)],
        special_mask=np.array([1, 0, 0, 0, 1], dtype=bool),
    )
    al = align(rec, parse(rec.text)[0])
    assert al.units == (((0,), ()), ((1, 2), (0,)), ((3,), (1,)), ((4,), ()))
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 5, 5))
    a /= a.sum(-1, keepdims=True)
    w = to_word_level(a, al)
    assert w.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(w.sum(-1), 1.0)
    # to "playing" = sum of the two pieces; from "playing" = mean of the two pieces' rows
    np.testing.assert_allclose(w[..., 0, 1], a[..., 0, 1] + a[..., 0, 2])
    np.testing.assert_allclose(w[..., 1, 3], (a[..., 1, 4] + a[..., 2, 4]) / 2)
    np.testing.assert_allclose(
        w[..., 1, 1], (a[..., 1, 1] + a[..., 1, 2] + a[..., 2, 1] + a[..., 2, 2]) / 2
    )


def test_word_level_record(minilm):
    rec = extract(minilm, "Snowboarding looked unbelievably hard.", progress=False)[0]
    al = align(rec, parse(rec.text)[0])
    wa = to_word_level(rec, al)
    assert wa.labels == ("[CLS]", "Snowboarding", "looked", "unbelievably", "hard", ".", "[SEP]")
    assert wa.attention.shape == (6, 12, 7, 7)
    np.testing.assert_allclose(wa.attention.sum(-1), 1.0, atol=1e-5)


def test_align_refuses_a_parse_of_another_text(minilm):
    rec = _tokenized(minilm, "One text.")
    with pytest.raises(ValueError, match="different text"):
        align(rec, parse("Another text.")[0])


_unicode_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(lambda s: s.strip() != "")


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=_unicode_text)
def test_alignment_properties_on_random_unicode(request, name, text):
    bundle = request.getfixturevalue(name)
    rec = _tokenized(bundle, text)
    p = parse(text, cache=False)[0]
    al = align(rec, p)
    n = len(rec.tokens)
    assert al.n_tokens == n and len(al.word_tokens) == len(p.words)
    # the two directions agree
    for t, ws in enumerate(al.token_words):
        for w in ws:
            assert t in al.word_tokens[w]
    for w, ts in enumerate(al.word_tokens):
        for t in ts:
            assert w in al.token_words[t]
    # a token maps only to words it shares a non-space character with; specials map to none
    for t, ws in enumerate(al.token_words):
        if rec.special_mask[t]:
            assert ws == ()
        s, e = rec.offsets[t]
        for w in ws:
            word = p.words[w]
            shared = range(max(s, word.start), min(e, word.end))
            assert any(not text[c].isspace() for c in shared)
    # word order is kept: the first word of each token never goes backwards
    firsts = [ws[0] for ws in al.token_words if ws]
    assert firsts == sorted(firsts)
    # units partition the tokens, and pooling keeps rows stochastic
    flat = sorted(t for toks, _ in al.units for t in toks)
    assert flat == list(range(n))
    sum_to, mean_from = pooling_matrices(al)
    a = np.full((n, n), 1.0 / n)
    np.testing.assert_allclose((mean_from @ a @ sum_to.T).sum(-1), 1.0)


# ----------------------------------------------------------------------------- parse cache


def _entry(text: str) -> Path:
    parse(text)
    (path,) = [
        f
        for f in (cache_dir() / "parses").rglob("*.json")
        if json.loads(f.read_text("utf-8"))["text"] == text
    ]
    return path


def _set(path, key, value, word=None):
    raw = json.loads(path.read_text("utf-8"))
    target = raw if word is None else raw["words"][word]
    if value is _DROP:
        del target[key]
    else:
        target[key] = value
    path.write_text(json.dumps(raw), encoding="utf-8")


_DROP = object()


@pytest.mark.parametrize(
    ("key", "value", "word", "reason"),
    [
        ("end", 999, 0, r"word 0 spans 0\.\.999, outside the text"),
        ("start", 2, 1, r"word 1 spans 2\.\.7, outside the text or overlapping word 0"),
        ("head", 50, 1, r"word 1 has head 50, outside 0\.\.8"),
        ("head", -1, 2, r"word 2 has head -1"),
        ("words", [], None, "no words for a non-empty text"),
        ("words", "The dog", None, "words are not a list"),
        ("start", "0", 0, r"word 0 field 'start' is str, not int"),
        ("head", True, 3, r"word 3 field 'head' is bool, not int"),
        ("pos", None, 4, r"word 4 field 'pos' is NoneType, not str"),
        ("dep", _DROP, 0, r"word 0 is not an object with the fields"),
        ("text", "Cat", 0, r"word 0 \('Cat'\) is not the text at its span"),
        ("pipeline_version", "0.0.1", None, r"made with pipeline version '0.0.1'"),
        ("version", 1, None, "made with format version 1"),
        ("text", "Some other text.", None, "holds another text"),
    ],
)
def test_hand_corrupted_parse_entry_is_reparsed(key, value, word, reason):
    text = "The dog chased a ball across the yard."
    truth = parse(text, cache=False)[0]
    path = _entry(text)
    _set(path, key, value, word)
    with pytest.warns(CacheWarning, match=rf"parse cache .* is corrupt \(.*{reason}"):
        (p,) = parse(text)
    assert p == truth
    # the entry was rewritten and is trusted again
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        assert parse(text)[0] == truth
    # and every later call, with other sentences around it, still works
    assert [x.text for x in parse(["Birds sing.", text])] == ["Birds sing.", text]


def test_folder_at_a_parse_cache_path_is_bypassed():
    text = "A folder blocks this parse entry."
    path = _entry(text)
    path.unlink()
    path.mkdir()
    for _ in range(2):
        with pytest.warns(CacheWarning, match="is a folder; computing without the cache"):
            (p,) = parse(text)
        assert [w.text for w in p.words][:2] == ["A", "folder"]
    assert path.is_dir()


def test_parse_bad_input_names_the_sentence():
    with pytest.raises(ValueError, match=r"sentence 1 holds a lone surrogate"):
        parse(["Fine.", "Half an emoji \ud83d."])
    with pytest.raises(TypeError, match=r"sentences is NoneType"):
        parse(None)
    with pytest.raises(TypeError, match=r"sentence 0 is int"):
        parse([3])
