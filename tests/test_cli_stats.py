"""`attn-tools stats`: the files it writes hold what `head_stats` computes; bad input is refused
with a clear message before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from attn_tools import extract
from attn_tools.cli import main
from attn_tools.stats import STAT_COLUMNS, head_stats

ANALYSIS = [
    "The baker left the shop early, and the street went quiet.",
    "Two owls watched the field from an old oak.",
    "Why did the committee delay its vote again?",
]
HOLDOUT = [
    "My sister painted the fence blue last summer.",
    "The train stopped; nobody got off.",
]
ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_stats_command_writes_tables_figures_and_agreement(tmp_path, minilm, capsys):
    a = _write(tmp_path / "a.txt", ANALYSIS)
    b = _write(tmp_path / "b.txt", HOLDOUT)
    out = tmp_path / "out"
    rc = main(["stats", "--model", "minilm", "--sentences", str(a), "--holdout", str(b),
               "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    slug = "all-MiniLM-L6-v2"
    table = pd.read_csv(out / f"head_stats_{slug}.csv")
    want = head_stats(extract(minilm, ANALYSIS, progress=False))
    assert len(table) == 72
    np.testing.assert_allclose(table[list(STAT_COLUMNS)], want[list(STAT_COLUMNS)], rtol=1e-9)
    assert list(table["head_type"]) == list(want["head_type"].astype(str))
    agreement = pd.read_csv(out / f"type_agreement_{slug}.csv")
    assert agreement.loc[0, "n_heads"] == 72
    held = pd.read_csv(out / f"head_stats_{slug}_holdout.csv")
    same = int((held["head_type"] == table["head_type"]).sum())
    assert agreement.loc[0, "n_same"] == same
    confusion = pd.read_csv(out / f"type_confusion_{slug}.csv")
    assert confusion["count"].sum() == 72
    for fig in (f"head_types_{slug}.png", f"layers_{slug}.png"):
        data = (out / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert fig in printed


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "attn_tools.cli", "stats", *args],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip


def test_overlapping_holdout_and_bad_thresholds_are_refused(tmp_path):
    a = _write(tmp_path / "a.txt", ANALYSIS)
    out = tmp_path / "out"
    done = _run("--model", "minilm", "--sentences", str(a), "--holdout", str(a), "--out", str(out))
    assert done.returncode == 2
    assert "shares 3 sentence(s)" in done.stderr and "Fix:" in done.stderr
    assert not out.exists()  # refused before any file was written
    done = _run("--model", "minilm", "--sentences", str(a), "--broad", "1.5", "--out", str(out))
    assert done.returncode == 2
    assert "HeadTypeThresholds.broad is 1.5" in done.stderr and "Fix:" in done.stderr


def test_stats_command_adds_the_syntax_table_and_head_map(tmp_path, minilm, capsys):
    from attn_tools.data import load_sentences
    from attn_tools.syntax import embed_heads, head_distances, syntax_table

    out = tmp_path / "stats"
    code = main(["stats", "--model", "minilm", "--sentences", "story", "--limit", "30",
                 "--syntax", "--similarity", "--quiet", "--out", str(out)])  # fmt: skip
    assert code == 0
    recs = extract(minilm, load_sentences("story", limit=30), progress=False)
    written = pd.read_csv(out / "syntax_all-MiniLM-L6-v2.csv")
    direct = syntax_table(recs)
    assert list(written["relation"]) == list(direct["relation"])
    np.testing.assert_allclose(written["accuracy"], direct["accuracy"], atol=1e-12)
    np.testing.assert_allclose(written["baseline"], direct["baseline"], atol=1e-12)
    emb = pd.read_csv(out / "head_map_all-MiniLM-L6-v2.csv")
    np.testing.assert_allclose(emb["mds1"], embed_heads(head_distances(recs))["mds1"], atol=1e-9)
    for name in ("syntax", "head_map"):
        assert (out / f"{name}_all-MiniLM-L6-v2.png").stat().st_size > 10_000
