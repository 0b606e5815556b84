"""Step 5 and the run folder: validation, the user library (provenance, merging), resuming."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from attn_tools.automate import (
    ProgramSearch,
    UserLibrary,
    automate_head,
    automate_heads,
    make_backend,
)
from attn_tools.automate.sandbox import contexts_of
from attn_tools.patterns import predict
from attn_tools.scoring import score_heads

# MiniLM heads whose searched programs beat the best built-in, the built-ins smoothed with
# uniform and the mix of built-ins on held-out sentences (L4.H5, mostly first token, does not)
HEADS = [(1, 8), (1, 11)]


@pytest.fixture(scope="module")
def run(minilm, tmp_path_factory):
    """One search run over two MiniLM heads with its own library (shared by several tests)."""
    root = tmp_path_factory.mktemp("automate_run")
    lib = UserLibrary(root / "library")
    df = automate_heads(
        minilm,
        HEADS,
        backend=make_backend("search"),
        out=root / "run",
        sentences=load("story")[:14],
        heldout=load("heldout")[:14],
        library=lib,
        progress=False,
    )
    return root, lib, df


def load(name: str) -> list[str]:
    from attn_tools import load_sentences

    return load_sentences(name)


def test_run_folder_holds_every_step(run):
    root, _, df = run
    out = root / "run"
    assert list(zip(df["layer"], df["head"])) == HEADS
    meta = json.loads((out / "run.json").read_text())
    assert meta["model"] == "all-MiniLM-L6-v2"
    assert meta["backend"]["backend"] == "program-search"
    assert len(meta["train_sentences"]) == 14 and len(meta["heldout_sentences"]) == 14
    assert meta["heads"] == [list(h) for h in HEADS]
    for layer, head in HEADS:
        folder = out / "heads" / f"L{layer:02d}_H{head:02d}"
        examples = json.loads((folder / "examples.json").read_text())
        assert (examples["layer"], examples["head"]) == (layer, head)
        assert (folder / "round_0" / "program.py").read_text().startswith("import numpy as np")
        assert json.loads((folder / "round_0" / "sandbox.json").read_text())["status"] == "ok"
        assert "train_score" in json.loads((folder / "round_0" / "score.json").read_text())
        validation = json.loads((folder / "validation.json").read_text())
        result = json.loads((folder / "result.json").read_text())
        assert validation["heldout_score"] == result["heldout_score"]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["status"]) == list(df["status"])
    assert "program" not in summary.columns


def test_programs_beat_the_builtins_and_join_the_library(run):
    _, lib, df = run
    assert (df["status"] == "accepted").all(), df[["status", "message"]]
    assert (df["heldout_score"] + 0.01 <= df["builtin_score"]).all()
    assert df["beats_builtin"].all()
    assert df["beats_smoothed"].all() and df["beats_mix"].all() and (df["rule"] == "fair").all()
    assert (df["heldout_score"] + 0.01 <= df[["smoothed_score", "mix_score"]].min(axis=1)).all()
    names = sorted(e.name for e in lib.entries)
    assert names == sorted(df["library_entry"])
    for entry in lib.entries:
        prov = entry.provenance
        assert prov["backend"] == "program-search"
        assert prov["backend_settings"]["max_rules"] == 4
        assert prov["n_train"] == 14 and prov["n_heldout"] == 14
        assert prov["heldout_score"] < prov["builtin_score"]
        assert len(prov["program_sha256"]) == 64
        assert lib.source(entry.name).startswith("import numpy as np")


def test_library_patterns_register_and_score_like_the_run(run, minilm):
    from attn_tools import extract

    _, lib, df = run
    registry: dict = {}
    names = lib.register(registry)
    assert sorted(names) == sorted(df["library_entry"])
    assert all(p.family == "user" for p in registry.values())
    held = extract(minilm, load("heldout")[:14], progress=False)
    ctxs = contexts_of(held)
    lib.patterns(ctxs)  # one sandbox process per entry, memoised for the scoring below
    table = score_heads(held, list(registry.values()), contexts=ctxs)
    for row in df.itertuples():
        got = table[
            (table["layer"] == row.layer)
            & (table["head"] == row.head)
            & (table["pattern"] == row.library_entry)
        ]["mean"].iloc[0]
        assert got == pytest.approx(row.heldout_score, abs=1e-5)


def test_library_detects_edited_programs(run):
    _, lib, _ = run
    entry = lib.entries[0]
    path = lib.path / f"{entry.name}.py"
    original = path.read_text()
    try:
        path.write_text(original + "\n# edited\n")
        with pytest.raises(ValueError, match="edited after it was accepted"):
            lib.source(entry.name)
    finally:
        path.write_text(original)
    assert lib.source(entry.name)


def test_resume_skips_finished_heads(run, minilm):
    root, lib, df = run
    out = root / "run"
    results = {h: out / "heads" / f"L{h[0]:02d}_H{h[1]:02d}" / "result.json" for h in HEADS}
    stamps = {h: p.stat().st_mtime_ns for h, p in results.items()}
    kwargs = dict(
        backend=make_backend("search"),
        out=out,
        sentences=load("story")[:14],
        heldout=load("heldout")[:14],
        library=lib,
        progress=False,
    )
    again = automate_heads(minilm, HEADS, **kwargs)
    pd.testing.assert_frame_equal(again, df)
    assert {h: p.stat().st_mtime_ns for h, p in results.items()} == stamps
    # a head killed after its decision was journalled is completed from the journal: the same
    # result, and the library untouched (its entry already holds this head's op id)
    index_before = lib.index_file.read_text()
    results[HEADS[1]].unlink()
    replayed = automate_heads(minilm, HEADS, **kwargs)
    pd.testing.assert_frame_equal(replayed, df)
    assert lib.index_file.read_text() == index_before
    assert results[HEADS[0]].stat().st_mtime_ns == stamps[HEADS[0]]
    # a head interrupted before its decision (no journal) is redone; the finished one is not
    results[HEADS[1]].unlink()
    (results[HEADS[1]].parent / "decision.json").unlink()
    redone = automate_heads(minilm, HEADS, **kwargs)
    assert results[HEADS[0]].stat().st_mtime_ns == stamps[HEADS[0]]
    assert results[HEADS[1]].is_file()
    assert redone.loc[1, "heldout_score"] == pytest.approx(df.loc[1, "heldout_score"])
    # the re-found program matches its own library entry, which it cannot beat by the margin;
    # the entry already stands for this head, so it is not merged into itself
    assert redone.loc[1, "status"] == "validated"
    assert redone.loc[1, "library_name"] == df.loc[1, "library_entry"]
    own = UserLibrary(lib.path).get(df.loc[1, "library_entry"])
    assert [(h["layer"], h["head"]) for h in own.heads] == [HEADS[1]]
    with pytest.raises(ValueError, match="holds a run with another heldout_sha"):
        automate_heads(minilm, HEADS, **{**kwargs, "heldout": load("heldout")[:10]})


def test_heads_argument_forms(minilm, tmp_path):
    common = dict(backend=ProgramSearch(), library=False, progress=False)
    with pytest.raises(ValueError, match=r"head \(6, 0\) is outside"):
        automate_heads(minilm, [(6, 0)], out=tmp_path / "a", **common)
    with pytest.raises(ValueError, match="cannot read head 'x.y'"):
        automate_heads(minilm, "x.y", out=tmp_path / "b", **common)
    with pytest.raises(ValueError, match="held-out sentences are also example sentences"):
        automate_heads(
            minilm,
            "0.2",
            out=tmp_path / "c",
            sentences=load("story")[:5],
            heldout=load("story")[4:8],
            **common,
        )
    df = automate_heads(
        minilm,
        "0.2, L0H2",
        out=tmp_path / "d",
        sentences=load("story")[:6],
        heldout=load("heldout")[:4],
        **common,
    )
    assert list(zip(df["layer"], df["head"])) == [(0, 2)]
    assert df.loc[0, "status"] == "validated" and not df.loc[0, "accepted"]


def test_near_duplicates_are_merged(minilm_records, tmp_path):
    """Two heads with (almost) the same composite rule: the second program is a near-duplicate
    of the first one's library entry, so the library keeps one entry that explains both."""
    recs = minilm_records
    ctxs = contexts_of(recs)

    def rule(ctx, extra: float) -> np.ndarray:
        noun = np.array([w >= 0 and ctx.words[w].pos == "NOUN" for w in ctx.token_word])
        out = np.where(
            noun[:, None], predict("previous_token", ctx)[0], predict("first_token", ctx)[0]
        )
        return out + extra * predict("uniform", ctx)[0]

    fake = [
        dataclasses.replace(
            rec, attention=np.stack([rule(c, 0.0), rule(c, 0.01)])[None].astype(np.float32)
        )
        for rec, c in zip(recs, ctxs)
    ]
    lib = UserLibrary(tmp_path / "lib")
    kw = dict(
        backend=ProgramSearch(),
        train_records=fake[:14],
        heldout_records=fake[14:],
        train_contexts=ctxs[:14],
        heldout_contexts=ctxs[14:],
        library=lib,
    )
    first = automate_head(0, 0, **kw)
    assert first.status == "accepted" and first.heldout_score < 0.01
    second = automate_head(0, 1, **kw)
    assert second.library_entry == first.library_entry
    assert "near-duplicate" in second.message or "explained by" in second.message
    (entry,) = lib.entries
    assert [(h["layer"], h["head"]) for h in entry.heads] in ([(0, 0), (0, 1)], [(0, 1), (0, 0)])


