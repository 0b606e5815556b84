"""Vectorised `dependency_accuracy` vs a plain loop over heads and arcs, measured in one run.

The reference pools each head's attention to words on its own and walks the arcs one at a time
in Python (one head, one sentence, one arc per step), as a first implementation of Clark et al.
(2019)'s definition would. Both start from the same records and parses (parsing and extraction
are not timed). Prints both times, their ratio and the largest difference between the two
accuracy tables. Run: ``python benchmarks/bench_syntax.py [--model minilm] [--n 60]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from attn_tools import extract, load_model, load_sentences
from attn_tools.syntax import dependency_accuracy
from attn_tools.text import align, parse, pooling_matrices


def plain_loop(records, parses) -> pd.DataFrame:
    """Per head, per sentence, per arc: the word-level argmax written out."""
    L, H = records[0].attention.shape[:2]
    counts: dict[tuple[str, str, int, int], list[int]] = {}
    for rec, p in zip(records, parses):
        al = align(rec, p)
        sum_to, mean_from = pooling_matrices(al)
        words = [i for i, (_, ws) in enumerate(al.units) if ws]
        unit = {w: words.index(i) for i, (_, ws) in enumerate(al.units) for w in ws}
        arcs = [
            (unit[d], unit[w.head], w.dep)
            for d, w in enumerate(p.words)
            if w.dep != "ROOT" and d in unit and w.head in unit and unit[d] != unit[w.head]
        ]
        for layer in range(L):
            for head in range(H):
                W = (mean_from @ rec.attention[layer, head].astype(np.float64) @ sum_to.T)[
                    np.ix_(words, words)
                ]
                for d, h, rel in arcs:
                    for name, values in (("dep->head", W[d]), ("head->dep", W[:, d])):
                        cand = values.copy()
                        cand[d] = -np.inf
                        best = int(np.argmax(cand))
                        c = counts.setdefault((rel, name, layer, head), [0, 0])
                        c[0] += int(cand[best] > 0 and best == h)
                        c[1] += 1
    return pd.DataFrame(
        [(*k, v[0], v[1]) for k, v in counts.items()],
        columns=["relation", "direction", "layer", "head", "n_correct", "n_arcs"],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--sentences", default="syntax")
    ap.add_argument("--n", type=int, default=60, help="number of sentences")
    args = ap.parse_args()
    bundle = load_model(args.model)
    sentences = load_sentences(args.sentences)[: args.n]
    records = extract(bundle, sentences, progress=False)
    parses = parse(sentences)
    print(
        f"{bundle.name}: {bundle.n_layers} layers × {bundle.n_heads} heads, {len(records)} sentences"
    )
    dependency_accuracy(records[:2], parses=parses[:2])  # warm-up
    t0 = time.perf_counter()
    fast = dependency_accuracy(records, parses=parses)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = plain_loop(records, parses)
    t_slow = time.perf_counter() - t0
    both = slow.merge(fast, on=["relation", "direction", "layer", "head"], suffixes=("_loop", ""))
    diff = int(np.abs(both["n_correct_loop"] - both["n_correct"]).max())
    arcs = int(fast.drop_duplicates("relation")["n_arcs"].sum())
    print(f"arcs scored          : {arcs} × {2 * bundle.n_layers * bundle.n_heads} head-directions")
    print(f"plain loop           : {t_slow:8.3f} s")
    print(f"dependency_accuracy  : {t_fast:8.3f} s")
    print(f"speed-up             : {t_slow / t_fast:8.1f}x")
    print(f"rows compared        : {len(both)} of {len(fast)}")
    print(f"max |n_correct diff| : {diff} (target 0)")


if __name__ == "__main__":
    main()
