"""Program search: recovers composite heads exactly, matches or beats the built-ins on real heads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from attn_tools.automate import automate_heads, builtin_patterns, make_backend
from attn_tools.automate.hypothesize.search import SearchSpace, fit_program
from attn_tools.automate.sandbox import (
    check_program,
    contexts_of,
    precomputed_pattern,
    run_program,
)
from attn_tools.patterns import predict
from attn_tools.scoring import score_heads, score_pair


def _word_is(ctx, attr: str, value: str) -> np.ndarray:
    return np.array([w >= 0 and getattr(ctx.words[w], attr) == value for w in ctx.token_word])


def nouns_prev_else_first(ctx) -> np.ndarray:
    """Nouns attend to the previous token, everything else to the first token."""
    noun = _word_is(ctx, "pos", "NOUN")
    return np.where(
        noun[:, None], predict("previous_token", ctx)[0], predict("first_token", ctx)[0]
    )


def three_rules(ctx) -> np.ndarray:
    """Punctuation attends to itself, determiners to their head, the rest 60/40 first/previous."""
    out = 0.6 * predict("first_token", ctx)[0] + 0.4 * predict("previous_token", ctx)[0]
    out = np.where(_word_is(ctx, "dep", "det")[:, None], predict("dependency_to_head", ctx)[0], out)
    return np.where(ctx.punct_mask[:, None], np.eye(ctx.n), out)


def synthetic(records, contexts, rule) -> list:
    """Records whose only head attends exactly as ``rule`` says (real tokens and parses)."""
    return [
        dataclasses.replace(rec, attention=rule(ctx)[None, None].astype(np.float32))
        for rec, ctx in zip(records, contexts)
    ]


@pytest.mark.parametrize("which", ["minilm_records", "smollm2_records"])
@pytest.mark.parametrize("rule", [nouns_prev_else_first, three_rules])
def test_program_search_recovers_composite_heads(request, which, rule):
    records = request.getfixturevalue(which)
    train, held = records[:16], records[16:]
    ct, ch = contexts_of(train), contexts_of(held)
    prog = fit_program(ct, [rule(c) for c in ct])
    assert prog.train_score <= 0.01
    # held-out: the emitted source, run in the sandbox, through the framework's rules
    res = run_program(prog.source, ch)
    assert res.ok, res.message
    pat = precomputed_pattern("program", res.matrices, ch)
    scores = [score_pair(rule(ctx), predict(pat, ctx)[0]) for ctx in ch]
    assert np.mean(scores) <= 0.05
    if rule is nouns_prev_else_first:
        assert prog.hypothesis == (
            "Tokens of nouns attend to the previous token; every other token attends to the "
            "first token."
        )


def test_emitted_source_reproduces_the_fitted_prediction(minilm_records):
    recs = minilm_records[:16]
    ctxs = contexts_of(recs)

    def head(ctx):
        return three_rules(ctx) + 0.05 * predict("uniform", ctx)[0]

    prog = fit_program(SearchSpace(ctxs), [head(c) for c in ctxs])
    assert prog.rules  # a decision list, not a single pattern
    assert check_program(prog.source) == []
    assert prog.source.count("ctx.builtin(") == len(prog.atoms)
    assert f'"""{prog.hypothesis}"""' in prog.source
    res = run_program(prog.source, ctxs)
    assert res.ok, res.message
    for inside, outside in zip(prog.raw(ctxs), res.matrices):
        assert np.max(np.abs(inside - outside)) <= 1e-12
    # the score the search reports is the scoring engine's score of that program
    fake = synthetic(recs, ctxs, head)
    table = score_heads(fake, [prog.as_pattern()], contexts=ctxs)
    assert table["mean"].iloc[0] == pytest.approx(prog.train_score, abs=1e-6)  # float32 records


def test_fit_program_input_errors(minilm_records):
    ctxs = contexts_of(minilm_records[:2])
    with pytest.raises(ValueError, match="one attention matrix per sentence"):
        fit_program(ctxs, [np.eye(ctxs[0].n)])
    with pytest.raises(ValueError, match="attention 1 has shape"):
        fit_program(ctxs, [np.eye(ctxs[0].n), np.eye(3)])


@pytest.mark.parametrize("which", ["minilm", "smollm2"])
def test_search_matches_or_beats_best_builtin_on_five_best_heads(request, which, tmp_path):
    """On both default models, for the five heads the built-ins explain best, the searched
    program is at least as good as the best single built-in pattern on held-out sentences."""
    from attn_tools import extract, load_sentences

    bundle = request.getfixturevalue(which)
    train_texts = load_sentences("all")[::8]  # automate_heads' default example sentences
    train = extract(bundle, train_texts, progress=False)
    table = score_heads(train, builtin_patterns())
    best = table.loc[table.groupby(["layer", "head"])["mean"].idxmin()].nsmallest(5, "mean")
    heads = [(int(la), int(h)) for la, h in best[["layer", "head"]].values]
    df = automate_heads(
        bundle, heads, backend=make_backend("search"), out=tmp_path, library=False, progress=False
    )
    assert len(df) == 5
    assert (df["status"] == "validated").all()
    assert (df["heldout_score"] <= df["builtin_score"] + 1e-9).all(), df.to_string()
    assert df["train_score"].notna().all()
