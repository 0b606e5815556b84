"""`make demo`'s duration: the default run (grids, tables, report.html) vs ``--all-figures``.

Both runs use the same warm caches (a first run fills them: attention, spaCy parses, the
dequantised SmolLM2), so the numbers are what a user sees on the second `make demo`. Prints each
run's wall time, their ratio, and the default run against the 60 s target. Run:
`python benchmarks/bench_demo.py [--sentences all]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _demo(out: Path, sentences: str, *extra: str) -> float:
    cmd = [sys.executable, "-m", "attn_tools.cli", "demo", "--quiet", "--out", str(out),
           "--sentences", sentences, *extra]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", default="all")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        warm = _demo(Path(tmp) / "warm", args.sentences)  # fills every cache
        default = _demo(Path(tmp) / "default", args.sentences)
        full = _demo(Path(tmp) / "full", args.sentences, "--all-figures")
        n_files = sum(1 for _ in (Path(tmp) / "full").rglob("*.png"))
    print(f"first run (fills caches):   {warm:6.1f} s")
    print(f"default demo (warm caches): {default:6.1f} s  (target: under 60 s)")
    print(f"--all-figures (warm):       {full:6.1f} s  ({n_files} PNG files)")
    print(f"ratio default / all-figures: {default / full:.2f}")


if __name__ == "__main__":
    main()
