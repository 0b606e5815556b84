"""Metrics and the all-heads engine, checked against scipy and hand-computed values."""

from __future__ import annotations

import dataclasses
import gc
import math
import warnings
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import jensenshannon

from attn_tools.patterns import (
    Pattern,
    PatternError,
    build_contexts,
    predict,
    predict_many,
    resolve_patterns,
)
from attn_tools.scoring import (
    MEANING_COLUMNS,
    SCORE_COLUMNS,
    abs_score,
    argmax_accuracy,
    higher_is_better,
    jsd,
    mae,
    mul_score,
    sae,
    score_heads,
    score_pair,
)
from attn_tools.text import to_word_level

FEW = ["previous_token", "self", "first_token", "uniform", "punctuation", "dependency"]


# ----------------------------------------------------------------------------- tensor metrics


def test_jsd_equals_scipy_row_by_row_numpy_and_torch():
    rng = np.random.default_rng(0)
    a = rng.dirichlet(np.ones(7), size=50)
    p = rng.dirichlet(np.full(7, 0.3), size=50)
    p[::3, 2:] = 0.0  # sparse rows, as predicted patterns are
    for base in (2.0, math.e, 10.0):
        ref = np.array([jensenshannon(x, y, base=base) for x, y in zip(a, p)])
        np.testing.assert_allclose(jsd(a, p, base=base), ref, atol=1e-12)
        out = jsd(torch.tensor(a), torch.tensor(p), base=base)
        assert isinstance(out, torch.Tensor)
        np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    # another axis: columns as distributions
    np.testing.assert_allclose(jsd(a.T, p.T, axis=0), jsd(a, p), atol=1e-15)


def test_jsd_extremes_and_documented_rules():
    one, other = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert jsd(one, other) == 1.0
    assert jsd(one, other, base=math.e) == pytest.approx(math.sqrt(math.log(2)), abs=1e-15)
    assert jsd(one, other, base=math.e) == pytest.approx(0.8326, abs=1e-4)
    # unnormalised rows are renormalised like scipy
    assert jsd(np.array([2.0, 2.0]), np.array([0.5, 0.5])) == 0.0
    # a row summing to zero gives NaN, NaN propagates
    out = jsd(np.array([[0.0, 0.0], [0.5, 0.5]]), np.array([[0.5, 0.5], [np.nan, 0.5]]))
    assert np.isnan(out).all()
    with pytest.raises(ValueError, match="non-negative"):
        jsd(np.array([1.5, -0.5]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="base"):
        jsd(one, other, base=1.0)


_dist = arrays(
    np.float64,
    st.integers(2, 12),
    elements=st.floats(0, 1, allow_nan=False, allow_subnormal=False),
).filter(lambda x: x.sum() > 1e-3)


@settings(max_examples=200, deadline=None)
@given(_dist, st.data())
def test_jsd_properties(a, data):
    p = data.draw(
        arrays(
            np.float64,
            a.shape,
            elements=st.floats(0, 1, allow_nan=False, allow_subnormal=False),
        ).filter(lambda x: x.sum() > 1e-3)
    )
    d = float(jsd(a, p))
    assert 0.0 <= d <= 1.0
    assert d == pytest.approx(float(jsd(p, a)), abs=1e-12)  # symmetric
    assert float(jsd(a, a)) == 0.0  # exactly zero when equal
    assert float(jsd(a, a * 3.0)) == pytest.approx(0.0, abs=1e-7)  # scale does not matter
    if np.abs(a / a.sum() - p / p.sum()).max() > 1e-3:
        assert d > 0.0  # and only then
    # scipy does not clamp: for near-identical rows its rounding can go a hair below zero and
    # the square root gives NaN (e.g. [1, 0.9999999999999999] vs itself); ours clamps at 0
    ref = jensenshannon(a, p, base=2)
    assert d == pytest.approx(0.0 if np.isnan(ref) else ref, abs=1e-7)


def test_sae_mae_mul_abs_argmax_on_hand_matrices():
    att = np.array([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.2, 0.5, 0.3]])
    det = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # previous token
    np.testing.assert_allclose(sae(att, det), [1.0, 0.8, 1.0])
    np.testing.assert_allclose(mae(att, det), [1 / 3, 0.8 / 3, 1 / 3])
    # mul: (0.6 + 0.5) / 3
    assert mul_score(att, det) == pytest.approx(1.1 / 3)
    # exclude_bos removes column 0 from both sums: 0.5 / (0.4 + 0.5 + 0.3)
    assert mul_score(att, det, exclude_bos=True) == pytest.approx(0.5 / 1.2)
    # exclude the diagonal: (0.6 + 0.5) / (0.6 + 0.2 + 0.5)
    assert mul_score(att, det, exclude_current_token=True) == pytest.approx(1.1 / 1.3)
    # abs: 1 - (1.0 + 0.8 + 1.0) / 3
    assert abs_score(att, det) == pytest.approx(1 - 2.8 / 3)
    # without the diagonal the differences 1.0 (row 0), 0.4 and 0.3 vanish
    assert abs_score(att, det, exclude_current_token=True) == pytest.approx(1 - 1.1 / 3)
    assert abs_score(att, det, decimals=3) == pytest.approx(1 - 0.933)
    # argmax: row 1's max (key 0) is predicted, row 2's max (key 1) too, row 0 unpredicted
    np.testing.assert_array_equal(argmax_accuracy(att, det)[1:], [1.0, 1.0])
    assert np.isnan(argmax_accuracy(att, det)[0])
    # a tie counts when any maximal key is predicted
    assert argmax_accuracy(np.array([0.5, 0.5]), np.array([0.0, 1.0])) == 1.0


