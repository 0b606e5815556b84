"""Benchmark: the vectorised scoring engine against the earlier notebooks' scipy loop.

For both default models, on the same attention (extracted once, held in memory) of ≥ 100
built-in sentences and every built-in pattern, it times

* the engine: ``score_heads(records)`` (all heads × all patterns per sentence in one pass,
  pattern predictions included, contexts built from the spaCy parse cache), and
* the reference method of earlier research notebooks: a Python loop over sentences × heads ×
  patterns calling ``scipy.spatial.distance.jensenshannon`` row by row, then averaging rows.

The reference is slow (hours for the full grid), so it runs on a random sample of
(sentence, head, pattern) units; its time per unit is measured and extrapolated to the full grid,
and the output says so. Its predictions are computed before its clock starts (this favours the
reference). The largest absolute difference between the two is taken over the sampled units.

It also prints scoring time as a fraction of extraction time (uncached forward passes) for the
same sentences. Targets: ≥ 300× faster, differences ≤ 1e-6, scoring ≤ 25 % of extraction.

Run: ``python benchmarks/bench_scoring.py [--sentences 120] [--units 3000]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.spatial.distance import jensenshannon

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from attn_tools import extract, load_model, load_sentences, parse  # noqa: E402
from attn_tools.patterns import build_contexts, list_patterns, predict_many  # noqa: E402
from attn_tools.scoring import score_heads  # noqa: E402


def reference_units(records, contexts, patterns, units):
    """The notebook method on sampled units: scipy row by row.

    Returns ``(seconds, {unit: score}, rows where scipy returned NaN)``.
    """
    by_sentence: dict[int, list[tuple[int, int, int]]] = {}
    for s, layer, head, p in units:
        by_sentence.setdefault(s, []).append((layer, head, p))
    preds = {s: predict_many(patterns, contexts[s])[0] for s in by_sentence}
    rows = {}
    start = time.perf_counter()
    for s, todo in by_sentence.items():
        att = records[s].attention
        pred = preds[s]
        for layer, head, p in todo:
            a = att[layer, head]
            rows[(s, layer, head, p)] = [
                jensenshannon(a[q], pred[p, q], base=2) for q in range(len(a))
            ]
    elapsed = time.perf_counter() - start
    # scipy does not clamp: for a row equal to the prediction up to rounding, the divergence can
    # come out a hair below 0 and its square root NaN. Those rows count as 0 (and are reported).
    nans = sum(int(np.isnan(r).sum()) for r in rows.values())
    scores = {unit: float(np.mean(np.nan_to_num(r, nan=0.0))) for unit, r in rows.items()}
    return elapsed, scores, nans


def bench_model(alias: str, sentences: list[str], n_units: int, seed: int) -> dict:
    bundle = load_model(alias)
    extract(bundle, sentences[:2], cache=False, progress=False)  # warm-up (threads, kernels)
    t0 = time.perf_counter()
    records = extract(bundle, sentences, cache=False, progress=False)
    t_extract = time.perf_counter() - t0

    patterns = list_patterns()
    build_contexts(records[:2])  # loads spaCy once; parses come from the cache after this
    t0 = time.perf_counter()
    table = score_heads(records, patterns, per_sentence=True)
    t_engine = time.perf_counter() - t0

    L, H = records[0].attention.shape[:2]
    S, P = len(records), len(patterns)
    rng = np.random.default_rng(seed)
    picks = rng.choice(S * L * H * P, size=min(n_units, S * L * H * P), replace=False)
    units = [tuple(int(x) for x in np.unravel_index(i, (S, L, H, P))) for i in np.sort(picks)]
    contexts = build_contexts(records)
    t_ref, ref, nans = reference_units(records, contexts, patterns, units)

    per = np.stack(table["per_sentence"].to_numpy()).reshape(L, H, P, S)
    # np.max, not max(): a NaN on either side must show up, not be skipped
    diff = float(np.max(np.abs([per[la, h, p, s] - v for (s, la, h, p), v in ref.items()])))
    per_unit = t_ref / len(units)
    full_ref = per_unit * S * L * H * P
    return {
        "model": bundle.name,
        "sentences": S,
        "heads": L * H,
        "patterns": P,
        "units": S * L * H * P,
        "sampled": len(units),
        "t_extract": t_extract,
        "t_engine": t_engine,
        "t_ref_sample": t_ref,
        "per_unit": per_unit,
        "full_ref": full_ref,
        "ratio": full_ref / t_engine,
        "max_diff": diff,
        "scipy_nan_rows": nans,
        "tokens": float(np.mean([r.n_tokens for r in records])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=120, help="built-in sentences (≥ 100)")
    ap.add_argument("--units", type=int, default=3000, help="reference units sampled per model")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sentences = load_sentences("all")[: args.sentences]
    t0 = time.perf_counter()
    parse(sentences, cache=False)
    t_parse = time.perf_counter() - t0
    parse(sentences)  # fill the cache the engine reads
    print(
        f"bench_scoring: {len(sentences)} built-in sentences (load_sentences('all')), every "
        f"built-in pattern, jsd base 2, rows='all'"
    )
    results = [
        bench_model(alias, sentences, args.units, args.seed) for alias in ("minilm", "smollm2")
    ]
    for r in results:
        print(
            f"\n{r['model']}: {r['sentences']} sentences × {r['heads']} heads × {r['patterns']} "
            f"patterns = {r['units']:,} (sentence, head, pattern) units, {r['tokens']:.1f} tokens "
            "per sentence on average"
        )
        print(
            f"  engine (score_heads, all units)           {r['t_engine']:8.2f} s   "
            f"({r['t_engine'] / r['units'] * 1e6:.2f} µs per unit)"
        )
        print(
            f"  reference (scipy loop), measured on {r['sampled']:,} random units: "
            f"{r['t_ref_sample']:.2f} s = {r['per_unit'] * 1e3:.3f} ms per unit"
        )
        print(
            f"  reference extrapolated to all units       {r['full_ref']:8.1f} s   (per-unit time × "
            "units)"
        )
        print(f"  ratio (reference / engine)                {r['ratio']:8.0f}×")
        print(
            f"  largest |engine − reference| on sampled   {r['max_diff']:.2e}   (scipy NaN rows, "
            f"counted as 0: {r['scipy_nan_rows']})"
        )
        print(
            f"  extraction (uncached forward passes)      {r['t_extract']:8.2f} s   → scoring is "
            f"{100 * r['t_engine'] / r['t_extract']:.1f} % of extraction"
        )
    engine = sum(r["t_engine"] for r in results)
    full = sum(r["full_ref"] for r in results)
    extraction = sum(r["t_extract"] for r in results)
    worst = max(r["max_diff"] for r in results)
    print("\nboth models:")
    print(
        f"  ratio {full / engine:.0f}× (target ≥ 300×; reference extrapolated from "
        f"{sum(r['sampled'] for r in results):,} measured units)"
    )
    print(f"  largest absolute difference {worst:.2e} (target ≤ 1e-6)")
    print(
        f"  scoring {engine:.2f} s = {100 * engine / extraction:.1f} % of extraction "
        f"{extraction:.2f} s (target ≤ 25 %)"
    )
    print(
        f"  (spaCy parse of the sentences from scratch: {t_parse:.2f} s, once for all models; "
        "scoring reads it from the parse cache)"
    )


if __name__ == "__main__":
    main()
