"""Every built-in pattern on hand-written sentences, with the expected matrix written out.

Sentences are tokenised by the real default models (MiniLM: ``[CLS] ... [SEP]``, lower-cased
WordPiece; SmolLM2: a BOS then byte-level BPE) and parsed by the real spaCy pipeline; the token
lists and the parses the expectations rely on are asserted first, so a changed tokenizer or
parser fails loudly rather than silently changing what is tested.

Expectations are the framework's *normalised* predictions (`predict`): ``spec`` maps a query
row to the keys it attends to (evenly) or to ``{key: weight}``; every row not listed is the
documented self fallback and must be reported as having no mass of its own.
"""

from __future__ import annotations

import numpy as np
import pytest

from attn_tools import extract
from attn_tools.patterns import (
    REGISTRY,
    Pattern,
    PatternError,
    build_context,
    get_pattern,
    is_punctuation,
    list_patterns,
    pattern,
    predict,
    predict_many,
    resolve_patterns,
)

# ----------------------------------------------------------------------------- sentences

TOKENS = {
    ("minilm", "Dogs bark."): "[CLS] dogs bark . [SEP]",
    ("smollm2", "Dogs bark."): "<|im_start|> Dogs Ġbark .",
    ("minilm", "Yes, we know."): "[CLS] yes , we know . [SEP]",
    ("smollm2", "Yes, we know."): "<|im_start|> Yes , Ġwe Ġknow .",
    ("minilm", "The dog saw the dog."): "[CLS] the dog saw the dog . [SEP]",
    ("smollm2", "The dog saw the dog."): "<|im_start|> The Ġdog Ġsaw Ġthe Ġdog .",
    ("minilm", "The dog wagged and the cat wagged."): (
        "[CLS] the dog wa ##gged and the cat wa ##gged . [SEP]"
    ),
    ("smollm2", "The dog wagged and the cat wagged."): (
        "<|im_start|> The Ġdog Ġwag ged Ġand Ġthe Ġcat Ġwag ged ."
    ),
    ("minilm", "The old dog chased my cat."): "[CLS] the old dog chased my cat . [SEP]",
    ("smollm2", "The old dog chased my cat."): "<|im_start|> The Ġold Ġdog Ġchased Ġmy Ġcat .",
    ("minilm", "Bread was baked by Anna and Tom."): (
        "[CLS] bread was baked by anna and tom . [SEP]"
    ),
    ("minilm", "She will quickly open the garden gate in town."): (
        "[CLS] she will quickly open the garden gate in town . [SEP]"
    ),
    ("minilm", "Mira said she saw the big red ball on the grass."): (
        "[CLS] mira said she saw the big red ball on the grass . [SEP]"
    ),
    ("minilm", "We don't know, do we?"): "[CLS] we don ' t know , do we ? [SEP]",
}

