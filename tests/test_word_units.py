"""Word-level units on both real tokenizers: merged words, pieces, and no fallback in a unit's row.

What each tokenizer really does (checked here, exact): spaCy splits ``can't``/``don't`` into
``ca|n't``/``do|n't`` and ``cannot`` into ``can|not``; MiniLM (``can ' t``) and SmolLM2 (``Ġcan
't``) both have a token spanning the split, so the two words form one merged unit. ``U.S.`` and
``3.14`` are one spaCy word in several pieces; hyphenated words are three words and three tokens;
the emoji is one word ([UNK] for MiniLM, two byte tokens for SmolLM2). SmolLM2's whitespace-only
``Ġ`` before digits joins the number's unit.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from attn_tools import extract
from attn_tools.patterns import build_contexts, predict_many
from attn_tools.scoring import score_heads
from attn_tools.text import align, parse, pool_patterns, pooling_matrices

CASES = [
    "I can't go there.",
    "They don't know.",
    "She moved to the U.S. in 2010.",
    "Pi is about 3.14 today.",
    "A well-known model.",
    "We loved it 😀 so much!",
    "He cannot stay.",
]

MINILM_UNITS = {
    "I can't go there.": [
        (("[CLS]",), ()), (("i",), ("I",)), (("can", "'", "t"), ("ca", "n't")), (("go",), ("go",)),
        (("there",), ("there",)), ((".",), (".",)), (("[SEP]",), ()),
    ],
    "They don't know.": [
        (("[CLS]",), ()), (("they",), ("They",)), (("don", "'", "t"), ("do", "n't")),
        (("know",), ("know",)), ((".",), (".",)), (("[SEP]",), ()),
    ],
    "She moved to the U.S. in 2010.": [
        (("[CLS]",), ()), (("she",), ("She",)), (("moved",), ("moved",)), (("to",), ("to",)),
        (("the",), ("the",)), (("u", ".", "s", "."), ("U.S.",)), (("in",), ("in",)),
        (("2010",), ("2010",)), ((".",), (".",)), (("[SEP]",), ()),
    ],
    "Pi is about 3.14 today.": [
        (("[CLS]",), ()), (("pi",), ("Pi",)), (("is",), ("is",)), (("about",), ("about",)),
        (("3", ".", "14"), ("3.14",)), (("today",), ("today",)), ((".",), (".",)), (("[SEP]",), ()),
    ],
    "A well-known model.": [
        (("[CLS]",), ()), (("a",), ("A",)), (("well",), ("well",)), (("-",), ("-",)),
        (("known",), ("known",)), (("model",), ("model",)), ((".",), (".",)), (("[SEP]",), ()),
    ],
    "We loved it 😀 so much!": [
        (("[CLS]",), ()), (("we",), ("We",)), (("loved",), ("loved",)), (("it",), ("it",)),
        (("[UNK]",), ("😀",)), (("so",), ("so",)), (("much",), ("much",)), (("!",), ("!",)),
        (("[SEP]",), ()),
    ],
    "He cannot stay.": [
        (("[CLS]",), ()), (("he",), ("He",)), (("cannot",), ("can", "not")), (("stay",), ("stay",)),
        ((".",), (".",)), (("[SEP]",), ()),
    ],
}  # fmt: skip

SMOLLM2_UNITS = {
    "I can't go there.": [
        (("I",), ("I",)), (("Ġcan", "'t"), ("ca", "n't")), (("Ġgo",), ("go",)),
        (("Ġthere",), ("there",)), ((".",), (".",)),
    ],
    "They don't know.": [
        (("They",), ("They",)), (("Ġdon", "'t"), ("do", "n't")), (("Ġknow",), ("know",)),
        ((".",), (".",)),
    ],
    "She moved to the U.S. in 2010.": [
        (("She",), ("She",)), (("Ġmoved",), ("moved",)), (("Ġto",), ("to",)), (("Ġthe",), ("the",)),
        (("ĠU", ".", "S", "."), ("U.S.",)), (("Ġin",), ("in",)),
        (("Ġ", "2", "0", "1", "0"), ("2010",)), ((".",), (".",)),
    ],
    "Pi is about 3.14 today.": [
        (("Pi",), ("Pi",)), (("Ġis",), ("is",)), (("Ġabout",), ("about",)),
        (("Ġ", "3", ".", "1", "4"), ("3.14",)), (("Ġtoday",), ("today",)), ((".",), (".",)),
    ],
    "A well-known model.": [
        (("A",), ("A",)), (("Ġwell",), ("well",)), (("-",), ("-",)), (("known",), ("known",)),
        (("Ġmodel",), ("model",)), ((".",), (".",)),
    ],
    "We loved it 😀 so much!": [
        (("We",), ("We",)), (("Ġloved",), ("loved",)), (("Ġit",), ("it",)),
        (("ĠðŁĺ", "Ģ"), ("😀",)), (("Ġso",), ("so",)), (("Ġmuch",), ("much",)), (("!",), ("!",)),
    ],
    "He cannot stay.": [
        (("He",), ("He",)), (("Ġcannot",), ("can", "not")), (("Ġstay",), ("stay",)),
        ((".",), (".",)),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def unit_records(minilm, smollm2):
    return {b.name: extract(b, CASES, progress=False) for b in (minilm, smollm2)}


def _readable(rec, parsed, al):
    return [
        (tuple(rec.tokens[t] for t in ts), tuple(parsed.words[w].text for w in ws))
        for ts, ws in al.units
    ]


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_exact_units_on_real_tokenizers(request, unit_records, name):
    bundle = request.getfixturevalue(name)
    expected = MINILM_UNITS if name == "minilm" else SMOLLM2_UNITS
    for rec, parsed in zip(unit_records[bundle.name], parse(CASES)):
        al = align(rec, parsed)
        got = _readable(rec, parsed, al)
        if name == "smollm2":
            # the extracted decoder sequence starts with its BOS, a unit with no word
            assert got[0] == (("<|im_start|>",), ())
            got = got[1:]
        assert got == expected[rec.text], rec.text
        # the units partition the tokens in order
        assert [t for ts, _ in al.units for t in ts] == list(range(len(rec.tokens)))


def _unit_index(ctx, words: tuple[str, ...]) -> int:
    return [tuple(ctx.words[w].text for w in ws) for _, ws in ctx.alignment.units].index(words)


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
@pytest.mark.parametrize(
    ("text", "merged", "verb", "others"),
    [
        ("I can't go there.", ("ca", "n't"), ("go",), [("I",), ("there",), (".",)]),
        ("They don't know.", ("do", "n't"), ("know",), [("They",), (".",)]),
        ("He cannot stay.", ("can", "not"), ("stay",), [("He",), (".",)]),
    ],
)
def test_merged_unit_rows_take_no_fallback(request, unit_records, name, text, merged, verb, others):
    """``dep(aux)`` (ca → go) and ``dep(neg)`` (n't → go) each concern one word of the merged
    unit; on the encoder its row must point at the verb only, with no attend-to-self share from
    the tokens of the other word. On the decoder the verb comes later, so the unit predicts
    nothing of its own: it falls back to itself and is not a scored row. Attention *to* the
    merged unit sums its two words: the verb's ``dependency`` row gives it two children's share."""
    bundle = request.getfixturevalue(name)
    rec = unit_records[bundle.name][CASES.index(text)]
    ctx = build_contexts([rec])[0]
    al = ctx.alignment
    u, v = _unit_index(ctx, merged), _unit_index(ctx, verb)
    P, mass = predict_many(["dep(aux)", "dep(neg)", "dependency"], ctx)
    pooled, has = pool_patterns(P, mass, al)
    np.testing.assert_allclose(pooled.sum(-1), 1.0, atol=1e-12)
    to_verb, to_self = np.zeros(al.n_units), np.zeros(al.n_units)
    to_verb[v], to_self[u] = 1.0, 1.0
    for q in (0, 1):
        np.testing.assert_allclose(pooled[q, u], to_self if ctx.causal else to_verb, atol=1e-12)
        assert has[q, u] == (not ctx.causal)
    # the verb's children: the subject, the two merged words, and (encoder) the words after it
    children = {u: 2.0, _unit_index(ctx, others[0]): 1.0}
    if not ctx.causal:
        children.update({_unit_index(ctx, w): 1.0 for w in others[1:]})
    expected = np.zeros(al.n_units)
    for unit, count in children.items():
        expected[unit] = count / sum(children.values())
    np.testing.assert_allclose(pooled[2, v], expected, atol=1e-12)
    if not ctx.causal:
        # the leak this replaces: a plain mean over the unit's tokens keeps the fallback of the
        # tokens whose word is not the auxiliary
        sum_to, mean_from = pooling_matrices(al)
        plain = mean_from @ P[0] @ sum_to.T
        n_other = sum(1 for t in al.units[u][0] if not mass[0, t])
        assert plain[u, u] == pytest.approx(n_other / len(al.units[u][0]))
        assert (n_other > 0) == (merged != ("can", "not"))  # "cannot" is one token
    # a unit none of whose tokens predicts anything falls back to itself and is not scored
    subject = _unit_index(ctx, others[0])
    assert not has[0, subject]
    assert pooled[0, subject, subject] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_a_head_attending_to_itself_scores_no_hit_on_a_merged_unit(request, unit_records, name):
    """A head whose every token attends to itself, scored at word level on ``dep(aux)`` with
    argmax accuracy: the only auxiliary rows are the merged units (ca, do, can), and their
    argmax is the verb, never the unit itself, so the accuracy is exactly 0 (before, the
    fallback of the ``n't`` tokens made ``self`` the argmax of ``can't``)."""
    bundle = request.getfixturevalue(name)
    recs = [unit_records[bundle.name][CASES.index(t)] for t in CASES[:2] + CASES[-1:]]
    selfish = []
    for rec in recs:
        n = len(rec.tokens)
        att = np.broadcast_to(np.eye(n, dtype=np.float32), (1, 1, n, n)).copy()
        selfish.append(replace(rec, attention=att))
    df = score_heads(
        selfish, ["dep(aux)", "dep_rev(aux)", "self"], metric="argmax_accuracy", level="word"
    )
    got = df.set_index("pattern")
    assert got.loc["self", "mean"] == 1.0
    if bundle.name.startswith("SmolLM2"):
        # the auxiliary points ahead: a decoder has no dep(aux) row; the verb's dep_rev(aux)
        # row points back at the merged unit, never at the verb itself
        assert got.loc["dep(aux)", "n_rows"] == 0
        assert got.loc["dep_rev(aux)", "mean"] == 0.0
        assert got.loc["dep_rev(aux)", "n_rows"] == 3
    else:
        assert got.loc["dep(aux)", "mean"] == 0.0
        assert got.loc["dep(aux)", "n_rows"] == 3  # one merged unit per sentence
        assert got.loc["dep(aux)", "support_sentences"] == 3


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_real_word_level_rows_stay_distributions(request, unit_records, name):
    """Real attention of every head, pooled on all cases: rows of attention and of every pattern
    stay distributions, and every merged unit is one query row."""
    bundle = request.getfixturevalue(name)
    recs = unit_records[bundle.name]
    pats = ["previous_token", "dependency", "dep(aux)", "punctuation", "first_token"]
    df = score_heads(recs, pats, level="word", rows="scored", per_sentence=True)
    # scored rows exist exactly where the pattern predicts something (decoder: no look-ahead)
    assert (np.isfinite(df["mean"]) == (df["n_rows"] > 0)).all()
    assert (df.loc[df["pattern"] == "previous_token", "n_rows"] > 0).all()
    for ctx in build_contexts(recs):
        P, mass = predict_many(pats, ctx)
        pooled, has = pool_patterns(P, mass, ctx.alignment)
        np.testing.assert_allclose(pooled.sum(-1), 1.0, atol=1e-12)
        assert pooled.shape == (len(pats), ctx.alignment.n_units, ctx.alignment.n_units)
        # a unit has mass exactly when one of its tokens predicts something itself
        for u, (toks, _) in enumerate(ctx.alignment.units):
            assert list(has[:, u]) == list(mass[:, list(toks)].any(axis=1))
