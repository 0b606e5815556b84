"""Fair baselines for discovered programs: what a program must beat before it counts.

A sharp built-in pattern (all mass on one key) is punished by ``jsd`` against a diffuse head, so
"first token + a little of everything" beats ``first_token`` without discovering anything. Two
baselines close that loophole; both are fitted on the example sentences only and scored on the
held-out sentences, like the program:

- **smoothed built-in**: ``α·pattern + (1−α)·uniform`` for every built-in, ``α`` chosen per head
  and pattern on the example sentences by a 1-D search (a 0.1 grid, then a 0.01 grid around
  the best for the patterns closest to the head) with the run's metric. The reported one is the built-in whose smoothed version
  scores best on the held-out sentences (the same generous choice as the raw best built-in).
  ``α = 1`` is the raw pattern, so smoothing never makes a built-in worse on the examples.
- **mix of built-ins**: `attn_tools.mixtures.linear_fit`'s non-negative mixture of every
  built-in, fitted on the example sentences, scored on held-out.

`fair_baselines` computes both for many heads at once (one pass over the sentences per α
step, all heads and patterns vectorised); `baseline_row` reads one head's values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from attn_tools.automate.evaluate import builtin_patterns, ranking_metric
from attn_tools.patterns.base import Pattern, PatternContext, get_pattern, predict, predict_many
from attn_tools.scoring import MetricSpec, ScoreOptions

__all__ = ["COARSE_ALPHAS", "FAIR_COLUMNS", "baseline_row", "fair_baselines", "smoothed_scores"]

#: the first grid of the α search (every built-in); the second is ±0.09 around its best in
#: steps of 0.01, for the `_REFINE` built-ins that fit each head best after the first.
COARSE_ALPHAS = tuple(float(a) for a in np.round(np.linspace(0.0, 1.0, 11), 2))
_REFINE = 4
#: the per-head columns `fair_baselines` adds (and `HeadResult` carries).
FAIR_COLUMNS = ("smoothed_name", "smoothed_alpha", "smoothed_score", "mix_score", "mix_weights")
_HEAD_CHUNK = 48  # heads per vectorised block: bounds memory at [chunk, patterns, n, n]


def _round(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 5)


def _head_attention(rec: Any, heads: np.ndarray) -> np.ndarray:
    """``[M, n, n]`` float64 attention of the flat head indices, rows renormalised."""
    att = np.asarray(rec.attention)
    L, H, n, _ = att.shape
    A = att.reshape(L * H, n, n)[heads].astype(np.float64)
    sums = A.sum(axis=-1, keepdims=True)
    return A / np.where(sums > 0, sums, 1.0)


def _pass(
    A: np.ndarray, P: np.ndarray, U: np.ndarray, alpha: np.ndarray, spec: MetricSpec
) -> np.ndarray:
    """Mean over rows of the metric between each head and each smoothed pattern: ``[M, Q]``.

    ``A [M, n, n]`` heads, ``P`` normalised patterns, ``[Q, n, n]`` shared by all heads or
    ``[M, Q, n, n]`` per head, ``U [n, n]`` uniform, ``alpha [M, Q]``: the smoothing weight of
    each (head, pattern).
    """
    opt = ScoreOptions(metric=spec.name)
    out = np.empty(alpha.shape)
    for s in range(0, len(A), _HEAD_CHUNK):
        a = alpha[s : s + _HEAD_CHUNK, :, None, None]
        pat = P[None] if P.ndim == 3 else P[s : s + _HEAD_CHUNK]
        smoothed = a * pat + (1.0 - a) * U  # [m, Q, n, n], rows sum to 1
        rows = spec.paired(A[s : s + _HEAD_CHUNK, None], smoothed, opt)  # [m, Q, n]
        out[s : s + _HEAD_CHUNK] = np.asarray(rows, dtype=np.float64).mean(axis=-1)
    return out


def _inputs(records: Sequence[Any], contexts: Sequence[PatternContext], pats: list[Pattern]):
    """Per sentence, the normalised predictions of ``pats`` and of ``uniform`` (computed once)."""
    uniform = get_pattern("uniform")
    for rec, ctx in zip(records, contexts):
        P, _ = predict_many(pats, ctx)
        yield rec, P, predict(uniform, ctx)[0]


def smoothed_scores(
    records: Sequence[Any],
    contexts: Sequence[PatternContext],
    patterns: Sequence[Pattern],
    alpha: np.ndarray | float,
    *,
    heads: Sequence[int],
    metric: str | MetricSpec = "jsd",
) -> np.ndarray:
    """Mean over sentences of each head's score against ``α·pattern + (1−α)·uniform``.

    Args:
        records, contexts: the sentences' `SentenceAttention` and `PatternContext` (same order).
        patterns: the patterns to smooth (``Q``).
        alpha: one weight for all, or ``[M, Q]`` (one per head and pattern).
        heads: flat head indices ``layer * n_heads + head`` (``M``).
        metric: a registry metric that ranks patterns and has a per-row form.

    Returns:
        ``[M, Q]`` scores, the numbers `HeadScorer.score` gives for the smoothed patterns.
    """
    spec = _metric(metric)
    idx = np.asarray(heads, dtype=np.int64)
    grid = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (len(idx), len(patterns)))
    total = np.zeros(grid.shape)
    count = 0
    for rec, P, U in _inputs(records, contexts, list(patterns)):
        total += _pass(_head_attention(rec, idx), P, U, grid, spec)
        count += 1
    if count == 0:
        raise ValueError("smoothed_scores got no sentences. Fix: pass some records")
    return total / count


def _metric(metric: str | MetricSpec) -> MetricSpec:
    spec = ranking_metric(metric)
    if spec.paired is None:
        raise ValueError(
            f"metric {spec.name!r} has no per-row form (paired=), so smoothed and mixed "
            "baselines cannot be scored with it. Fix: register it with paired=, or use jsd, sae "
            "or mae."
        )
    return spec


def _fit_alpha(
    records: Sequence[Any],
    contexts: Sequence[PatternContext],
    pats: list[Pattern],
    heads: np.ndarray,
    spec: MetricSpec,
) -> tuple[np.ndarray, np.ndarray]:
    """The best α per (head, pattern) on these sentences and its score: ``([M, Q], [M, Q])``.

    A 0.1 grid for every pattern, then a 0.01 grid (±0.09) for the `_REFINE` patterns that
    score best on each head after the first grid (the others keep their grid α: they are far
    from winning, and the fine passes cost as much as the coarse ones per pattern).
    """
    inputs = [(_head_attention(rec, heads), P, U) for rec, P, U in _inputs(records, contexts, pats)]
    M, Q = len(heads), len(pats)
    sign = -1.0 if spec.higher_is_better else 1.0  # compare "lower is better" throughout

    def search(alphas: Any, best_alpha: np.ndarray, best: np.ndarray, pick: Any) -> None:
        for alpha in alphas:
            score = sum(_pass(A, P[pick], U, alpha, spec) for A, P, U in inputs) / len(inputs)
            take = np.isnan(best) | (sign * score < sign * best)
            best_alpha[take], best[take] = alpha[take], score[take]

    best_alpha, best = np.ones((M, Q)), np.full((M, Q), np.nan)
    search((np.full((M, Q), a) for a in COARSE_ALPHAS[::-1]), best_alpha, best, slice(None))
    k = min(_REFINE, Q)
    top = np.argsort(sign * best, axis=1, kind="stable")[:, :k]  # [M, k] pattern indices
    rows = np.arange(M)[:, None]
    fine_alpha, fine = best_alpha[rows, top], best[rows, top]
    centre = fine_alpha.copy()
    steps = [s for s in range(-9, 10) if s and s % 10]
    grid = (np.clip(np.round(centre + 0.01 * s, 2), 0.0, 1.0) for s in steps)
    search(grid, fine_alpha, fine, top)
    best_alpha[rows, top], best[rows, top] = fine_alpha, fine
    return best_alpha, best


def fair_baselines(
    train_records: Sequence[Any],
    heldout_records: Sequence[Any],
    *,
    train_contexts: Sequence[PatternContext],
    heldout_contexts: Sequence[PatternContext],
    heads: Sequence[tuple[int, int]] | None = None,
    metric: str | MetricSpec = "jsd",
    mix: bool = True,
) -> pd.DataFrame:
    """The smoothed built-in and the mix of built-ins for each head, fitted on ``train_records``
    and scored on ``heldout_records``.

    Args:
        train_records, heldout_records: `SentenceAttention` of the example and held-out
            sentences (one model).
        train_contexts, heldout_contexts: their `PatternContext` s.
        heads: ``[(layer, head), ...]``; None for every head.
        metric: the run's metric (ranks patterns, has a per-row form).
        mix: also fit `linear_fit`'s mixture (False leaves ``mix_score`` NaN).

    Returns:
        One row per head: ``layer, head, smoothed_name, smoothed_alpha, smoothed_train``
        (its score on the example sentences), ``smoothed_score`` (held-out), ``mix_score``
        (held-out), ``mix_weights`` (``{pattern: weight}``, largest first), ``metric``.

    Example:
        >>> fair = fair_baselines(train, held, train_contexts=ct, heldout_contexts=ch,
        ...                       heads=[(4, 5)])
        >>> fair[["smoothed_name", "smoothed_alpha", "smoothed_score", "mix_score"]]
    """
    spec = _metric(metric)
    train_records, heldout_records = list(train_records), list(heldout_records)
    if not train_records or not heldout_records:
        raise ValueError("fair_baselines needs example and held-out records. Fix: pass both")
    L, H = np.asarray(train_records[0].attention).shape[:2]
    pairs = [(la, h) for la in range(L) for h in range(H)] if heads is None else list(heads)
    flat = np.array([la * H + h for la, h in pairs], dtype=np.int64)
    pats = builtin_patterns()
    alpha, train_score = _fit_alpha(train_records, train_contexts, pats, flat, spec)
    held = smoothed_scores(heldout_records, heldout_contexts, pats, alpha, heads=flat, metric=spec)
    mixes = _mixes(train_records, heldout_records, pats, spec) if mix else None
    rows = []
    for i, (la, h) in enumerate(pairs):
        q = spec.best(held[i])
        row = {
            "layer": int(la),
            "head": int(h),
            "smoothed_name": pats[q].name,
            "smoothed_alpha": round(float(alpha[i, q]), 2),
            "smoothed_train": _round(train_score[i, q]),
            "smoothed_score": _round(held[i, q]),
            "mix_score": np.nan,
            "mix_weights": {},
            "metric": spec.name,
        }
        if mixes is not None and (la, h) in mixes:
            row["mix_score"], row["mix_weights"] = mixes[(la, h)]
        rows.append(row)
    return pd.DataFrame(rows)


def _mixes(
    train: list[Any], held: list[Any], pats: list[Pattern], spec: MetricSpec
) -> dict[tuple[int, int], tuple[float | None, dict[str, float]]]:
    """`linear_fit` of every built-in: ``{(layer, head): (held-out score, weights)}``."""
    from attn_tools.mixtures import linear_fit

    fit = linear_fit(train, held, pats, metric=spec.name)
    return {
        (int(r.layer), int(r.head)): (
            _round(r.eval_score),
            {k: round(float(w), 4) for k, w in r.weights.items()},
        )
        for r in fit.itertuples()
    }


def baseline_row(table: pd.DataFrame | None, layer: int, head: int) -> dict[str, Any]:
    """One head's fair-baseline values (``FAIR_COLUMNS``; None where ``table`` lacks the head)."""
    empty: dict[str, Any] = {k: None for k in FAIR_COLUMNS}
    if table is None:
        return empty
    rows = table[(table["layer"] == layer) & (table["head"] == head)]
    if rows.empty:
        return empty
    row = rows.iloc[0]
    out = {k: row[k] for k in FAIR_COLUMNS}
    for k in ("smoothed_alpha", "smoothed_score", "mix_score"):
        out[k] = None if out[k] is None or not np.isfinite(out[k]) else float(out[k])
    out["mix_weights"] = dict(out["mix_weights"] or {})
    return out