# (word, coarse POS, relation, head word index) of the parses the linguistic cases rely on
PARSES = {
    "The old dog chased my cat.": [
        ("The", "DET", "det", 2), ("old", "ADJ", "amod", 2), ("dog", "NOUN", "nsubj", 3),
        ("chased", "VERB", "ROOT", 3), ("my", "PRON", "poss", 5), ("cat", "NOUN", "dobj", 3),
        (".", "PUNCT", "punct", 3),
    ],
    "Bread was baked by Anna and Tom.": [
        ("Bread", "PROPN", "nsubjpass", 2), ("was", "AUX", "auxpass", 2),
        ("baked", "VERB", "ROOT", 2), ("by", "ADP", "agent", 2), ("Anna", "PROPN", "pobj", 3),
        ("and", "CCONJ", "cc", 4), ("Tom", "PROPN", "conj", 4), (".", "PUNCT", "punct", 2),
    ],
    "She will quickly open the garden gate in town.": [
        ("She", "PRON", "nsubj", 3), ("will", "AUX", "aux", 3), ("quickly", "ADV", "advmod", 3),
        ("open", "VERB", "ROOT", 3), ("the", "DET", "det", 6), ("garden", "NOUN", "compound", 6),
        ("gate", "NOUN", "dobj", 3), ("in", "ADP", "prep", 6), ("town", "NOUN", "pobj", 7),
        (".", "PUNCT", "punct", 3),
    ],
    "Mira said she saw the big red ball on the grass.": [
        ("Mira", "PROPN", "nsubj", 1), ("said", "VERB", "ROOT", 1), ("she", "PRON", "nsubj", 3),
        ("saw", "VERB", "ccomp", 1), ("the", "DET", "det", 7), ("big", "ADJ", "amod", 7),
        ("red", "ADJ", "amod", 7), ("ball", "NOUN", "dobj", 3), ("on", "ADP", "prep", 7),
        ("the", "DET", "det", 10), ("grass", "NOUN", "pobj", 8), (".", "PUNCT", "punct", 1),
    ],
    "We don't know, do we?": [
        ("We", "PRON", "nsubj", 3), ("do", "AUX", "aux", 3), ("n't", "PART", "neg", 3),
        ("know", "VERB", "ccomp", 5), (",", "PUNCT", "punct", 5), ("do", "VERB", "ROOT", 5),
        ("we", "PRON", "nsubj", 5), ("?", "PUNCT", "punct", 5),
    ],
    "The dog wagged and the cat wagged.": [
        ("The", "DET", "det", 1), ("dog", "NOUN", "nsubj", 2), ("wagged", "VERB", "ROOT", 2),
        ("and", "CCONJ", "cc", 2), ("the", "DET", "det", 5), ("cat", "NOUN", "nsubj", 6),
        ("wagged", "VERB", "conj", 2), (".", "PUNCT", "punct", 6),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def ctx_of(minilm, smollm2):
    bundles = {"minilm": minilm, "smollm2": smollm2}
    made = {}

    def make(model: str, text: str):
        key = (model, text)
        if key not in made:
            rec = extract(bundles[model], text, progress=False)[0]
            assert " ".join(rec.tokens) == TOKENS[key], rec.tokens
            ctx = build_context(rec)
            if text in PARSES:
                got = [(w.text, w.pos, w.dep, w.head) for w in ctx.words]
                assert got == PARSES[text]
            made[key] = ctx
        return made[key]

    return make


def expected(n: int, spec: dict[int, object]) -> tuple[np.ndarray, np.ndarray]:
    """Matrix and has-mass mask: listed rows as given, all other rows the self fallback."""
    out = np.eye(n)
    mass = np.zeros(n, dtype=bool)
    for q, keys in spec.items():
        out[q] = 0.0
        mass[q] = True
        if isinstance(keys, dict):
            for k, w in keys.items():
                out[q, k] = w
        else:
            out[q, list(keys)] = 1.0 / len(keys)
    return out, mass


# ----------------------------------------------------------------------------- positional


# "Dogs bark." on MiniLM: [CLS] dogs bark . [SEP] — every matrix written out in full
T, F = True, False
ENCODER_POSITIONAL = {
    "next_token": (
        [[0, 1, 0, 0, 0],
         [0, 0, 1, 0, 0],
         [0, 0, 0, 1, 0],
         [0, 0, 0, 0, 1],
         [0, 0, 0, 0, 1]],
        [T, T, T, T, F],
    ),
    "previous_token": (
        [[1, 0, 0, 0, 0],
         [1, 0, 0, 0, 0],
         [0, 1, 0, 0, 0],
         [0, 0, 1, 0, 0],
         [0, 0, 0, 1, 0]],
        [F, T, T, T, T],
    ),
    "self": (np.eye(5), [T] * 5),
    "first_token": ([[1, 0, 0, 0, 0]] * 5, [T] * 5),
    "last_token": ([[0, 0, 0, 0, 1]] * 5, [T] * 5),
    "uniform": (np.full((5, 5), 0.2), [T] * 5),
    "offset(2)": (
        [[0, 0, 1, 0, 0],
         [0, 0, 0, 1, 0],
         [0, 0, 0, 0, 1],
         [0, 0, 0, 1, 0],
         [0, 0, 0, 0, 1]],
        [T, T, T, F, F],
    ),
    "offset(-2)": (
        [[1, 0, 0, 0, 0],
         [0, 1, 0, 0, 0],
         [1, 0, 0, 0, 0],
         [0, 1, 0, 0, 0],
         [0, 0, 1, 0, 0]],
        [F, F, T, T, T],
    ),
    "offset(3)": (
        [[0, 0, 0, 1, 0],
         [0, 0, 0, 0, 1],
         [0, 0, 1, 0, 0],
         [0, 0, 0, 1, 0],
         [0, 0, 0, 0, 1]],
        [T, T, F, F, F],
    ),
}  # fmt: skip

# the same on SmolLM2: <|im_start|> Dogs Ġbark . — the framework masks keys after the query
DECODER_POSITIONAL = {
    "next_token": (np.eye(4), [F] * 4),
    "previous_token": (
        [[1, 0, 0, 0],
         [1, 0, 0, 0],
         [0, 1, 0, 0],
         [0, 0, 1, 0]],
        [F, T, T, T],
    ),
    "self": (np.eye(4), [T] * 4),
    "first_token": ([[1, 0, 0, 0]] * 4, [T] * 4),
    "last_token": (np.eye(4), [F, F, F, T]),
    "uniform": (
        [[1, 0, 0, 0],
         [1 / 2, 1 / 2, 0, 0],
         [1 / 3, 1 / 3, 1 / 3, 0],
         [1 / 4, 1 / 4, 1 / 4, 1 / 4]],
        [T] * 4,
    ),
    "offset(2)": (np.eye(4), [F] * 4),
    "offset(-2)": (
        [[1, 0, 0, 0],
         [0, 1, 0, 0],
         [1, 0, 0, 0],
         [0, 1, 0, 0]],
        [F, F, T, T],
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("model", "name"),
    [("minilm", n) for n in ENCODER_POSITIONAL] + [("smollm2", n) for n in DECODER_POSITIONAL],
)
def test_positional_patterns(ctx_of, model, name):
    ctx = ctx_of(model, "Dogs bark.")
    table = ENCODER_POSITIONAL if model == "minilm" else DECODER_POSITIONAL
    want, want_mass = table[name]
    got, mass = predict(name, ctx)
    np.testing.assert_allclose(got, np.asarray(want, dtype=float), atol=1e-12)
    np.testing.assert_array_equal(mass, want_mass)


# ----------------------------------------------------------------------------- spec table

# (model, sentence, pattern, spec). Token indices refer to TOKENS above.
DOG = "The old dog chased my cat."  # [CLS]0 the1 old2 dog3 chased4 my5 cat6 .7 [SEP]8
BREAD = "Bread was baked by Anna and Tom."  # [CLS]0 bread1 was2 baked3 by4 anna5 and6 tom7 .8
GATE = "She will quickly open the garden gate in town."
# [CLS]0 she1 will2 quickly3 open4 the5 garden6 gate7 in8 town9 .10 [SEP]11
MIRA = "Mira said she saw the big red ball on the grass."
# [CLS]0 mira1 said2 she3 saw4 the5 big6 red7 ball8 on9 the10 grass11 .12 [SEP]13
YES = "Yes, we know."  # [CLS]0 yes1 ,2 we3 know4 .5 [SEP]6 | BOS0 Yes1 ,2 Ġwe3 Ġknow4 .5
TWICE = "The dog saw the dog."  # [CLS]0 the1 dog2 saw3 the4 dog5 .6 [SEP]7 | BOS0 The1 ... .6
WAG = "The dog wagged and the cat wagged."
# [CLS]0 the1 dog2 wa3 ##gged4 and5 the6 cat7 wa8 ##gged9 .10 [SEP]11 | BOS0 The1 ... ged9 .10
DONT = "We don't know, do we?"  # [CLS]0 we1 don2 '3 t4 know5 ,6 do7 we8 ?9 [SEP]10

CASES = [
    # lexical -----------------------------------------------------------------
    ("minilm", YES, "punctuation", {0: [2, 5], 1: [2, 5], 2: [5], 3: [5], 4: [5]}),
    ("smollm2", YES, "punctuation", {}),  # nothing ahead is visible to a decoder
    ("minilm", WAG, "repetition", {1: [6], 6: [1], 3: [8, 9], 4: [8, 9], 8: [3, 4], 9: [3, 4]}),
    ("smollm2", WAG, "repetition", {6: [1], 8: [3, 4], 9: [3, 4]}),
    ("minilm", TWICE, "previous_token_head", {q: [q - 1] for q in range(1, 8)}),
    ("minilm", TWICE, "duplicate_token_head", {4: [1], 5: [2]}),
    ("smollm2", TWICE, "duplicate_token_head", {5: [2]}),  # ids: "The" ≠ "Ġthe"
    ("minilm", TWICE, "induction_head", {4: [2], 5: [3]}),
    ("smollm2", TWICE, "induction_head", {5: [3]}),
    # linguistic --------------------------------------------------------------
    (
        "minilm",
        DOG,
        "pos_alignment",
        {1: [1], 2: [2], 3: [3, 6], 4: [4], 5: [5], 6: [3, 6], 7: [7]},
    ),
    (
        "minilm",
        DOG,
        "dependency",
        {1: [3], 2: [3], 3: [1, 2, 4], 4: [3, 6, 7], 5: [6], 6: [4, 5], 7: [4]},
    ),
    ("minilm", DOG, "dependency_to_head", {1: [3], 2: [3], 3: [4], 5: [6], 6: [4], 7: [4]}),
    ("minilm", DOG, "dependency_to_children", {3: [1, 2], 4: [3, 6, 7], 6: [5]}),
    ("minilm", DOG, "dep(det)", {1: [3]}),
    ("minilm", DOG, "dep_rev(det)", {3: [1]}),
    ("smollm2", DOG, "dep(det)", {}),  # a determiner cannot see its noun in a decoder
    ("smollm2", DOG, "dep_rev(det)", {3: [1]}),
    ("minilm", DOG, "dep(amod)", {2: [3]}),
    ("minilm", DOG, "dep_rev(amod)", {3: [2]}),
    ("minilm", DOG, "dep(nsubj)", {3: [4]}),
    ("minilm", DOG, "dep_rev(nsubj)", {4: [3]}),
    ("minilm", DOG, "dep(poss)", {5: [6]}),
    ("minilm", DOG, "dep_rev(poss)", {6: [5]}),
    ("minilm", DOG, "dep(dobj)", {6: [4]}),
    ("minilm", DOG, "dep_rev(dobj)", {4: [6]}),
    ("minilm", BREAD, "dep(nsubjpass)", {1: [3]}),
    ("minilm", BREAD, "dep_rev(nsubjpass)", {3: [1]}),
    ("minilm", BREAD, "dep(auxpass)", {2: [3]}),
    ("minilm", BREAD, "dep_rev(auxpass)", {3: [2]}),
    ("minilm", BREAD, "dep(pobj)", {5: [4]}),
    ("minilm", BREAD, "dep_rev(pobj)", {4: [5]}),
    ("minilm", BREAD, "dep(cc)", {6: [5]}),
    ("minilm", BREAD, "dep_rev(cc)", {5: [6]}),
    ("minilm", BREAD, "dep(conj)", {7: [5]}),
    ("minilm", BREAD, "dep_rev(conj)", {5: [7]}),
    ("minilm", GATE, "dep(aux)", {2: [4]}),
    ("minilm", GATE, "dep_rev(aux)", {4: [2]}),
    ("minilm", GATE, "dep(advmod)", {3: [4]}),
    ("minilm", GATE, "dep_rev(advmod)", {4: [3]}),
    ("minilm", GATE, "dep(compound)", {6: [7]}),
    ("minilm", GATE, "dep_rev(compound)", {7: [6]}),
    ("minilm", GATE, "dep(prep)", {8: [7]}),
    ("minilm", GATE, "dep_rev(prep)", {7: [8]}),
    ("minilm", GATE, "dep(neg)", {}),  # any label by name; none in this sentence
    ("minilm", MIRA, "noun_modifier", {5: [8], 6: [8], 7: [8], 10: [11]}),
    ("minilm", DOG, "noun_modifier", {1: [3], 2: [3], 5: [6]}),
    ("minilm", MIRA, "pronoun", {3: [1]}),
    ("minilm", DOG, "pronoun", {5: [3]}),  # "my" -> "dog", the only noun before it
    ("minilm", MIRA, "preposition", {9: [8, 11]}),
    ("minilm", BREAD, "preposition", {4: [3, 5]}),  # "by" (agent) -> baked, Anna
    # word pieces and a token shared by two words ("don" = do + n't) ------------
    ("minilm", DONT, "dependency_to_head", {1: [5], 2: [5], 3: [5], 4: [5], 5: [7], 6: [7], 8: [7], 9: [7]}),
    (
        "minilm",
        DONT,
        "dependency_to_children",
        # know's children: We (we1), do (don2) and n't (spread over don2 '3 t4):
        # raw 1, 1 + 1/3, 1/3, 1/3 -> /3
        {5: {1: 1 / 3, 2: 4 / 9, 3: 1 / 9, 4: 1 / 9}, 7: [5, 6, 8, 9]},
    ),
    # special -----------------------------------------------------------------
    ("minilm", YES, "special_tokens", dict.fromkeys(range(7), [0, 6])),
    ("smollm2", YES, "special_tokens", dict.fromkeys(range(6), [0])),
    ("minilm", YES, "punctuation_sink", dict.fromkeys(range(7), [2, 5])),
    ("smollm2", YES, "punctuation_sink", {2: [2], 3: [2], 4: [2], 5: [2, 5]}),
    ("minilm", YES, "special_or_punctuation", dict.fromkeys(range(7), [0, 2, 5, 6])),
    (
        "smollm2",
        YES,
        "special_or_punctuation",
        {0: [0], 1: [0], 2: [0, 2], 3: [0, 2], 4: [0, 2], 5: [0, 2, 5]},
    ),
    # character ---------------------------------------------------------------
    ("minilm", DONT, "same_word", {2: [3, 4], 3: [2, 4], 4: [2, 3]}),
    ("minilm", WAG, "same_word", {3: [4], 4: [3], 8: [9], 9: [8]}),
    ("smollm2", WAG, "same_word", {4: [3], 9: [8]}),
    ("minilm", DONT, "word_start", {1: [1], 2: [2], 3: [2], 4: [2], 5: [5], 6: [6], 7: [7], 8: [8], 9: [9]}),
    ("minilm", TWICE, "same_text", {1: [4], 4: [1], 2: [5], 5: [2]}),
    ("smollm2", TWICE, "same_text", {4: [1], 5: [2]}),  # text, not ids: The = Ġthe
]  # fmt: skip


@pytest.mark.parametrize(
    ("model", "text", "name", "spec"),
    CASES,
    ids=[f"{name}-{model}-{text[:12]}" for model, text, name, _ in CASES],
)
def test_pattern_on_hand_written_sentence(ctx_of, model, text, name, spec):
    ctx = ctx_of(model, text)
    want, want_mass = expected(ctx.n, spec)
    got, mass = predict(name, ctx)
    np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"{name} on {ctx.tokens}")
    np.testing.assert_array_equal(mass, want_mass)


def test_every_builtin_pattern_has_a_hand_written_case():
    covered = set(ENCODER_POSITIONAL) | {name for _, _, name, _ in CASES}
    missing = sorted(set(REGISTRY) - covered)
    assert not missing, f"built-in patterns without a hand-written expectation: {missing}"
    assert len(REGISTRY) == 54
    families = {p.family for p in list_patterns()}
    assert families == {"positional", "lexical", "linguistic", "special", "character"}
    for p in list_patterns():
        assert p.description and not p.description.startswith(p.name), p.name


# ----------------------------------------------------------------------------- details


def test_punctuation_definition():
    for text in (",", ".", "##.", "Ġ,", "...", "—", "?!", "«", "'"):
        assert is_punctuation(text), text
    for text in ("'s", "", "Ġ", "[SEP]", "</s>", "$", "3.5", "a.", "Ċ"):
        assert not is_punctuation(text), text


def test_raw_weights_are_kept_for_tl_metrics(ctx_of):
    ctx = ctx_of("minilm", TWICE)
    raw, mass = predict("duplicate_token_head", ctx, normalize=False)
    want = np.zeros((8, 8))
    want[4, 1] = want[5, 2] = 1.0
    np.testing.assert_array_equal(raw, want)
    np.testing.assert_array_equal(mass, want.sum(1) > 0)
    # an encoder is not masked, a decoder is, even for raw weights
    enc = predict("uniform", ctx, normalize=False)[0]
    assert enc.sum() == 64
    dec = predict("uniform", ctx_of("smollm2", TWICE), normalize=False)[0]
    np.testing.assert_array_equal(dec, np.tril(np.ones((7, 7))))


def test_pattern_is_callable_and_predict_many_stacks(ctx_of):
    ctx = ctx_of("minilm", "Dogs bark.")
    p = get_pattern("previous_token")
    np.testing.assert_array_equal(p(ctx), predict(p, ctx)[0])
    mats, masks = predict_many(["self", "first_token"], ctx)
    assert mats.shape == (2, 5, 5) and masks.shape == (2, 5)
    np.testing.assert_array_equal(mats[1][:, 0], np.ones(5))
    empty, empty_mass = predict_many([], ctx)
    assert empty.shape == (0, 5, 5) and empty_mass.shape == (0, 5)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda ctx: np.ones((ctx.n, ctx.n - 1)), r"returned shape \(5, 4\), expected \(5, 5\)"),
        (lambda ctx: np.full((ctx.n, ctx.n), np.nan), "NaN or infinite"),
        (lambda ctx: -np.eye(ctx.n), r"negative values \(min -1\)"),
        (lambda ctx: [[1.0]], "returned list, expected a numpy array"),
        (lambda ctx: 1 / 0, "failed on sentence 'Dogs bark.': ZeroDivisionError"),
    ],
)
def test_broken_patterns_name_the_pattern_and_sentence(ctx_of, fn, message):
    ctx = ctx_of("minilm", "Dogs bark.")
    bad = Pattern("broken", "user", "a broken pattern", fn)
    with pytest.raises(PatternError, match=message) as info:
        predict_many(["self", bad], ctx)
    assert "'broken'" in str(info.value) and "Dogs bark." in str(info.value)


