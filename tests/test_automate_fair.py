"""Fair baselines: a program counts only when it beats the smoothed built-in and the mix."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from attn_tools.automate import (
    HeadScorer,
    ProgramSearch,
    UserLibrary,
    automate_head,
    automate_heads,
    fair_baselines,
    smoothed_scores,
)
from attn_tools.automate.sandbox import contexts_of, precomputed_pattern
from attn_tools.mixtures import linear_fit
from attn_tools.patterns import get_pattern, predict


def _load(name: str) -> list[str]:
    from attn_tools import load_sentences

    return load_sentences(name)


@pytest.fixture(scope="module")
def split(minilm_records):
    recs = list(minilm_records)
    return recs[:14], recs[14:], contexts_of(recs[:14]), contexts_of(recs[14:])


def _smoothed(name: str, alpha: float, ctxs) -> list[np.ndarray]:
    return [alpha * predict(name, c)[0] + (1 - alpha) * predict("uniform", c)[0] for c in ctxs]


def test_smoothed_scores_are_the_scorers_numbers(split):
    """The vectorised pass gives what HeadScorer (the engine) gives for the smoothed pattern."""
    train, _, ct, _ = split
    pats = [get_pattern("first_token"), get_pattern("previous_token")]
    got = smoothed_scores(train, ct, pats, np.array([[0.7, 0.3], [1.0, 0.0]]), heads=[53, 2])
    for i, (layer, head) in enumerate([(4, 5), (0, 2)]):
        scorer = HeadScorer(train, ct, layer, head)
        for q, alpha in enumerate([[0.7, 0.3], [1.0, 0.0]][i]):
            mats = _smoothed(pats[q].name, alpha, ct)
            want = scorer.score(precomputed_pattern("s", mats, ct))
            assert got[i, q] == pytest.approx(want, abs=1e-9)
    # α = 1 is the raw built-in, α = 0 is uniform: the score table's numbers
    table = HeadScorer(train, ct, 4, 5).table
    row = table[(table["layer"] == 4) & (table["head"] == 5)].set_index("pattern")["mean"]
    raw = smoothed_scores(train, ct, pats, 1.0, heads=[53])
    flat = smoothed_scores(train, ct, pats, 0.0, heads=[53])
    assert raw[0, 0] == pytest.approx(row["first_token"], abs=1e-6)
    assert flat[0, 0] == pytest.approx(row["uniform"], abs=1e-6)


def test_alpha_search_finds_the_fine_grid_optimum(split):
    """MiniLM L4.H5 (89 % first token): the fitted α is the best of a 0.01 grid on the
    examples, and the smoothed built-in beats the raw one on held-out sentences."""
    train, held, ct, ch = split
    fair = fair_baselines(train, held, train_contexts=ct, heldout_contexts=ch, heads=[(4, 5)])
    row = fair.iloc[0]
    assert row["smoothed_name"] == "first_token"
    grid = np.round(np.linspace(0, 1, 101), 2)
    pat = [get_pattern("first_token")]
    scores = [smoothed_scores(train, ct, pat, a, heads=[53])[0, 0] for a in grid]
    assert row["smoothed_alpha"] == grid[int(np.argmin(scores))]
    assert 0.5 < row["smoothed_alpha"] < 0.99
    assert row["smoothed_train"] == pytest.approx(min(scores), abs=1e-5)
    raw = HeadScorer(held, ch, 4, 5).table.set_index(["layer", "head", "pattern"])["mean"]
    assert row["smoothed_score"] < raw[(4, 5, "first_token")] - 0.05
    # the mix is linear_fit's, fitted on the examples and scored on held-out
    from attn_tools.automate import builtin_patterns

    fit = linear_fit(train, held, builtin_patterns())
    mine = fit[(fit["layer"] == 4) & (fit["head"] == 5)].iloc[0]
    assert row["mix_score"] == pytest.approx(mine["eval_score"], abs=1e-5)
    assert next(iter(row["mix_weights"])) == "first_token"


def _fake(records, contexts, rule) -> list:
    """Records whose two heads attend as ``rule(ctx, head)`` says (real tokens and parses)."""
    return [
        dataclasses.replace(
            rec, attention=np.stack([rule(c, 0), rule(c, 1)])[None].astype(np.float32)
        )
        for rec, c in zip(records, contexts)
    ]


def _composite(ctx, head: int) -> np.ndarray:
    """Head 0: nouns attend to the previous token, the rest to the first token (a real rule).
    Head 1: 85 % first token + 15 % uniform (smoothing, nothing to discover)."""
    first = predict("first_token", ctx)[0]
    if head == 1:
        return 0.85 * first + 0.15 * predict("uniform", ctx)[0]
    noun = np.array([w >= 0 and ctx.words[w].pos == "NOUN" for w in ctx.token_word])
    return np.where(noun[:, None], predict("previous_token", ctx)[0], first)


def test_smoothing_is_not_a_discovery_but_a_rule_is(minilm_records, tmp_path):
    recs = list(minilm_records)
    ctxs = contexts_of(recs)
    fake = _fake(recs, ctxs, _composite)
    kw = dict(
        backend=ProgramSearch(),
        train_records=fake[:14],
        heldout_records=fake[14:],
        train_contexts=ctxs[:14],
        heldout_contexts=ctxs[14:],
        library=UserLibrary(tmp_path / "lib"),
    )
    rule = automate_head(0, 0, out=tmp_path / "rule", **kw)
    assert rule.status == "accepted" and rule.rule == "fair"
    assert rule.beats_smoothed and rule.beats_mix
    assert rule.heldout_score + 0.01 <= min(rule.smoothed_score, rule.mix_score)
    smooth = automate_head(0, 1, out=tmp_path / "smooth", **kw)
    # the program beats the raw first_token pattern by far, which the old rule accepted ...
    assert smooth.heldout_score + 0.05 <= smooth.builtin_score and smooth.beats_builtin
    # ... but the smoothed built-in is as good: not a discovery
    assert smooth.smoothed_name == "first_token" and smooth.smoothed_alpha == pytest.approx(0.85)
    assert smooth.smoothed_score < 0.01
    assert smooth.beats_smoothed is False and not smooth.accepted
    assert smooth.status == "validated" and smooth.library_entry is None
    saved = json.loads((tmp_path / "smooth" / "validation.json").read_text())
    assert saved["beats_smoothed"] is False and saved["smoothed"][0] == "first_token"
    assert [e.name for e in UserLibrary(tmp_path / "lib").entries] == [rule.library_entry]
    entry = UserLibrary(tmp_path / "lib").get(rule.library_entry)
    assert entry.provenance["smoothed_score"] == rule.smoothed_score


def test_old_run_folders_are_read_and_marked(minilm, tmp_path):
    """A run folder written before the fair baselines: its heads are not redone, their fair
    columns are recomputed and ``rule`` says the decision was made by the old rule."""
    kw = dict(
        backend=ProgramSearch(),
        out=tmp_path / "run",
        sentences=_load("story")[:8],
        heldout=_load("heldout")[:6],
        library=False,
        progress=False,
    )
    fresh = automate_heads(minilm, [(0, 2), (4, 5)], **kw)
    assert (fresh["rule"] == "fair").all()
    fair_keys = [
        "smoothed_name", "smoothed_alpha", "smoothed_score", "mix_score", "mix_weights",
        "beats_smoothed", "beats_mix", "rule",
    ]  # fmt: skip
    stamps = {}
    for path in (tmp_path / "run" / "heads").glob("*/result.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in data.items() if k not in fair_keys}))
        stamps[path] = path.stat().st_mtime_ns
    old = automate_heads(minilm, [(0, 2), (4, 5)], **kw)
    assert (old["rule"] == "legacy").all()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # read, never rewritten
    same = [c for c in fresh.columns if c != "rule"]
    pd.testing.assert_frame_equal(old[same], fresh[same])


def test_metric_without_a_row_form_is_refused(split):
    from attn_tools.scoring import MetricSpec, get_metric, register_metric, unregister_metric

    train, held, ct, ch = split
    sae = get_metric("sae")
    register_metric(
        MetricSpec("sae_rows_only_test", False, "SAE", ranks_patterns=True, rows=sae.rows)
    )
    try:
        with pytest.raises(ValueError, match="'sae_rows_only_test' has no per-row form.*Fix"):
            fair_baselines(
                train, held, train_contexts=ct, heldout_contexts=ch, heads=[(0, 2)],
                metric="sae_rows_only_test",
            )  # fmt: skip
    finally:
        unregister_metric("sae_rows_only_test")
