"""Batched head ablation vs one forward pass per head, on the full layers × heads matrix.

The reference is the same `ablate_heads` with ``variants_per_forward=1`` (one forward per head
per sentence), measured in the same run. Prints both times, their ratio and the largest absolute
difference in ΔLoss. Run: ``python benchmarks/bench_ablation.py [--model smollm2] [--n 4]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from attn_tools import load_model, load_sentences
from attn_tools.interventions import ablate_heads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--sentences", default="story")
    ap.add_argument("--n", type=int, default=4, help="number of sentences")
    ap.add_argument("--method", default="zero", choices=["zero", "mean"])
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    bundle = load_model(args.model, device=args.device)
    sentences = load_sentences(args.sentences)[: args.n]
    print(
        f"{bundle.name} on {bundle.device}: {bundle.n_layers} layers × {bundle.n_heads} heads, "
        f"{len(sentences)} sentences, method={args.method}"
    )
    ablate_heads(bundle, sentences[:1], [(0, 0)], method=args.method)  # warm-up
    t0 = time.perf_counter()
    batched = ablate_heads(bundle, sentences, "all", method=args.method)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop = ablate_heads(bundle, sentences, "all", method=args.method, variants_per_forward=1)
    t_loop = time.perf_counter() - t0
    diff = float(np.max(np.abs(batched.delta_loss.to_numpy() - loop.delta_loss.to_numpy())))
    print(f"one forward per head: {t_loop:8.2f} s")
    print(f"batched             : {t_batched:8.2f} s")
    print(f"speed-up            : {t_loop / t_batched:8.2f}x (target >= 3x)")
    print(f"max |ΔLoss diff|    : {diff:.2e} (target <= 1e-5)")


if __name__ == "__main__":
    main()
