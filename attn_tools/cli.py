"""`attn-tools` — the command line used by the README and `make demo`.

Commands:
    models      list the offline model aliases and whether each is available
    sentences   list the built-in sentence sets
    extract     extract attention for a sentence set and print a per-model summary
    score       score every head against every pattern; write the score table
    figures     the poster figures for one or more models
    automate    propose and check programs for chosen heads (filter automation)
    report      one self-contained report.html (grids, label counts, top heads, consistency)
    stats       head statistics and head types per model (tables, figures, held-out agreement)
    ablate      the ΔLoss of ablating every head (table + layers × heads figure)
    lens        the logit lens of one text (table + figure)
    probe       sentiment, bias and instruction heads with permutation tests and FDR
    demo        everything above on the offline defaults, into one output folder
    hints       does a hint flip multiple-choice answers, and which heads read it?

This module parses arguments and calls public functions (`attn_tools.report` for summaries, the
two score passes and the figure set); it holds no analysis. Heavy libraries (torch, transformers,
spaCy, matplotlib, pandas) are imported inside the commands, so ``attn-tools --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
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


class _Formatter(argparse.HelpFormatter):
    """Help that shows every option's default (skipped for flags and options without one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = "%(default)" in text or default in (None, False, argparse.SUPPRESS)
        if not shown and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Every subcommand parser uses `_Formatter`, whoever adds it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def _quiet_libraries() -> None:
    """Silence the loading bars of transformers and huggingface_hub (``--quiet``)."""
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    if "transformers" in sys.modules:  # already imported: switch it off there too
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def _direction(metric: str) -> str:
    from attn_tools.scoring import get_metric

    return get_metric(metric).direction


#: `--sentences` files above this size (or ``$ATTN_TOOLS_STREAM_FROM_BYTES``) are streamed
#: instead of read whole
STREAM_FROM_BYTES = 16 * 1024**2


def _extract(model: str, sentences: str, batch_size: int, progress: bool):
    from attn_tools.data import iter_sentences, load_sentences
    from attn_tools.distributed import default_device
    from attn_tools.extract import extract
    from attn_tools.models import load_model

    # under torchrun: this rank's GPU, and extract() keeps only this rank's sentences
    bundle = load_model(model, device=default_device())
    # datasets and big files are streamed (a 1M-line corpus is never held as text; its bar then
    # counts without a total); a smaller file is read whole, so the bar knows its total and ETA
    path = Path(sentences).expanduser()
    limit = int(os.environ.get("ATTN_TOOLS_STREAM_FROM_BYTES", STREAM_FROM_BYTES))
    big = path.is_file() and path.stat().st_size > limit
    stream = sentences.startswith("hf:") or big
    texts = iter_sentences(sentences) if stream else load_sentences(sentences)
    t0 = time.perf_counter()
    # the finished bar stays on screen in a terminal: how many sentences, how long
    records = extract(
        bundle, texts, batch_size=batch_size, progress={"leave": True} if progress else False
    )
    return bundle, records, time.perf_counter() - t0


# ----------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    from attn_tools import list_models

    for row in list_models(include_optional=True):  # gemma3: optional, not installed by setup
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
    from attn_tools.data import load_sentences
    from attn_tools.distributed import default_device
    from attn_tools.models import load_model
    from attn_tools.report import RANKING_NOTE, top_heads_by_family
    from attn_tools.runs import score_run, write_score_run

    out = Path(args.out)
    for model in args.model or DEFAULT_MODELS:
        bundle = load_model(model, device=default_device())
        run = score_run(
            bundle, load_sentences(args.sentences), out, metric=args.metric,
            drop_keys=_drop(args), batch_size=args.batch_size,
            checkpoint_every=args.checkpoint_every, per_sentence=args.per_sentence,
            fresh=args.fresh, progress=not args.quiet,
        )  # fmt: skip
        if not run.world.is_main:  # one writer: rank 0
            continue
        paths = write_score_run(run, out)
        note = f"{args.metric}, {_direction(args.metric)}, {RANKING_NOTE}"
        print(f"\n== {bundle.name}: top {args.top} heads per pattern ({note})")
        print(top_heads_by_family(run.own_rows, k=args.top))
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from attn_tools.classify import label_heads
    from attn_tools.patterns import build_contexts
    from attn_tools.report import file_slug, score_tables, write_figures

    out = Path(args.out)
    for model in args.model or DEFAULT_MODELS:
        bundle, records, _ = _extract(model, args.sentences, args.batch_size, not args.quiet)
        contexts = build_contexts(records)  # shared by both tables and the labels
        scores, ranked = score_tables(
            records, metric=args.metric, drop_keys=_drop(args), progress=not args.quiet,
            contexts=contexts,
        )  # fmt: skip
        folder = out / (file_slug(bundle.name) + _drop_suffix(args))
        # under torchrun every rank takes part in the reductions inside label_heads ...
        best = label_heads(records, metric=args.metric, drop_keys=_drop(args), contexts=contexts)
        if not _is_main():  # ... and rank 0 alone draws (examples from its own sentences)
            continue
        # the grid uses the all-rows table; per-pattern figures rank heads on each pattern's rows
        written = write_figures(
            records, ranked, folder, model_name=bundle.name, formats=args.format,
            shared_range=args.shared_range, patterns=args.patterns, progress=not args.quiet,
            workers=args.workers,
            best=best,
        )  # fmt: skip
        print(f"{bundle.name}: wrote {len(written)} files under {folder}")
    return 0