def test_directions():
    assert [higher_is_better(m) for m in ("jsd", "sae", "mae")] == [False] * 3
    assert [higher_is_better(m) for m in ("mul", "abs", "argmax_accuracy")] == [True] * 3
    with pytest.raises(ValueError, match="unknown metric 'kl'"):
        higher_is_better("kl")


# ----------------------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def mini(minilm_records):
    recs = minilm_records[:4]
    return recs, build_contexts(recs)


@pytest.fixture(scope="module")
def smol(smollm2_records):
    recs = smollm2_records[:3]
    return recs, build_contexts(recs)


def test_score_heads_table_shape_and_columns(mini):
    recs, ctxs = mini
    df = score_heads(recs, FEW, contexts=ctxs)
    assert tuple(df.columns) == (*SCORE_COLUMNS, "family", *MEANING_COLUMNS)
    assert len(df) == 6 * 12 * len(FEW)
    assert set(df["model"]) == {"all-MiniLM-L6-v2"}
    assert (df["n_sentences"] == 4).all()
    assert df["mean"].between(0, 1).all()
    first = df.iloc[: len(FEW)]
    assert list(first["pattern"]) == FEW and (first["layer"] == 0).all()
    assert (first["head"] == 0).all() and (df.iloc[len(FEW)]["head"] == 1)
    assert df.attrs["higher_is_better"] is False and df.attrs["rows"] == "all"
    assert df.loc[df["pattern"] == "dependency", "family"].iloc[0] == "linguistic"


def _reference_jsd(rec, ctx, names, heads):
    """The earlier notebooks' method: scipy row by row, mean over rows, per (head, pattern)."""
    preds = {name: predict(name, ctx)[0] for name in names}
    out = {}
    for layer, head in heads:
        att = rec.attention[layer, head].astype(np.float64)
        for name, pred in preds.items():
            rows = [jensenshannon(att[q], pred[q], base=2) for q in range(len(att))]
            out[(layer, head, name)] = float(np.mean(rows))
    return out


@pytest.mark.parametrize("which", ["mini", "smol"])
def test_score_heads_jsd_equals_scipy_reference(which, request):
    recs, ctxs = request.getfixturevalue(which)
    names = [p.name for p in resolve_patterns(None)][::3]  # a third of the built-ins
    df = score_heads(recs[:2], names, contexts=ctxs[:2], per_sentence=True)
    L, H = recs[0].attention.shape[:2]
    heads = [(layer, head) for layer in range(L) for head in range(H)][:: 1 if L < 10 else 13]
    got = {
        (layer, head, name): per
        for layer, head, name, per in df[["layer", "head", "pattern", "per_sentence"]].itertuples(
            index=False
        )
    }
    worst = 0.0
    for s in range(2):
        ref = _reference_jsd(recs[s], ctxs[s], names, heads)
        for key, value in ref.items():
            worst = max(worst, abs(got[key][s] - value))
    assert worst <= 1e-6


