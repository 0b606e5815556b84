"""Clark et al. (2019) dependency accuracy, offset baseline and syntax table.

The reference here is written from the paper's definition in plain Python and shares no code
with `attn_tools.syntax`: it finds each word's tokens from character offsets itself, pools
attention word by word (to = sum over pieces, from = mean over pieces), and walks the arcs one
head at a time. It runs on real MiniLM attention and real spaCy parses, on sentences written for
this test (not the ones the module was developed on) with multi-piece words, and on SmolLM2.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from attn_tools import extract
from attn_tools.syntax import (
    ACCURACY_COLUMNS,
    TABLE_COLUMNS,
    dependency_accuracy,
    offset_baseline,
    syntax_table,
)
from attn_tools.text import Parse, Word, parse

# written for this test; several words split into pieces by WordPiece (ornithologist,
# kookaburra, zookeepers, scythes, ...), no contractions (a token spanning two spaCy words would need
# merged units, which the plain reference below does not model)
FRESH = [
    "The archaeologists unearthed several fragile manuscripts beneath the monastery.",
    "A cheerful gardener watered the sunflowers every morning.",
    "Our neighbours adopted two playful kittens from the shelter.",
    "The ornithologist photographed a kookaburra near the lagoon.",
    "Zookeepers vaccinated the marmosets yesterday.",
    "The blacksmith sharpened the rusty scythes before harvest.",
    "Engineers redesigned the bridge after the earthquake damaged its foundations.",
    "She quietly translated the ancient inscription for the visiting scholars.",
]


# ----------------------------------------------------------------------------- the reference


def _word_tokens(record, parsed) -> list[list[int]]:
    """Tokens of each word: a non-special token with a non-space character inside the word."""
    out = []
    for w in parsed.words:
        toks = []
        for t, ((s, e), special) in enumerate(zip(record.offsets, record.special_mask)):
            if special:
                continue
            if any(w.start <= c < w.end and not record.text[c].isspace() for c in range(s, e)):
                toks.append(t)
        out.append(toks)
    return out


def _reference_hits(record, parsed, layer: int, head: int, transposed: bool) -> dict:
    """{relation: [hits, arcs]} for one head, one arc at a time, from the paper's definition."""
    att = np.asarray(record.attention[layer, head], dtype=np.float64)
    toks = _word_tokens(record, parsed)
    n = len(parsed.words)

    def weight(i: int, j: int) -> float:  # word i attending to word j
        return sum(sum(float(att[a, b]) for b in toks[j]) for a in toks[i]) / len(toks[i])

    W = [[weight(i, j) for j in range(n)] for i in range(n)]
    out: dict[str, list[int]] = {}
    for d, word in enumerate(parsed.words):
        if word.dep == "ROOT" or word.head == d:
            continue
        best, best_value = None, 0.0  # a prediction needs positive weight; first max wins
        for j in range(n):
            if j == d:
                continue
            value = W[j][d] if transposed else W[d][j]
            if value > best_value:
                best, best_value = j, value
        counts = out.setdefault(word.dep, [0, 0])
        counts[0] += int(best == word.head)
        counts[1] += 1
    return out


def _reference_table(records, parses) -> pd.DataFrame:
    rows = []
    L, H = records[0].attention.shape[:2]
    for direction, transposed in (("dep->head", False), ("head->dep", True)):
        for layer in range(L):
            for head in range(H):
                total: dict[str, list[int]] = {}
                for rec, p in zip(records, parses):
                    for rel, (hit, arcs) in _reference_hits(
                        rec, p, layer, head, transposed
                    ).items():
                        t = total.setdefault(rel, [0, 0])
                        t[0] += hit
                        t[1] += arcs
                for rel, (hit, arcs) in total.items():
                    rows.append((rel, direction, layer, head, hit, arcs))
    return pd.DataFrame(
        rows, columns=["relation", "direction", "layer", "head", "n_correct", "n_arcs"]
    )


def _check_plain(records, parses) -> None:
    """The reference above models one word per token; make sure that holds for these texts."""
    for rec, p in zip(records, parses):
        owners: dict[int, int] = {}
        for w, toks in enumerate(_word_tokens(rec, p)):
            assert toks, f"word {p.words[w].text!r} of {rec.text!r} has no token"
            for t in toks:
                assert owners.setdefault(t, w) == w, f"token {t} spans two words in {rec.text!r}"


