"""Benchmark: `head_stats` time as a fraction of the extraction it summarises.

For each default model, on the same built-in sentences, it times

* the reference: ``extract(bundle, sentences, cache=False)`` (uncached forward passes), and
* ``head_stats(records)`` on those records (all heads of a sentence in one array expression),

and prints head_stats / extraction (target: well under 1). It also times a plain per-head loop
(the same statistics, one head at a time, numpy per head) on a few sentences, prints its time per
sentence extrapolated to the whole set, and the largest difference between the loop's numbers and
head_stats' on those sentences.

Run: ``python benchmarks/bench_stats.py [--sentences 1000] [--models minilm smollm2]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from attn_tools import extract, load_model, load_sentences  # noqa: E402
from attn_tools.patterns import build_context  # noqa: E402
from attn_tools.stats import STAT_COLUMNS, head_stats  # noqa: E402


def per_head_loop(records) -> np.ndarray:
    """The statistics head by head (numpy per head, no cross-head vectorisation): ``[M, S]``."""
    rec0 = records[0]
    M = rec0.n_layers * rec0.n_heads
    total = np.zeros((M, len(STAT_COLUMNS)))
    for rec in records:
        ctx = build_context(rec, with_parse=False)
        n = rec.n_tokens
        allowed = np.tril(np.ones((n, n), bool)) if rec.kind == "causal" else np.ones((n, n), bool)
        rows = allowed.sum(1) >= 2
        idx = np.arange(n)
        dist = np.abs(idx[:, None] - idx[None, :])
        for m in range(M):
            a = rec.attention.reshape(M, n, n)[m].astype(np.float64) * allowed
            p = a[rows] / a[rows].sum(1, keepdims=True)
            q = idx[rows]
            logp = np.log2(np.where(p > 0, p, 1.0))
            ent = -(p * logp).sum(1)
            prev = np.where(q > 0, p[np.arange(len(q)), np.maximum(q - 1, 0)], 0.0)
            vals = [
                ent, ent / np.log2(allowed[rows].sum(1)), p.max(1), p[:, 0], prev,
                p[np.arange(len(q)), q], p @ ctx.special_mask, p @ ctx.punct_mask,
                (p * dist[rows]).sum(1),
            ]  # fmt: skip
            total[m] += [v.mean() for v in vals]
    return total / len(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    ap.add_argument("--loop-sentences", type=int, default=20)
    args = ap.parse_args()
    base = load_sentences("all", progress=False)
    # the built-in sets hold 220 sentences: repeat them to reach --sentences (no cache is used)
    texts = (base * (args.sentences // len(base) + 1))[: args.sentences]
    print(f"{len(texts)} sentences (the {len(base)} built-in ones, repeated as needed)")
    for name in args.models:
        bundle = load_model(name)
        t0 = time.perf_counter()
        records = extract(bundle, texts, cache=False, progress=False)
        t_extract = time.perf_counter() - t0
        t0 = time.perf_counter()
        stats = head_stats(records)
        t_stats = time.perf_counter() - t0
        few = records[: args.loop_sentences]
        t0 = time.perf_counter()
        loop = per_head_loop(few)
        t_loop = (time.perf_counter() - t0) / len(few) * len(records)
        diff = float(np.abs(head_stats(few)[list(STAT_COLUMNS)].to_numpy() - loop).max())
        print(
            f"{bundle.name}: extraction {t_extract:.2f} s, head_stats {t_stats:.2f} s -> "
            f"head_stats / extraction = {t_stats / t_extract:.3f}; per-head loop "
            f"(extrapolated from {len(few)} sentences) {t_loop:.2f} s -> vectorised is "
            f"{t_loop / t_stats:.1f}x faster; max |difference| {diff:.1e}; "
            f"types: {stats['head_type'].astype(str).value_counts().to_dict()}"
        )


if __name__ == "__main__":
    main()
