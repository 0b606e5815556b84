"""The shape of the package: a light top-level import and one metric registry read everywhere.

A metric registered in one place must reach the engine, `best_fit`, `linear_fit`, `top_heads`
and the command line's choices without any other edit.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

import attn_tools
from attn_tools.classify import best_fit, linear_fit, top_heads
from attn_tools.patterns import build_contexts, predict
from attn_tools.scoring import (
    METRICS,
    MetricSpec,
    get_metric,
    metric_names,
    register_metric,
    score_heads,
    score_pair,
    unregister_metric,
)

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "spacy", "matplotlib", "pandas")


def _modules_after(code: str) -> dict[str, bool]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\n"
         f"print(json.dumps({{m: m in sys.modules for m in {list(HEAVY)!r}}}))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_top_level_import_is_light():
    loaded = _modules_after("import attn_tools; attn_tools.__version__")
    assert not any(loaded.values()), loaded
    # the scoring registry and the patterns need neither torch nor spaCy either
    loaded = _modules_after("import attn_tools.scoring, attn_tools.patterns, attn_tools.classify")
    assert not loaded["torch"] and not loaded["spacy"] and not loaded["transformers"], loaded


def test_lazy_names_resolve_and_match_all():
    tree = ast.parse((ROOT / "attn_tools" / "__init__.py").read_text())
    lazy = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_LAZY"
    )
    assert sorted(ast.literal_eval(lazy)) == sorted(attn_tools.__all__)
    for name in attn_tools.__all__:
        obj = getattr(attn_tools, name)
        assert obj.__name__ == name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        attn_tools.nope  # noqa: B018


def _hellinger_rows(att: np.ndarray, pat: np.ndarray, options) -> np.ndarray:
    # [M, n, n] × [Q, n, n] → [M, Q, n]
    diff = np.sqrt(att)[:, None] - np.sqrt(pat)[None]
    return np.sqrt(0.5 * (diff**2).sum(axis=-1))


def _hellinger_paired(a, p, options):
    return np.sqrt(0.5 * ((np.sqrt(a) - np.sqrt(p)) ** 2).sum(axis=-1))


@pytest.fixture
def hellinger():
    spec = register_metric(
        MetricSpec(
            "hellinger", False, "Hellinger distance", "test metric", range=(0.0, 1.0),
            ranks_patterns=True, rows=_hellinger_rows, paired=_hellinger_paired,
        )
    )  # fmt: skip
    yield spec
    unregister_metric("hellinger")
    assert "hellinger" not in METRICS


def test_registered_metric_reaches_engine_classify_and_mixtures(hellinger, minilm_records):
    recs = minilm_records[:6]
    pats = ["previous_token", "next_token", "first_token", "uniform", "self"]
    assert "hellinger" in metric_names() and "hellinger" in metric_names(ranks_patterns=True)
    df = score_heads(recs, pats, metric="hellinger")
    assert set(df["metric"]) == {"hellinger"} and df.attrs["higher_is_better"] is False
    # the engine's number equals the definition computed by hand for one head and pattern
    ctxs = build_contexts(recs, with_parse=False)
    by_hand = []
    for rec, ctx in zip(recs, ctxs):
        a = rec.attention[0, 2].astype(np.float64)
        a = a / a.sum(-1, keepdims=True)
        p = predict("previous_token", ctx)[0]
        by_hand.append(np.mean(_hellinger_paired(a, p, None)))
        assert score_pair(rec.attention[0, 2], p, "hellinger") == pytest.approx(by_hand[-1])
    row = df[(df["layer"] == 0) & (df["head"] == 2) & (df["pattern"] == "previous_token")].iloc[0]
    assert row["mean"] == pytest.approx(np.mean(by_hand), abs=1e-12)
    # best_fit and top_heads respect its direction (lower is better)
    fit = best_fit(df)
    assert "lowest hellinger" in fit.attrs["rule"]
    one = df[(df["layer"] == 0) & (df["head"] == 2)].set_index("pattern")["mean"]
    assert (
        fit.set_index(["layer", "head"]).loc[(0, 2), "best_pattern"] == one.drop("uniform").idxmin()
    )
    top = top_heads(df, "previous_token", k=3)
    assert list(top["mean"]) == sorted(top["mean"])
    # linear_fit scores mixtures with the metric's own paired function
    mix = linear_fit(recs[:3], recs[3:], pats, metric="hellinger")
    assert set(mix["metric"]) == {"hellinger"} and mix["eval_score"].between(0, 1).all()


def test_registered_metric_appears_in_cli_choices(hellinger):
    from attn_tools import cli

    parser = cli.build_parser()
    text = parser.format_help() + "".join(
        action.format_help()
        for action in parser._subparsers._group_actions  # noqa: SLF001
        for action in action.choices.values()
    )
    assert "hellinger" in text


def test_registry_refuses_bad_specs_and_names():
    with pytest.raises(ValueError, match="exactly one of rows= .* or block="):
        MetricSpec("x", False, "x")
    with pytest.raises(ValueError, match="already registered"):
        register_metric(get_metric("jsd"))
    with pytest.raises(ValueError, match="built-in"):
        unregister_metric("jsd")
    with pytest.raises(ValueError, match=r"unknown metric 'kl'.*jsd"):
        get_metric("kl")
    with pytest.raises(ValueError, match="unknown metric"):
        score_heads([], metric="kl")
    assert get_metric("jsd").best([0.3, np.nan, 0.1]) == 2
    assert get_metric("mul").best([0.3, np.nan, 0.1]) == 0


def test_builtin_jsd_spec_matches_scipy():
    rng = np.random.default_rng(7)
    a = rng.dirichlet(np.ones(9), size=5)
    p = rng.dirichlet(np.ones(9), size=5)
    spec = get_metric("jsd")
    from attn_tools.scoring import ScoreOptions

    got = spec.paired(a, p, ScoreOptions())
    want = [jensenshannon(x, y, base=2) for x, y in zip(a, p)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert spec.range == (0.0, 1.0) and spec.direction == "lower is better"


@pytest.mark.parametrize(
    ("records", "match"),
    [
        (None, "records is NoneType"),
        ("The cat sat.", "records is str"),
        (["The cat sat."], r"record 0 is str, not a SentenceAttention.*Fix"),
        ([1.5], "record 0 is float"),
    ],
)
def test_score_heads_refuses_what_is_not_records(records, match):
    with pytest.raises(TypeError, match=match):
        score_heads(records, ["self"])


def test_score_heads_refuses_a_single_record(minilm_records):
    with pytest.raises(TypeError, match=r"single record.*\[record\]"):
        score_heads(minilm_records[0], ["self"])
