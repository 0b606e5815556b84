"""Execute every notebook and write an HTML copy with its outputs under ``docs/notebooks/``.

``make docs`` runs this. The ``.ipynb`` files in ``notebooks/`` stay output-free (a test checks
that); these HTML copies are what a reader previews without running anything. Each notebook runs
from its ``.py`` source (jupytext) in a temporary folder, like ``tests/test_notebooks.py`` runs
it, so nothing is written into the repository except the HTML.

Usage: ``python docs/build_notebooks.py [NAME ...]`` (default: every notebook).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
OUT = ROOT / "docs" / "notebooks"


def build(py: Path) -> Path:
    import jupytext
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = jupytext.read(py)
    with tempfile.TemporaryDirectory() as tmp:
        NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": tmp}}
        ).execute()
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": py.stem}})
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"{py.stem}.html"
    target.write_text(body, encoding="utf-8")
    return target


def main(names: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    files = sorted(NOTEBOOKS.glob("*.py"))
    if names:
        files = [f for f in files if f.stem in names]
        missing = sorted(set(names) - {f.stem for f in files})
        if missing:
            print(
                f"no notebook named {missing}; choose from {[f.stem for f in NOTEBOOKS.glob('*.py')]}"
            )
            return 2
    for py in files:
        t0 = time.perf_counter()
        target = build(py)
        size = target.stat().st_size / 1e6
        print(
            f"{py.stem}: {time.perf_counter() - t0:.0f} s → {target.relative_to(ROOT)} ({size:.1f} MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