def test_registration_and_lookup():
    scratch: dict[str, Pattern] = {}

    @pattern(name="two_back", family="user", registry=scratch)
    def two_back(ctx):
        """Each token attends to the token two places before it."""
        return np.eye(ctx.n, k=-2)

    assert (
        scratch["two_back"].description == "Each token attends to the token two places before it."
    )
    assert "two_back" not in REGISTRY
    made = get_pattern("offset( -4 )")
    assert made.name == "offset(-4)" and made.family == "positional"
    assert get_pattern("offset(-4)") is made  # built once
    assert get_pattern("dep(nmod)").name == "dep(nmod)"
    assert get_pattern("shuffled(dep(det))").name == "shuffled(dep(det))"
    with pytest.raises(PatternError, match="offset needs an integer, got 'x'"):
        get_pattern("offset(x)")
    with pytest.raises(PatternError, match="needs a dependency label"):
        get_pattern("dep()")
    with pytest.raises(PatternError, match=r"unknown pattern 'prev'.*offset\(-2\)"):
        get_pattern("prev")
    with pytest.raises(PatternError, match="listed twice"):
        resolve_patterns(["self", "self"])
    assert [p.name for p in resolve_patterns(None)] == list(REGISTRY)
    assert len(list_patterns("positional")) == 8
    assert len(list_patterns("linguistic")) == 35


def test_shuffled_keeps_each_rows_weights_on_allowed_keys(ctx_of):
    for model in ("minilm", "smollm2"):
        ctx = ctx_of(model, DOG)
        raw, _ = predict("dependency", ctx, normalize=False)
        shuf, _ = predict("shuffled(dependency)", ctx, normalize=False)
        again, _ = predict("shuffled(dependency)", ctx, normalize=False)
        np.testing.assert_array_equal(shuf, again)  # seeded by the sentence: reproducible
        np.testing.assert_allclose(np.sort(shuf, axis=1), np.sort(raw, axis=1))
        assert not np.array_equal(shuf, raw)
        if model == "smollm2":
            assert np.array_equal(shuf, np.tril(shuf))
    assert get_pattern("shuffled(dependency)").family == "baseline"


def test_context_without_parse(smollm2):
    rec = extract(smollm2, "Dogs bark.", progress=False)[0]
    ctx = build_context(rec, with_parse=False)
    assert ctx.words == () and ctx.alignment.token_words == ((),) * 4
    assert predict("repetition", ctx)[1].sum() == 0  # word patterns simply predict nothing
    np.testing.assert_array_equal(ctx.punct_mask, [False, False, False, True])