def _compare(records, parses) -> pd.DataFrame:
    _check_plain(records, parses)
    ours = dependency_accuracy(records, direction="both", parses=parses)
    ref = _reference_table(records, parses)
    merged = ref.merge(
        ours, on=["relation", "direction", "layer", "head"], suffixes=("_ref", ""), how="outer"
    )
    assert len(merged) == len(ours) == len(ref)
    assert (merged["n_arcs_ref"] == merged["n_arcs"]).all()
    assert (merged["n_correct_ref"] == merged["n_correct"]).all(), merged[
        merged["n_correct_ref"] != merged["n_correct"]
    ]
    return merged


# ----------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def fresh(minilm):
    records = extract(minilm, FRESH, progress=False)
    return records, parse(FRESH)


def test_matches_plain_reference_on_fresh_minilm_sentences(fresh):
    records, parses = fresh
    pieces = [
        p.words[w].text
        for rec, p in zip(records, parses)
        for w, toks in enumerate(_word_tokens(rec, p))
        if len(toks) > 1
    ]
    assert len(pieces) >= 5, pieces  # the pooling is really exercised
    merged = _compare(records, parses)
    # the comparison is not vacuous: many heads find some arcs and miss others
    assert merged["n_correct"].gt(0).sum() > 100
    assert (merged["n_correct"] < merged["n_arcs"]).sum() > 100


def test_matches_plain_reference_on_story_records(minilm_records):
    records = minilm_records[:10]
    _compare(records, parse([r.text for r in records]))


def test_matches_plain_reference_on_causal_smollm2(smollm2):
    texts = FRESH[:3]
    records = extract(smollm2, texts, progress=False)
    merged = _compare(records, parse(texts))
    # a causal head cannot look ahead: a determiner never attends to its (later) noun
    det = merged[(merged.relation == "det") & (merged.direction == "dep->head")]
    assert det["n_correct"].max() == 0 and det["n_arcs"].iloc[0] > 0


def test_columns_order_and_micro_average(fresh):
    records, parses = fresh
    acc = dependency_accuracy(records, ["det", "nsubj"], direction="dep->head", parses=parses)
    assert tuple(acc.columns) == ACCURACY_COLUMNS
    L, H = records[0].attention.shape[:2]
    assert len(acc) == 2 * L * H
    assert list(acc.relation.unique()) == ["det", "nsubj"]
    assert set(acc.direction) == {"dep->head"}
    # micro: n_correct / n_arcs over all sentences, not a mean of per-sentence accuracies
    row = acc.iloc[0]
    assert row.accuracy == pytest.approx(row.n_correct / row.n_arcs)
    n_det = sum(w.dep == "det" for p in parses for w in p.words)
    assert row.n_arcs == n_det


def test_special_tokens_and_self_are_never_predicted(fresh):
    """Layer-0 heads of MiniLM put much of their mass on [CLS]/[SEP]; the argmax over all tokens
    would land there. With them removed, accuracies are far above what keeping them gives."""
    records, parses = fresh
    acc = dependency_accuracy(records, "det", direction="dep->head", parses=parses)
    # keeping the specials, the word-level argmax of MiniLM's sink heads is [CLS]/[SEP] almost
    # always; here every head is scored on real words, so the best det head is high
    assert acc.accuracy.max() > 0.8


def test_unknown_relation_gives_zero_arcs(fresh):
    records, parses = fresh
    acc = dependency_accuracy(records, ["no_such_label"], parses=parses)
    assert (acc.n_arcs == 0).all() and acc.accuracy.isna().all()


# ----------------------------------------------------------------------------- hand-made cases


def _record(text: str, tokens: list[tuple[str, int, int]], attention: np.ndarray, kind="encoder"):
    special = np.array([s == e == 0 for _, s, e in tokens])
    return SimpleNamespace(
        text=text,
        tokens=tuple(t for t, _, _ in tokens),
        token_ids=tuple(range(len(tokens))),
        offsets=tuple((s, e) for _, s, e in tokens),
        special_mask=special,
        attention=attention.astype(np.float32),
        model="hand",
        kind=kind,
    )


