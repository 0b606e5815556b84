"""`attn-tools demo` end to end: the models analysed in parallel processes give the same files,
tables and report as one process, and the command says where the report is."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SENTENCES = [
    "A kettle whistled while the twins argued about the map.",
    "Nobody expected the ferry to leave before noon, yet it did.",
    "The gardener, tired and muddy, planted six rows of leeks.",
    "When the lights failed, the choir kept singing in the dark.",
    "Her brother repaired the bicycle that the storm had thrown.",
    "Two owls watched the empty road from the old oak tree.",
]


def _demo(src: Path, out: Path, workers: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attn_tools.cli", "demo", "--sentences", str(src),
         "--out", str(out), "--workers", workers],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "summary.json"
    }


def test_parallel_demo_writes_what_one_process_writes(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text("\n".join(SENTENCES) + "\n")
    one = _demo(src, tmp_path / "one", "1")
    two = _demo(src, tmp_path / "two", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(a) == sorted(b) and "report.html" in a
    assert [k for k in a if a[k] != b[k]] == []  # PNGs, CSVs, Parquet and the report, byte for byte
    # the summaries differ only in the seconds measured
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    for x, y in zip(sa, sb):
        assert {k for k in x if x[k] != y[k]} <= {"extract_seconds", "score_seconds", "files"}
        assert [Path(f).name for f in x["files"]] == [Path(f).name for f in y["files"]]
    # the same text in the same order: the first model's summary comes first in both
    strip = lambda s: re.sub(r"[\d.]+ ?s\b|/\S+", "", s)  # noqa: E731 (times and paths)
    assert strip(one.stdout) == strip(two.stdout)
    assert one.stdout.index("all-MiniLM-L6-v2") < one.stdout.index("SmolLM2")
    assert two.stdout.strip().endswith(f"report: {(tmp_path / 'two' / 'report.html').resolve()}")
    # and one progress bar per model, each through every step
    bars = [ln for ln in two.stderr.replace("\r", "\n").splitlines() if "analysis ·" in ln]
    for name in ("all-MiniLM-L6-v2", "SmolLM2-135M-Instruct"):
        assert any(name in ln and "4/4" in ln and "done" in ln for ln in bars), bars[-4:]
