"""Heads as non-negative mixtures of patterns, fitted on one split and judged on another.

`linear_fit` regresses each head's attention on the normalised predictions of several patterns
(least squares over all cells, weights ≥ 0, all heads of a model from one set of sufficient
statistics), then scores the mixture on unseen sentences next to the best single pattern
(`attn_tools.classify.best_fit`). Re-exported as ``attn_tools.classify.linear_fit``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import cho_factor, solve_triangular
from scipy.optimize import nnls

from attn_tools.classify import HEAD_KEYS, _shared_sentences, best_fit
from attn_tools.patterns import Pattern, build_contexts, predict_many, resolve_patterns
from attn_tools.scoring import Level, Metric, ScoreOptions, get_metric, metric_names, score_heads
from attn_tools.text import pool_patterns, pooling_matrices

__all__ = ["linear_fit"]


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
