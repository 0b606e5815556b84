"""Crash consistency: ``kill -9`` at any step of an automate run, then resume.

A real run of `automate_heads` (offline program search, the real MiniLM model, two heads that
both join the library) is started in a child process that SIGKILLs itself right after its k-th
file write (the ``ATTN_TOOLS_KILL_AFTER_WRITE`` hook), for several k around each head's commit;
the run is then resumed and the folder and the library must be exactly what an uninterrupted
run gives: no head re-labelled, no entry listed as its own near-duplicate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attn_tools.automate import UserLibrary, automate_heads, make_backend
from attn_tools.automate._killpoint import KILL_ENV, LOG_ENV

ROOT = Path(__file__).resolve().parents[1]
HEADS = [(1, 8), (1, 11)]
COLUMNS = [
    "layer", "head", "status", "hypothesis", "program", "train_score", "heldout_score",
    "builtin_name", "builtin_score", "library_name", "library_score", "accepted", "library_entry",
]  # fmt: skip

CHILD = """
import sys
from attn_tools import load_model, load_sentences
from attn_tools.automate import UserLibrary, automate_heads, make_backend
automate_heads(
    load_model("minilm"), [(1, 8), (1, 11)], backend=make_backend("search"), out=sys.argv[1],
    sentences=load_sentences("story")[:8], heldout=load_sentences("heldout")[:8],
    library=UserLibrary(sys.argv[2]), progress=False,
)
"""


def _run(minilm, out: Path, lib: Path) -> pd.DataFrame:
    from attn_tools import load_sentences

    return automate_heads(
        minilm,
        HEADS,
        backend=make_backend("search"),
        out=out,
        sentences=load_sentences("story")[:8],
        heldout=load_sentences("heldout")[:8],
        library=UserLibrary(lib),
        progress=False,
    )


def _library_state(path: Path) -> list[tuple]:
    lib = UserLibrary(path)
    return sorted(
        (e.name, e.source_sha256, tuple((h["layer"], h["head"]) for h in e.heads))
        for e in lib.entries
    )


@pytest.fixture(scope="module")
def reference(minilm, tmp_path_factory):
    """An uninterrupted run, with the list of its writes (relative to this process's count)."""
    root = tmp_path_factory.mktemp("crash_reference")
    log = root / "writes.log"
    os.environ[LOG_ENV] = str(log)
    try:
        df = _run(minilm, root / "run", root / "lib")
    finally:
        del os.environ[LOG_ENV]
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    first = int(lines[0][0])
    writes = [(int(i) - first + 1, Path(p)) for i, p in lines]
    return df, _library_state(root / "lib"), writes


def _kill_points(writes: list[tuple[int, Path]]) -> dict[str, int]:
    """The steps around each head's commit, named for the test ids."""
    points: dict[str, int] = {}
    for k, path in writes:
        head = path.parent.name if path.parent.name.startswith("L") else "lib"
        label = f"{head}/{path.name}"
        if path.name == "sandbox.json" and "first_sandbox" not in points:
            points["first_sandbox"] = k
        elif path.name in ("decision.json", "result.json", "index.json") or path.suffix == ".py":
            if path.parent.name.startswith("round_"):
                continue
            points.setdefault(label if head != "lib" else f"lib/{path.name}#{k}", k)
    return points


def test_kill_points_cover_every_commit_step(reference):
    _, library, writes = reference
    names = [p.name for _, p in writes]
    # the commit order the protocol promises, for each head
    for layer, head in HEADS:
        folder = f"L{layer:02d}_H{head:02d}"
        mine = [(k, p) for k, p in writes if p.parent.name == folder and p.suffix == ".json"]
        decision = next(k for k, p in mine if p.name == "decision.json")
        result = next(k for k, p in mine if p.name == "result.json")
        index = [k for k, p in writes if p.name == "index.json" and decision < k < result]
        assert len(index) == 1  # the library changes strictly between journal and result
    assert names.count("decision.json") == 2 and names.count("result.json") == 2
    assert sorted(h for _, _, heads in library for h in heads) == sorted(HEADS)
    assert len(_kill_points(writes)) >= 8


@pytest.mark.slow
def test_resume_after_kill_9_at_each_commit_step(reference, minilm, tmp_path):
    ref_df, ref_lib, writes = reference
    assert (ref_df["status"] == "accepted").all()  # both heads change the library
    points = _kill_points(writes)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(LOG_ENV, None)
    for label, k in points.items():
        out, lib = tmp_path / f"run_{k}", tmp_path / f"lib_{k}"
        child = subprocess.run(
            [sys.executable, "-c", CHILD, str(out), str(lib)],
            env={**env, KILL_ENV: str(k)},
            capture_output=True,
            text=True,
        )
        assert child.returncode == -signal.SIGKILL, (label, child.stderr[-2000:])
        resumed = _run(minilm, out, lib)
        pd.testing.assert_frame_equal(resumed[COLUMNS], ref_df[COLUMNS], obj=label)
        assert _library_state(lib) == ref_lib, label
        for entry in UserLibrary(lib).entries:
            heads = [(h["layer"], h["head"]) for h in entry.heads]
            assert len(heads) == len(set(heads)), (label, entry.name, heads)  # no self-duplicate
        for layer, head in HEADS:
            folder = out / "heads" / f"L{layer:02d}_H{head:02d}"
            result = json.loads((folder / "result.json").read_text())
            journal = json.loads((folder / "decision.json").read_text())
            assert result == journal["result"], label
        # and resuming a finished run changes nothing at all
        files = [*(out / "heads").rglob("*"), *lib.rglob("*")]
        stamps = {p: p.stat().st_mtime_ns for p in files}
        again = _run(minilm, out, lib)
        pd.testing.assert_frame_equal(again[COLUMNS], ref_df[COLUMNS], obj=label)
        assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, label