def test_automation_reads_the_metric_registry(minilm_records, tmp_path):
    """A metric where higher is better (a negated SAE, registered for this test) must choose the
    same best built-in as SAE itself: the choice uses the registry's spec.best, not idxmin."""
    from attn_tools.automate import HeadScorer
    from attn_tools.scoring import MetricSpec, get_metric, register_metric, unregister_metric

    recs, ctxs = minilm_records[:10], contexts_of(minilm_records[:10])
    sae = get_metric("sae")
    register_metric(
        MetricSpec(
            "negated_sae_test",
            True,
            "negated SAE",
            range=(-2.0, 0.0),
            ranks_patterns=True,
            rows=lambda a, p, o: -sae.rows(a, p, o),
            paired=lambda a, p, o: -sae.paired(a, p, o),
        )  # fmt: skip
    )
    try:
        low = HeadScorer(recs, ctxs, 0, 2, "sae").best_builtin()
        high = HeadScorer(recs, ctxs, 0, 2, "negated_sae_test").best_builtin()
        assert low[0] == high[0] == "previous_token"
        assert high[1] == pytest.approx(-low[1])
        res = automate_head(
            0, 2, backend=ProgramSearch(), train_records=recs, heldout_records=minilm_records[10:],
            train_contexts=ctxs, library=UserLibrary(tmp_path / "lib"), out=tmp_path / "h",
            metric="negated_sae_test",
        )  # fmt: skip
        assert res.metric == "negated_sae_test" and res.builtin_name == "previous_token"
        assert res.builtin_score < 0 and res.heldout_score == pytest.approx(res.builtin_score)
        assert res.status == "validated" and not res.beats_builtin
        saved = json.loads((tmp_path / "h" / "validation.json").read_text())
        assert saved["metric"] == "negated_sae_test"
    finally:
        unregister_metric("negated_sae_test")
    with pytest.raises(ValueError, match="'mul' cannot choose between patterns.*jsd, sae, mae"):
        HeadScorer(recs, ctxs, 0, 2, "mul")
    with pytest.raises(ValueError, match="nope"):
        automate_head(0, 2, backend=ProgramSearch(), train_records=recs, heldout_records=recs,
                      metric="nope")  # fmt: skip