@pytest.mark.parametrize("metric", ["sae", "mae", "argmax_accuracy", "mul", "abs"])
def test_sparse_engine_equals_dense_formulas(metric, smol):
    recs, ctxs = smol
    rec, ctx = recs[0], ctxs[0]
    names = ["previous_token", "uniform", "dep(det)", "dependency", "duplicate_token_head"]
    df = score_heads([rec], names, metric=metric, contexts=[ctx])
    raw = metric in ("mul", "abs")
    P, mass = predict_many(resolve_patterns(names), ctx, normalize=not raw)
    att = rec.attention.astype(np.float64)
    att = att if raw else att / att.sum(-1, keepdims=True)
    for q, name in enumerate(names):
        if metric == "sae":
            ref = sae(att, P[q]).mean(-1)
        elif metric == "mae":
            ref = mae(att, P[q]).mean(-1)
        elif metric == "argmax_accuracy":
            with warnings.catch_warnings():  # a sentence without determiners: mean of nothing
                warnings.simplefilter("ignore", RuntimeWarning)
                ref = np.nanmean(argmax_accuracy(att, P[q] * mass[q][:, None]), axis=-1)
        elif metric == "mul":
            ref = mul_score(att, P[q])
        else:
            ref = abs_score(att, P[q])
        got = df[df["pattern"] == name]["mean"].to_numpy().reshape(ref.shape)
        np.testing.assert_allclose(got, ref, atol=1e-9, err_msg=f"{metric} {name}")


def test_rows_scored_keeps_only_predicted_rows(smol):
    recs, ctxs = smol
    names = ["next_token", "self", "dep(det)", "dep_rev(det)"]
    every = score_heads(recs, names, contexts=ctxs).set_index(["layer", "head", "pattern"])
    scored = score_heads(recs, names, contexts=ctxs, rows="scored")
    scored = scored.set_index(["layer", "head", "pattern"])
    # a decoder cannot attend ahead: next_token is all fallback (= self) rows
    np.testing.assert_allclose(
        every.xs("next_token", level="pattern")["mean"],
        every.xs("self", level="pattern")["mean"],
        atol=1e-12,
    )
    # ... and so is dep(det): a determiner comes before its noun
    for name in ("next_token", "dep(det)"):
        assert scored.xs(name, level="pattern")["mean"].isna().all()
        assert (scored.xs(name, level="pattern")["n_sentences"] == 0).all()
    assert every.attrs["coverage"]["SmolLM2-135M-Instruct"]["dep(det)"] == 0.0
    assert every.attrs["coverage"]["SmolLM2-135M-Instruct"]["self"] == 1.0
    # dep_rev(det) (noun -> its determiner) on its noun rows only, by hand for one head
    rec, ctx = recs[0], ctxs[0]
    pred, mass = predict("dep_rev(det)", ctx)
    assert mass.sum() == 2  # "baker" and "sun"
    att = rec.attention[5, 2].astype(np.float64)
    want = np.mean([jensenshannon(att[q], pred[q], base=2) for q in np.flatnonzero(mass)])
    per = score_heads([rec], ["dep_rev(det)"], contexts=[ctx], rows="scored", per_sentence=True)
    got = per.set_index(["layer", "head"]).loc[(5, 2), "per_sentence"][0]
    assert got == pytest.approx(want, abs=1e-9)


def test_exclude_bos_renormalises_and_drops_emptied_rows(mini):
    recs, ctxs = mini
    rec, ctx = recs[0], ctxs[0]
    df = score_heads(
        [rec], ["first_token", "previous_token"], contexts=[ctx], exclude_bos=True
    ).set_index(["layer", "head", "pattern"])
    # first_token predicts only key 0: every row is empty once it is excluded
    assert df.xs("first_token", level="pattern")["mean"].isna().all()
    assert (df.xs("first_token", level="pattern")["n_sentences"] == 0).all()
    att = rec.attention[2, 7].astype(np.float64)[:, 1:]
    pred = predict("previous_token", ctx)[0][:, 1:]
    keep = pred.sum(1) > 0  # row 1 predicted key 0 only: dropped
    want = np.mean([jensenshannon(att[q], pred[q], base=2) for q in np.flatnonzero(keep)])
    assert df.loc[(2, 7, "previous_token"), "mean"] == pytest.approx(want, abs=1e-9)


