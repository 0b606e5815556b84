"""Best fit, top heads, held-out consistency and linear mixtures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from attn_tools.classify import (
    BEST_FIT_COLUMNS,
    best_fit,
    consistency,
    linear_fit,
    top_heads,
    with_shuffled,
)
from attn_tools.patterns import build_contexts, predict_many, resolve_patterns
from attn_tools.scoring import score_heads


def _table(values: dict[int, dict[str, float]], metric: str = "jsd") -> pd.DataFrame:
    rows = [
        {"model": "m", "layer": 0, "head": h, "pattern": p, "metric": metric, "mean": v,
         "std": 0.0, "n_sentences": 0 if np.isnan(v) else 10, "rows": "all", "level": "token",
         "drop_keys": "none", "coverage": 1.0, "n_rows": 100, "support_sentences": 10}
        for h, scores in values.items()
        for p, v in scores.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


NAN = float("nan")
# shuffling a uniform row changes nothing, hence shuffled(uniform) == uniform
HAND = {
    0: {"A": 0.10, "B": 0.50, "uniform": 0.60, "shuffled(A)": 0.70, "shuffled(B)": 0.2},
    1: {"A": 0.40, "B": 0.405, "uniform": 0.43, "shuffled(A)": 0.46, "shuffled(B)": 0.5},
    2: {"A": 0.30, "B": 0.20, "uniform": 0.10, "shuffled(A)": 0.5, "shuffled(B)": 0.22},
    3: {"A": NAN, "B": 0.30, "uniform": 0.50, "shuffled(A)": NAN, "shuffled(B)": 0.36},
}
for _scores in HAND.values():
    _scores["shuffled(uniform)"] = _scores["uniform"]


def test_best_fit_uniform_baseline_on_a_hand_table():
    fit = best_fit(_table(HAND))
    assert tuple(fit.columns[: len(BEST_FIT_COLUMNS)]) == BEST_FIT_COLUMNS
    by = fit.set_index("head")
    assert list(by["best_pattern"]) == ["A", "A", "B", "B"]  # uniform is the baseline, not a fit
    assert list(by["best_score"]) == [0.10, 0.40, 0.20, 0.30]
    assert list(by["baseline_score"]) == [0.60, 0.43, 0.10, 0.50]
    # head 1: 0.40 is not 0.05 below 0.43; head 2: worse than uniform
    assert list(by["label"]) == ["A", "none", "none", "B"]
    assert list(by["beats_baseline"]) == [True, False, False, True]
    assert by.loc[1, "tied"] == ("A", "B") and by.loc[0, "tied"] == ("A",)
    assert (by["rule"] == "baseline").all() and by["threshold"].isna().all()
    assert fit.attrs["rule"] == (
        "label = pattern with the lowest jsd (of patterns predicting ≥ 50% of rows and ≥ 20 "
        "rows in ≥ 5 sentences) if it beats the head's uniform-pattern jsd by ≥ 0.05; else "
        "'none'; ties within 0.01 listed"
    )
    no_support_rule = {"min_coverage": 0.0, "min_sentences": 0, "min_rows": 0}
    assert best_fit(_table(HAND), threshold=0.25, margin=0.1, **no_support_rule).attrs["rule"] == (
        "label = pattern with the lowest jsd if it beats the head's uniform-pattern jsd by "
        "≥ 0.1 and its jsd ≤ 0.25; else 'none'; ties within 0.01 listed"
    )
    assert best_fit(_table(HAND), baseline=None, **no_support_rule).attrs["rule"] == (
        "label = pattern with the lowest jsd (no cut-off); ties within 0.01 listed"
    )


def test_best_fit_threshold_shuffled_and_no_baseline():
    table = _table(HAND)
    both = best_fit(table, threshold=0.25).set_index("head")
    assert list(both["passes_threshold"]) == [True, False, True, False]
    assert list(both["label"]) == ["A", "none", "none", "none"]
    assert (both["rule"] == "baseline+threshold").all() and (both["threshold"] == 0.25).all()
    shuf = best_fit(table, baseline="shuffled").set_index("head")
    # the baseline is the best pattern's own shuffled version; uniform competes (and never
    # beats its shuffled self)
    assert list(shuf["best_pattern"]) == ["A", "A", "uniform", "B"]
    assert list(shuf["baseline_score"]) == [0.70, 0.46, 0.10, 0.36]
    assert list(shuf["label"]) == ["A", "A", "none", "B"]
    assert "shuffled version" in best_fit(table, baseline="shuffled").attrs["rule"]
    free = best_fit(table, baseline=None, tie_tolerance=0.0).set_index("head")
    assert list(free["best_pattern"]) == ["A", "A", "uniform", "B"]
    assert list(free["label"]) == ["A", "A", "uniform", "B"]
    assert free.loc[1, "tied"] == ("A",)
    assert free["baseline_score"].isna().all() and (free["rule"] == "best").all()


def test_best_fit_similarity_direction_and_coverage():
    sim = {h: {p: (1 - v) for p, v in s.items()} for h, s in HAND.items()}
    # a similarity (higher is better) that ranks normalised predictions: argmax accuracy
    fit = best_fit(_table(sim, metric="argmax_accuracy")).set_index("head")
    assert list(fit["best_pattern"]) == ["A", "A", "B", "B"]
    assert list(fit["label"]) == ["A", "none", "none", "B"]
    assert (
        "highest argmax_accuracy" in best_fit(_table(sim, metric="argmax_accuracy")).attrs["rule"]
    )
    # mul/abs score raw detection patterns: an all-ones uniform pattern is no baseline there
    with pytest.raises(ValueError, match="cannot use the uniform baseline"):
        best_fit(_table(sim, metric="mul"))
    no_base = best_fit(_table(sim, metric="mul"), baseline=None)
    assert list(no_base["best_pattern"]) == ["A", "A", "uniform", "B"]  # uniform is a candidate
    table = _table(HAND)
    cover = table["pattern"].map({"A": 0.0, "B": 0.6, "uniform": 1.0}).fillna(1.0)
    table["coverage"] = cover
    assert list(best_fit(table)["best_pattern"]) == ["B"] * 4  # A never predicts a row
    # B predicts only 40% of rows: on a table averaged over all rows it is mostly the fallback
    table["coverage"] = cover.where(table["pattern"] != "B", 0.4)
    assert list(best_fit(table)["label"]) == ["none"] * 4
    assert list(best_fit(table, min_coverage=0.3)["best_pattern"]) == ["B"] * 4
    table["rows"] = "scored"  # fallback rows were not scored: any coverage will do
    assert list(best_fit(table)["best_pattern"]) == ["B"] * 4
    # support: B predicted in too few sentences or on too few rows is no candidate
    few = table.assign(support_sentences=table["support_sentences"].where(table.pattern != "B", 4))
    assert list(best_fit(few)["label"]) == ["none"] * 4
    assert list(best_fit(few, min_sentences=4)["best_pattern"]) == ["B"] * 4
    thin = table.assign(n_rows=table["n_rows"].where(table.pattern != "B", 19))
    assert list(best_fit(thin)["label"]) == ["none"] * 4
    # the table's meaning lives in columns: attrs are not read, and a table without them is refused
    assert best_fit(table.copy().pipe(lambda t: setattr(t, "attrs", {}) or t)).equals(
        best_fit(table)
    )
    with pytest.raises(ValueError, match=r"lacks columns \['coverage'.*support cannot be checked"):
        best_fit(table.drop(columns=["coverage"]))


def test_identical_patterns_are_merged_as_aliases():
    table = _table({h: {**s, "A_copy": s["A"]} for h, s in HAND.items()})
    fit = best_fit(table)
    assert fit.attrs["aliases"] == {"m": {"A": ["A_copy"]}}
    assert not any("A_copy" in t for t in fit["tied"])
    assert list(fit["label"]) == ["A", "none", "none", "B"]
    # the poster's legend says that A also stands for A_copy
    from attn_tools.viz import plot_best_fit_grid

    legend = plot_best_fit_grid(fit).axes[0].get_legend()
    assert "A (1)\n  = A_copy" in [t.get_text() for t in legend.get_texts()]


def test_a_head_without_any_score_is_kept_as_none():
    table = _table({**HAND, 4: {"A": NAN, "B": NAN, "uniform": 0.5, "shuffled(uniform)": 0.5}})
    fit = best_fit(table).set_index("head")
    assert len(fit) == 5
    assert fit.loc[4, "label"] == "none" and pd.isna(fit.loc[4, "best_pattern"])
    assert fit.loc[4, "tied"] == () and fit.loc[4, "baseline_score"] == 0.5
    assert list(fit["label"])[:4] == ["A", "none", "none", "B"]


def test_held_out_sentences_must_be_unseen(minilm, minilm_records):
    from attn_tools import extract

    again = extract(minilm, [r.text for r in minilm_records[:3]], progress=False)  # new objects
    with pytest.raises(ValueError, match="held-out sentence"):
        consistency(minilm_records[:6], ["previous_token"], heldout=again)
    with pytest.raises(ValueError, match="overlap"):
        linear_fit(minilm_records[:6], again, ["previous_token", "first_token"])


def test_best_fit_errors_say_what_to_do():
    table = _table(HAND)
    with pytest.raises(ValueError, match="mixes metrics"):
        best_fit(pd.concat([table, table.assign(metric="mul")]))
    with pytest.raises(ValueError, match="'uniform' pattern too"):
        best_fit(table[table["pattern"] != "uniform"])
    with pytest.raises(ValueError, match=r"'shuffled\(B\)'.*with_shuffled"):
        best_fit(table[table["pattern"] != "shuffled(B)"], baseline="shuffled")
    with pytest.raises(ValueError, match="baseline must be"):
        best_fit(table, baseline="random")


# ----------------------------------------------------------------------------- real heads


@pytest.fixture(scope="module")
def mini_scores(minilm_records):
    recs = minilm_records[:12]
    return score_heads(recs, contexts=build_contexts(recs))


def test_best_fit_finds_minilms_previous_token_head(mini_scores, minilm_records):
    fit = best_fit(mini_scores).set_index(["layer", "head"])
    assert len(fit) == 72
    head = fit.loc[(0, 2)]
    assert head["label"] == "previous_token"
    assert head["best_score"] < 0.02  # a near-perfect previous-token head
    # previous_token and TransformerLens's previous_token_head are the same prediction here:
    # best_fit keeps the first and lists the other as its alias
    assert head["tied"] == ("previous_token",)
    assert "previous_token_head" in fit.attrs["aliases"]["all-MiniLM-L6-v2"]["previous_token"]
    assert head["baseline_score"] > 0.5
    top = top_heads(mini_scores, "previous_token", k=3)
    assert list(top["rank"]) == [1, 2, 3]
    assert (top.loc[0, "layer"], top.loc[0, "head"]) == (0, 2)
    assert top["mean"].is_monotonic_increasing
    assert top["fits"].all()  # each beats its own uniform score by the margin
    mul = score_heads(minilm_records[:6], ["previous_token_head"], metric="mul")
    best_mul = top_heads(mul, "previous_token_head", k=1).iloc[0]
    assert best_mul["fits"] is pd.NA  # raw-weight metric: no uniform baseline
    # four sentences are below the support minimum (5): no head is named at all
    few = score_heads(minilm_records[:4], ["previous_token_head"], metric="mul")
    assert top_heads(few, "previous_token_head").empty
    assert len(top_heads(few, "previous_token_head", min_sentences=4)) == 3
    assert (best_mul["layer"], best_mul["head"], best_mul["mean"] > 0.9) == (0, 2, True)
    with pytest.raises(ValueError, match="not in the score table"):
        top_heads(mini_scores, "dep(neg)")


def test_shuffled_baseline_on_real_heads(minilm_records):
    recs = minilm_records[:6]
    names = with_shuffled(["previous_token", "first_token"])
    assert names == [
        "previous_token",
        "first_token",
        "shuffled(previous_token)",
        "shuffled(first_token)",
    ]
    fit = best_fit(score_heads(recs, names), baseline="shuffled").set_index(["layer", "head"])
    head = fit.loc[(0, 2)]
    assert head["label"] == "previous_token"
    assert head["baseline_score"] > head["best_score"] + 0.5


def test_consistency_on_held_out_halves(minilm_records):
    recs = minilm_records
    names = ["previous_token", "next_token", "first_token", "last_token", "self", "punctuation"]
    out = consistency(recs, names, seed=3)
    assert len(out) == 72 and set(out.columns) >= {
        "model", "layer", "head", "pattern_a", "pattern_b", "agree", "score_a", "score_b",
        "drift", "label_a", "label_b", "rank_b",
    }  # fmt: skip
    assert (out["n_a"] == 12).all() and (out["n_b"] == 12).all()
    np.testing.assert_allclose(out["drift"], out["score_b"] - out["score_a"])
    assert out["agree"].dtype == bool
    assert out.attrs["agreement"] == pytest.approx(out["agree"].mean())
    assert (out.loc[out["agree"], "rank_b"] == 1).all()
    prev = out.set_index(["layer", "head"]).loc[(0, 2)]
    assert prev["pattern_a"] == prev["pattern_b"] == "previous_token"
    assert abs(prev["drift"]) < 0.01
    # a head's chosen pattern is scored on the other half: drift is small for most heads
    assert out["drift"].abs().median() < 0.05
    assert out.attrs["agreement"] > 0.7
    # the same seed is the same split; an explicit held-out set is honoured
    again = consistency(recs, names, seed=3)
    pd.testing.assert_frame_equal(out, again)
    held = consistency(recs[:16], names, heldout=recs[16:])
    assert (held["n_a"] == 16).all() and (held["n_b"] == 8).all()
    with pytest.raises(ValueError, match="at least 2"):
        consistency(recs[:1], names)


def _mixture_records(records, weights):
    """Records whose every head attends exactly as a known mixture of patterns."""
    pats = resolve_patterns(list(weights))
    out = []
    for rec, ctx in zip(records, build_contexts(records)):
        P, _ = predict_many(pats, ctx)
        mix = np.tensordot(np.array(list(weights.values())), P, axes=1)
        att = np.broadcast_to(mix, rec.attention.shape).astype(np.float32)
        out.append(dataclasses.replace(rec, attention=att))
    return out


def test_linear_fit_recovers_a_known_mixture(minilm_records):
    recs = _mixture_records(minilm_records[:12], {"previous_token": 0.7, "first_token": 0.3})
    names = ["previous_token", "first_token", "self", "uniform", "punctuation"]
    out = linear_fit(recs[:6], recs[6:], names)  # ≥ 5 sentences each: the support minimum
    assert len(out) == 72
    row = out.iloc[17]
    assert row["weights"] == pytest.approx({"previous_token": 0.7, "first_token": 0.3}, abs=1e-4)
    assert row["top_pattern"] == "previous_token" and row["n_patterns"] == 2
    assert row["fit_r2"] > 0.9999 and row["eval_r2"] > 0.9999
    assert row["eval_score"] < 1e-3  # judged on sentences it was not fitted to
    assert row["single_pattern"] == "previous_token"
    assert row["single_eval_score"] > 0.2  # no single pattern explains the mixture
    with pytest.raises(ValueError, match="overlap"):
        linear_fit(recs[:6], recs[5:], names)
    with pytest.raises(ValueError, match="distribution metric"):
        linear_fit(recs[:4], recs[4:], names, metric="mul")


def test_linear_fit_on_real_heads_beats_single_patterns(minilm_records):
    names = ["previous_token", "next_token", "self", "first_token", "last_token", "uniform",
             "punctuation_sink", "dependency", "pos_alignment"]  # fmt: skip
    out = linear_fit(minilm_records[:12], minilm_records[12:], names)
    assert out["eval_score"].notna().all()
    assert (out["eval_score"] <= out["single_eval_score"] + 1e-9).mean() > 0.8
    assert (out["fit_r2"] > 0).all()
