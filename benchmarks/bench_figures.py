"""Parallel drawing of the per-pattern figures: `write_figures(workers=N)` vs one process.

Scores MiniLM on a sentence set once, then draws every pattern's three figures (what
`attn-tools figures` and `demo --all-figures` write) with 1 and with N forked workers, and prints
both wall times, their ratio and whether the files are byte-identical. Run:
`python benchmarks/bench_figures.py [--sentences story] [--workers 2]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    import os
    import warnings

    from attn_tools import extract, load_model, load_sentences
    from attn_tools.classify import label_heads
    from attn_tools.patterns import build_contexts
    from attn_tools.report import score_tables, write_figures

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--sentences", default="story")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = ap.parse_args()
    records = extract(load_model(args.model), load_sentences(args.sentences), progress=False)
    ctx = build_contexts(records)
    _, ranked = score_tables(records, contexts=ctx)
    best = label_heads(records, contexts=ctx)
    times, files = {}, {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # patterns without support are skipped, as in the CLI
        for n in (1, args.workers):
            t0 = time.perf_counter()
            paths = write_figures(records, ranked, Path(tmp) / f"w{n}", best=best, workers=n)
            times[n] = time.perf_counter() - t0
            files[n] = [(p.name, p.read_bytes()) for p in paths]
    same = files[1] == files[args.workers]
    print(f"{args.model} on '{args.sentences}': {len(files[1])} files, {os.cpu_count()} CPUs")
    print(f"1 process:    {times[1]:6.1f} s")
    print(f"{args.workers} processes:  {times[args.workers]:6.1f} s")
    print(f"speed-up: {times[1] / times[args.workers]:.2f}x; byte-identical files: {same}")


if __name__ == "__main__":
    main()