def _parse(text: str, words: list[tuple[str, str, int]]) -> Parse:
    out, pos = [], 0
    for w, dep, head in words:
        start = text.index(w, pos)
        pos = start + len(w)
        out.append(Word(w, start, pos, "X", "X", dep, head, w, False))
    return Parse(text, tuple(out), "hand")


TEXT = "dogs chasing cats"
# [CLS] dogs chas ##ing cats [SEP]
TOKENS = [("[CLS]", 0, 0), ("dogs", 0, 4), ("chas", 5, 9), ("##ing", 9, 12), ("cats", 13, 17),
          ("[SEP]", 0, 0)]  # fmt: skip
PARSE = _parse(TEXT, [("dogs", "nsubj", 1), ("chasing", "ROOT", 1), ("cats", "dobj", 1)])


def _rows(*rows: list[float]) -> np.ndarray:
    m = np.array(rows, dtype=np.float64)
    return m / m.sum(axis=1, keepdims=True)


def test_hand_made_word_pooling_specials_and_self():
    sink = _rows(
        # CLS  dogs chas ing  cats SEP
        [9, 0, 0, 0, 0, 1],
        # dogs: [CLS] and itself are largest; "chasing" as a word (2 + 2 = 4/67) beats cats
        # (3/67) although each of its pieces alone is below cats: attention TO a word is a sum
        [20, 30, 2, 2, 3, 10],
        # chas, ##ing: attention FROM a word is the mean of its pieces' rows: to dogs 3/74
        [20, 3, 30, 9, 2, 10],
        [20, 3, 9, 30, 4, 10],
        # cats: chasing (1 + 1.5)/64.5 beats dogs 2/64.5
        [20, 2, 1, 1.5, 30, 10],
        [1, 0, 0, 0, 0, 9],
    )
    wrong = sink.copy()
    wrong[1] = _rows([20, 30, 1, 1, 3, 10])[0]  # dogs → cats now (3/65 > 2/65)
    rec = _record(TEXT, TOKENS, np.stack([sink, wrong])[None])
    acc = dependency_accuracy([rec], direction="both", parses=[PARSE]).set_index(
        ["relation", "direction", "head"]
    )
    assert acc.loc[("nsubj", "dep->head", 0), "accuracy"] == 1.0
    assert acc.loc[("dobj", "dep->head", 0), "accuracy"] == 1.0
    assert acc.loc[("nsubj", "dep->head", 1), "accuracy"] == 0.0
    # transposed, by hand: to "dogs", chasing gives mean(3, 3)/74 = 0.041 > cats 2/64.5 = 0.031
    # (a hit); to "cats", dogs gives 3/67 = 0.045 > chasing mean(2, 4)/74 = 0.041 (a miss)
    assert acc.loc[("nsubj", "head->dep", 0), "accuracy"] == 1.0
    assert acc.loc[("dobj", "head->dep", 0), "accuracy"] == 0.0
    assert (acc.n_arcs == 1).all() and len(acc) == 2 * 2 * 2


def test_hand_made_transposed_is_column_argmax_not_heads_own_argmax():
    # "big red dogs": big → dogs (amod), red → dogs (amod). The head "dogs" attends mostly to
    # "red"; the column argmax still credits both arcs when dogs is each one's top attender.
    text = "big red dogs"
    tokens = [("[CLS]", 0, 0), ("big", 0, 3), ("red", 4, 7), ("dogs", 8, 12), ("[SEP]", 0, 0)]
    p = _parse(text, [("big", "amod", 2), ("red", "amod", 2), ("dogs", "ROOT", 2)])
    a = _rows(
        [1, 1, 1, 1, 1],
        [5, 5, 1, 1, 1],  # big → CLS/self, little elsewhere
        [5, 1, 5, 1, 1],
        [1, 3, 4, 1, 1],  # dogs → red most, big second: both columns' maximum
        [1, 1, 1, 1, 1],
    )
    rec = _record(text, tokens, a[None, None])
    acc = dependency_accuracy([rec], "amod", direction="head->dep", parses=[p])
    assert acc.accuracy.iloc[0] == 1.0 and acc.n_arcs.iloc[0] == 2


