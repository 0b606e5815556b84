"""`attn-tools` — the command line used by the README and `make demo`.

Commands:
    models      list the offline model aliases and whether each is available
    sentences   list the built-in sentence sets
    extract     extract attention for a sentence set and print a per-model summary
    score       score every head against every pattern; write the score table
    figures     the poster figures for one or more models
    automate    propose and check programs for chosen heads (filter automation)
    demo        everything above on the offline defaults, into one output folder
    hints       does a hint flip multiple-choice answers, and which heads read it?

This module parses arguments and calls public functions (`attn_tools.report` for summaries, the
two score passes and the figure set); it holds no analysis. Heavy libraries (torch, transformers,
spaCy, matplotlib, pandas) are imported inside the commands, so ``attn-tools --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

DEFAULT_MODELS = ("minilm", "smollm2")


class _MetricChoices:
    """The registered metric names, read from the registry only when a command's metric is
    checked or its help is shown (so ``attn-tools --help`` imports neither numpy nor scipy)."""

    def __init__(self, *, ranks_patterns: bool | None = None) -> None:
        self.ranks_patterns = ranks_patterns

    def _names(self) -> list[str]:
        from attn_tools.scoring.metrics import metric_names

        return metric_names(ranks_patterns=self.ranks_patterns)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def _direction(metric: str) -> str:
    from attn_tools.scoring import get_metric

    return get_metric(metric).direction


def _extract(model: str, sentences: str, batch_size: int, progress: bool):
    from attn_tools.data import load_sentences
    from attn_tools.extract import extract
    from attn_tools.models import load_model

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
    from attn_tools.report import format_summary, summarise

    summaries = []
    for model in args.model or DEFAULT_MODELS:
        _, records, secs = _extract(model, args.sentences, args.batch_size, not args.quiet)
        s = summarise(records, seconds=secs)
        print(format_summary(s))
        summaries.append(s)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summaries, indent=2))
        print(f"\nwrote {out / 'summary.json'}")
    return 0


def _drop(args: argparse.Namespace) -> str | None:
    value = getattr(args, "drop_keys", "none")
    return None if value in (None, "none") else value


def _drop_suffix(args: argparse.Namespace) -> str:
    drop = _drop(args)
    return "" if drop is None else "_drop-" + drop.replace("+", "-")


def cmd_score(args: argparse.Namespace) -> int:
    from attn_tools.report import (
        RANKING_NOTE,
        file_slug,
        score_tables,
        top_heads_by_family,
        write_table,
    )  # fmt: skip

    out = Path(args.out)
    for model in args.model or DEFAULT_MODELS:
        bundle, records, _ = _extract(model, args.sentences, args.batch_size, not args.quiet)
        scores, ranked = score_tables(
            records, metric=args.metric, drop_keys=_drop(args), progress=not args.quiet
        )
        slug = f"{file_slug(bundle.name)}_{args.metric}" + _drop_suffix(args)
        paths = write_table(scores, out, f"scores_{slug}")
        paths += write_table(ranked, out, f"scores_{slug}_own_rows")
        note = f"{args.metric}, {_direction(args.metric)}, {RANKING_NOTE}"
        print(f"\n== {bundle.name}: top {args.top} heads per pattern ({note})")
        print(top_heads_by_family(ranked, k=args.top))
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from attn_tools.classify import label_heads
    from attn_tools.report import file_slug, score_tables, write_figures

    out = Path(args.out)
    for model in args.model or DEFAULT_MODELS:
        bundle, records, _ = _extract(model, args.sentences, args.batch_size, not args.quiet)
        scores, ranked = score_tables(
            records, metric=args.metric, drop_keys=_drop(args), progress=not args.quiet
        )
        folder = out / (file_slug(bundle.name) + _drop_suffix(args))
        # the grid uses the all-rows table; per-pattern figures rank heads on each pattern's rows
        written = write_figures(
            records, ranked, folder, model_name=bundle.name, formats=args.format,
            shared_range=args.shared_range,
            best=label_heads(records, metric=args.metric, drop_keys=_drop(args)),
        )  # fmt: skip
        print(f"{bundle.name}: wrote {len(written)} files under {folder}")
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
        metric=args.metric,
        sandbox_limits={"unsafe_no_os_sandbox": True} if args.unsafe_no_os_sandbox else None,
        progress=not args.quiet,
    )
    shown = [
        "layer", "head", "status", "heldout_score", "builtin_name", "builtin_score",
        "beats_builtin", "smoothed_score", "beats_smoothed", "mix_score", "beats_mix",
        "accepted", "hypothesis",
    ]  # fmt: skip
    print(result[[c for c in shown if c in result.columns]].to_string(index=False))
    print(f"\nrun folder: {args.out} (prompts, replies, programs, sandbox results, summary.csv)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Extract, summarise, score and draw for both offline defaults into one folder."""
    from attn_tools import report
    from attn_tools.classify import label_heads
    from attn_tools.viz import plot_head

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for model in DEFAULT_MODELS:
        bundle, records, secs = _extract(model, args.sentences, args.batch_size, not args.quiet)
        s = report.summarise(records, seconds=secs)
        print(report.format_summary(s))
        slug = report.file_slug(bundle.name)
        t0 = time.perf_counter()
        scores, ranked = report.score_tables(
            records, drop_keys=_drop(args), progress=not args.quiet
        )
        s["score_seconds"] = round(time.perf_counter() - t0, 2)
        table = report.write_table(scores, out, f"scores_{slug}")
        table += report.write_table(ranked, out, f"scores_{slug}_own_rows")
        print(f"\n   top 3 heads per pattern, by family — {bundle.name} "
              f"(jsd, {_direction('jsd')}, {report.RANKING_NOTE})")  # fmt: skip
        print(report.top_heads_by_family(ranked, k=3))
        # the poster's labels use the calibrated rule (bootstrap intervals over sentences)
        fit = label_heads(records, drop_keys=_drop(args))
        layer, head = report.showcase_head(fit)
        heatmap = out / f"heatmap_{slug}.png"
        plot_head(records[0], layer, head).savefig(heatmap, dpi=120, bbox_inches="tight")
        # the grid uses the all-rows table; per-pattern figures rank heads on each pattern's rows
        figures = report.write_figures(
            records, ranked, out / slug, model_name=bundle.name, best=fit
        )
        if _drop(args) is None:
            # the same question with the first-token sink removed: what heads do besides it
            figures.append(report.write_sink_free_grid(records, out / slug, model_name=bundle.name))
        s["files"] = [str(p) for p in [heatmap, *table, *figures]]
        summaries.append(s)
        print(f"   wrote {heatmap}, {len(table)} tables and {len(figures)} figures in {out / slug}")
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    print(f"\nwrote {out / 'summary.json'}")
    return 0


