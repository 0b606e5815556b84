"""Results a reader or the CLI asks for, computed once: summaries, the two score passes, a head
against a pattern on one sentence, the showcase head, and the files that `write_figures` writes.

Figures (`attn_tools.viz`) only draw what these functions return; the CLI only parses arguments
and calls them; notebooks call the same functions.

Example:
    >>> scores, ranked = score_tables(records)           # all rows, and each pattern's own rows
    >>> fit = default_best_fit(scores)
    >>> write_figures(records, ranked, "outputs/minilm", best=fit)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from attn_tools.extract import SentenceAttention
    from attn_tools.patterns.base import Pattern, PatternContext
    from attn_tools.viz import FigureFormat

__all__ = [
    "RANKING_NOTE",
    "HeadComparison",
    "compare_head",
    "default_best_fit",
    "example_sentences",
    "file_slug",
    "format_summary",
    "score_tables",
    "write_sink_free_grid",
    "showcase_head",
    "summarise",
    "top_heads_by_family",
    "write_figures",
    "write_table",
]

# Rankings for one pattern use the rows that pattern predicts itself (rows="scored"): on all rows
# a pattern that predicts few of them would rank heads by its self-attention fallback instead.
RANKING_NOTE = "scored on the rows each pattern predicts, share shown"


# ----------------------------------------------------------------------------- one head


@dataclass(frozen=True, eq=False)  # arrays inside: compare fields, not objects
class HeadComparison:
    """One head against one pattern on one sentence (what `viz.plot_head_vs_pattern` draws).

    Attributes:
        model, text, labels: the record's model name, sentence and token labels (``n``).
        layer, head: the head.
        pattern: the pattern's name.
        metric: the metric's registry name; ``score`` is its value on this sentence.
        actual: ``[n, n]`` the head's attention.
        predicted: ``[n, n]`` the pattern's normalised prediction (rows sum to 1).
        has_mass: ``[n]`` rows the pattern fills itself (the others fall back to self).
    """

    model: str
    text: str
    labels: tuple[str, ...]
    layer: int
    head: int
    pattern: str
    metric: str
    score: float
    actual: np.ndarray
    predicted: np.ndarray
    has_mass: np.ndarray


def compare_head(
    record: SentenceAttention,
    layer: int,
    head: int,
    pattern: str | Pattern,
    *,
    metric: str = "jsd",
    context: PatternContext | None = None,
    prediction: tuple[np.ndarray, np.ndarray] | None = None,
    drop_keys: Any = None,
) -> HeadComparison:
    """Score one head against one pattern on one sentence (`scoring.score_pair`).

    A metric that compares raw pattern weights (``spec.raw``: ``mul``, ``abs``) scores the
    unnormalised prediction, as TransformerLens does; the comparison always carries the
    normalised one for drawing. ``context`` reuses a `build_context` result (skips the parse);
    ``prediction`` reuses a normalised ``(matrix, has_mass)`` already computed for it.

    Example:
        >>> viz.plot_head_vs_pattern(compare_head(record, 0, 2, "previous_token"))
    """
    from attn_tools.patterns.base import build_context, get_pattern, predict
    from attn_tools.scoring import dropped_keys, get_metric, score_pair

    spec = get_metric(metric)
    n_layers, n_heads = record.attention.shape[:2]
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise IndexError(
            f"layer {layer}, head {head} is outside this model's {n_layers} layers × {n_heads} heads"
        )
    pat = get_pattern(pattern)
    ctx = context if context is not None else build_context(record)
    predicted, has_mass = prediction if prediction is not None else predict(pat, ctx)
    scored, scored_mass = predict(pat, ctx, normalize=False) if spec.raw else (predicted, has_mass)
    actual = record.head(layer, head)
    drop = dropped_keys(ctx, drop_keys)  # sink keys removed as score_heads(drop_keys=) does
    score = float(score_pair(actual, scored, metric=spec.name, has_mass=scored_mass, drop=drop))
    return HeadComparison(
        model=record.model, text=record.text, labels=tuple(record.labels), layer=int(layer),
        head=int(head), pattern=pat.name, metric=spec.name, score=score, actual=actual,
        predicted=predicted, has_mass=np.asarray(has_mass, dtype=bool),
    )  # fmt: skip


# ----------------------------------------------------------------------------- score tables


def score_tables(
    records: Sequence[SentenceAttention],
    patterns: Sequence[str | Pattern] | None = None,
    *,
    metric: str = "jsd",
    drop_keys: Any = None,
    progress: bool = False,
    contexts: Sequence[Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two score tables every report uses: ``(all_rows, own_rows)``.

    ``all_rows`` scores every row (a pattern's empty rows fall back to self), which is what
    `classify.best_fit` compares patterns on; ``own_rows`` scores each pattern on the rows it
    predicts itself, which is what rankings of heads for one pattern use. The pattern contexts
    (spaCy parse, alignment) are built once for both passes. ``drop_keys`` removes sink keys
    (see `attn_tools.scoring.score_heads`). Pass ``contexts`` (one `PatternContext` per record,
    from `build_contexts`) to share them, and the predictions memoised on them, with other passes
    over the same records (the calibrated labels, consistency).
    """
    from attn_tools.patterns.base import build_contexts
    from attn_tools.scoring import score_heads

    contexts = build_contexts(records) if contexts is None else list(contexts)
    all_rows, own_rows = (
        score_heads(
            records,
            patterns,
            metric=metric,
            rows=rows,
            contexts=contexts,
            drop_keys=drop_keys,
            progress=progress,
        )  # fmt: skip
        for rows in ("all", "scored")
    )
    return all_rows, own_rows


