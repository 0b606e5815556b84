"""`stats` and `ablate` data-parallel: one real ``torchrun --nproc_per_node 2`` launch (gloo, CPU).

The launched script runs both CLI commands and the library calls behind them on the real MiniLM
pack; the test compares what the ranks wrote with the single-process tables computed here, and
reads the ``run.json`` provenance. The pure merge helpers are tested without a launch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attn_tools.distributed import gather_outcome, merge_in_sentence_order, sum_in_rank_order
from attn_tools.stats import STAT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
N_SENTENCES = 9  # odd: rank 0 gets 5 sentences, rank 1 gets 4
N_HOLDOUT = 4


# ----------------------------------------------------------------------------- pure helpers


def test_merge_in_sentence_order_interleaves_the_ranks():
    # 3 ranks, 8 sentences: rank r holds r, r+3, r+6
    parts = [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert merge_in_sentence_order(parts) == list(range(8))
    assert merge_in_sentence_order([[0], []]) == [0]
    assert merge_in_sentence_order([[], []]) == []


@pytest.mark.parametrize("parts", [[[0], [1, 3]], [[0, 2, 4], [1]]])
def test_merge_in_sentence_order_refuses_impossible_shards(parts):
    with pytest.raises(RuntimeError, match="no i % world_size sharding"):
        merge_in_sentence_order(parts)


def test_sum_in_rank_order_adds_in_rank_order_and_keeps_key_order():
    a = {"x": np.array([1e16, 1.0]), "n": np.array([2, 3])}
    b = {"y": np.array([5.0]), "x": np.array([1.0, 2.0]), "n": np.array([1, 1])}
    c = {"x": np.array([-1e16, 0.0])}
    got = sum_in_rank_order([a, b, c])
    assert list(got) == ["x", "n", "y"]
    # ((1e16 + 1) - 1e16): the order of the additions decides the float result, and it is 0.0
    assert got["x"].tolist() == [0.0, 3.0]
    assert got["n"].dtype.kind == "i" and got["n"].tolist() == [3, 4]
    assert a["x"].tolist() == [1e16, 1.0]  # inputs are not modified
    with pytest.raises(RuntimeError, match="shape"):
        sum_in_rank_order([a, {"x": np.zeros(3)}])


def test_gather_outcome_in_one_process_runs_the_work():
    assert gather_outcome(lambda: 41 + 1) == [42]
    with pytest.raises(ZeroDivisionError):
        gather_outcome(lambda: 1 / 0)


# ----------------------------------------------------------------------------- one launch

SCRIPT = """
import json, sys
from attn_tools import load_model
from attn_tools.cli import main
from attn_tools.distributed import gather_outcome, world
from attn_tools.interventions.ablation import ablate_heads

corpus, holdout, out = sys.argv[1:4]
texts = open(corpus).read().splitlines()
w = world()
codes = [
    main(["stats", "--model", "minilm", "--sentences", corpus, "--holdout", holdout,
          "--syntax", "--similarity", "--out", f"{out}/stats", "--quiet"]),
    main(["ablate", "--model", "minilm", "--sentences", corpus, "--limit", str(len(texts)),
          "--out", f"{out}/ablate"]),
]
bundle = load_model("minilm", device="cpu")
heads = [(0, 0), (3, 5), (5, 11)]
mean = ablate_heads(bundle, texts, heads, method="mean")
mean.to_parquet(f"{out}/mean-{w.rank}.parquet")
# the single-process answer in this very process (same threads): sharding switched off
alone = ablate_heads(bundle, texts, heads, method="mean", shard=False)
zero = ablate_heads(bundle, texts, shard=False)
if w.is_main:
    zero.to_parquet(f"{out}/zero-alone.parquet")
# one sentence for two ranks: rank 1 has nothing to measure and must still take part
from attn_tools import extract, iter_extract
from attn_tools.stats import head_stats
head_stats(extract(bundle, texts[:1], progress=False)).to_parquet(f"{out}/one-stats-{w.rank}.parquet")
ablate_heads(bundle, texts[:1], heads).to_parquet(f"{out}/one-ablate-{w.rank}.parquet")
with open(corpus) as lines:  # a stream of unknown length: every other line on each rank
    streamed = head_stats(iter_extract(bundle, (t.strip() for t in lines), progress=False))
