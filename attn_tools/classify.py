"""Turn a score table into findings: the support rule, best fit per head, top heads.

Held-out checks live in `attn_tools.consistency` and mixtures in `attn_tools.mixtures` (both also
importable from here).

All functions read the tidy table of `attn_tools.scoring.score_heads` (one metric per table) and
respect its direction: "best" is the lowest distance (``jsd``, ``sae``, ``mae``) or the highest
similarity (``mul``, ``abs``, ``argmax_accuracy``).

How `best_fit` labels a head (also in ``df.attrs["rule"]``, one line, for figure captions):

1. Candidates are the head's patterns with a score, excluding baselines (``shuffled(...)``), the
   ``uniform`` pattern when it is the baseline, and patterns that predict too few rows of their
   own on that model (see ``score_heads(...).attrs["coverage"]``): when the table averaged over
   all rows (``rows="all"``, the default) a pattern needs ``min_coverage`` (default half) of the
   rows, because on the other rows it predicts only the self fallback and its score would mostly
   measure that (e.g. ``next_token`` on a decoder predicts nothing; ``dep(amod)`` predicts only
   adjective rows — score those with ``rows="scored"``); with ``rows="scored"`` any pattern that
   predicts some row is a candidate. Patterns that score identically on every head of a model
   predict the same thing on these sentences (``first_token`` and ``special_tokens`` on a decoder
   whose only special token is BOS): the first one in the table stands for all of them, and
   ``df.attrs["aliases"]`` lists the rest.
2. The best candidate is the best score; candidates within ``tie_tolerance`` of it are listed in
   ``tied`` (best first).
3. The head is labelled with the best pattern only if every test in use passes, else ``"none"``:
   *baseline* — it beats the same head's baseline score by at least ``margin``: the ``uniform``
   pattern's score (``baseline="uniform"``), or the score of the best pattern's own shuffled
   version ``shuffled(<best>)`` (``baseline="shuffled"``: same weights per row, random keys);
   *threshold* — its score is at least as good as the fixed ``threshold``.
   Both verdicts are reported (``beats_baseline``, ``passes_threshold``); ``rule`` says which
   decided.

The baseline test comes in two forms. The *fast* rule (default, ``ci=None``) compares means, as
above. The *calibrated* rule (``ci=0.95``, used by the README and the poster; `label_heads`)
asks whether the win would survive other sentences: for every sentence it takes the head's gain
``baseline − best`` (in metric units, oriented so that positive means the pattern fits better)
against both the ``uniform`` pattern and ``shuffled(<best>)``, resamples the sentences
``n_boot`` times (seeded; one set of resamples for all heads of a model, so it is one matrix
product), and labels the head only if the percentile interval of the mean gain lies above
``min_effect`` (default 0) for *both* baselines. Requiring both intervals to exclude zero is an
intersection–union test, so it keeps the ``1 − ci`` error level without a multiplicity
correction. The reported *effect* is the gain over the harder of the two baselines (the one whose
interval starts lower), with that interval: "on an unseen sentence this head's rows are, on
average, ``effect`` JSD closer to the pattern than to its chance version".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from attn_tools.bootstrap import paired_interval, resample_counts
from attn_tools.patterns import (
    Pattern,
    resolve_patterns,
)
from attn_tools.scoring import (
    Level,
    Metric,
    Rows,
    get_metric,
    metric_names,
    score_heads,
)

__all__ = [
    "MIN_COVERAGE",
    "MIN_ROWS",
    "MIN_SENTENCES",
    "MIN_SHARE",
    "N_BOOT",
    "best_fit",
    "label_heads",
    "supported",
    "top_heads",
    "top_heads_many",
    "with_shuffled",
]

Baseline = Literal["uniform", "shuffled", "both"]
HEAD_KEYS = ["model", "layer", "head"]
BEST_FIT_COLUMNS = (
    "model", "layer", "head", "best_pattern", "best_score", "label", "tied",
    "baseline_score", "threshold", "rule",
)  # fmt: skip


#: defaults of the support rule (see `supported`); every function that uses it takes overrides.
MIN_SENTENCES = 5
MIN_ROWS = 20
MIN_COVERAGE = 0.5
#: bootstrap resamples of sentences for the calibrated rule (`best_fit` with ``ci``).
N_BOOT = 1000
#: `label_heads`: the least mean share of a head's attention its label's cells must hold.
MIN_SHARE = 0.5
_SUPPORT_COLUMNS = ("rows", "coverage", "n_rows", "support_sentences")


def _metric_of(scores: pd.DataFrame) -> str:
    needed = {"model", "layer", "head", "pattern", "metric", "mean", *_SUPPORT_COLUMNS}
    missing = needed - set(scores.columns)
    if missing:
        raise ValueError(
            f"the score table lacks columns {sorted(missing)}; without them a pattern's support "
            "cannot be checked and labels would silently change. Fix: pass score_heads(...)'s "
            "output (its CSV/Parquet keeps these columns), or re-score an older table."
        )
    metrics = scores["metric"].unique()
    if len(metrics) != 1:
        raise ValueError(
            f"the score table mixes metrics {sorted(metrics)}; classify one at a time. "
            "Fix: scores[scores.metric == 'jsd']."
        )
    return str(metrics[0])


def supported(
    scores: pd.DataFrame,
    *,
    min_sentences: int = MIN_SENTENCES,
    min_rows: int = MIN_ROWS,
    min_coverage: float = MIN_COVERAGE,
) -> pd.Series:
    """Which rows of a score table have a pattern with enough support to name a head after it.

    The one support rule, used by `best_fit`, `top_heads`, the command line and the figures. A
    (model, pattern) is supported when it predicts something itself in at least
    ``min_sentences`` sentences and on at least ``min_rows`` query rows; on a table averaged over
    all rows (``rows == "all"``) it must also predict at least ``min_coverage`` of the rows,
    because on the others it predicts only the self fallback and its score would mostly measure
    that (``next_token`` on a decoder predicts nothing; ``dep(amod)`` only adjective rows: score
    those with ``rows="scored"``). The inputs are the table's own columns (``rows``,
    ``coverage``, ``n_rows``, ``support_sentences``), so a CSV or Parquet round trip or a
    ``pd.concat`` of several models gives the same answer.

    Returns:
        A bool Series aligned with ``scores``.
    """
    _metric_of(scores)
    if min_sentences < 0 or min_rows < 0:
        raise ValueError("min_sentences and min_rows must be non-negative")
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be within [0, 1], got {min_coverage}")
    ok = (
        (scores["support_sentences"] >= min_sentences)
        & (scores["n_rows"] >= min_rows)
        & (scores["coverage"] > 0)
    )
    on_all_rows = scores["rows"].astype(str) == "all"
    return ok & (~on_all_rows | (scores["coverage"] >= min_coverage))


def _is_baseline(names: pd.Series) -> pd.Series:
    return names.str.startswith("shuffled(")


def with_shuffled(patterns: Iterable[str | Pattern] | None = None) -> list[str]:
    """The pattern names plus ``shuffled(name)`` for each, for ``best_fit(baseline="shuffled")``.

    Example:
        >>> scores = score_heads(records, with_shuffled(["previous_token", "dependency"]))
    """
    names = [p.name for p in resolve_patterns(patterns) if not p.name.startswith("shuffled(")]
    return names + [f"shuffled({n})" for n in names]


def _rule_text(
    metric: str,
    baseline: str | None,
    threshold: float | None,
    margin: float,
    tie: float,
    min_coverage: float = 0.0,
    min_sentences: int = 0,
    min_rows: int = 0,
    *,
    ci: float | None = None,
    n_boot: int = N_BOOT,
    min_effect: float = 0.0,
) -> str:
    """The labelling rule in one line, for captions (``best_fit(...).attrs["rule"]``)."""
    hib = get_metric(metric).higher_is_better
    needs = [f"≥ {min_coverage:.0%} of rows"] if min_coverage > 0 else []
    needs += (
        [f"≥ {min_rows} rows in ≥ {min_sentences} sentences"] if min_rows or min_sentences else []
    )
    among = f" (of patterns predicting {' and '.join(needs)})" if needs else ""
    best = f"label = pattern with the {'highest' if hib else 'lowest'} {metric}{among}"
    against = {
        "uniform": "the head's uniform pattern",
        "shuffled": "its own shuffled version",
        "both": "both the head's uniform pattern and its own shuffled version",
    }
    tests = []
    if ci is not None and baseline is not None:
        tests.append(
            f"its per-sentence {metric} gain over {against[baseline]} has a {ci:.0%} paired "
            f"bootstrap interval ({n_boot} resamples of sentences) above {min_effect:g}"
        )
    elif baseline == "uniform":
        tests.append(f"it beats the head's uniform-pattern {metric} by ≥ {margin:g}")
    elif baseline == "shuffled":
        tests.append(f"it beats its own shuffled version's {metric} by ≥ {margin:g}")
    elif baseline == "both":
        tests.append(f"it beats {against[baseline]} ({metric}) by ≥ {margin:g}")
    if threshold is not None:
        tests.append(f"its {metric} {'≥' if hib else '≤'} {threshold:g}")
    rule = f"{best} if {' and '.join(tests)}; else 'none'" if tests else f"{best} (no cut-off)"
    if ci is not None and baseline is not None:
        rule += "; effect = gain over the harder baseline, with its interval"
    return f"{rule}; ties within {tie:g} listed"


def _dropped_text(scores: pd.DataFrame) -> str:
    """The rule's note on sink keys removed before scoring (the table's ``drop_keys`` column)."""
    dropped = (
        sorted(set(scores["drop_keys"].astype(str)) - {"none"}) if "drop_keys" in scores else []
    )
    return f"; scored with keys removed: {', '.join(dropped)}" if dropped else ""


def _merge_aliases(
    candidates: pd.DataFrame,
) -> tuple[pd.DataFrame, dict[str, dict[str, list[str]]]]:
    """Keep one pattern of each group that scores identically on every head of a model."""
    keep, aliases = [], {}
    for model, sub in candidates.groupby("model", sort=False):
        wide = sub.pivot_table(
            index="pattern", columns=["layer", "head"], values="mean", sort=False
        )
        order = list(dict.fromkeys(sub["pattern"]))  # table order: built-ins first
        wide = wide.reindex(order)
        # a missing score (NaN) must match a missing score, so compare bytes with a sentinel
        rounded = np.nan_to_num(np.round(wide.to_numpy(dtype=float), 9), nan=-1e300)
        signature = [row.tobytes() for row in rounded]
        first: dict[bytes, str] = {}
        merged: dict[str, list[str]] = {}
        for name, sig in zip(order, signature):
            if sig in first:
                merged.setdefault(first[sig], []).append(name)
            else:
                first[sig] = name
        dropped = {n for names in merged.values() for n in names}
        keep.append(sub[~sub["pattern"].isin(dropped)])
        if merged:
            aliases[str(model)] = merged
    return (pd.concat(keep) if keep else candidates), aliases


def best_fit(
    scores: pd.DataFrame,
    *,
    threshold: float | None = None,
    baseline: Baseline | Literal["auto"] | None = "auto",
    margin: float = 0.05,
    tie_tolerance: float = 0.01,
    min_coverage: float = MIN_COVERAGE,
    min_sentences: int = MIN_SENTENCES,
    min_rows: int = MIN_ROWS,
    ci: float | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    min_effect: float = 0.0,
) -> pd.DataFrame:
    """The best-fitting pattern of every head, with a "no pattern" verdict (see module docstring).

    Two rules decide whether the best pattern becomes the label. The *fast* rule (the default,
    ``ci=None``: any score table works) compares means: the best pattern must beat the baseline
    by ``margin``. The *calibrated* rule (``ci=0.95``; what the README and the poster use) tests
    it: per sentence, the gain of the best pattern over each baseline (the head's ``uniform``
    score and the score of ``shuffled(<best>)``), and a paired bootstrap over sentences
    (``n_boot`` resamples, seeded, all heads at once) whose ``ci`` interval must lie above
    ``min_effect`` for both baselines. It needs a table scored with ``per_sentence=True`` on
    ``with_shuffled(patterns)`` plus ``uniform``; `label_heads` does all of it in one call.

    Args:
        scores: `score_heads` output (one metric).
        threshold: a fixed score the best pattern must reach (None: not used).
        baseline: ``"uniform"`` (the ``uniform`` pattern must be in the table), ``"shuffled"``
            (the ``shuffled(<pattern>)`` rows must be: score `with_shuffled` patterns),
            ``"both"`` (both), None (no baseline) or ``"auto"``: ``"uniform"`` for the fast
            rule, ``"both"`` for the calibrated one.
        margin: fast rule: how much better than the baseline's mean the best pattern must be.
        tie_tolerance: patterns within this of the best are listed in ``tied``.
        min_coverage, min_sentences, min_rows: the support rule (`supported`): a pattern is a
            candidate only where it predicts rows itself in enough sentences, on enough rows and
            (on tables averaged over all rows) on enough of the rows.
        ci: None for the fast rule, else the calibrated rule's interval coverage (e.g. 0.95).
        n_boot, seed: bootstrap resamples of sentences and their seed (calibrated rule).
        min_effect: calibrated rule: the interval's lower end must exceed this gain (metric
            units; 0 = "excludes zero").

    Returns:
        One row per (model, layer, head): ``model, layer, head, best_pattern, best_score, label,
        tied, baseline_score, threshold, rule`` then ``beats_baseline, passes_threshold,
        metric``. The calibrated rule adds, in metric units with "positive = the best pattern
        fits better": ``gain_uniform``, ``gain_uniform_low``, ``gain_uniform_high`` (mean
        per-sentence gain over the uniform baseline and its interval), the same for
        ``gain_shuffled``, then ``effect, ci_low, ci_high`` — the gain over the *harder*
        baseline (the one whose interval starts lower), named in ``effect_baseline`` and whose
        mean score is ``baseline_score`` — ``ci`` (the coverage) and ``n_paired`` (sentences
        paired). ``df.attrs["rule"]`` is the rule in one line.

    Example:
        >>> fit = best_fit(score_heads(records))                       # fast rule
        >>> fit = label_heads(records, ["previous_token", "first_token"])  # calibrated rule
        >>> fit[fit.label != "none"][["layer", "head", "label", "effect", "ci_low", "ci_high"]]
    """
    metric = _metric_of(scores)
    spec = get_metric(metric)
    hib = spec.higher_is_better
    if baseline not in ("auto", "uniform", "shuffled", "both", None):
        raise ValueError(
            f"baseline must be 'auto', 'uniform', 'shuffled', 'both' or None, got {baseline!r}"
        )
    if baseline == "auto":
        baseline = "uniform" if ci is None else "both"
    if ci is not None:
        if baseline is None:
            raise ValueError(
                "the calibrated rule (ci=...) tests the label against a baseline; baseline=None "
                "leaves nothing to test. Fix: baseline='both' (default), 'uniform' or "
                "'shuffled', or ci=None for the fast rule."
            )
        if not 0.0 < ci < 1.0:
            raise ValueError(
                f"ci must be a coverage strictly between 0 and 1 (e.g. 0.95), got {ci}"
            )
    if spec.raw and baseline in ("uniform", "both"):
        raise ValueError(
            f"best_fit with metric={metric!r} cannot use the uniform baseline: {metric} scores raw "
            "detection patterns (TransformerLens), where the all-ones uniform pattern always "
            "scores 1 on mul (nothing beats it) and far below any head on abs (everything "
            "does), and denser patterns always win on mul. Fix: choose best fits with one of "
            f"{', '.join(metric_names(ranks_patterns=True))}, and use top_heads(scores, pattern) for mul/abs, or pass "
            "baseline='shuffled' (with with_shuffled patterns) or a threshold."
        )
    if margin < 0 or tie_tolerance < 0:
        raise ValueError("margin and tie_tolerance must be non-negative")
    df = scores[[*HEAD_KEYS, "pattern", "mean"]].copy()
    df["signed"] = -df["mean"] if hib else df["mean"]  # lower is better from here on

    support = supported(
        scores, min_sentences=min_sentences, min_rows=min_rows, min_coverage=min_coverage
    )
    candidates = df[~_is_baseline(df["pattern"]) & np.isfinite(df["mean"]) & support]
    if baseline in ("uniform", "both"):
        candidates = candidates[candidates["pattern"] != "uniform"]
    candidates, aliases = _merge_aliases(candidates)
    if not np.isfinite(df["mean"]).any():
        raise ValueError("no pattern has a score for any head; nothing to choose from")
    ranked = candidates.sort_values([*HEAD_KEYS, "signed"], kind="stable")
    best = ranked.groupby(HEAD_KEYS, sort=True).head(1).set_index(HEAD_KEYS)
    lead = ranked.join(best["signed"].rename("lead"), on=HEAD_KEYS)
    near = lead[lead["signed"] <= lead["lead"] + tie_tolerance + 1e-12]
    tied = near.groupby(HEAD_KEYS, sort=True)["pattern"].agg(tuple)

    out = best.rename(columns={"pattern": "best_pattern", "mean": "best_score"})
    out["tied"] = tied
    # a head with no scorable candidate still gets a row: no best pattern, label "none"
    every_head = pd.MultiIndex.from_frame(df[HEAD_KEYS].drop_duplicates().sort_values(HEAD_KEYS))
    if len(every_head) != len(out):
        out = out.reindex(every_head)
        out["tied"] = [t if isinstance(t, tuple) else () for t in out["tied"]]
    calibrated = None
    if baseline is None:
        out["baseline_score"] = np.nan
        out["beats_baseline"] = pd.NA
    elif ci is not None:
        calibrated = _calibrate(scores, out, baseline, spec, ci, n_boot, seed, min_effect)
        out["baseline_score"] = calibrated.pop("baseline_score")
        out["beats_baseline"] = calibrated.pop("beats").astype(object)
    else:
        table = df.set_index([*HEAD_KEYS, "pattern"])["mean"]
        passed = np.ones(len(out), dtype=bool)
        for name in ("uniform", "shuffled") if baseline == "both" else (baseline,):
            out["baseline_score"] = _baseline_scores(table, out, name, "mean")
            base_signed = -out["baseline_score"] if hib else out["baseline_score"]
            passed &= (out["signed"] <= base_signed - margin).to_numpy()
        out["beats_baseline"] = pd.Series(passed, index=out.index).astype(object)
    out["threshold"] = np.nan if threshold is None else float(threshold)
    if threshold is None:
        out["passes_threshold"] = pd.NA
    else:
        limit = -threshold if hib else threshold
        out["passes_threshold"] = (out["signed"] <= limit).astype(object)
    ok = np.ones(len(out), dtype=bool)
    if baseline is not None:
        ok &= out["beats_baseline"].astype(bool).to_numpy()
    if threshold is not None:
        ok &= out["passes_threshold"].astype(bool).to_numpy()
    ok &= out["best_pattern"].notna().to_numpy()
    out["label"] = np.where(ok, out["best_pattern"], "none")
    used = [
        name for name, on in (("baseline", baseline), ("threshold", threshold)) if on is not None
    ]
    out["rule"] = "+".join(used) if used else "best"
    if calibrated is not None:
        out["rule"] = out["rule"].str.replace("baseline", "calibrated", regex=False)
    out["metric"] = metric
    extra = []
    if calibrated is not None:
        for col in calibrated.columns:
            out[col] = calibrated[col]
        extra = list(calibrated.columns)
    out = out.reset_index()
    cols = [*BEST_FIT_COLUMNS, "beats_baseline", "passes_threshold", "metric", *extra]
    result = out[cols].reset_index(drop=True)
    result.attrs = {
        "aliases": aliases,
        "min_coverage": min_coverage,
        "min_sentences": min_sentences,
        "min_rows": min_rows,
        "rule": _rule_text(
            metric,
            baseline,
            threshold,
            margin,
            tie_tolerance,
            min_coverage if (scores["rows"].astype(str) == "all").any() else 0.0,
            min_sentences,
            min_rows,
            ci=ci,
            n_boot=n_boot,
            min_effect=min_effect,
        )
        + _dropped_text(scores),
        "ci": ci,
        "min_effect": min_effect,
        "n_boot": n_boot if ci is not None else None,
        "seed": seed if ci is not None else None,
        "metric": metric,
        "baseline": baseline,
        "threshold": threshold,
        "margin": margin,
        "tie_tolerance": tie_tolerance,
    }
    return result


def label_heads(
    records: Sequence[Any],
    patterns: Iterable[str | Pattern] | None = None,
    *,
    metric: Metric = "jsd",
    ci: float = 0.95,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: Level = "token",
    rows: Rows = "all",
    contexts: Iterable[Any] | None = None,
    drop_keys: Any = None,
    min_share: float = MIN_SHARE,
    progress: bool = False,
    **fit_options: Any,
) -> pd.DataFrame:
    """Label every head with the calibrated rule in one call: score, then `best_fit` with ``ci``.

    Scores ``patterns`` (default: every registered one), their ``shuffled(...)`` versions and
    ``uniform`` with per-sentence scores, then applies the calibrated rule (see `best_fit`).
    ``fit_options`` go to `best_fit` (``min_effect``, ``threshold``, the support minimums, ...).

    Beating both baselines says the pattern fits better than chance, not that it says what the
    head mostly does: a head with a third of its attention on [CLS] beats uniform. So each
    labelled head also gets ``share`` — the mean share of its attention that falls on the label's
    predicted cells (TransformerLens's ``mul`` score of the pattern's raw weights), with its
    bootstrap interval ``share_low``/``share_high`` — and keeps its label only when ``share`` is
    at least ``min_share`` (default one half; 0 turns the test off). ``enough_share`` records
    the verdict.

    Example:
        >>> fit = label_heads(extract(load_model("minilm"), load_sentences("story")))
        >>> fit[fit.label != "none"][["layer", "head", "label", "effect", "ci_low", "ci_high"]]
    """
    names = [p.name for p in resolve_patterns(patterns) if not p.name.startswith("shuffled(")]
    names = with_shuffled([n for n in names if n != "uniform"]) + ["uniform"]
    scores = score_heads(
        records,
        names,
        metric=metric,
        level=level,
        rows=rows,
        contexts=contexts,
        drop_keys=drop_keys,
        per_sentence=True,
        progress=progress,
    )
    fit = best_fit(scores, ci=ci, n_boot=n_boot, seed=seed, **fit_options)
    return _attention_share(
        fit, records, ci=ci, n_boot=n_boot, seed=seed, min_share=min_share,
        level=level, contexts=contexts, drop_keys=drop_keys,
    )  # fmt: skip


def _attention_share(
    fit: pd.DataFrame,
    records: Sequence[Any],
    *,
    ci: float,
    n_boot: int,
    seed: int,
    min_share: float,
    level: Level,
    contexts: Iterable[Any] | None,
    drop_keys: Any,
) -> pd.DataFrame:
    """Add ``share, share_low, share_high, enough_share`` and apply ``min_share`` to labels."""
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must be within [0, 1], got {min_share}")
    out = fit.copy()
    out.attrs = dict(fit.attrs)
    for col in ("share", "share_low", "share_high"):
        out[col] = np.nan
    out["enough_share"] = pd.array([pd.NA] * len(out), dtype="boolean")
    labelled = out["label"] != "none"
    names = sorted(set(out.loc[labelled, "label"]))
    if names:
        ctx = None if contexts is None else list(contexts)
        mul = score_heads(
            records, names, metric="mul", level=level, contexts=ctx, drop_keys=drop_keys,
            per_sentence=True,
        ).set_index([*HEAD_KEYS, "pattern"])["per_sentence"]  # fmt: skip
        rows = out.index[labelled]
        keys = [(*out.loc[i, HEAD_KEYS], out.loc[i, "label"]) for i in rows]
        values = np.stack([np.asarray(mul.loc[k], dtype=np.float64) for k in keys])
        counts = resample_counts(values.shape[1], n_boot, seed)
        mean, low, high, _ = paired_interval(values, counts, ci)
        out.loc[rows, "share"], out.loc[rows, "share_low"], out.loc[rows, "share_high"] = (
            mean, low, high,
        )  # fmt: skip
        enough = mean >= min_share
        out.loc[rows, "enough_share"] = enough
        out.loc[rows[~enough], "label"] = "none"
    if min_share > 0:
        out.attrs["rule"] = (
            out.attrs.get("rule", "")
            + f"; and the label's cells hold ≥ {min_share:.0%} of the head's attention (mean share)"
        )
    out.attrs["min_share"] = min_share
    return out


def _baseline_name(best: pd.Series, which: str) -> pd.Series:
    if which == "uniform":
        return pd.Series("uniform", index=best.index)
    return "shuffled(" + best.astype(str) + ")"


def _baseline_scores(table: pd.Series, out: pd.DataFrame, which: str, column: str) -> np.ndarray:
    """Each head's ``which`` baseline (``"uniform"`` or ``"shuffled"`` of its best pattern) from
    ``table`` (indexed by head keys and pattern); a missing row is an error naming the fix."""
    names = _baseline_name(out["best_pattern"], which)
    wanted = [(*key, name) for key, name in zip(out.index, names)]
    has_best = out["best_pattern"].notna().to_numpy()
    missing = [w for w, ok in zip(wanted, has_best) if ok and w not in table.index]
    if missing:
        fix = (
            "score the 'uniform' pattern too (it is a built-in)"
            if which == "uniform"
            else "score with_shuffled(patterns)"
        )
        raise ValueError(
            f"the {which} baseline needs the pattern {missing[0][-1]!r} for head "
            f"{missing[0][:3]} but the score table has no such row ({column}). Fix: {fix}, or "
            "pass baseline=None."
        )
    return table.reindex(wanted).to_numpy()


def _sentence_matrix(cells: np.ndarray, heads: list[tuple], which: str) -> np.ndarray:
    """Stack per-sentence score arrays ``[h, S]``; refuse entries that are not number arrays
    (a CSV round trip turns them into text)."""
    rows = []
    for key, cell in zip(heads, cells):
        if isinstance(cell, str) or not hasattr(cell, "__len__"):
            raise ValueError(
                f"per_sentence of head {key} ({which}) is {type(cell).__name__}, not an array of "
                "scores: CSV stores arrays as text. Fix: save score tables with to_parquet "
                "(which keeps them), or re-score with score_heads(..., per_sentence=True)."
            )
        rows.append(np.asarray(cell, dtype=np.float64))
    lengths = {len(r) for r in rows}
    if len(lengths) > 1:
        raise ValueError(
            f"per_sentence arrays of one model have different lengths {sorted(lengths)}; they "
            "must come from one score_heads call. Fix: re-score the model's records in one call."
        )
    return np.stack(rows) if rows else np.zeros((0, 0))


def _calibrate(
    scores: pd.DataFrame,
    out: pd.DataFrame,
    baseline: str,
    spec: Any,
    ci: float,
    n_boot: int,
    seed: int,
    min_effect: float,
) -> pd.DataFrame:
    """The calibrated rule's columns for ``out`` (indexed by head, with ``best_pattern``)."""
    if "per_sentence" not in scores.columns:
        raise ValueError(
            "the calibrated rule (ci=...) pairs each head's per-sentence scores, but the table "
            "has no per_sentence column. Fix: score_heads(records, with_shuffled(patterns) + "
            "['uniform'], per_sentence=True), or label_heads(records, patterns) in one call; "
            "or pass ci=None for the fast rule."
        )
    which = ("uniform", "shuffled") if baseline == "both" else (baseline,)
    table = scores.set_index([*HEAD_KEYS, "pattern"])
    cells = table["per_sentence"]
    means = table["mean"]
    orient = -1.0 if spec.higher_is_better else 1.0  # gain = orient · (baseline − best)
    cols: dict[str, np.ndarray] = {}
    n = len(out)
    for name in which:
        for suffix in ("", "_low", "_high"):
            cols[f"gain_{name}{suffix}"] = np.full(n, np.nan)
    n_paired = np.zeros(n, dtype=np.int64)
    base_mean = {name: _baseline_scores(means, out, name, "mean") for name in which}
    has_best = out["best_pattern"].notna().to_numpy()
    models = out.index.get_level_values("model").to_numpy()
    for model in dict.fromkeys(models[has_best]):
        at = np.flatnonzero(has_best & (models == model))
        heads = [out.index[i] for i in at]
        best_keys = [(*k, b) for k, b in zip(heads, out["best_pattern"].iloc[at])]
        best = _sentence_matrix(cells.reindex(best_keys).to_numpy(), heads, "best pattern")
        counts = resample_counts(best.shape[1], n_boot, seed)
        paired = np.zeros(len(at), dtype=np.int64) + best.shape[1]
        for name in which:
            names = _baseline_name(out["best_pattern"].iloc[at], name)
            keys = [(*k, b) for k, b in zip(heads, names)]
            base = _sentence_matrix(cells.reindex(keys).to_numpy(), heads, name)
            if base.shape != best.shape:
                raise ValueError(
                    f"per_sentence of {model!r}: the {name} baseline has {base.shape[1]} "
                    f"sentences, the best patterns {best.shape[1]}. Fix: score them in one call."
                )
            mean, low, high, used = paired_interval(orient * (base - best), counts, ci)
            cols[f"gain_{name}"][at] = mean
            cols[f"gain_{name}_low"][at] = low
            cols[f"gain_{name}_high"][at] = high
            paired = np.minimum(paired, used)
        n_paired[at] = paired
    lows = np.stack([cols[f"gain_{name}_low"] for name in which])  # [b, n]
    beats = (np.nan_to_num(lows, nan=-np.inf) > min_effect).all(axis=0) & has_best
    # the effect is stated against the harder baseline: the one whose interval starts lower
    harder = np.argmin(np.nan_to_num(lows, nan=np.inf), axis=0)
    pick = np.arange(n)
    for key, suffix in (("effect", ""), ("ci_low", "_low"), ("ci_high", "_high")):
        stacked = np.stack([cols[f"gain_{name}{suffix}"] for name in which])
        cols[key] = stacked[harder, pick]
    chosen = np.array(which, dtype=object)[harder]
    cols["effect_baseline"] = np.where(
        has_best,
        np.where(
            chosen == "uniform", "uniform", "shuffled(" + out["best_pattern"].astype(str) + ")"
        ),
        None,
    )
    cols["baseline_score"] = np.stack([base_mean[name] for name in which])[harder, pick]
    cols["ci"] = np.full(n, float(ci))
    cols["n_paired"] = n_paired
    cols["beats"] = beats
    return pd.DataFrame(cols, index=out.index)