def write_sink_free_grid(
    records: Sequence[SentenceAttention],
    out: str | Path,
    *,
    model_name: str | None = None,
    drop_keys: Any = "first",
    formats: Sequence[FigureFormat] = ("png",),
    fit: pd.DataFrame | None = None,
) -> Path:
    """The best-fit grid with sink keys removed (``drop_keys``): what the heads do besides the sink.

    Written as ``best_fit_grid_no_sink.<fmt>`` in ``out``; returns the first path. The labels
    come from `classify.label_heads` with ``drop_keys`` (the calibrated rule), or ``fit`` when the
    caller already has that table (it must have been made with the same ``drop_keys``).
    """
    from attn_tools import viz
    from attn_tools.classify import label_heads
    from attn_tools.viz import plot_best_fit_grid

    if fit is None:
        fit = label_heads(records, drop_keys=drop_keys)  # the calibrated rule, as the main grid
    name = model_name or str(fit["model"].iloc[0])
    fig = plot_best_fit_grid(
        fit, model=name, title=f"What is {name} doing besides the sink? (keys dropped: {drop_keys})"
    )
    paths = viz.save_figure(fig, Path(out) / "best_fit_grid_no_sink", formats=formats)
    return paths[0]


def default_best_fit(scores: pd.DataFrame, **best_fit_kwargs: Any) -> pd.DataFrame:
    """`classify.best_fit` with its defaults, except that a table without the ``uniform`` pattern
    (the default baseline) is classified with ``baseline=None`` instead of failing; the rule the
    table carries says which rule was used."""
    from attn_tools import classify

    if "baseline" not in best_fit_kwargs and "uniform" not in set(scores["pattern"]):
        best_fit_kwargs["baseline"] = None
    return classify.best_fit(scores, **best_fit_kwargs)


def showcase_head(best: pd.DataFrame) -> tuple[int, int]:
    """``(layer, head)`` of the best-fitting head whose pattern is not a plain first-token sink
    (a sink says little on a heatmap); any best head when every head is a sink or unlabelled."""
    from attn_tools.scoring import get_metric

    metric = str(best["metric"].iloc[0]) if "metric" in best.columns else "jsd"
    ascending = get_metric(metric).sort_ascending
    pool = best[~best["label"].isin(["none", "first_token"])]
    if pool.empty:
        pool = best
    pool = pool.sort_values("best_score", ascending=ascending, kind="stable")
    return int(pool.iloc[0]["layer"]), int(pool.iloc[0]["head"])