def cmd_hints(args: argparse.Namespace) -> int:
    from attn_tools.hints.run import write_hint_run

    try:
        result, paths = write_hint_run(
            args.model, args.items, args.out, hint=args.hint, target=args.target, cot=args.cot,
            limit=args.limit, seed=args.seed, answer_from=args.answer_from,
            batch_size=args.batch_size,
        )  # fmt: skip
    except FileNotFoundError as exc:  # an item file or the MMLU wheel is missing: say how to fix
        print(f"attn-tools hints: error: {exc}", file=sys.stderr)
        return 2
    row = result.summary.iloc[0]
    print(
        f"{row['model']}: {row['n_items']} items, accuracy {row['accuracy_without']:.2f} without "
        f"/ {row['accuracy_with']:.2f} with the hint; flip-to-hint {row['flip_to_hint_rate']:.2f} "
        f"vs neutral {row['neutral_flip_to_hint_rate']:.2f} (n={row['n_eligible']})"
    )
    for path in paths:
        print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attn-tools", description="Which attention heads do what?")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, *, models: bool = True) -> None:
        if models:
            sp.add_argument("--model", action="append", help="alias, HF id or folder (repeatable)")
        sp.add_argument("--sentences", default="all", help="built-in set or file (default: all)")
        sp.add_argument("--batch-size", type=int, default=16)
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    def drop_keys(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--drop-keys",
            choices=["none", "first", "special", "special+punct"],
            default="none",
            help="remove sink keys before scoring (first = BOS/[CLS]; special adds [SEP]/EOS; "
            "special+punct adds punctuation) to ask what heads do besides the sink",
        )

    sub.add_parser("models", help="list offline model aliases").set_defaults(fn=cmd_models)
    sub.add_parser("sentences", help="list built-in sentence sets").set_defaults(fn=cmd_sentences)

    sp = sub.add_parser("extract", help="extract attention and print a summary")
    common(sp)
    sp.add_argument("--out", help="folder for summary.json")
    sp.set_defaults(fn=cmd_extract)

    sp = sub.add_parser("score", help="score all heads against all patterns")
    common(sp)
    sp.add_argument(
        "--metric",
        default="jsd",
        choices=_MetricChoices(),
        metavar="METRIC",
        help="one of %(choices)s (default: %(default)s)",
    )
    drop_keys(sp)
    sp.add_argument("--top", type=int, default=3)
    sp.add_argument("--out", default="outputs")
    sp.set_defaults(fn=cmd_score)

    sp = sub.add_parser("figures", help="poster figures per model")
    common(sp)
    sp.add_argument(
        "--metric",
        default="jsd",
        choices=_MetricChoices(ranks_patterns=True),
        metavar="METRIC",
        help="a metric that ranks patterns against each other: %(choices)s (default: %(default)s)",
    )
    drop_keys(sp)
    sp.add_argument(
        "--shared-range",
        action="store_true",
        help="one colour range for every per-pattern score map (compare maps by colour)",
    )
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
    sp.add_argument(
        "--metric",
        default="jsd",
        choices=_MetricChoices(ranks_patterns=True),
        metavar="METRIC",
        help="how programs and built-ins are compared: %(choices)s (default: %(default)s)",
    )
    sp.add_argument(
        "--unsafe-no-os-sandbox",
        action="store_true",
        help="DANGEROUS: run LLM-written programs without the bubblewrap jail (only where "
        "bubblewrap cannot be installed; the program could then read or change your files)",
    )
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(fn=cmd_automate)

    sp = sub.add_parser("demo", help="the README demo on the offline defaults")
    common(sp, models=False)
    drop_keys(sp)
    sp.add_argument("--out", default="outputs")
    sp.set_defaults(fn=cmd_demo)

    sp = sub.add_parser("hints", help="hint evaluation on multiple-choice items")
    sp.add_argument("--model", default="smollm2", help="causal model alias, HF id or folder")
    sp.add_argument("--items", default="builtin", help="builtin, mmlu:<topic>, or a .jsonl file")
    sp.add_argument(
        "--hint", default="sycophancy", help="sycophancy, metadata, few-shot, neutral or a template"
    )
    sp.add_argument("--target", choices=["wrong", "random"], default="wrong")
    sp.add_argument("--cot", action="store_true", help="answers from greedy reasoning")
    sp.add_argument(
        "--answer-from", choices=["letter", "text"], default="letter", help="scored continuation"
    )
    sp.add_argument("--limit", type=int, default=None, help="first N items only")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--batch-size", type=int, default=8)
    sp.add_argument("--out", default="outputs/hints")
    sp.set_defaults(fn=cmd_hints)
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
    except RuntimeError as exc:
        if type(exc).__name__ != "SandboxUnavailable":  # no jail for LLM-written code
            raise
        print(f"attn-tools {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
