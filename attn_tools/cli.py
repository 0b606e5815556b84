"""`attn-tools` — the command line used by the README and `make demo`.

Commands:
    models      list the offline model aliases and whether each is available
    sentences   list the built-in sentence sets
    extract     extract attention for a sentence set and print a per-model summary
    score       score every head against every pattern; write the score table
    figures     the poster figures for one or more models
    automate    propose and check programs for chosen heads (filter automation)
    demo        everything above on the offline defaults, into one output folder

Every command only calls public functions of `attn_tools`; it holds no analysis of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "summarise"]

DEFAULT_MODELS = ("minilm", "smollm2")
# Rankings for one pattern use the rows that pattern predicts itself (rows="scored"): on all rows
# a pattern that predicts few of them would rank heads by its self-attention fallback instead.
_TOP_NOTE = "scored on the rows each pattern predicts, share shown"


def _direction(metric: str) -> str:
    from attn_tools.scoring import get_metric

    return get_metric(metric).direction


def summarise(records: Sequence[Any], *, seconds: float | None = None) -> dict[str, Any]:
    """A per-model summary of extracted attention (plain JSON-ready data).

    Reports sizes, and per layer the mean attention entropy (bits) and the mean share of
    attention that goes to the first token (the sink that many heads use as a no-op).
    """
    if not records:
        raise ValueError("no records to summarise")
    first = records[0]
    n_layers, n_heads = first.n_layers, first.n_heads
    entropy = np.zeros(n_layers)
    to_first = np.zeros(n_layers)
    for r in records:
        a = r.attention.astype(np.float64)
        ent = -(a * np.log2(np.where(a > 0, a, 1.0))).sum(-1)  # [L, H, n]
        entropy += ent.mean(axis=(1, 2))
        to_first += a[..., 0].mean(axis=(1, 2))
    entropy /= len(records)
    to_first /= len(records)
    lengths = [r.n_tokens for r in records]
    out = {
        "model": first.model,
        "kind": first.kind,
        "layers": n_layers,
        "heads": n_heads,
        "sentences": len(records),
        "tokens": int(sum(lengths)),
        "tokens_per_sentence": round(float(np.mean(lengths)), 2),
        "truncated": int(sum(r.truncated for r in records)),
        "entropy_bits_per_layer": [round(float(x), 3) for x in entropy],
        "attention_to_first_token_per_layer": [round(float(x), 3) for x in to_first],
    }
    if seconds is not None:
        out["extract_seconds"] = round(seconds, 2)
    return out


def _print_summary(s: dict[str, Any]) -> None:
    print(
        f"\n== {s['model']} ({s['kind']}, {s['layers']} layers × {s['heads']} heads) — "
        f"{s['sentences']} sentences, {s['tokens']} tokens "
        f"({s['tokens_per_sentence']} per sentence)"
        + (f", extracted in {s['extract_seconds']} s" if "extract_seconds" in s else "")
    )
    ent = s["entropy_bits_per_layer"]
    sink = s["attention_to_first_token_per_layer"]
    print("   layer: " + " ".join(f"{i:>5d}" for i in range(len(ent))))
    print(" entropy: " + " ".join(f"{x:5.2f}" for x in ent))
    print(" → first: " + " ".join(f"{x:5.2f}" for x in sink))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _extract(model: str, sentences: str, batch_size: int, progress: bool):
    from attn_tools import extract, load_model, load_sentences

    bundle = load_model(model)
    texts = load_sentences(sentences)
    t0 = time.perf_counter()
    records = extract(bundle, texts, batch_size=batch_size, progress=progress)
    return bundle, records, time.perf_counter() - t0


# ----------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    from attn_tools import list_models

    for row in list_models():
        mark = "yes" if row["available"] else "no "
        print(
            f"{row['alias']:<9} {row['name']:<24} {row['kind']:<8} offline: {mark}  {row['where']}"
        )
    print("Any Hugging Face id (gpt2, bert-base-uncased, ...) or local folder also works.")
    return 0


def cmd_sentences(args: argparse.Namespace) -> int:
    from attn_tools import list_sentence_sets

    for name, what in list_sentence_sets().items():
        print(f"{name:<12} {what}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    summaries = []
    for model in args.model or DEFAULT_MODELS:
        _, records, secs = _extract(model, args.sentences, args.batch_size, not args.quiet)
        s = summarise(records, seconds=secs)
        _print_summary(s)
        summaries.append(s)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summaries, indent=2))
        print(f"\nwrote {out / 'summary.json'}")
    return 0


def _score(records, metric: str, progress: bool):
    """Score tables on all rows (for best fits) and on each pattern's own rows (for rankings).

    The pattern contexts (spaCy parse, alignment) are built once and serve both passes.
    """
    from attn_tools.patterns import build_contexts
    from attn_tools.scoring import score_heads

    contexts = build_contexts(records)
    return tuple(
        score_heads(records, metric=metric, rows=rows, contexts=contexts, progress=progress)
        for rows in ("all", "scored")
    )


def _write_table(scores, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / f"{stem}.csv", out / f"{stem}.parquet"
    scores.to_csv(csv, index=False)
    scores.to_parquet(parquet, index=False)
    return [csv, parquet]


def _print_top_by_family(scores, k: int = 3) -> None:
    from attn_tools.classify import top_heads
    from attn_tools.patterns import get_pattern

    coverage = next(iter((scores.attrs.get("coverage") or {None: {}}).values()))
    by_family: dict[str, list[str]] = {}
    for name in scores["pattern"].unique():
        by_family.setdefault(get_pattern(name).family, []).append(name)
    for family, names in sorted(by_family.items()):
        print(f"  [{family}]")
        for name in names:
            share = coverage.get(name)
            if share == 0:
                print(f"    {name:<24} predicts no row on this model")
                continue
            top = top_heads(scores, name, k=k)
            cells = ", ".join(f"L{r.layer}.H{r.head} ({r.mean:.3f})" for r in top.itertuples())
            rows = f"{share:4.0%}" if share is not None else "    "
            print(f"    {name:<24} {rows}  {cells}")


def cmd_score(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for model in args.model or DEFAULT_MODELS:
        bundle, records, _ = _extract(model, args.sentences, args.batch_size, not args.quiet)
        scores, ranked = _score(records, args.metric, not args.quiet)
        slug = f"{_slug(bundle.name)}_{args.metric}"
        paths = _write_table(scores, out, f"scores_{slug}")
        paths += _write_table(ranked, out, f"scores_{slug}_own_rows")
        note = f"{args.metric}, {_direction(args.metric)}, {_TOP_NOTE}"
        print(f"\n== {bundle.name}: top {args.top} heads per pattern ({note})")
        _print_top_by_family(ranked, k=args.top)
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def _showcase_head(fit) -> tuple[int, int]:
    """The best-fitting head whose pattern is not a plain first-token sink (for the demo heatmap)."""
    pool = fit[~fit["label"].isin(["none", "first_token"])].sort_values("best_score")
    if pool.empty:
        pool = fit.sort_values("best_score")
    return int(pool.iloc[0]["layer"]), int(pool.iloc[0]["head"])


def cmd_figures(args: argparse.Namespace) -> int:
    from attn_tools.classify import best_fit
    from attn_tools.viz import write_figures

    out = Path(args.out)
    for model in args.model or DEFAULT_MODELS:
        bundle, records, _ = _extract(model, args.sentences, args.batch_size, not args.quiet)
        scores, ranked = _score(records, args.metric, not args.quiet)
        fit = best_fit(scores)
        written = write_figures(
            records,
            ranked,
            out / _slug(bundle.name),
            model_name=bundle.name,
            formats=args.format,
            best=fit,
        )
        print(f"{bundle.name}: wrote {len(written)} files under {out / _slug(bundle.name)}")
    return 0


def _parse_heads(text: str) -> list[tuple[int, int]]:
    heads = []
    for part in text.split(","):
        part = part.strip()
        try:
            layer, head = part.split(".")
            heads.append((int(layer), int(head)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"bad head {part!r}: write heads as LAYER.HEAD separated by commas, e.g. 5.3,7.1"
            ) from None
    return heads


def cmd_automate(args: argparse.Namespace) -> int:
    from attn_tools import load_model, load_sentences
    from attn_tools.automate import automate_heads, make_backend

    bundle = load_model(args.model)
    backend_kwargs: dict[str, Any] = {}
    if args.backend == "openai":
        backend_kwargs = {
            "base_url": args.base_url,
            "model": args.llm,
            "api_key_env": args.api_key_env,
        }
    elif args.backend == "local":
        backend_kwargs = {"name": args.llm or "smollm2"}
    library: Any = False if args.no_library else args.library
    result = automate_heads(
        bundle,
        heads=args.heads,
        backend=make_backend(args.backend, **backend_kwargs),
        out=Path(args.out),
        sentences=load_sentences(args.sentences) if args.sentences else None,
        heldout=load_sentences(args.heldout),
        rounds=args.rounds,
        library=library,
        progress=not args.quiet,
    )
    shown = [
        "layer", "head", "status", "heldout_score", "builtin_name", "builtin_score",
        "beats_builtin", "accepted", "hypothesis",
    ]  # fmt: skip
    print(result[[c for c in shown if c in result.columns]].to_string(index=False))
    print(f"\nrun folder: {args.out} (prompts, replies, programs, sandbox results, summary.csv)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Extract, summarise, score and draw for both offline defaults into one folder."""
    from attn_tools.classify import best_fit
    from attn_tools.viz import plot_head, write_figures

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for model in DEFAULT_MODELS:
        bundle, records, secs = _extract(model, args.sentences, args.batch_size, not args.quiet)
        s = summarise(records, seconds=secs)
        _print_summary(s)
        slug = _slug(bundle.name)
        t0 = time.perf_counter()
        scores, ranked = _score(records, "jsd", not args.quiet)
        s["score_seconds"] = round(time.perf_counter() - t0, 2)
        table = _write_table(scores, out, f"scores_{slug}")
        table += _write_table(ranked, out, f"scores_{slug}_own_rows")
        print(
            f"\n   top 3 heads per pattern, by family — {bundle.name} (jsd, lower is better, {_TOP_NOTE})"
        )
        _print_top_by_family(ranked, k=3)
        fit = best_fit(scores)
        layer, head = _showcase_head(fit)
        heatmap = out / f"heatmap_{slug}.png"
        plot_head(records[0], layer, head).savefig(heatmap, dpi=120, bbox_inches="tight")
        # the grid uses the all-rows table; per-pattern figures rank heads on each pattern's rows
        figures = write_figures(records, ranked, out / slug, model_name=bundle.name, best=fit)
        s["files"] = [str(p) for p in [heatmap, *table, *figures]]
        summaries.append(s)
        print(f"   wrote {heatmap}, {len(table)} tables and {len(figures)} figures in {out / slug}")
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    print(f"\nwrote {out / 'summary.json'}")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    # metric choices come from the registry (numpy + scipy only: no torch for --help)
    from attn_tools.scoring.metrics import metric_names

    p = argparse.ArgumentParser(prog="attn-tools", description="Which attention heads do what?")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, *, models: bool = True) -> None:
        if models:
            sp.add_argument("--model", action="append", help="alias, HF id or folder (repeatable)")
        sp.add_argument("--sentences", default="all", help="built-in set or file (default: all)")
        sp.add_argument("--batch-size", type=int, default=16)
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("models", help="list offline model aliases").set_defaults(fn=cmd_models)
    sub.add_parser("sentences", help="list built-in sentence sets").set_defaults(fn=cmd_sentences)

    sp = sub.add_parser("extract", help="extract attention and print a summary")
    common(sp)
    sp.add_argument("--out", help="folder for summary.json")
    sp.set_defaults(fn=cmd_extract)

    sp = sub.add_parser("score", help="score all heads against all patterns")
    common(sp)
    sp.add_argument("--metric", default="jsd", choices=metric_names())
    sp.add_argument("--top", type=int, default=3)
    sp.add_argument("--out", default="outputs")
    sp.set_defaults(fn=cmd_score)

    sp = sub.add_parser("figures", help="poster figures per model")
    common(sp)
    sp.add_argument("--metric", default="jsd", choices=metric_names(ranks_patterns=True))
    sp.add_argument("--format", action="append", choices=["png", "svg", "pdf"])
    sp.add_argument("--out", default="outputs")
    sp.set_defaults(fn=cmd_figures)

    sp = sub.add_parser("automate", help="propose and check programs for chosen heads")
    sp.add_argument("--model", default="smollm2")
    sp.add_argument("--heads", type=_parse_heads, required=True, help="LAYER.HEAD,... e.g. 5.3,7.1")
    sp.add_argument("--backend", choices=["search", "local", "openai"], default="search")
    sp.add_argument(
        "--sentences",
        default=None,
        help="sentences the backend sees (default: every 8th built-in analysis sentence)",
    )
    sp.add_argument("--heldout", default="heldout", help="sentences used only to validate")
    sp.add_argument("--rounds", type=int, default=2, help="refinement rounds (hard bound)")
    sp.add_argument("--base-url", default="https://api.openai.com/v1")
    sp.add_argument("--llm", default=None, help="chat model name for the local/openai backends")
    sp.add_argument("--api-key-env", default="OPENAI_API_KEY")
    sp.add_argument("--out", required=True, help="run folder (resumable)")
    sp.add_argument("--library", default=None, help="user pattern library folder (default: cache)")
    sp.add_argument("--no-library", action="store_true", help="do not add accepted programs")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(fn=cmd_automate)

    sp = sub.add_parser("demo", help="the README demo on the offline defaults")
    common(sp, models=False)
    sp.add_argument("--out", default="outputs")
    sp.set_defaults(fn=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "format", None) is None and hasattr(args, "format"):
        args.format = ["png"]
    try:
        return int(args.fn(args) or 0)
    except ValueError as exc:  # bad input (incl. model/pattern errors): one clear line
        print(f"attn-tools {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