def top_heads_by_family(scores: pd.DataFrame, k: int = 3) -> str:
    """The ``k`` best heads of each pattern, grouped by family, as text (what ``attn-tools score``
    prints). Each line shows the share of rows the pattern predicts on this model; a pattern
    without enough support (`classify.supported`) names no head and says why."""
    from attn_tools.classify import supported, top_heads_many
    from attn_tools.patterns import get_pattern

    support = scores.assign(ok=supported(scores)).groupby("pattern", sort=False)
    tops = top_heads_many(scores, k=k)
    by_family: dict[str, list[str]] = {}
    for name in scores["pattern"].unique():
        by_family.setdefault(get_pattern(name).family, []).append(name)
    lines = []
    for family, names in sorted(by_family.items()):
        lines.append(f"  [{family}]")
        for name in names:
            sub = support.get_group(name)
            share = float(sub["coverage"].iloc[0])
            if not sub["ok"].any():
                why = (
                    "predicts no row on this model"
                    if share == 0
                    else f"too little support ({int(sub['n_rows'].iloc[0])} rows in "
                    f"{int(sub['support_sentences'].iloc[0])} sentences): no head named"
                )
                lines.append(f"    {name:<24} {why}")
                continue
            top = tops[str(name)]
            cells = ", ".join(
                f"L{r.layer}.H{r.head} ({r.mean:.3f}{'' if r.fits is not False else ', no fit'})"
                for r in top.itertuples()
            )
            lines.append(f"    {name:<24} {share:4.0%}  {cells}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- summaries


def summarise(records: Sequence[Any], *, seconds: float | None = None) -> dict[str, Any]:
    """A per-model summary of extracted attention (plain JSON-ready data).

    Reports sizes, and per layer the mean attention entropy (bits) and the mean share of
    attention that goes to the first token (the sink that many heads use as a no-op).
    """
    if not records:
        raise ValueError("no records to summarise. Fix: extract at least one sentence first")
    first = records[0]
    n_layers = first.n_layers
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
        "heads": first.n_heads,
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


def format_summary(s: dict[str, Any]) -> str:
    """A `summarise` result as the few lines the CLI prints."""
    ent = s["entropy_bits_per_layer"]
    sink = s["attention_to_first_token_per_layer"]
    took = f", extracted in {s['extract_seconds']} s" if "extract_seconds" in s else ""
    return "\n".join(
        [
            f"\n== {s['model']} ({s['kind']}, {s['layers']} layers × {s['heads']} heads) — "
            f"{s['sentences']} sentences, {s['tokens']} tokens "
            f"({s['tokens_per_sentence']} per sentence){took}",
            "   layer: " + " ".join(f"{i:>5d}" for i in range(len(ent))),
            " entropy: " + " ".join(f"{x:5.2f}" for x in ent),
            " → first: " + " ".join(f"{x:5.2f}" for x in sink),
        ]
    )


# ----------------------------------------------------------------------------- files


def file_slug(name: str) -> str:
    """``name`` made safe as a file name (model ids with ``/``, ``dep(det)``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _flat_tied(table: pd.DataFrame) -> pd.DataFrame:
    """``tied`` tuples as ``a|b`` text (CSV and Parquet hold no tuples)."""
    if "tied" not in table.columns:
        return table
    table = table.copy()
    table["tied"] = table["tied"].map(lambda t: "|".join(t) if isinstance(t, (tuple, list)) else t)
    return table


def write_table(table: pd.DataFrame, out: str | Path, stem: str) -> list[Path]:
    """Write ``table`` as ``<stem>.csv`` and ``<stem>.parquet`` under ``out``; the two paths.

    A ``tied`` column of tuples is written as ``a|b`` text so that the CSV reads back.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = _flat_tied(table)
    csv, parquet = out / f"{stem}.csv", out / f"{stem}.parquet"
    table.to_csv(csv, index=False)
    table.to_parquet(parquet, index=False)
    return [csv, parquet]


def example_sentences(contexts: Sequence[PatternContext], patterns: Sequence[Pattern]) -> list[int]:
    """For each pattern, the sentence where it predicts the largest share of rows itself.

    The choice depends on the pattern only, never on how well a head fits it, so an example
    panel is not a cherry-picked best case. One `predict_many` pass per sentence.
    """
    from attn_tools.patterns.base import predict_many

    best_i = np.zeros(len(patterns), dtype=int)
    best_frac = np.full(len(patterns), -1.0)
    for i, ctx in enumerate(contexts):
        _, masks = predict_many(patterns, ctx)  # [P, n]
        frac = masks.mean(axis=1) if masks.shape[1] else np.zeros(len(patterns))
        better = frac > best_frac + 1e-9
        best_i[better], best_frac[better] = i, frac[better]
    return [int(i) for i in best_i]


def _any_fits(top: pd.DataFrame) -> bool | None:
    """Whether any head of a `classify.top_heads` table fits (None: the table cannot say)."""
    import pandas as pd

    if "fits" not in top.columns:
        return None
    verdicts = pd.array(top["fits"], dtype="boolean")
    return None if verdicts.isna().all() else bool(verdicts.fillna(False).any())


def _example_head(top: pd.DataFrame) -> tuple[int, int]:
    """The head an example figure draws: the best-ranked head that fits, else the closest one."""
    import pandas as pd

    pick = top.iloc[0]
    if "fits" in top.columns:
        verdicts = pd.array(top["fits"], dtype="boolean").fillna(False).to_numpy(bool)
        if verdicts.any():
            pick = top.iloc[int(np.argmax(verdicts))]
    return int(pick["layer"]), int(pick["head"])


def write_figures(
    records: Sequence[SentenceAttention],
    scores: pd.DataFrame,
    out: str | Path,
    *,
    model_name: str | None = None,
    patterns: Sequence[str] | None = None,
    formats: Sequence[FigureFormat] = ("png",),
    best: pd.DataFrame | None = None,
    top_k: int = 10,
    max_examples: int = 240,
    shared_range: bool = False,
    progress: bool = False,
    workers: int | None = 1,
) -> list[Path]:
    """Write every figure of one model into ``out`` and return the paths written.

    Files (``<p>`` is a pattern name made file-safe; give each model its own ``out``):
    ``best_fit_grid.<fmt>``, ``scores-<p>.<fmt>`` (layers × heads map), ``top_heads-<p>.<fmt>``,
    ``example-<p>.<fmt>`` (the pattern's best head drawn against it on one sentence: the sentence
    where the pattern predicts the most rows of its own), ``scores.csv`` (the score table) and
    ``best_fit.csv`` (one row per head; ``tied`` joined with ``|``). That is one grid and three
    figures per pattern (pass ``patterns=`` for fewer).

    Args:
        records: that model's `SentenceAttention` records (examples are drawn from the first
            ``max_examples``).
        scores: `scoring.score_heads` output; rows of other models are ignored.
        out: the folder (created).
        model_name: which model (default: the only one in ``scores``).
        patterns: patterns to draw per-pattern figures for (default: every pattern in ``scores``).
        formats: any of ``"png"``, ``"svg"``, ``"pdf"``.
        best: a `classify.best_fit` table to draw (default: `default_best_fit` of ``scores``).
        shared_range: draw every ``scores-<p>`` map on one colour range (the lowest and highest
            mean over the patterns drawn), so that equal colours mean equal scores across
            patterns; False gives each map its own range (best contrast within a pattern).
        progress: a tqdm bar over the patterns (one step per pattern's three figures).
        workers: processes drawing the per-pattern figures at once; ``None`` picks one per CPU
            (at most 4) when there are at least `PARALLEL_FROM` patterns. Parallel drawing forks
            the process (POSIX only; elsewhere it draws in this process), so keep the default of
            1 inside a Jupyter kernel; the command line draws in parallel. The files are the same
            either way.

    A pattern on which no head fits (`classify.top_heads`' ``fits`` all False: no head beats its
    own uniform score by the margin) is titled "no head fits" in its three figures, and its
    example draws the closest head as such. Otherwise the example draws the best-scoring head
    that fits. The top-heads bars carry each head's uniform score as a baseline tick.
    """
    from attn_tools import classify, viz
    from attn_tools.patterns.base import build_contexts, get_pattern

    fork_workers(workers, 1)  # a bad value fails before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sub, model, metric = viz.select_table(scores, model=model_name)
    metric = metric or "jsd"
    names = (
        list(patterns) if patterns is not None else list(dict.fromkeys(sub["pattern"].astype(str)))
    )
    unknown = sorted(set(names) - set(sub["pattern"].astype(str)))
    if unknown:
        raise ValueError(
            f"patterns {unknown} are not in the score table of {model}. Fix: choose from "
            f"{sorted(set(sub['pattern'].astype(str)))} (or score them first)"
        )
    # a pattern without support (classify.supported: it predicts too few rows of its own on this
    # model, e.g. next_token on a decoder) names no head: there is nothing honest to draw for it
    ok = classify.supported(sub) & np.isfinite(sub["mean"].astype(float))
    scored = set(sub.loc[ok, "pattern"].astype(str))
    skipped = [n for n in names if n not in scored]
    names = [n for n in names if n in scored]
    if skipped:
        warnings.warn(
            f"no per-pattern figures for {', '.join(skipped)}: too little support on "
            f"{model}'s sentences (see classify.supported), so no head is named",
            stacklevel=2,
        )
    best = default_best_fit(sub) if best is None else viz.select_table(best, model=model)[0]
    written: list[Path] = []

    def emit(fig: Any, name: str) -> None:
        written.extend(viz.save_figure(fig, out / name, formats=formats))

    emit(viz.plot_best_fit_grid(best, model=model), "best_fit_grid")
    model_records = [r for r in records if r.model == model][:max_examples] or list(
        records[:max_examples]
    )
    pats = [get_pattern(name) for name in names]
    contexts = build_contexts(model_records) if model_records and names else []
    examples = example_sentences(contexts, pats) if contexts else []
    limits: dict[str, float | None] = {"vmin": None, "vmax": None}
    if shared_range and names:
        means = sub.loc[sub["pattern"].astype(str).isin(names), "mean"].to_numpy(float)
        means = means[np.isfinite(means)]
        if means.size:
            limits = {"vmin": float(means.min()), "vmax": float(means.max())}
    tops = classify.top_heads_many(sub, names, top_k) if names else {}

    def draw(k: int) -> list[Path]:
        """The three figures of pattern ``k``; returns their paths."""
        name, pat = names[k], pats[k]
        slug, top = file_slug(name), tops[name]
        fits = _any_fits(top)
        paths = viz.save_figure(
            viz.plot_pattern_scores(sub, name, model=model, metric=metric, fits=fits, **limits),
            out / f"scores-{slug}", formats=formats,
        )  # fmt: skip
        paths += viz.save_figure(
            viz.plot_top_heads(top, baseline=sub, model=model, metric=metric),
            out / f"top_heads-{slug}", formats=formats,
        )  # fmt: skip
        if examples:
            i = examples[k]
            shown = _example_head(top)
            cmp = compare_head(model_records[i], shown[0], shown[1], pat, metric=metric,
                               context=contexts[i])  # fmt: skip
            paths += viz.save_figure(
                viz.plot_head_vs_pattern(cmp, fits=fits), out / f"example-{slug}", formats=formats
            )
        return paths

    bar = None
    if progress and names:  # no empty bar when only the grid is drawn
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc=f"figures · {model}", unit="pattern", leave=True)
    for paths in _draw_all(draw, len(names), fork_workers(workers, len(names))):
        written += paths
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    csv_scores, csv_best = out / "scores.csv", out / "best_fit.csv"
    sub.to_csv(csv_scores, index=False)
    _flat_tied(best).to_csv(csv_best, index=False)
    written += [csv_scores, csv_best]
    return written