streamed.to_parquet(f"{out}/streamed-{w.rank}.parquet")
try:  # a rank that fails must not leave the other one waiting in a collective
    gather_outcome(lambda: 1 / 0 if w.rank == 1 else "fine", w)
    failure = None
except Exception as exc:
    failure = [type(exc).__name__, str(exc)]
json.dump({"codes": codes, "world_size": w.world_size, "failure": failure,
           "mean_equals_alone": mean.equals(alone),
           "per_rank": mean.attrs["sentences_per_rank"]},
          open(f"{out}/rank-{w.rank}.json", "w"))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """Run the script once under torchrun; the folder it wrote and the two sentence sets."""
    from attn_tools import load_sentences

    tmp = tmp_path_factory.mktemp("dist_stats")
    texts = load_sentences("heldout")[:N_SENTENCES]
    held = load_sentences("heldout")[N_SENTENCES : N_SENTENCES + N_HOLDOUT]
    (tmp / "corpus.txt").write_text("\n".join(texts) + "\n")
    (tmp / "holdout.txt").write_text("\n".join(held) + "\n")
    (tmp / "script.py").write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp / "script.py"), str(tmp / "corpus.txt"), str(tmp / "holdout.txt"), str(tmp)]  # fmt: skip
    log = tmp / "launch.log"
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, env=_env(), stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    assert proc.returncode == 0, log.read_text()[-4000:]
    return tmp, texts, held


