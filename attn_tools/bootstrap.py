"""Bootstrap over sentences, vectorised over heads: resample counts, resampled means, paired CIs.

Pure numpy, no tables: `attn_tools.classify` turns score tables into the arrays used here. The
unit resampled is the sentence (scores of one sentence are not independent across its rows), and
every head of a model shares the same resamples, so one matrix product gives all heads' resampled
means: a resample is a count vector ``c [S]`` (how often each sentence was drawn) and the mean of
per-sentence values ``x [S]`` on it is ``Σ c·x / Σ c`` over the sentences where ``x`` is finite.
Intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import numpy as np

__all__ = ["paired_interval", "resample_counts", "resampled_means"]


def resample_counts(n_sentences: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_sentences]`` draw counts of ``n_boot`` resamples with replacement (seeded)."""
    if n_sentences < 1:
        raise ValueError(f"a bootstrap needs at least one sentence, got {n_sentences}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_sentences, size=(n_boot, n_sentences))
    counts = np.zeros((n_boot, n_sentences), dtype=np.float64)
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts


def resampled_means(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Means of ``values [..., S]`` on every resample ``counts [B, S]``: ``[..., B]``.

    NaN entries (a sentence where that score is undefined) are left out of each mean; a resample
    that drew none of the finite sentences gives NaN.
    """
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    total = np.where(ok, x, 0.0) @ counts.T
    weight = ok.astype(np.float64) @ counts.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, total / weight, np.nan)


def paired_interval(
    differences: np.ndarray, counts: np.ndarray, ci: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean paired difference and its percentile bootstrap interval, per row.

    Args:
        differences: ``[H, S]`` per-sentence differences (e.g. baseline − best, oriented so that
            positive means the best pattern fits better); NaN where either side is undefined.
        counts: ``[B, S]`` from `resample_counts`.
        ci: the interval's coverage, in (0, 1).

    Returns:
        ``(mean [H], low [H], high [H], n [H])``: the mean over finite sentences, the
        ``(1 − ci)/2`` and ``(1 + ci)/2`` quantiles of the resampled means, and how many
        sentences were paired. Rows with no finite sentence give NaN.
    """
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be a coverage strictly between 0 and 1, got {ci}")
    d = np.asarray(differences, dtype=np.float64)
    ok = np.isfinite(d)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(ok, d, 0.0).sum(axis=-1) / n, np.nan)
    boot = resampled_means(d, counts)
    low = np.full(len(d), np.nan)
    high = np.full(len(d), np.nan)
    some = np.isfinite(boot).any(axis=-1)
    if some.any():
        q = np.nanquantile(boot[some], [(1 - ci) / 2, (1 + ci) / 2], axis=-1)
        low[some], high[some] = q[0], q[1]
    return mean, low, high, n
