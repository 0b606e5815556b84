"""Work a report shares between its passes must not change a single number or file.

`predict_many` memoises each pattern's prediction on the context, `classify.top_heads_many`
answers many patterns in one pass, and `report.write_figures` can draw in forked processes: each
is checked here against the plain path it replaces, on the real MiniLM pack.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attn_tools import classify, report
from attn_tools.patterns import build_contexts, get_pattern, pattern, predict_many
from attn_tools.patterns.base import REGISTRY
from attn_tools.scoring import score_heads

FEW = ["previous_token", "next_token", "first_token", "punctuation", "same_word", "uniform"]


@pytest.fixture(scope="module")
def recs(minilm_records):
    return minilm_records[:8]


def test_memoised_predictions_equal_fresh_contexts_and_cannot_be_edited(recs):
    names = [*FEW, "shuffled(previous_token)", "dep(nsubj)"]
    shared = build_contexts(recs)
    for ctx in shared:  # fill the memo, then ask again in another order and normalisation
        predict_many(names, ctx)
    for ctx, fresh in zip(shared, build_contexts(recs)):
        again, mass = predict_many(names[::-1], ctx, normalize=False)
        want, want_mass = predict_many(names[::-1], fresh, normalize=False)
        np.testing.assert_array_equal(again, want)
        np.testing.assert_array_equal(mass, want_mass)
        again[:] = -1.0  # the caller's copy: the memo must not see this
        np.testing.assert_array_equal(predict_many(names[::-1], ctx, normalize=False)[0], want)
    raw = shared[0]._memo[("predict", get_pattern("previous_token"))]
    with pytest.raises(ValueError):
        raw[0, 0] = 1.0


def test_a_pattern_registered_again_is_computed_afresh(recs):
    ctx = build_contexts(recs[:1], with_parse=False)[0]
    try:

        @pattern(name="memo_probe", family="user")
        def first(c):
            return np.eye(c.n, k=-1)

        before = predict_many(["memo_probe"], ctx)[0]

        @pattern(name="memo_probe", family="user")
        def second(c):
            return np.eye(c.n)

        after = predict_many(["memo_probe"], ctx)[0]
    finally:
        REGISTRY.pop("memo_probe", None)
    np.testing.assert_array_equal(after[0], np.eye(ctx.n))
    assert not np.array_equal(before, after)


def test_shared_contexts_give_the_same_tables_and_labels(recs):
    ctx = build_contexts(recs)
    a = report.score_tables(recs, FEW, contexts=ctx)
    b = report.score_tables(recs, FEW)
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    pd.testing.assert_frame_equal(
        classify.label_heads(recs, FEW, contexts=ctx, drop_keys="first", n_boot=200),
        classify.label_heads(recs, FEW, drop_keys="first", n_boot=200),
    )


def test_top_heads_many_equals_one_pattern_at_a_time(recs):
    ranked = score_heads(recs, FEW, rows="scored")
    many = classify.top_heads_many(ranked, k=4)
    assert list(many) == list(dict.fromkeys(ranked["pattern"]))
    for name, table in many.items():
        # the reference: the filter-sort-head a single pattern needs, written out here
        sub = ranked[(ranked["pattern"] == name) & classify.supported(ranked)]
        sub = sub[np.isfinite(sub["mean"])].sort_values(["model", "mean"], kind="stable")
        want = sub.groupby("model", sort=False).head(4)
        assert table[["layer", "head", "mean"]].values.tolist() == (
            want[["layer", "head", "mean"]].values.tolist()
        )
        assert table["rank"].tolist() == list(range(1, len(table) + 1))
    with pytest.raises(ValueError, match="not in the score table"):
        classify.top_heads_many(ranked, ["previous_token", "no_such_pattern"])
    with pytest.raises(ValueError, match="k must be at least 1"):
        classify.top_heads_many(ranked, k=0)


def test_parallel_drawing_writes_the_same_files(recs, tmp_path):
    ranked = score_heads(recs, FEW, rows="scored")
    best = classify.label_heads(recs, FEW, n_boot=200)
    pats = ["previous_token", "first_token", "punctuation"]
    one = report.write_figures(recs, ranked, tmp_path / "one", patterns=pats, best=best, workers=1)
    two = report.write_figures(recs, ranked, tmp_path / "two", patterns=pats, best=best, workers=2)
    assert [p.name for p in one] == [p.name for p in two]
    for a, b in zip(one, two):
        assert a.read_bytes() == b.read_bytes(), a.name
    with pytest.raises(ValueError, match="workers must be"):
        report.write_figures(recs, ranked, tmp_path / "x", patterns=pats, best=best, workers=0)
