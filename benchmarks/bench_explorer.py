"""Explorer redraw after a head-slider move vs rebuilding the figure, both default models.

The redraw repaints the two heatmaps and their titles over the cached background (attention and
predictions already cached); the reference rebuilds the same two-panel figure from scratch (layout,
tick labels, colour bar) and renders it, which is what a naive explorer does on every move. Prints
the median milliseconds of each, their ratio, and the largest pixel difference between the two
pictures of the same state (0 means the fast path draws exactly what a rebuild draws). Also times
the second tab (per-pattern bars + best-fit grid). Run: `python benchmarks/bench_explorer.py`.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image

from attn_tools import extract, load_model, load_sentences
from attn_tools.explorer import explore


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    ap.add_argument("--sentences", type=int, default=12)
    ap.add_argument("--moves", type=int, default=40)
    args = ap.parse_args()
    sentences = load_sentences("story")[: args.sentences]
    for name in args.models:
        bundle = load_model(name)
        records = extract(bundle, sentences, progress=False)  # cached after the first run
        app = explore(bundle, records=records)
        app.sentence.value = 1
        n_heads = bundle.n_heads
        # warm the prediction cache for the pattern shown, as a user's first view does
        app.head.value = 1
        redraw = []
        for i in range(args.moves):
            app.head.value = (i + 2) % n_heads
            redraw.append(app.last_redraw_ms)
        rebuild = []
        for _ in range(max(5, args.moves // 4)):
            t0 = time.perf_counter()
            app._build_view(app.sentence.value)
            app._draw_view()
            rebuild.append((time.perf_counter() - t0) * 1000)
        # the same state drawn both ways
        fast = _pixels(app.image.value)
        app.head.value = (app.head.value + 1) % n_heads
        app.head.value = (app.head.value - 1) % n_heads
        fast = _pixels(app.image.value)
        app._build_view(app.sentence.value)
        app._draw_view()
        slow = _pixels(app.image.value)
        diff = int(np.abs(fast - slow).max()) if fast.shape == slow.shape else -1
        app.tabs.selected_index = 1  # builds the scores tab once (scores all patterns)
        tab2 = []
        for i in range(10):
            app.head.value = (i + 2) % n_heads
            tab2.append(app.last_redraw_ms)
        med_r, med_b = statistics.median(redraw), statistics.median(rebuild)
        print(
            f"{bundle.name:>24} ({len(records[1].tokens)} tokens, {len(app.state.patterns)} patterns): "
            f"slider redraw {med_r:6.1f} ms (max {max(redraw):6.1f}) | rebuild {med_b:6.1f} ms | "
            f"ratio {med_b / med_r:5.1f}x | max pixel diff {diff} | "
            f"scores tab redraw {statistics.median(tab2):6.1f} ms"
        )


if __name__ == "__main__":
    main()