# ----------------------------------------------------------------------------- parallel drawing

#: `write_figures(workers=None)` draws in parallel from this many patterns on (below it, starting
#: the processes costs more than it saves).
PARALLEL_FROM = 8

# the drawing closure a forked worker runs: set just before the pool starts, so the child inherits
# it (records, tables and user-registered patterns included) instead of having it pickled
_FORKED_DRAW: Any = None


def fork_workers(workers: int | None, n_jobs: int, *, from_jobs: int = PARALLEL_FROM) -> int:
    """How many forked processes to use for ``n_jobs`` independent jobs: ``workers`` (checked),
    or with None one per CPU (at most 4) once there are ``from_jobs`` jobs; 1 where the platform
    cannot fork."""
    import multiprocessing as mp
    import os

    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if n_jobs >= from_jobs else 1
    if "fork" not in mp.get_all_start_methods():
        return 1
    return max(1, min(workers, n_jobs))


def _forked_job(k: int) -> list[Path]:
    return _FORKED_DRAW(k)


def _draw_all(draw: Any, n_jobs: int, workers: int) -> Any:
    """Yield ``draw(k)`` for ``k = 0..n_jobs-1`` in order, drawn by ``workers`` forked processes
    (figures are independent files, so the result is the same as drawing them here)."""
    global _FORKED_DRAW
    if workers <= 1:
        for k in range(n_jobs):
            yield draw(k)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    _FORKED_DRAW = draw
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            yield from pool.map(_forked_job, range(n_jobs))
    finally:
        _FORKED_DRAW = None
