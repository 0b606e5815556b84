"""Held-out agreement by kind of label, bootstrap stability, and the cross-corpus check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attn_tools import extract, load_sentences
from attn_tools.bootstrap import resample_counts
from attn_tools.classify import best_fit
from attn_tools.consistency import agreement_summary, consistency, label_kind, stability

S = 12


def _table(per_sentence: dict[int, dict[str, np.ndarray]]) -> pd.DataFrame:
    rows = []
    for head, scores in per_sentence.items():
        for pattern, values in scores.items():
            values = np.asarray(values, dtype=np.float64)
            rows.append(
                {"model": "m", "layer": 0, "head": head, "pattern": pattern, "metric": "jsd",
                 "mean": float(values.mean()), "std": float(values.std()), "n_sentences": S,
                 "rows": "all", "level": "token", "drop_keys": "none", "coverage": 1.0,
                 "n_rows": 100, "support_sentences": S, "per_sentence": values}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _hand() -> dict[int, dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    flat = np.full(S, 0.6)
    return {
        # a clear winner on every sentence: every resample agrees
        0: {"A": 0.2 + rng.normal(0, 0.01, S), "B": flat, "uniform": flat},
        # A and B trade places sentence by sentence: the best pattern depends on the resample
        1: {"A": 0.3 + rng.normal(0, 0.1, S), "B": 0.3 + rng.normal(0, 0.1, S), "uniform": flat},
        # A beats uniform by about the margin: the verdict flips between resamples
        2: {"A": 0.55 + rng.normal(0, 0.05, S), "B": flat + 0.1, "uniform": flat},
    }


def test_stability_equals_best_fit_on_each_resample():
    table = _table(_hand())
    n_boot = 60
    got = stability(table, n_boot=n_boot, seed=4).set_index("head")
    counts = resample_counts(S, n_boot, seed=4)
    same = np.zeros(3)
    same_best = np.zeros(3)
    full = best_fit(table).set_index("head")
    for c in counts:
        means = [float((np.asarray(v) * c).sum() / c.sum()) for v in table["per_sentence"]]
        fit = best_fit(table.assign(mean=means)).set_index("head")
        same += (fit["label"] == full["label"]).to_numpy()
        same_best += (fit["best_pattern"] == full["best_pattern"]).to_numpy()
    np.testing.assert_allclose(got["stability"], same / n_boot)
    np.testing.assert_allclose(got["pattern_stability"], same_best / n_boot)
    assert got.loc[0, "stability"] == 1.0
    assert got.loc[1, "pattern_stability"] < 0.9
    assert 0.0 < got.loc[2, "stability"] < 1.0
    assert list(got["kind"]) == [label_kind(x) for x in full["label"]]
    with pytest.raises(ValueError, match="per_sentence=True"):
        stability(table.drop(columns=["per_sentence"]))


def test_label_kinds():
    assert label_kind("none") == "none" and label_kind(None) == "none"
    assert label_kind(float("nan")) == "none"
    for sink in ("first_token", "last_token", "special_tokens", "punctuation_sink"):
        assert label_kind(sink) == "sink"
    for name in ("previous_token", "dep(nsubj)", "a discovered program"):
        assert label_kind(name) == "pattern"


PATTERNS = ["previous_token", "next_token", "self", "first_token", "last_token", "punctuation",
            "dependency"]  # fmt: skip


@pytest.mark.parametrize("ci", [None, 0.95])
def test_halves_and_summary_on_a_real_model(minilm_records, ci):
    table = consistency(minilm_records, PATTERNS, ci=ci, stability_boot=50)
    assert len(table) == 72 and (table["split"] == "halves").all()
    assert set(table["kind_a"]) <= {"pattern", "sink", "none"}
    assert table["stability_a"].between(0, 1).all()
    summary = agreement_summary(table).set_index("kind")
    assert summary.loc[["pattern", "sink", "none"], "heads"].sum() == 72
    assert summary.loc["all", "heads"] == 72
    for kind in ("pattern", "sink", "none"):
        part = table[table["kind_a"] == kind]
        assert summary.loc[kind, "label_agree"] == int(part["label_agree"].sum())
        assert summary.loc[kind, "pattern_agree"] == int(part["agree"].sum())
    # L0.H2, the previous-token head, is a "pattern" head that agrees in every resample
    row = table.set_index(["layer", "head"]).loc[(0, 2)]
    assert row["label_a"] == "previous_token" and row["kind_a"] == "pattern"
    assert row["label_agree"] and row["stability_a"] == 1.0
    # the old columns stay for existing callers (figures)
    assert {"score_a", "score_b", "pattern_a", "agree", "drift", "rank_b"} <= set(table.columns)


def test_cross_corpus_mode(minilm):
    story = extract(minilm, load_sentences("story")[:12], progress=False)
    syntax = extract(minilm, load_sentences("syntax")[:12], progress=False)
    table = consistency(story, PATTERNS, heldout=syntax, stability_boot=20)
    assert (table["split"] == "heldout").all()
    assert (table["n_a"] == 12).all() and (table["n_b"] == 12).all()
    summary = agreement_summary(table)
    assert set(summary["split"]) == {"heldout"}
    with pytest.raises(ValueError, match="held-out sentence"):
        consistency(story, PATTERNS, heldout=story[:3])
    with pytest.raises(ValueError, match="missing columns"):
        agreement_summary(table.drop(columns=["kind_a"]))