def top_heads(
    scores: pd.DataFrame,
    pattern: str | Pattern,
    k: int = 3,
    *,
    margin: float = 0.05,
    min_coverage: float = MIN_COVERAGE,
    min_sentences: int = MIN_SENTENCES,
    min_rows: int = MIN_ROWS,
) -> pd.DataFrame:
    """The ``k`` heads that fit ``pattern`` best, per model, best first (with a ``rank`` column).

    A model on which the pattern lacks support (`supported`: it predicts too few rows itself,
    e.g. ``punctuation`` on a decoder, where every row falls back to self) gets no rows: its
    "best" heads would be the best *self* heads. ``baseline_score`` is the head's own
    ``uniform`` score and ``fits`` says whether the head beats it by ``margin`` (the baseline
    `best_fit` uses); both are missing (NaN / ``<NA>``) where the table has no ``uniform`` row or
    the metric scores raw weights. `top_heads_many` answers for many patterns in one pass.

    Example:
        >>> top_heads(score_heads(records), "previous_token", k=5)
    """
    name = pattern.name if isinstance(pattern, Pattern) else str(pattern)
    return top_heads_many(
        scores, [name], k, margin=margin, min_coverage=min_coverage,
        min_sentences=min_sentences, min_rows=min_rows,
    )[name]  # fmt: skip