@pytest.mark.slow
def test_torchrun_stats_equals_the_single_process_table(launched, minilm):
    from attn_tools.extract import extract
    from attn_tools.stats import head_stats

    tmp, texts, held = launched
    ranks = [json.loads((tmp / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["codes"] for r in ranks] == [[0, 0], [0, 0]]
    assert [r["world_size"] for r in ranks] == [2, 2]
    worst = 0.0
    for records, name in ((texts, "head_stats_all-MiniLM-L6-v2"), (held, "_holdout")):
        stem = name if name.startswith("head") else "head_stats_all-MiniLM-L6-v2" + name
        got = pd.read_parquet(tmp / "stats" / f"{stem}.parquet")
        ref = head_stats(extract(minilm, records, progress=False))
        exact = ["model", "layer", "head", "n_sentences", "n_rows", "drop_keys", "type_rule"]
        assert got[exact].equals(ref[exact])
        assert got["head_type"].astype(str).tolist() == ref["head_type"].astype(str).tolist()
        diff = np.abs(got[list(STAT_COLUMNS)].to_numpy() - ref[list(STAT_COLUMNS)].to_numpy())
        worst = max(worst, float(diff.max()))
        # every sentence counted once: each head saw every sentence of the set
        assert (got["n_sentences"] == len(records)).all()
    ref = head_stats(extract(minilm, texts, progress=False))
    one = head_stats(extract(minilm, texts[:1], progress=False))
    for rank in (0, 1):
        streamed = pd.read_parquet(tmp / f"streamed-{rank}.parquet")
        assert streamed["n_sentences"].tolist() == ref["n_sentences"].tolist()
        diff = np.abs(streamed[list(STAT_COLUMNS)].to_numpy() - ref[list(STAT_COLUMNS)].to_numpy())
        worst = max(worst, float(diff.max()))
        # one sentence, rank 1 without any: both ranks hold exactly the one-sentence table
        got_one = pd.read_parquet(tmp / f"one-stats-{rank}.parquet")
        pd.testing.assert_frame_equal(got_one, one, check_exact=True)
    assert worst <= 1e-9, worst
    print(f"head_stats torchrun 2 vs 1 process: largest difference {worst:.3g}")
    agreement = pd.read_csv(tmp / "stats" / "type_agreement_all-MiniLM-L6-v2.csv")
    assert agreement["n_heads"].tolist() == [72]

    # syntax: integer counts gathered in sentence order, so the table (bootstrap included) is
    # identical; similarity: distance sums added in rank order, then MDS
    from attn_tools.syntax import embed_heads, head_distances, syntax_table

    records = extract(minilm, texts, progress=False)
    syn = pd.read_parquet(tmp / "stats" / "syntax_all-MiniLM-L6-v2.parquet")
    ref_syn = syntax_table(records)
    assert len(syn) > 0
    pd.testing.assert_frame_equal(syn, ref_syn, check_exact=True)
    emb = pd.read_parquet(tmp / "stats" / "head_map_all-MiniLM-L6-v2.parquet")
    ref_emb = embed_heads(head_distances(records))
    assert emb.columns.tolist() == ref_emb.columns.tolist()
    num = emb.select_dtypes("number").columns
    np.testing.assert_allclose(emb[num].to_numpy(), ref_emb[num].to_numpy(), rtol=0, atol=1e-9)

    info = json.loads((tmp / "stats" / "run.json").read_text())
    assert (info["world_size"], info["backend"], info["launcher"]) == (2, "gloo", "torchrun")
    entry = info["runs"]["head_stats_all-MiniLM-L6-v2"]
    assert entry["sentences_per_rank"] == [5, 4] and entry["n_sentences"] == N_SENTENCES
    assert entry["exactly_once"] is True
    assert entry["holdout_per_rank"] == [2, 2]
    assert entry["sharded"] == ["head_stats", "holdout", "syntax", "similarity"]
    assert "head_stats_all-MiniLM-L6-v2.parquet" in entry["files"]


@pytest.mark.slow
def test_torchrun_ablate_equals_the_single_process_table(launched, minilm):
    from attn_tools.interventions.ablation import ablate_heads

    tmp, texts, _ = launched
    got = pd.read_parquet(tmp / "ablate" / "ablation_all-MiniLM-L6-v2_zero.parquet")
    # per-sentence effects merged in sentence order: identical to the unsharded table of the
    # same worker process
    alone = pd.read_parquet(tmp / "zero-alone.parquet")
    assert got.equals(alone)
    assert got["n_tokens"].iloc[0] > len(texts) and len(got) == 72
    ranks = [json.loads((tmp / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["mean_equals_alone"] for r in ranks)  # mean ablation: reduced mean, same table
    assert [r["per_rank"] for r in ranks] == [[5, 4], [5, 4]]
    m0, m1 = (pd.read_parquet(tmp / f"mean-{r}.parquet") for r in (0, 1))
    assert m0.equals(m1)  # every rank holds the whole table
    one = ablate_heads(minilm, texts[:1], [(0, 0), (3, 5), (5, 11)])
    for rank in (0, 1):  # rank 1 measured nothing and still holds the table
        got_one = pd.read_parquet(tmp / f"one-ablate-{rank}.parquet")
        pd.testing.assert_frame_equal(got_one, one, check_exact=True)
    # a failing rank: it raises its own error, the other rank a matching one, nobody hangs
    assert ranks[1]["failure"][0] == "ZeroDivisionError"
    assert ranks[0]["failure"][0] == "RuntimeError" and "rank 1 failed" in ranks[0]["failure"][1]

    # against a plain process (this one, its own thread count): forward passes may round
    # differently, so a float32-sized tolerance
    ref = ablate_heads(minilm, texts)
    assert got[["layer", "head", "n_tokens", "measure", "method"]].equals(
        ref[["layer", "head", "n_tokens", "measure", "method"]]
    )
    diff = float(np.nanmax(np.abs(got["delta_loss"].to_numpy() - ref["delta_loss"].to_numpy())))
    print(f"ablation torchrun 2 vs plain process: largest difference {diff:.3g}")
    assert diff <= 1e-6, diff

    info = json.loads((tmp / "ablate" / "run.json").read_text())
    assert (info["world_size"], info["backend"]) == (2, "gloo")
    entry = info["runs"]["ablation_all-MiniLM-L6-v2_zero"]
    assert entry["sentences_per_rank"] == [5, 4] and entry["exactly_once"] is True
    assert entry["n_sentences"] == N_SENTENCES and entry["method"] == "zero"