def test_hand_made_causal_zero_rows_predict_nothing():
    # causal: "dogs" (first word) sees only [BOS] and itself, so it predicts nothing; the paper's
    # argmax over an all-zero row would have picked the first candidate, which is its head here
    text = "dogs bark"
    tokens = [("<s>", 0, 0), ("dogs", 0, 4), ("bark", 5, 9)]
    p = _parse(text, [("dogs", "nsubj", 1), ("bark", "ROOT", 1)])
    a = np.tril(np.ones((3, 3)))
    a /= a.sum(axis=1, keepdims=True)
    rec = _record(text, tokens, a[None, None], kind="causal")
    acc = dependency_accuracy([rec], "nsubj", direction="dep->head", parses=[p])
    assert acc.accuracy.iloc[0] == 0.0 and acc.n_arcs.iloc[0] == 1
    # transposed: bark attends to dogs, and it is the only other word
    acc = dependency_accuracy([rec], "nsubj", direction="head->dep", parses=[p])
    assert acc.accuracy.iloc[0] == 1.0


def test_hand_made_offset_baseline():
    base = offset_baseline([_record(TEXT, TOKENS, np.ones((1, 1, 6, 6)) / 6)], parses=[PARSE])
    got = base.set_index("relation")
    assert got.loc["nsubj", "offset"] == 1 and got.loc["nsubj", "accuracy"] == 1.0
    assert got.loc["dobj", "offset"] == -1 and got.loc["dobj", "accuracy"] == 1.0
    every = offset_baseline(
        [_record(TEXT, TOKENS, np.ones((1, 1, 6, 6)) / 6)], parses=[PARSE], best_only=False
    )
    assert len(every) == 2 * 6 and every.n_correct.sum() == 2


def test_offset_baseline_matches_plain_count(fresh):
    records, parses = fresh
    base = offset_baseline(records, ["det", "pobj"], parses=parses, best_only=False)
    for rel in ("det", "pobj"):
        arcs = [(d, w.head) for p in parses for d, w in enumerate(p.words) if w.dep == rel]
        for k in (-3, -2, -1, 1, 2, 3):
            row = base[(base.relation == rel) & (base.offset == k)].iloc[0]
            assert row.n_correct == sum(h - d == k for d, h in arcs)
            assert row.n_arcs == len(arcs)


# ----------------------------------------------------------------------------- syntax table


def test_syntax_table_best_head_baseline_and_intervals(fresh):
    records, parses = fresh
    table = syntax_table(records, parses=parses, min_arcs=5, n_boot=300)
    assert tuple(table.columns) == TABLE_COLUMNS
    assert len(table) >= 4 and (table.n_arcs >= 5).all()
    acc = dependency_accuracy(records, parses=parses)
    base = offset_baseline(records, parses=parses).set_index("relation")
    for row in table.itertuples():
        rel = acc[acc.relation == row.relation]
        assert row.accuracy == pytest.approx(rel.accuracy.max())
        hit = rel[
            (rel["layer"] == row.layer)
            & (rel["head"] == row.head)
            & (rel["direction"] == row.direction)
        ]
        assert hit.accuracy.iloc[0] == pytest.approx(row.accuracy)
        assert row.baseline == pytest.approx(base.loc[row.relation, "accuracy"])
        assert row.offset == base.loc[row.relation, "offset"]
        assert row.gain == pytest.approx(row.accuracy - row.baseline)
        assert row.accuracy_low <= row.accuracy <= row.accuracy_high
        assert row.baseline_low <= row.baseline <= row.baseline_high
        assert row.gain_low <= row.gain + 1e-12 and row.gain - 1e-12 <= row.gain_high
    again = syntax_table(records, parses=parses, min_arcs=5, n_boot=300)
    pd.testing.assert_frame_equal(table, again)  # seeded