def test_word_level_matches_pooled_reference(minilm_records):
    rec = minilm_records[7]  # "Pepper wagged ...": wa ##gged is one word
    ctx = build_contexts([rec])[0]
    df = score_heads([rec], ["dependency"], contexts=[ctx], level="word")
    word_att = to_word_level(rec.attention.astype(np.float64), ctx.alignment)
    word_pred = to_word_level(predict("dependency", ctx)[0], ctx.alignment)
    assert word_att.shape[-1] == rec.n_tokens - 1
    want = jsd(word_att[3, 4], word_pred).mean()
    got = df.set_index(["layer", "head"]).loc[(3, 4), "mean"]
    assert got == pytest.approx(want, abs=1e-9)


def test_streams_without_holding_records(minilm_records):
    recs = minilm_records[:8]
    alive: list[weakref.ref] = []
    seen_dead = []

    def stream():
        for i, rec in enumerate(recs):
            copy = dataclasses.replace(rec, attention=rec.attention.copy())
            if i == len(recs) - 1:
                gc.collect()
                seen_dead.append(sum(r() is None for r in alive))
            alive.append(weakref.ref(copy))
            yield copy
            del copy

    streamed = score_heads(stream(), FEW, chunk_size=2)
    listed = score_heads(recs, FEW)
    pd.testing.assert_frame_equal(streamed, listed)
    # by the 7th record, the first chunks have been scored and released
    assert seen_dead[-1] >= 4


def test_per_sentence_and_score_pair_agree(mini):
    recs, ctxs = mini
    df = score_heads(recs, ["previous_token"], contexts=ctxs, per_sentence=True)
    row = df.set_index(["layer", "head"]).loc[(1, 5)]
    assert row["per_sentence"].shape == (4,)
    assert row["mean"] == pytest.approx(row["per_sentence"].mean(), abs=1e-12)
    assert row["std"] == pytest.approx(row["per_sentence"].std(), abs=1e-12)
    pred, mass = predict("previous_token", ctxs[2])
    pair = score_pair(recs[2].head(1, 5), pred)
    assert pair == pytest.approx(row["per_sentence"][2], abs=1e-12)
    raw, _ = predict("previous_token", ctxs[2], normalize=False)
    assert score_pair(recs[2].head(1, 5), raw, "mul") == pytest.approx(
        float(mul_score(recs[2].head(1, 5), raw)), abs=1e-12
    )


def test_bad_inputs_are_named(mini):
    recs, ctxs = mini
    broken = recs[1].attention.copy()
    broken[2, 3, 4, 5] = np.nan
    bad = dataclasses.replace(recs[1], attention=broken)
    with pytest.raises(ValueError, match=r"sentence 1 .*layer 2, head 3"):
        score_heads([recs[0], bad], ["self"], contexts=ctxs[:2])
    wrong = Pattern("wrong_shape", "user", "returns a column", lambda ctx: np.ones((ctx.n, 1)))
    with pytest.raises(PatternError, match=r"'wrong_shape' on sentence 'Her name"):
        score_heads(recs[1:2], [wrong], contexts=ctxs[1:2])
    with pytest.raises(ValueError, match="contexts ran out"):
        score_heads(recs[:3], ["self"], contexts=ctxs[:2])
    with pytest.raises(ValueError, match="same order"):
        score_heads(recs[:2], ["self"], contexts=ctxs[1:3])
    with pytest.raises(ValueError, match="no records"):
        score_heads([], ["self"])


def test_mixed_models_get_their_own_rows(mini, smol):
    df = score_heads([mini[0][0], smol[0][0]], ["self"], contexts=[mini[1][0], smol[1][0]])
    assert df.groupby("model").size().to_dict() == {
        "all-MiniLM-L6-v2": 6 * 12,
        "SmolLM2-135M-Instruct": 30 * 9,
    }


@pytest.mark.parametrize("metric", ["jsd", "abs", "argmax_accuracy"])
def test_blocked_engine_equals_one_block(metric, smol, monkeypatch):
    """Long sentences are scored in blocks of patterns to bound memory; results must not change."""
    recs, ctxs = smol
    whole = score_heads(recs, metric=metric, contexts=ctxs)
    monkeypatch.setattr(
        "attn_tools.scoring.metrics._CHUNK_ELEMENTS", 2000
    )  # a few patterns per block
    blocked = score_heads(recs, metric=metric, contexts=ctxs)
    pd.testing.assert_frame_equal(whole, blocked, check_exact=False, rtol=0, atol=1e-12)
