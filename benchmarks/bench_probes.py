"""Permutation statistics vs the forward passes they analyse, on the built-in sentiment set.

Two ratios, each against a reference measured in the same run:

1. the sentiment probe's statistics (1,000 label permutations + 1,000 bootstrap resamples over
   all layers × heads, plus the held-out halves) against the forward passes that produced the
   features (extraction without cache) — the statistics should cost far less (ratio ≪ 1);
2. the vectorised permutation test against one test per head in a Python loop, with the largest
   difference between their p-values (0: the same permutations are drawn).

Run: ``python benchmarks/bench_probes.py [--model minilm] [--permutations 1000]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from attn_tools import extract, load_model
from attn_tools.probes import load_sentiment
from attn_tools.probes.sentiment import SENTIMENT_KEYWORDS, sentiment_features
from attn_tools.probes.stats import correlation_test, heads_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    bundle = load_model(args.model, device=args.device)
    texts, labels = load_sentiment()
    extract(bundle, texts[:4], cache=False, progress=False)  # warm-up
    t0 = time.perf_counter()
    records = extract(bundle, texts, cache=False, progress=False)
    t_forward = time.perf_counter() - t0
    feats, used = sentiment_features(records, SENTIMENT_KEYWORDS)
    x = feats.reshape(len(used), -1)
    y = np.asarray(labels, dtype=float)[used]
    print(
        f"{bundle.name} on {bundle.device}: {x.shape[1]} heads, {len(y)} texts, "
        f"{args.permutations} permutations"
    )
    t0 = time.perf_counter()
    heads_table(
        x, labels=y, model=bundle.name, n_layers=bundle.n_layers, n_heads=bundle.n_heads,
        probe="sentiment", statistic="r", n_permutations=args.permutations,
        n_bootstrap=args.permutations,
    )  # fmt: skip
    t_stats = time.perf_counter() - t0
    print(f"forward passes (extraction, no cache): {t_forward:8.3f} s")
    print(f"statistics (perm + bootstrap + halves): {t_stats:8.3f} s")
    print(f"ratio statistics / forward: {t_stats / t_forward:.4f}")

    t0 = time.perf_counter()
    vec = correlation_test(x, y, n_permutations=args.permutations, n_bootstrap=0, seed=0)
    t_vec = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = np.array(
        [
            correlation_test(
                x[:, f], y, n_permutations=args.permutations, n_bootstrap=0, seed=0
            ).p_value[0]
            for f in range(x.shape[1])
        ]
    )
    t_loop = time.perf_counter() - t0
    print(f"permutation test, vectorised over heads: {t_vec:8.4f} s; one head at a time: "
          f"{t_loop:8.4f} s; speed-up {t_loop / t_vec:.1f}×; "
          f"max |Δp| = {np.max(np.abs(vec.p_value - loop)):.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
