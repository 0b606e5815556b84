"""GPU check: load, extract, score and ablate on CUDA; compare every step with the CPU.

For each model (default the offline packs ``minilm`` and ``smollm2``; any alias, Hugging Face id
or local folder with ``--models``) the script loads the model twice, once on the CPU (the
reference) and once on ``--device`` (default ``cuda``; ``--device-map auto`` loads that side with
accelerate's big-model placement instead), then runs on both:

1. ``load``: the two fingerprints must agree (the same weights were read);
2. ``extract``: attention of ``--n`` sentences; max |diff| over every layer, head and entry;
3. ``score``: `score_heads` (all patterns, ``jsd``) on each side's attention; max |diff| of the
   mean column;
4. ``ablate``: `ablate_heads` (zero ablation) of the first and last layer's heads on
   ``--ablate-n`` sentences; max |diff| of ``delta_loss``.

Each step passes when its max |diff| is at most ``--tol`` (default 1e-4). Throughput is
sentences/s of extraction on each side, timed over ``--repeats`` passes after a warm-up, and
their ratio (the CPU, measured in the same run, is the reference).

Without a CUDA device the script says so and runs the whole check with ``--device cpu`` (a CPU
self-comparison, so every code path runs), then exits 0; ``--device-map`` then places the model
on the CPU (and disk) only. Exit status: 0 when every step passed,
1 when a step exceeded the tolerance. ``--json PATH`` also writes the numbers.

Run: ``python benchmarks/gpu_check.py`` (GPU box), or e.g.
``python benchmarks/gpu_check.py --models gpt2 ./my-model --device cuda:1 --n 64``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attn_tools import extract, load_model, load_sentences
from attn_tools.interventions import ablate_heads
from attn_tools.scoring import score_heads


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _throughput(bundle: Any, sentences: list[str], batch_size: int, repeats: int) -> float:
    """Sentences per second of extraction (no cache), best of ``repeats`` after a warm-up."""
    extract(bundle, sentences[:batch_size], batch_size=batch_size, cache=False, progress=False)
    best = float("inf")
    for _ in range(repeats):
        _sync(bundle.device)
        t0 = time.perf_counter()
        extract(bundle, sentences, batch_size=batch_size, cache=False, progress=False)
        _sync(bundle.device)
        best = min(best, time.perf_counter() - t0)
    return len(sentences) / best


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b), initial=0.0))


def check_model(name: str, device: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every step for one model; a dict of max |diff| per step and the throughputs."""
    sentences = load_sentences(args.sentences)[: args.n]
    ref = load_model(name, device="cpu")
    if args.device_map:
        other = load_model(name, device_map=args.device_map)
    else:
        other = load_model(name, device=device)
    steps: dict[str, float] = {}
    steps["load"] = 0.0 if ref.fingerprint == other.fingerprint else float("inf")

    a = extract(ref, sentences, batch_size=args.batch_size, cache=False, progress=False)
    b = extract(other, sentences, batch_size=args.batch_size, cache=False, progress=False)
    steps["extract"] = max(_max_diff(x.attention, y.attention) for x, y in zip(a, b))

    sa, sb = (score_heads(recs, metric="jsd") for recs in (a, b))
    steps["score"] = _max_diff(sa["mean"].to_numpy(), sb["mean"].to_numpy())

    edge = sorted({0, ref.n_layers - 1})
    heads = [(layer, h) for layer in edge for h in range(ref.n_heads)]
    few = sentences[: args.ablate_n]
    da, db = (ablate_heads(bundle, few, heads, method="zero") for bundle in (ref, other))
    steps["ablate"] = _max_diff(da["delta_loss"].to_numpy(), db["delta_loss"].to_numpy())

    cpu_rate = _throughput(ref, sentences, args.batch_size, args.repeats)
    other_rate = _throughput(other, sentences, args.batch_size, args.repeats)
    return {
        "model": ref.name,
        "layers": ref.n_layers,
        "heads": ref.n_heads,
        "device": str(other.device),
        "device_map": getattr(other.model, "hf_device_map", None) if args.device_map else None,
        "sentences": len(sentences),
        "max_abs_diff": steps,
        "passed": all(v <= args.tol for v in steps.values()),
        "cpu_sentences_per_s": round(cpu_rate, 2),
        "device_sentences_per_s": round(other_rate, 2),
        "speedup": round(other_rate / cpu_rate, 3),
    }


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["minilm", "smollm2"],
                    help="aliases, Hugging Face ids or local model folders")  # fmt: skip
    ap.add_argument("--device", default="cuda", help="the device compared with the CPU")
    ap.add_argument("--device-map", default=None,
                    help="load the compared side with this accelerate device_map (e.g. auto)")  # fmt: skip
    ap.add_argument("--sentences", default="all", help="built-in set, file or hf: dataset")
    ap.add_argument("--n", type=int, default=64, help="sentences to extract and score")
    ap.add_argument("--ablate-n", type=int, default=4, help="sentences to ablate on")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes (best is kept)")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest allowed max |diff|")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device is present (torch {torch.__version__}, "
            "torch.cuda.is_available() is False). Running the CPU self-comparison "
            "(--device cpu) so every step still runs; rerun on a machine with a GPU for the "
            "real check."
        )
        device = "cpu"
    compared = f"device_map={args.device_map}" if args.device_map else device
    print(f"reference: cpu | compared: {compared} | tolerance {args.tol:g}")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    results = []
    for name in args.models:
        row = check_model(name, device, args)
        results.append(row)
        diffs = " | ".join(f"{k} {v:.1e}" for k, v in row["max_abs_diff"].items())
        print(
            f"{row['model']:>24} on {row['device']}: max |diff| {diffs} -> "
            f"{'PASS' if row['passed'] else 'FAIL'} | extract: cpu "
            f"{row['cpu_sentences_per_s']:.1f} sent/s, {row['device']} "
            f"{row['device_sentences_per_s']:.1f} sent/s, ratio {row['speedup']:.2f}x"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
