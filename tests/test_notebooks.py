"""Every notebook runs top to bottom offline, and every ``.py``/``.ipynb`` pair is in sync.

The ``.py`` percent file is the source of truth: it is what gets executed (through jupytext, in a
real ipykernel with nbclient), with the test session's attention cache. The sync check compares
the cells of both files, so an edit to one side that was not `jupytext --sync`-ed fails here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PY_FILES = sorted(NOTEBOOKS.glob("*.py"))
IPYNB_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 600  # a hang guard per cell, not a performance limit


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_notebook_is_a_pair():
    assert PY_FILES, "no notebooks found"
    stems_py = {p.stem for p in PY_FILES}
    stems_nb = {p.stem for p in IPYNB_FILES}
    assert stems_py == stems_nb, (
        f"unpaired notebooks: .py only {sorted(stems_py - stems_nb)}, .ipynb only "
        f"{sorted(stems_nb - stems_py)}. Fix: jupytext --set-formats ipynb,py:percent <file>"
    )


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_pair_is_in_sync(py: Path):
    ipynb = py.with_suffix(".ipynb")
    if not ipynb.exists():
        pytest.fail(f"{py.name} has no paired {ipynb.name}")
    source = jupytext.read(py)
    paired = jupytext.read(ipynb)
    formats = paired.metadata.get("jupytext", {}).get("formats", "")
    assert "py:percent" in formats and "ipynb" in formats, (
        f"{ipynb.name} is not paired with the percent format (jupytext.formats={formats!r})"
    )
    assert _cells(source) == _cells(paired), (
        f"{py.name} and {ipynb.name} differ. Fix: jupytext --sync notebooks/{py.name}"
    )


def _with_outputs(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and c.get("outputs")]


@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_committed_notebooks_hold_no_outputs(py: Path):
    ipynb = py.with_suffix(".ipynb")
    if ipynb.exists():
        assert not _with_outputs(jupytext.read(ipynb)), f"{ipynb.name} has committed outputs"


@pytest.mark.slow
@pytest.mark.parametrize("py", PY_FILES, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(py: Path, tmp_path: Path, monkeypatch, record_property):
    from nbclient import NotebookClient

    # The kernel inherits this environment: the session's cache, offline hub, no GUI backend.
    assert os.environ.get("ATTN_TOOLS_CACHE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = jupytext.read(py)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # notebooks write nothing into the repo
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 1))
    print(f"{py.name}: {seconds:.1f} s")
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors  # nbclient raises on errors; this guards allow_errors changes
    images = sum(
        1
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    )
    if any("viz." in c.source for c in nb.cells if c.cell_type == "code"):
        assert images > 0, f"{py.name} draws figures but none was displayed"