def _parse_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give pattern names separated by commas, e.g. first,self")
    return names


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


def cmd_probe(args: argparse.Namespace) -> int:
    """Sentiment, bias and instruction probes (and decoder mediation) on the built-in data."""
    from attn_tools import load_model
    from attn_tools.probes.results import run_probes, top_heads, write_run

    run = run_probes(
        load_model(args.model),
        skip=args.skip or (),
        quick=args.quick,
        n_permutations=args.permutations,
        seed=args.seed,
        alpha=args.alpha,
    )
    paths = write_run(run, args.out, alpha=args.alpha)
    for name, table in run.tables.items():
        sig = int((table.q_value < args.alpha).sum())
        print(f"{name}: {sig}/{len(table)} heads with q < {args.alpha:g}, "
              f"{int(table.replicated.sum())} replicated")  # fmt: skip
        top = top_heads(table, alpha=args.alpha, k=3)
        if len(top):
            print(top[["layer", "head", "effect", "q_value", "replicated"]].to_string(index=False))
    for path in paths:
        print(path)
    return 0


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be a whole number ≥ 1, got {text!r}")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    """Extract, summarise, score and draw for both offline defaults into one folder."""
    from attn_tools.demo import run_demo

    groups = []
    for model in DEFAULT_MODELS:
        _, records, secs = _extract(model, args.sentences, args.batch_size, not args.quiet)
        groups.append((records, secs))
    _, page = run_demo(
        groups, args.out, drop_keys=_drop(args), all_figures=args.all_figures,
        workers=args.workers, progress=not args.quiet,
        subtitle=f"attn-tools demo: {', '.join(DEFAULT_MODELS)} on the '{args.sentences}' sentences",
    )  # fmt: skip
    print(f"wrote {Path(args.out) / 'summary.json'}")
    print(f"report: {page.resolve()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from attn_tools.html_report import write_report

    groups = [
        _extract(model, args.sentences, args.batch_size, not args.quiet)[1]
        for model in args.model or DEFAULT_MODELS
    ]
    page = write_report(
        groups, Path(args.out) / "report.html", with_consistency=not args.no_consistency,
        progress=not args.quiet, subtitle=f"sentences: {args.sentences}",
    )  # fmt: skip
    print(f"report: {page.resolve()}")
    return 0


def _is_main() -> bool:
    from attn_tools.distributed import world

    return world().is_main


def cmd_stats(args: argparse.Namespace) -> int:
    from attn_tools.stats import HeadTypeThresholds, write_stats

    # under torchrun every rank shares the work; rank 0 writes and returns the paths
    thresholds = HeadTypeThresholds(args.positional, args.focused, args.broad)
    for model in args.model or DEFAULT_MODELS:
        paths = write_stats(
            model, args.sentences, args.out, holdout=args.holdout, drop_keys=_drop(args),
            thresholds=thresholds, limit=args.limit, batch_size=args.batch_size,
            progress=not args.quiet, syntax=args.syntax, similarity=args.similarity,
        )  # fmt: skip
        if paths:
            print(f"{model}: wrote " + ", ".join(str(p) for p in paths))
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


def cmd_ablate(args: argparse.Namespace) -> int:
    from attn_tools.data import load_sentences
    from attn_tools.distributed import default_device
    from attn_tools.interventions.outputs import write_ablation
    from attn_tools.models import load_model

    texts = load_sentences(args.sentences, limit=args.limit, progress=False)
    bundle = load_model(args.model, device=default_device())
    # under torchrun every rank measures its share; rank 0 writes
    table, paths = write_ablation(bundle, texts, args.out, method=args.method)
    if not paths:
        return 0
    top = table.sort_values("delta_loss", ascending=False).head(args.top)
    print(top.to_string(index=False))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_lens(args: argparse.Namespace) -> int:
    from attn_tools.interventions.outputs import write_lens
    from attn_tools.models import load_model

    table, paths = write_lens(load_model(args.model), args.text, args.out, layers=args.layers)
    last = table[table.layer == table.layer.max()]
    print(
        last[["position", "token", "top_token", "prob", "rank_of_actual_next"]].to_string(
            index=False
        )
    )
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attn-tools", description="Which attention heads do what?")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp: argparse.ArgumentParser, *, models: bool = True) -> None:
        if models:
            sp.add_argument("--model", action="append", help="alias, HF id or folder (repeatable)")
        sp.add_argument("--sentences", default="all", help="built-in set or file")
        sp.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass")
        sp.add_argument(
            "--quiet", action="store_true", help="no progress bars (model loading included)"
        )

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
    sp.add_argument("--top", type=int, default=3, help="heads printed per pattern")
    sp.add_argument(
        "--out", default="outputs", help="run folder: tables, run.json, progress (resumable)"
    )
    sp.add_argument(
        "--checkpoint-every", type=int, default=32, help="sentences per checkpoint of a rank"
    )
    sp.add_argument(
        "--fresh", action="store_true", help="discard the progress of an earlier run in --out"
    )
    sp.add_argument(
        "--per-sentence",
        action="store_true",
        help="also every sentence's score (partitioned Parquet; memory grows with the corpus)",
    )
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
    sp.add_argument(
        "--format",
        action="append",
        choices=["png", "svg", "pdf"],
        help="figure format, repeatable (default: png)",
    )
    sp.add_argument(
        "--patterns",
        type=_parse_names,
        default=None,
        metavar="NAME,...",
        help="per-pattern figures only for these patterns (default: every scored pattern)",
    )
    sp.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="processes drawing per-pattern figures at once (default: one per CPU, at most 4, "
        "from 8 patterns on)",
    )
    sp.add_argument("--out", default="outputs", help="folder for the figures")
    sp.set_defaults(fn=cmd_figures)

    sp = sub.add_parser("automate", help="propose and check programs for chosen heads")
    sp.add_argument("--model", default="smollm2", help="alias, HF id or folder")
    sp.add_argument("--heads", type=_parse_heads, required=True, help="LAYER.HEAD,... e.g. 5.3,7.1")
    sp.add_argument(
        "--backend",
        choices=["search", "local", "openai"],
        default="search",
        help="who proposes programs: the offline program search, a local or an OpenAI-style "
        "chat server",
    )
    sp.add_argument(
        "--sentences",
        default=None,
        help="sentences the backend sees (default: every 8th built-in analysis sentence)",
    )
    sp.add_argument("--heldout", default="heldout", help="sentences used only to validate")
    sp.add_argument("--rounds", type=int, default=2, help="refinement rounds (hard bound)")
    sp.add_argument(
        "--base-url", default="https://api.openai.com/v1", help="chat server (local/openai)"
    )
    sp.add_argument("--llm", default=None, help="chat model name for the local/openai backends")
    sp.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key"
    )
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
    sp.add_argument(
        "--quiet", action="store_true", help="no progress bars (model loading included)"
    )
    sp.set_defaults(fn=cmd_automate)

    sp = sub.add_parser("stats", help="head statistics and head types (tables and figures)")
    common(sp)
    drop_keys(sp)
    sp.add_argument("--holdout", help="a disjoint sentence set: writes the type agreement table")
    sp.add_argument("--limit", type=int, default=None, help="use at most N sentences per set")
    sp.add_argument("--positional", type=float, default=0.5, help="positional type cut-off")
    sp.add_argument("--focused", type=float, default=0.5, help="focused type cut-off")
    sp.add_argument("--broad", type=float, default=0.7, help="broad type cut-off")
    sp.add_argument(
        "--syntax",
        action="store_true",
        help="also the Clark et al. (2019) syntax table: best head per dependency relation vs "
        "the best fixed offset (spaCy parses)",
    )
    sp.add_argument(
        "--similarity",
        action="store_true",
        help="also the head map: JS distance between heads, classical MDS, coloured by head type "
        "(cost grows fast with sentence length; use --limit)",
    )
    sp.add_argument("--out", default="outputs/stats", help="folder for tables and figures")
    sp.set_defaults(fn=cmd_stats)
    sp = sub.add_parser("ablate", help="ΔLoss of ablating each head (layers × heads)")
    sp.add_argument("--model", default="smollm2", help="alias, HF id or folder")
    sp.add_argument("--sentences", default="story", help="built-in set or file")
    sp.add_argument("--limit", type=int, default=8, help="first N sentences")
    sp.add_argument(
        "--method",
        choices=["zero", "mean"],
        default="zero",
        help="replace each head's output by zeros or by its mean over the sentences",
    )
    sp.add_argument("--top", type=int, default=10, help="heads printed (largest effect first)")
    sp.add_argument("--out", default="outputs", help="folder for the table and figure")
    sp.set_defaults(fn=cmd_ablate)

    sp = sub.add_parser("lens", help="logit lens of one text (decoders)")
    sp.add_argument("--model", default="smollm2", help="alias, HF id or folder")
    sp.add_argument("--text", required=True, help="the text to read layer by layer")
    sp.add_argument("--layers", type=int, default=None, help="plot only the last N layers")
    sp.add_argument("--out", default="outputs", help="folder for the table and figure")
    sp.set_defaults(fn=cmd_lens)

    sp = sub.add_parser("probe", help="sentiment / bias / instruction probes with statistics")
    sp.add_argument("--model", default="minilm", help="alias, HF id or folder")
    sp.add_argument(
        "--skip",
        action="append",
        choices=["sentiment", "bias", "instruction", "neurons"],
        help="leave a step out (repeatable); neurons = per-head causal mediation (decoders)",
    )
    sp.add_argument("--quick", action="store_true", help="fewer texts and 200 permutations")
    sp.add_argument(
        "--permutations", type=int, default=None, help="permutations per test (1000; quick: 200)"
    )
    sp.add_argument("--seed", type=int, default=0, help="seed of permutations, splits, bootstrap")
    sp.add_argument("--alpha", type=float, default=0.05, help="BH false discovery rate")
    sp.add_argument("--out", default="outputs/probes", help="folder for tables, figures, JSON")
    sp.set_defaults(fn=cmd_probe)

    sp = sub.add_parser("demo", help="the README demo on the offline defaults")
    common(sp, models=False)
    drop_keys(sp)
    sp.add_argument("--out", default="outputs", help="folder for everything the demo writes")
    sp.add_argument(
        "--all-figures",
        action="store_true",
        help="also the three per-pattern figures of every pattern (slow; the report has grids "
        "and tables)",
    )
    sp.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="processes analysing the models at once, one model each (default: one per model, "
        "at most one per CPU); 1 runs everything in this process",
    )
    sp.set_defaults(fn=cmd_demo)

    sp = sub.add_parser("report", help="one self-contained report.html per run")
    common(sp)
    sp.add_argument("--out", default="outputs", help="folder for report.html")
    sp.add_argument(
        "--no-consistency", action="store_true", help="skip the held-out agreement section"
    )
    sp.set_defaults(fn=cmd_report)

    sp = sub.add_parser("hints", help="hint evaluation on multiple-choice items")
    sp.add_argument("--model", default="smollm2", help="causal model alias, HF id or folder")
    sp.add_argument("--items", default="builtin", help="builtin, mmlu:<topic>, or a .jsonl file")
    sp.add_argument(
        "--hint",
        default="sycophancy",
        help="sycophancy, metadata, few-shot, copy (the positive control), neutral or a template",
    )
    sp.add_argument(
        "--target",
        choices=["wrong", "random"],
        default="wrong",
        help="the option the hint points at: a wrong one, or any at random",
    )
    sp.add_argument("--cot", action="store_true", help="answers from greedy reasoning")
    sp.add_argument(
        "--answer-from", choices=["letter", "text"], default="letter", help="scored continuation"
    )
    sp.add_argument("--limit", type=int, default=None, help="first N items only")
    sp.add_argument("--seed", type=int, default=0, help="seed of hinted options and statistics")
    sp.add_argument("--batch-size", type=int, default=8, help="prompts per forward pass")
    sp.add_argument("--out", default="outputs/hints", help="folder for tables and figures")
    sp.set_defaults(fn=cmd_hints)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        _quiet_libraries()
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