def test_syntax_table_interval_matches_a_plain_bootstrap(minilm_records):
    """The interval of the best nsubj head against a percentile bootstrap written here: resample
    sentences with Python's own generator, pool the drawn arcs, take the 2.5 % / 97.5 % points.
    Two independent Monte Carlo runs agree to about a point or two, not exactly."""
    import random

    records = minilm_records[:24]
    parses = parse([r.text for r in records])
    row = syntax_table(records, "nsubj", parses=parses, min_arcs=1, n_boot=4000).iloc[0]
    assert row.accuracy_high - row.accuracy_low > 0.05  # not a degenerate interval
    per_sentence = [
        _reference_hits(r, p, int(row.layer), int(row["head"]), row.direction == "head->dep").get(
            "nsubj", [0, 0]
        )
        for r, p in zip(records, parses)
    ]
    rng = random.Random(7)
    means = []
    for _ in range(4000):
        draw = [per_sentence[rng.randrange(len(per_sentence))] for _ in per_sentence]
        arcs = sum(n for _, n in draw)
        if arcs:
            means.append(sum(h for h, _ in draw) / arcs)
    means.sort()
    low, high = means[int(0.025 * len(means))], means[int(0.975 * len(means)) - 1]
    assert row.accuracy_low == pytest.approx(low, abs=0.03)
    assert row.accuracy_high == pytest.approx(high, abs=0.03)
    assert row.accuracy == pytest.approx(
        sum(h for h, _ in per_sentence) / sum(n for _, n in per_sentence)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"direction": "sideways"}, "direction must be one of"),
        ({"relations": [""]}, "dependency labels"),
        ({"parses": []}, "got 0 parses"),
    ],
)
def test_bad_input_names_the_input(fresh, kwargs, match):
    records, _ = fresh
    with pytest.raises(ValueError, match=match) as err:
        dependency_accuracy(records, **kwargs)
    assert "Fix:" in str(err.value)


def test_bad_records(fresh):
    records, parses = fresh
    with pytest.raises(ValueError, match="records is empty"):
        dependency_accuracy([])
    with pytest.raises(TypeError, match="not a list of SentenceAttention"):
        dependency_accuracy("The cat sat.")
    other = SimpleNamespace(**{**vars(records[1]), "model": "other"})
    with pytest.raises(ValueError, match="several models"):
        dependency_accuracy([records[0], other])
    with pytest.raises(ValueError, match="not a Parse of record 0"):
        dependency_accuracy(records[:2], parses=parses[1:3])
    with pytest.raises(ValueError, match="offsets must be non-zero"):
        offset_baseline(records, parses=parses, offsets=(0, 1))
    with pytest.raises(ValueError, match="ci must be"):
        syntax_table(records, parses=parses, ci=1.5)


def test_plot_syntax_table_draws_the_table(fresh, tmp_path):
    from attn_tools.viz import plot_syntax_table

    records, parses = fresh
    table = syntax_table(records, parses=parses, min_arcs=5, n_boot=200)
    fig = plot_syntax_table(table, save=tmp_path / "syntax.png")
    assert (tmp_path / "syntax.png").stat().st_size > 5000
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    n = len(table)
    np.testing.assert_allclose(heights[:n], table.accuracy.to_numpy())
    np.testing.assert_allclose(heights[n:], table.baseline.to_numpy())
    texts = [t.get_text() for t in ax.texts]
    first = table.iloc[0]
    assert f"L{first.layer}-H{first['head']}" in texts[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks[0].startswith(f"{first.relation}\n{first.n_arcs} arcs")
    assert "all-MiniLM-L6-v2" in ax.get_title(loc="left")
    with pytest.raises(ValueError, match="empty"):
        plot_syntax_table(table.iloc[:0])
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_syntax_table(table.drop(columns="baseline"))


def test_merged_unit_arcs_inside_are_skipped_and_outside_use_the_unit():
    # one token "cannot" covers the two spaCy words can|not: they form one unit. The arc inside
    # the unit cannot be scored (the word itself is never a candidate); can → go is scored with
    # the unit's row, which attends most to "go"
    text = "we cannot go"
    tokens = [("[CLS]", 0, 0), ("we", 0, 2), ("cannot", 3, 9), ("go", 10, 12), ("[SEP]", 0, 0)]
    p = _parse(text, [("we", "nsubj", 3), ("can", "aux", 3), ("not", "neg", 1), ("go", "ROOT", 3)])
    a = _rows([5, 1, 1, 1, 1], [5, 1, 1, 3, 1], [5, 1, 9, 3, 1], [5, 3, 1, 9, 1], [1, 1, 1, 1, 5])
    rec = _record(text, tokens, a[None, None])
    acc = dependency_accuracy([rec], ["nsubj", "aux", "neg"], direction="dep->head", parses=[p])
    got = acc.set_index("relation")
    assert got.loc["neg", "n_arcs"] == 0
    assert got.loc["aux", "n_arcs"] == 1 and got.loc["aux", "accuracy"] == 1.0
    assert got.loc["nsubj", "n_arcs"] == 1 and got.loc["nsubj", "accuracy"] == 1.0
