"""Data-parallel scoring: sharding, exact merges, resumable runs and partitioned Parquet.

The in-process tests use the real MiniLM records of the session fixtures; the tests in
``test_distributed_launch.py`` start real ``torchrun`` process groups and kill real processes.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attn_tools.distributed import (
    Shard,
    World,
    check_exactly_once,
    shard_sentences,
    world,
)
from attn_tools.partitioned import read_partitioned, write_partitioned
from attn_tools.scoring import HeadScorer, score_heads

PATTERNS = ["previous_token", "first_token", "self", "punctuation", "repetition"]


def test_world_reads_the_launcher_environment(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world() == World(0, 1, 0, "single", None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 and WORLD_SIZE=2.*Fix"):
        world()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one'.*Fix"):
        world()


def test_shards_cover_every_sentence_once():
    texts = [f"sentence {i}." for i in range(10)]
    parts = []
    for rank in range(3):
        mine, shard = shard_sentences(texts, World(rank, 3, rank, "env", "gloo"))
        assert list(shard.indices) == list(range(rank, 10, 3))
        assert mine == [texts[i] for i in shard.indices]
        parts.append(list(shard.indices))
    check_exactly_once(parts, 10)
    assert sorted(sum(parts, [])) == list(range(10))
    with pytest.raises(RuntimeError, match="counted twice"):
        check_exactly_once([[0, 1], [1, 2]], 3)
    with pytest.raises(RuntimeError, match="lost or counted twice"):
        check_exactly_once([[0], [2]], 3)
    # a stream is sharded lazily, without knowing its length
    stream, shard = shard_sentences(iter(texts), World(1, 3, 1, "env", "gloo"))
    assert list(stream) == texts[1::3] and shard.total is None
    assert Shard(World(1, 3, 1, "env", "gloo"), None).owns(4)


def test_merged_shards_give_the_single_process_table(minilm_records):
    records = minilm_records[:15]
    reference = score_heads(records, PATTERNS, per_sentence=True)
    plain = score_heads(records, PATTERNS)
    merged = HeadScorer(PATTERNS, per_sentence=True)
    sums_only = HeadScorer(PATTERNS)
    for rank in (2, 0, 1):  # arrival order must not matter
        part = HeadScorer(PATTERNS, per_sentence=True)
        numbers = list(range(rank, len(records), 3))
        part.update([records[i] for i in numbers], indices=numbers)
        merged.merge(part)
        part_sums = HeadScorer(PATTERNS)
        part_sums.update([records[i] for i in numbers], indices=numbers)
        sums_only.merge(part_sums)
    for acc in merged.accs.values():
        acc.resum()
    table = merged.table()
    # per-sentence rows in corpus order, sums re-added in that order: identical
    pd.testing.assert_frame_equal(table, reference, check_exact=True)
    # running sums merged in another order: equal up to float64 rounding
    other = sums_only.table()
    assert other[["layer", "head", "pattern", "n_sentences", "n_rows"]].equals(
        plain[["layer", "head", "pattern", "n_sentences", "n_rows"]]
    )
    diff = np.nanmax(np.abs(other["mean"].to_numpy() - plain["mean"].to_numpy()))
    assert diff < 1e-12
    assert table.attrs["n_records"] == 15


def test_a_saved_state_resumes_bit_exactly(minilm_records):
    records = minilm_records[:12]
    whole = HeadScorer(PATTERNS, metric="mul")
    whole.update(records)
    first = HeadScorer(PATTERNS, metric="mul")
    first.update(records[:5])
    state = {k: np.array(v) for k, v in first.state().items()}
    second = HeadScorer(PATTERNS, metric="mul")
    second.load_state(state)
    second.update(records[5:])
    pd.testing.assert_frame_equal(second.table(), whole.table(), check_exact=True)
    with pytest.raises(ValueError, match="different number of patterns"):
        HeadScorer(PATTERNS[:2], metric="mul").load_state(state)
    with pytest.raises(ValueError, match="same patterns and settings"):
        whole.merge(HeadScorer(PATTERNS, metric="jsd"))


def test_partitioned_parquet_reads_back_identical(minilm_records, tmp_path):
    table = score_heads(minilm_records[:6], PATTERNS)
    table.loc[3, "mean"] = np.nan  # NaNs survive too
    folder = write_partitioned(table, tmp_path / "scores")
    layers = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert layers == [f"layer={k}" for k in range(6)]
    one = pd.read_parquet(folder / "layer=4" / "part-0.parquet")
    assert len(one) == (table.layer == 4).sum()
    back = read_partitioned(folder)
    pd.testing.assert_frame_equal(back, table, check_exact=True)
    # pyarrow reads the same folder as one hive-partitioned dataset
    import pyarrow.dataset as ds

    assert ds.dataset(folder, format="parquet", partitioning="hive").count_rows() == len(table)
    write_partitioned(table.head(7), folder)  # rewriting replaces the old table
    pd.testing.assert_frame_equal(read_partitioned(folder), table.head(7), check_exact=True)
    with pytest.raises(ValueError, match="cannot partition by 'nope'.*Fix"):
        write_partitioned(table, tmp_path / "x", by="nope")
    with pytest.raises(FileNotFoundError, match="not a partitioned table.*Fix"):
        read_partitioned(tmp_path)
    write_partitioned(table, folder)
    (folder / "layer=2" / "part-0.parquet").unlink()
    with pytest.raises(ValueError, match="rows.*Fix"):
        read_partitioned(folder)


def test_score_run_resumes_and_refuses_another_runs_progress(minilm, story_sentences, tmp_path):
    from attn_tools.extract import extract
    from attn_tools.report import score_tables
    from attn_tools.runs import read_run, score_run, write_score_run

    texts = story_sentences[:9]
    all_rows, own_rows = score_tables(extract(minilm, texts, progress=False))
    run = score_run(minilm, texts, tmp_path, checkpoint_every=4)
    pd.testing.assert_frame_equal(run.all_rows, all_rows, check_exact=True)
    pd.testing.assert_frame_equal(run.own_rows, own_rows, check_exact=True)
    paths = write_score_run(run, tmp_path, command=["attn-tools", "score"])
    info = read_run(tmp_path)
    entry = info["runs"][run.stem]
    assert info["world_size"] == 1 and info["command"] == ["attn-tools", "score"]
    assert entry["sentences_per_rank"] == [9] and entry["fingerprint"] == minilm.fingerprint
    assert entry["resumed_per_rank"] == [0] and entry["exactly_once"]
    csv = pd.read_csv(tmp_path / f"scores_{run.stem}.csv")
    assert np.allclose(csv["mean"], all_rows["mean"], equal_nan=True)
    assert read_partitioned(tmp_path / "parquet" / f"scores_{run.stem}").equals(all_rows)
    assert all(p.exists() for p in paths)
    # started again: everything is done, nothing is scored twice
    again = score_run(minilm, texts, tmp_path, checkpoint_every=4)
    assert again.ranks[0]["resumed"] == 9 and again.ranks[0]["scored_now"] == 0
    pd.testing.assert_frame_equal(again.all_rows, all_rows, check_exact=True)
    # another corpus in the same folder is refused, and --fresh starts over
    with pytest.raises(ValueError, match=r"another run \(differs in \['corpus_sha256'.*--fresh"):
        score_run(minilm, texts[:8], tmp_path)
    fresh = score_run(minilm, texts[:8], tmp_path, fresh=True)
    assert fresh.ranks[0]["resumed"] == 0 and fresh.all_rows.n_sentences.max() == 8
    # a damaged checkpoint is never trusted
    ckpt = next((tmp_path / "progress" / run.stem).glob("shard-*.npz"))
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read.*--fresh"):
        score_run(minilm, texts[:8], tmp_path)
    config = json.loads((ckpt.parent / "config.json").read_text())
    assert config["world_size"] == 1 and config["n_sentences"] == 8


def test_work_alone_turns_sharding_off(monkeypatch):
    import attn_tools.distributed as dist

    texts = ["one.", "two.", "three."]
    w = World(0, 2, 0, "env", "gloo")
    assert shard_sentences(texts, w)[0] == ["one.", "three."]
    monkeypatch.setattr(dist, "_ALONE", False)
    dist.work_alone()  # what the CLI's rank-0-only commands call
    assert shard_sentences(texts, w) == (texts, None)