def top_heads_many(
    scores: pd.DataFrame,
    patterns: Iterable[str | Pattern] | None = None,
    k: int = 3,
    *,
    margin: float = 0.05,
    min_coverage: float = MIN_COVERAGE,
    min_sentences: int = MIN_SENTENCES,
    min_rows: int = MIN_ROWS,
) -> dict[str, pd.DataFrame]:
    """`top_heads` for many patterns (default: every pattern of the table, in table order), as
    ``{pattern: table}``; one sort and one baseline lookup for all of them, so a report that
    lists a hundred patterns does not filter the whole table a hundred times."""
    metric = _metric_of(scores)
    spec = get_metric(metric)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    present = scores["pattern"].astype(str)
    if patterns is None:
        names = list(dict.fromkeys(present))
    else:
        names = [p.name if isinstance(p, Pattern) else str(p) for p in patterns]
    missing = [n for n in names if n not in set(present)]
    if missing:
        raise ValueError(
            f"pattern {missing[0]!r} is not in the score table (it has "
            f"{sorted(scores['pattern'].unique())[:8]}...). Fix: score it with score_heads."
        )
    ok = supported(scores, min_sentences=min_sentences, min_rows=min_rows,
                   min_coverage=min_coverage)  # fmt: skip
    keep = present.isin(names) & ok & np.isfinite(scores["mean"])
    sub = scores[keep].assign(_pattern=present[keep])
    ordered = sub.sort_values(
        ["_pattern", "model", "mean"], ascending=[True, True, spec.sort_ascending], kind="stable"
    )
    top = ordered.groupby(["_pattern", "model"], sort=False).head(k).copy()
    top["rank"] = top.groupby(["_pattern", "model"]).cumcount() + 1
    uniform = scores[present == "uniform"].set_index(HEAD_KEYS)["mean"]
    if spec.raw or uniform.empty or top.empty:
        top["baseline_score"] = np.nan
        top["fits"] = pd.NA
    else:
        base = uniform.reindex(pd.MultiIndex.from_frame(top[HEAD_KEYS])).to_numpy()
        gain = spec.signed(base) - spec.signed(top["mean"].to_numpy())
        top["baseline_score"] = base
        top["fits"] = pd.array(np.where(np.isfinite(base), gain >= margin, False), dtype="boolean")
    groups = dict(tuple(top.groupby("_pattern", sort=False)))
    empty = top.iloc[:0]
    return {
        name: groups.get(name, empty).drop(columns="_pattern").reset_index(drop=True)
        for name in names
    }


def _shared_sentences(a: Sequence[Any], b: Sequence[Any]) -> set[tuple[str, str]]:
    """(model, text) pairs present on both sides: records are rebuilt on every extract call,
    so identity cannot tell that two lists hold the same sentences."""
    return {(r.model, r.text) for r in a} & {(r.model, r.text) for r in b}


def __getattr__(name: str) -> Any:
    # linear_fit and consistency live in attn_tools.mixtures and attn_tools.consistency (which
    # import best_fit from here); resolved on
    # first use so that importing either module first works
    if name == "linear_fit":
        from attn_tools.mixtures import linear_fit

        return linear_fit
    if name == "consistency":
        from attn_tools.consistency import consistency

        return consistency
    raise AttributeError(f"module 'attn_tools.classify' has no attribute {name!r}")
