"""Turn a score table into findings: best fit per head, top heads, held-out checks, mixtures.

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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.linalg import cho_factor, solve_triangular
from scipy.optimize import nnls

from attn_tools.patterns import (
    Pattern,
    build_contexts,
    predict_many,
    resolve_patterns,
)
from attn_tools.scoring import (
    Level,
    Metric,
    Rows,
    ScoreOptions,
    get_metric,
    metric_names,
    score_heads,
)
from attn_tools.text import pool_patterns, pooling_matrices

__all__ = [
    "MIN_COVERAGE",
    "MIN_ROWS",
    "MIN_SENTENCES",
    "best_fit",
    "consistency",
    "linear_fit",
    "supported",
    "top_heads",
    "with_shuffled",
]

Baseline = Literal["uniform", "shuffled"]
HEAD_KEYS = ["model", "layer", "head"]
BEST_FIT_COLUMNS = (
    "model", "layer", "head", "best_pattern", "best_score", "label", "tied",
    "baseline_score", "threshold", "rule",
)  # fmt: skip


#: defaults of the support rule (see `supported`); every function that uses it takes overrides.
MIN_SENTENCES = 5
MIN_ROWS = 20
MIN_COVERAGE = 0.5
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
) -> str:
    """The labelling rule in one line, for captions (``best_fit(...).attrs["rule"]``)."""
    hib = get_metric(metric).higher_is_better
    needs = [f"≥ {min_coverage:.0%} of rows"] if min_coverage > 0 else []
    needs += (
        [f"≥ {min_rows} rows in ≥ {min_sentences} sentences"] if min_rows or min_sentences else []
    )
    among = f" (of patterns predicting {' and '.join(needs)})" if needs else ""
    best = f"label = pattern with the {'highest' if hib else 'lowest'} {metric}{among}"
    tests = []
    if baseline == "uniform":
        tests.append(f"it beats the head's uniform-pattern {metric} by ≥ {margin:g}")
    elif baseline == "shuffled":
        tests.append(f"it beats its own shuffled version's {metric} by ≥ {margin:g}")
    if threshold is not None:
        tests.append(f"its {metric} {'≥' if hib else '≤'} {threshold:g}")
    rule = f"{best} if {' and '.join(tests)}; else 'none'" if tests else f"{best} (no cut-off)"
    return f"{rule}; ties within {tie:g} listed"


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
    baseline: Baseline | None = "uniform",
    margin: float = 0.05,
    tie_tolerance: float = 0.01,
    min_coverage: float = MIN_COVERAGE,
    min_sentences: int = MIN_SENTENCES,
    min_rows: int = MIN_ROWS,
) -> pd.DataFrame:
    """The best-fitting pattern of every head, with a "no pattern" verdict (see module docstring).

    Args:
        scores: `score_heads` output (one metric).
        threshold: a fixed score the best pattern must reach (None: not used).
        baseline: ``"uniform"`` (the ``uniform`` pattern must be in the table), ``"shuffled"``
            (the ``shuffled(<pattern>)`` rows must be: score `with_shuffled` patterns) or None.
        margin: how much better than the baseline the best pattern must be.
        tie_tolerance: patterns within this of the best are listed in ``tied``.
        min_coverage, min_sentences, min_rows: the support rule (`supported`): a pattern is a
            candidate only where it predicts rows itself in enough sentences, on enough rows and
            (on tables averaged over all rows) on enough of the rows.

    Returns:
        One row per (model, layer, head): ``model, layer, head, best_pattern, best_score, label,
        tied, baseline_score, threshold, rule`` then ``beats_baseline, passes_threshold,
        metric``. ``df.attrs["rule"]`` is the rule in one line.

    Example:
        >>> fit = best_fit(score_heads(records))
        >>> fit[fit.label != "none"]
    """
    metric = _metric_of(scores)
    spec = get_metric(metric)
    hib = spec.higher_is_better
    if baseline not in ("uniform", "shuffled", None):
        raise ValueError(f"baseline must be 'uniform', 'shuffled' or None, got {baseline!r}")
    if spec.raw and baseline == "uniform":
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
    if baseline == "uniform":
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
    if baseline is None:
        out["baseline_score"] = np.nan
    else:
        table = df.set_index([*HEAD_KEYS, "pattern"])["mean"]
        has_best = out["best_pattern"].notna()
        if baseline == "uniform":
            names = pd.Series("uniform", index=out.index)
            fix = "score the 'uniform' pattern too (it is a built-in)"
        else:
            names = "shuffled(" + out["best_pattern"].astype(str) + ")"
            fix = "score with_shuffled(patterns)"
        wanted = [(*key, name) for key, name in zip(out.index, names)]
        missing = [w for w, ok in zip(wanted, has_best) if ok and w not in table.index]
        if missing:
            raise ValueError(
                f"baseline={baseline!r} needs the pattern {missing[0][-1]!r} for head "
                f"{missing[0][:3]} but the score table has no such row. Fix: {fix}, or pass "
                "baseline=None."
            )
        out["baseline_score"] = table.reindex(wanted).to_numpy()
    base_signed = -out["baseline_score"] if hib else out["baseline_score"]
    if baseline is None:
        out["beats_baseline"] = pd.NA
    else:
        out["beats_baseline"] = (out["signed"] <= base_signed - margin).astype(object)
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
    out["metric"] = metric
    out = out.reset_index()
    cols = [*BEST_FIT_COLUMNS, "beats_baseline", "passes_threshold", "metric"]
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
        ),
        "metric": metric,
        "baseline": baseline,
        "threshold": threshold,
        "margin": margin,
        "tie_tolerance": tie_tolerance,
    }
    return result


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
    "best" heads would be the best *self* heads. The ``fits`` column says whether the head beats
    its own ``uniform`` score by ``margin`` (the baseline `best_fit` uses); it is missing
    (``<NA>``) where the table has no ``uniform`` row or the metric scores raw weights.

    Example:
        >>> top_heads(score_heads(records), "previous_token", k=5)
    """
    metric = _metric_of(scores)
    spec = get_metric(metric)
    name = pattern.name if isinstance(pattern, Pattern) else str(pattern)
    sub = scores[scores["pattern"] == name]
    if sub.empty:
        raise ValueError(
            f"pattern {name!r} is not in the score table (it has "
            f"{sorted(scores['pattern'].unique())[:8]}...). Fix: score it with score_heads."
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ok = supported(sub, min_sentences=min_sentences, min_rows=min_rows, min_coverage=min_coverage)
    sub = sub[ok & np.isfinite(sub["mean"])]
    ordered = sub.sort_values(
        ["model", "mean"], ascending=[True, spec.sort_ascending], kind="stable"
    )
    top = ordered.groupby("model", sort=False).head(k).copy()
    top["rank"] = top.groupby("model").cumcount() + 1
    uniform = scores[scores["pattern"] == "uniform"].set_index(HEAD_KEYS)["mean"]
    if spec.raw or uniform.empty or top.empty:
        top["fits"] = pd.NA
    else:
        base = uniform.reindex(pd.MultiIndex.from_frame(top[HEAD_KEYS])).to_numpy()
        gain = spec.signed(base) - spec.signed(top["mean"].to_numpy())
        top["fits"] = pd.array(np.where(np.isfinite(base), gain >= margin, False), dtype="boolean")
    return top.reset_index(drop=True)


# ----------------------------------------------------------------------------- consistency


def _shared_sentences(a: Sequence[Any], b: Sequence[Any]) -> set[tuple[str, str]]:
    """(model, text) pairs present on both sides: records are rebuilt on every extract call,
    so identity cannot tell that two lists hold the same sentences."""
    return {(r.model, r.text) for r in a} & {(r.model, r.text) for r in b}


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return np.sort(order[:half]), np.sort(order[half:])


def consistency(
    records: Sequence[Any],
    patterns: Iterable[str | Pattern] | None = None,
    *,
    metric: Metric = "jsd",
    seed: int = 0,
    heldout: Sequence[Any] | None = None,
    level: Level = "token",
    rows: Rows = "all",
    baseline: Baseline | None = "uniform",
    threshold: float | None = None,
    margin: float = 0.05,
    tie_tolerance: float = 0.01,
    min_coverage: float = 0.5,
    progress: bool = False,
    **score_options: Any,
) -> pd.DataFrame:
    """Does each head's best pattern hold on sentences it was not chosen on?

    The records are split at random (``seed``) into halves A and B (or A = ``records``,
    B = ``heldout``). `best_fit` picks each head's pattern on A and, independently, on B.

    Returns:
        One row per head: ``model, layer, head, pattern_a, pattern_b, agree`` (same best pattern),
        ``score_a`` (pattern_a's score on A), ``score_b`` (pattern_a's score on held-out B),
        ``drift`` (``score_b − score_a``; for a distance, positive = worse on held-out text),
        ``label_a, label_b, label_agree``, ``tied_agree`` (pattern_a is among B's near-ties),
        ``rank_b`` (pattern_a's rank on B, 1 = best), ``n_a, n_b`` (sentences).
        ``df.attrs`` has the split sizes, the rule and ``agreement`` (share of heads that agree).
    """
    records = list(records)
    if heldout is None:
        if len(records) < 2:
            raise ValueError("consistency needs at least 2 records to split in halves")
        ia, ib = _split(len(records), seed)
        fit_recs = [records[i] for i in ia]
        val_recs = [records[i] for i in ib]
    else:
        fit_recs, val_recs = records, list(heldout)
        if not fit_recs or not val_recs:
            raise ValueError("consistency needs records on both sides")
        shared = _shared_sentences(fit_recs, val_recs)
        if shared:
            raise ValueError(
                f"{len(shared)} held-out sentence(s) are also in the fit records, e.g. "
                f"{next(iter(shared))[1][:60]!r}; a finding must be checked on unseen text. "
                "Fix: pass disjoint sets (load_sentences('heldout') is kept apart from 'all')."
            )
    names = [p.name for p in resolve_patterns(patterns)]
    if baseline == "uniform" and "uniform" not in names:
        names.append("uniform")
    if baseline == "shuffled":
        names = with_shuffled(names)
    opts = dict(metric=metric, level=level, rows=rows, progress=progress, **score_options)
    need_parse = level == "word" or any(p.needs_parse for p in resolve_patterns(names))
    scores_a = score_heads(
        fit_recs, names, contexts=build_contexts(fit_recs, with_parse=need_parse), **opts
    )
    scores_b = score_heads(
        val_recs, names, contexts=build_contexts(val_recs, with_parse=need_parse), **opts
    )
    fit_opts = dict(
        baseline=baseline,
        threshold=threshold,
        margin=margin,
        tie_tolerance=tie_tolerance,
        min_coverage=min_coverage,
    )
    fa = best_fit(scores_a, **fit_opts).set_index(HEAD_KEYS)
    fb = best_fit(scores_b, **fit_opts).set_index(HEAD_KEYS)
    table_b = scores_b.set_index([*HEAD_KEYS, "pattern"])["mean"]

    hib = get_metric(metric).higher_is_better
    cand_b = scores_b[~_is_baseline(scores_b["pattern"])]
    if baseline == "uniform":
        cand_b = cand_b[cand_b["pattern"] != "uniform"]
    cand_b = cand_b.assign(signed=-cand_b["mean"] if hib else cand_b["mean"])
    cand_b = cand_b.assign(
        rank=cand_b.groupby(HEAD_KEYS)["signed"].rank(method="min", na_option="bottom")
    )
    rank_b = cand_b.set_index([*HEAD_KEYS, "pattern"])["rank"]

    out = pd.DataFrame(index=fa.index)
    out["pattern_a"] = fa["best_pattern"]
    out["pattern_b"] = fb["best_pattern"].reindex(fa.index)
    out["agree"] = out["pattern_a"] == out["pattern_b"]
    out["score_a"] = fa["best_score"]
    keys = [(*key, p) for key, p in zip(out.index, out["pattern_a"])]
    out["score_b"] = table_b.reindex(keys).to_numpy()
    out["drift"] = out["score_b"] - out["score_a"]
    out["label_a"] = fa["label"]
    out["label_b"] = fb["label"].reindex(fa.index)
    out["label_agree"] = out["label_a"] == out["label_b"]
    out["tied_agree"] = [p in t for p, t in zip(out["pattern_a"], fb["tied"].reindex(fa.index))]
    out["rank_b"] = rank_b.reindex(keys).to_numpy()
    out["n_a"] = len(fit_recs)
    out["n_b"] = len(val_recs)
    out = out.reset_index()
    out.attrs = {
        "metric": metric,
        "seed": seed,
        "n_a": len(fit_recs),
        "n_b": len(val_recs),
        "rule": fa.attrs.get("rule", ""),
        "agreement": float(out["agree"].mean()),
        "agreement_by_model": out.groupby("model")["agree"].mean().to_dict(),
    }
    return out


# ----------------------------------------------------------------------------- linear mixtures


class _Moments:
    """Sufficient statistics of least squares ``A ≈ Σ_p w_p P_p`` for all heads of one model."""

    def __init__(self, n_heads: int, n_patterns: int) -> None:
        self.gram = np.zeros((n_patterns, n_patterns))  # Σ P Pᵀ, shared by every head
        self.cross = np.zeros((n_heads, n_patterns))  # Σ A Pᵀ per head
        self.a_sq = np.zeros(n_heads)
        self.a_sum = np.zeros(n_heads)
        self.cells = 0

    def add(self, A: np.ndarray, P: np.ndarray) -> None:
        self.gram += P @ P.T
        self.cross += A @ P.T
        self.a_sq += (A * A).sum(axis=1)
        self.a_sum += A.sum(axis=1)
        self.cells += A.shape[1]


def _flat_inputs(rec: Any, ctx: Any, pats: Sequence[Pattern], level: str):
    """``(A [M, c], P [Q, c], n)``: row-normalised attention and patterns, flattened cells."""
    att = rec.attention
    L, H, n, _ = att.shape
    P, mass = predict_many(pats, ctx)
    A = att.reshape(L * H, n, n).astype(np.float64)
    A = A / A.sum(axis=-1, keepdims=True)
    if level == "word":
        sum_to, mean_from = pooling_matrices(ctx.alignment)
        A = mean_from @ A @ sum_to.T
        P, _ = pool_patterns(P, mass, ctx.alignment)
    m = A.shape[-1]
    return A.reshape(len(A), m * m), P.reshape(len(P), m * m), m


def _iter_inputs(records: Sequence[Any], pats: Sequence[Pattern], level: str, chunk: int = 64):
    need_parse = level == "word" or any(p.needs_parse for p in pats)
    for start in range(0, len(records), chunk):
        recs = records[start : start + chunk]
        for rec, ctx in zip(recs, build_contexts(recs, with_parse=need_parse)):
            yield rec, _flat_inputs(rec, ctx, pats, level)


def _solve_nnls(moments: _Moments, ridge: float) -> np.ndarray:
    """Non-negative least squares for every head from the normal equations: ``[M, Q]``."""
    gram = moments.gram
    q = len(gram)
    # duplicate patterns (previous_token, previous_token_head) make the Gram matrix singular
    reg = gram + ridge * max(np.trace(gram) / q, 1e-12) * np.eye(q)
    lower_tri = np.tril(cho_factor(reg, lower=True)[0])
    design = lower_tri.T  # ‖Lᵀw − L⁻¹b‖² = wᵀGw − 2bᵀw + const
    targets = solve_triangular(lower_tri, moments.cross.T, lower=True).T
    weights = np.zeros_like(moments.cross)
    for h, target in enumerate(targets):
        weights[h], _ = nnls(design, target, maxiter=50 * q)
    return weights


def linear_fit(
    fit_records: Sequence[Any],
    eval_records: Sequence[Any],
    patterns: Iterable[str | Pattern] | None = None,
    *,
    metric: Metric = "jsd",
    level: Level = "token",
    ridge: float = 1e-9,
    base: float = 2.0,
    min_weight: float = 1e-3,
) -> pd.DataFrame:
    """Fit each head as a non-negative mixture of patterns on one split; judge it on another.

    On ``fit_records``, each head's attention is regressed (least squares over all cells of all
    sentences, weights ≥ 0) on the normalised predictions of ``patterns``. On ``eval_records`` —
    never the sentences it was fitted to — the mixture ``Σ w_p P_p`` (rows renormalised; a row
    with no mass falls back to self) is scored with ``metric`` against the attention, next to the
    best *single* pattern chosen on the fit split and scored on the eval split.

    Returns:
        One row per head: ``model, layer, head, weights`` (``{pattern: w}`` for ``w ≥
        min_weight``, largest first), ``top_pattern``, ``n_patterns``, ``fit_r2``,
        ``eval_r2`` (cell-wise R² of the unnormalised mixture), ``eval_score`` (the mixture's
        ``metric`` on the eval split), ``single_pattern``, ``single_eval_score``, ``metric``.
    """
    spec = get_metric(metric)
    if not spec.ranks_patterns or spec.paired is None:
        raise ValueError(
            f"linear_fit scores mixtures with a distribution metric that ranks patterns "
            f"({', '.join(metric_names(ranks_patterns=True))}), got {metric!r}"
        )
    options = ScoreOptions(metric=metric, base=base)
    fit_records, eval_records = list(fit_records), list(eval_records)
    if not fit_records or not eval_records:
        raise ValueError("linear_fit needs records in both the fit and the eval split")
    if _shared_sentences(fit_records, eval_records):
        raise ValueError(
            "the fit and eval records overlap; a mixture must be judged on sentences it was not "
            "fitted to. Fix: split them (e.g. records[::2], records[1::2])."
        )
    pats = [p for p in resolve_patterns(patterns) if p.family != "baseline"]
    names = [p.name for p in pats]

    moments: dict[str, _Moments] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for rec, (A, P, _) in _iter_inputs(fit_records, pats, level):
        mom = moments.setdefault(rec.model, _Moments(len(A), len(pats)))
        shapes[rec.model] = rec.attention.shape[:2]
        mom.add(A, P)
    weights = {model: _solve_nnls(mom, ridge) for model, mom in moments.items()}

    ev: dict[str, dict[str, np.ndarray]] = {}
    for rec, (A, P, m) in _iter_inputs(eval_records, pats, level):
        if rec.model not in weights:
            raise ValueError(f"eval record of {rec.model!r}, a model with no fit records")
        W = weights[rec.model]
        mix = W @ P  # [M, cells]
        acc = ev.setdefault(
            rec.model,
            {k: np.zeros(len(A)) for k in ("sse", "a_sq", "a_sum", "score")}
            | {"n": np.zeros(1), "cells": np.zeros(1)},
        )
        acc["sse"] += ((mix - A) ** 2).sum(axis=1)
        acc["a_sq"] += (A * A).sum(axis=1)
        acc["a_sum"] += A.sum(axis=1)
        acc["cells"] += A.shape[1]
        rows = mix.reshape(len(A), m, m)
        empty = rows.sum(axis=-1) <= 0
        rows = np.where(empty[..., None], np.eye(m)[None], rows)
        att = A.reshape(len(A), m, m)
        rows = rows / rows.sum(axis=-1, keepdims=True)
        per_row = spec.paired(att, rows, options)
        acc["score"] += per_row.mean(axis=-1)
        acc["n"] += 1

    single_fit = best_fit(
        score_heads(fit_records, names, metric=metric, level=level, base=base), baseline=None
    ).set_index(HEAD_KEYS)
    single_eval = score_heads(eval_records, names, metric=metric, level=level, base=base)
    single_eval = single_eval.set_index([*HEAD_KEYS, "pattern"])["mean"]

    frames = []
    for model, W in weights.items():
        mom = moments[model]
        L, H = shapes[model]
        quad = np.einsum("hp,pq,hq->h", W, mom.gram, W)
        sse_fit = mom.a_sq - 2 * (W * mom.cross).sum(axis=1) + quad
        sst_fit = mom.a_sq - mom.a_sum**2 / mom.cells
        acc = ev.get(model)
        rows = []
        for h in range(L * H):
            order = np.argsort(-W[h])
            mix = {names[i]: float(W[h, i]) for i in order if W[h, i] >= min_weight}
            key = (model, h // H, h % H)
            single = single_fit["best_pattern"].get(key)
            row = {
                "model": model,
                "layer": h // H,
                "head": h % H,
                "weights": mix,
                "top_pattern": names[order[0]] if W[h, order[0]] > 0 else "none",
                "n_patterns": len(mix),
                "fit_r2": float(1 - sse_fit[h] / sst_fit[h]) if sst_fit[h] > 0 else np.nan,
                "eval_r2": np.nan,
                "eval_score": np.nan,
                "single_pattern": single,
                "single_eval_score": float(single_eval.get((*key, single), np.nan)),
                "metric": metric,
            }
            if acc is not None:
                sst = acc["a_sq"][h] - acc["a_sum"][h] ** 2 / acc["cells"][0]
                row["eval_r2"] = float(1 - acc["sse"][h] / sst) if sst > 0 else np.nan
                row["eval_score"] = float(acc["score"][h] / acc["n"][0])
            rows.append(row)
        frames.append(pd.DataFrame(rows))
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {
        "metric": metric,
        "n_fit": len(fit_records),
        "n_eval": len(eval_records),
        "level": level,
    }
    return out
