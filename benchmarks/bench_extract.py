"""Batched vs one-at-a-time attention extraction on the built-in sentences, both default models.

Prints sentences/s for each way, their ratio (the reference is one-at-a-time, measured in the same
run) and the largest absolute difference between the two results. Also times a cached load of the
dequantised SmolLM2. Run: `python benchmarks/bench_extract.py [--sentences all] [--batch-size 16]`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from attn_tools import extract, load_model, load_sentences


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", default="all")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    args = ap.parse_args()
    sentences = load_sentences(args.sentences)
    print(f"{len(sentences)} sentences from {args.sentences!r}, batch size {args.batch_size}")
    for name in args.models:
        load_model(name)  # make sure any one-time dequantisation is done before timing
        t0 = time.perf_counter()
        bundle = load_model(name)
        load_s = time.perf_counter() - t0
        extract(bundle, sentences[:4], cache=False, progress=False)  # warm-up
        t0 = time.perf_counter()
        single = [
            extract(bundle, s, batch_size=1, cache=False, progress=False)[0] for s in sentences
        ]
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = extract(
            bundle, sentences, batch_size=args.batch_size, cache=False, progress=False
        )
        t_batched = time.perf_counter() - t0
        diff = max(float(np.abs(a.attention - b.attention).max()) for a, b in zip(single, batched))
        n = len(sentences)
        print(
            f"{bundle.name:>24}: load {load_s:5.2f} s (cached) | one-at-a-time {n / t_single:7.1f} "
            f"sent/s | batched {n / t_batched:7.1f} sent/s | ratio {t_single / t_batched:5.2f}x | "
            f"max |diff| {diff:.2e}"
        )


if __name__ == "__main__":
    main()
