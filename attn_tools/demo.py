"""`attn-tools demo`: both offline models analysed into one folder and one ``report.html``.

Extraction runs here, one model after the other, with its per-sentence progress bar (the
attention cache makes a second run instant). The analysis of each model — two score tables, the
calibrated labels with and without the sink, the figures and the model's sections of the report
— is independent of the other model's, so with ``workers > 1`` each model is analysed in its own
forked process while this one shows one progress bar per model and then joins the report in model
order. The files, tables and the report's text are the same either way (a test checks it); only
the wall time differs. Fork is POSIX only: elsewhere the models are analysed one after the other.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "analyse_model", "run_demo"]

#: what each model's analysis goes through, in order (the progress bars' steps)
STEPS = ("scores", "labels", "figures", "report")

# set just before the pool forks, so children inherit the records instead of having them pickled
_FORKED: dict[str, Any] = {}


def analyse_model(
    records: Sequence[Any],
    seconds: float,
    out: Path,
    *,
    drop_keys: str | None = None,
    all_figures: bool = False,
    figure_workers: int | None = 1,
    progress: bool = False,
    step: Any = None,
) -> tuple[dict[str, Any], str, Any]:
    """Everything the demo does for one model's records.

    Returns ``(summary, printed text, report fragment)``; ``step(name)`` is called as each of
    `STEPS` starts (the parent's progress bar)."""
    from attn_tools import report
    from attn_tools.classify import label_heads
    from attn_tools.html_report import model_report
    from attn_tools.patterns import build_contexts
    from attn_tools.scoring.metrics import get_metric
    from attn_tools.viz import plot_head

    step = step or (lambda name: None)
    text = io.StringIO()
    s = report.summarise(records, seconds=seconds)
    print(report.format_summary(s), file=text)
    name = str(s["model"])
    slug = report.file_slug(name)
    step("scores")
    t0 = time.perf_counter()
    # one context per sentence for every pass below: the parse, alignment and each pattern's
    # prediction are computed once, not once per table
    contexts = build_contexts(records)
    scores, ranked = report.score_tables(
        records, drop_keys=drop_keys, progress=progress, contexts=contexts
    )
    s["score_seconds"] = round(time.perf_counter() - t0, 2)
    table = report.write_table(scores, out, f"scores_{slug}")
    table += report.write_table(ranked, out, f"scores_{slug}_own_rows")
    direction = "lower is better" if get_metric("jsd").sort_ascending else "higher is better"
    print(f"\n   top 3 heads per pattern, by family — {name} "
          f"(jsd, {direction}, {report.RANKING_NOTE})", file=text)  # fmt: skip
    print(report.top_heads_by_family(ranked, k=3), file=text)
    step("labels")
    # the poster's labels use the calibrated rule (bootstrap intervals over sentences)
    fit = label_heads(records, drop_keys=drop_keys, contexts=contexts)
    known: dict[str, Any] = {"summary": s, "fit": fit, "ranked": ranked, "contexts": contexts}
    if drop_keys is None:
        # the same question with the first-token sink removed: what heads do besides it
        known["fit_no_sink"] = label_heads(records, drop_keys="first", contexts=contexts)
    else:
        known["fit_no_sink"] = fit
    step("figures")
    layer, head = report.showcase_head(fit)
    heatmap = out / f"heatmap_{slug}.png"
    plot_head(records[0], layer, head).savefig(heatmap, dpi=120, bbox_inches="tight")
    # the grid uses the all-rows table; per-pattern figures rank heads on each pattern's rows
    figures = report.write_figures(
        records, ranked, out / slug, model_name=name, best=fit,
        patterns=None if all_figures else [], progress=progress, workers=figure_workers,
    )  # fmt: skip
    known["grid_image"] = figures[0]  # write_figures draws the grid first
    if drop_keys is None:
        figures.append(report.write_sink_free_grid(
            records, out / slug, model_name=name, fit=known["fit_no_sink"]))  # fmt: skip
        known["grid_no_sink_image"] = figures[-1]
    s["files"] = [str(p) for p in [heatmap, *table, *figures]]
    print(f"   wrote {heatmap}, {len(table)} tables and {len(figures)} figures in {out / slug}",
          file=text)  # fmt: skip
    step("report")
    fragment = model_report(records, known=known)
    return s, text.getvalue(), fragment


def _forked(k: int) -> tuple[dict[str, Any], str, Any]:
    job = _FORKED
    queue = job["queue"]
    return analyse_model(
        job["groups"][k][0], job["groups"][k][1], job["out"], drop_keys=job["drop_keys"],
        all_figures=job["all_figures"], figure_workers=1, progress=False,
        step=lambda name: queue.put((k, name)),
    )  # fmt: skip


def run_demo(
    groups: Sequence[tuple[Sequence[Any], float]],
    out: str | Path,
    *,
    subtitle: str = "",
    drop_keys: str | None = None,
    all_figures: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], Path]:
    """Analyse each model's ``(records, extraction seconds)`` into ``out``; write
    ``summary.json`` and ``report.html``. Returns the summaries and the report's path.

    ``workers``: processes analysing models at once (None: one per model, at most one per CPU);
    per-pattern figures (``all_figures``) are then drawn inside each model's process."""
    from attn_tools.html_report import HtmlReport

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from attn_tools.report import fork_workers

    n = fork_workers(workers, len(groups), from_jobs=1)
    if n <= 1:
        results = []
        for records, secs in groups:
            results.append(analyse_model(
                records, secs, out, drop_keys=drop_keys, all_figures=all_figures,
                figure_workers=workers, progress=progress,
            ))  # fmt: skip
            print(results[-1][1])
    else:
        results = _in_parallel(groups, out, n, drop_keys, all_figures, progress)
        for _, text, _ in results:
            print(text)
    doc = HtmlReport("Which attention heads do what?", subtitle=subtitle)
    for _, _, fragment in results:
        doc.extend(fragment)
    summaries = [s for s, _, _ in results]
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    return summaries, doc.write(out / "report.html")


def _in_parallel(
    groups: Sequence[tuple[Sequence[Any], float]],
    out: Path,
    n: int,
    drop_keys: str | None,
    all_figures: bool,
    progress: bool,
) -> list[tuple[dict[str, Any], str, Any]]:
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork")
    steps = ctx.Queue()
    bars: list[Any] = []
    if progress:
        from tqdm.auto import tqdm

        for k, (records, _) in enumerate(groups):
            name = getattr(records[0], "model", f"model {k}")
            bars.append(tqdm(total=len(STEPS), desc=f"analysis · {name}", unit="step",
                             position=k, leave=True))  # fmt: skip
    _FORKED.update(groups=groups, out=out, drop_keys=drop_keys, all_figures=all_figures,
                   queue=steps)  # fmt: skip
    try:
        with ProcessPoolExecutor(n, mp_context=ctx) as pool:
            futures = [pool.submit(_forked, k) for k in range(len(groups))]
            done = [0] * len(groups)
            while not all(f.done() for f in futures):
                with contextlib.suppress(queue_mod.Empty):
                    k, name = steps.get(timeout=0.2)
                    done[k] = STEPS.index(name)  # the steps before this one are finished
                    if bars:
                        bars[k].set_postfix_str(name)
                        bars[k].update(done[k] - bars[k].n)
            results = [f.result() for f in futures]  # re-raises a child's error here
    finally:
        _FORKED.clear()
    for bar in bars:
        bar.update(len(STEPS) - bar.n)
        bar.set_postfix_str("done")
        bar.close()
    return results
