"""Permutation tests, bootstrap intervals, Benjamini–Hochberg q-values and held-out replication.

Every probe reduces to one of two designs over a matrix of per-text head features
``X[n, F]`` (``F = layers × heads``, one column per head):

- **correlation** (`correlation_test`): the effect of head ``f`` is Pearson's r between
  ``X[:, f]`` and a numeric label ``y`` (point-biserial r for 0/1 labels). The null shuffles the
  labels: one ``[P, n]`` matrix of permuted labels times the centred feature matrix gives all
  ``P × F`` null correlations in one product.
- **paired** (`paired_test`): the effect is the mean of within-pair differences ``D[:, f]``. The
  null flips the sign of each pair's difference at random (swapping the two members of a pair),
  again one ``[P, n]`` matrix of ±1 times ``D``.

p-values are two-sided with the +1 correction, ``p = (1 + #{|null| ≥ |observed|}) / (P + 1)``, so
no p-value is ever 0 and the test keeps its level exactly (Phipson & Smyth 2010). Confidence
intervals are percentile bootstraps over texts (pairs), also vectorised over heads.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

__all__ = [
    "PROBE_COLUMNS",
    "Design",
    "TestResult",
    "bh_qvalues",
    "correlation_test",
    "heads_table",
    "paired_test",
    "split_halves",
]

Design = Literal["correlation", "paired"]

#: columns of every probe table, in order
PROBE_COLUMNS = (
    "model",
    "layer",
    "head",
    "effect",
    "ci_low",
    "ci_high",
    "p_value",
    "q_value",
    "n",
    "replicated",
    "effect_discovery",
    "effect_heldout",
    "probe",
    "statistic",
    "n_permutations",
    "seed",
)

_CHUNK = 2**24  # floats per temporary block (≈ 128 MB of float64): bounds memory for big P × F
_TIE = 1e-9  # relative slack so the observed statistic counts itself despite rounding


@dataclass(frozen=True)
class TestResult:
    """One test over ``F`` features (heads).

    Attributes:
        effect: ``[F]`` observed statistic (Pearson r, or mean paired difference).
        p_value: ``[F]`` two-sided permutation p-value with the +1 correction.
        ci_low, ci_high: ``[F]`` percentile bootstrap interval of ``effect``.
        n: number of texts (correlation) or pairs (paired) used.
        n_permutations: permutations drawn.
    """

    __test__ = False  # not a pytest class despite the name

    effect: np.ndarray
    p_value: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n: int
    n_permutations: int


def _check_matrix(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 3:
        raise ValueError(
            f"{name} must be a [n, features] matrix with n ≥ 3 rows, got shape {arr.shape}. "
            "Fix: pass one row per text (or pair) and one column per head."
        )
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} holds a non-finite value at row {bad[0]}, column {bad[1]}. "
            "Fix: drop that text or check how its feature was computed."
        )
    return arr


def _check_counts(n_permutations: int, n_bootstrap: int) -> None:
    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be ≥ 1, got {n_permutations}. Fix: use e.g. 1000.")
    if int(n_bootstrap) < 0:
        raise ValueError(f"n_bootstrap must be ≥ 0, got {n_bootstrap}. Fix: use e.g. 1000.")


def _p_from_null(null_abs_ge: np.ndarray, n_permutations: int) -> np.ndarray:
    return (1.0 + null_abs_ge) / (n_permutations + 1.0)


def _rows_per_chunk(n: int, f: int) -> int:
    return max(1, _CHUNK // max(1, n * f))


def _pearson(xc: np.ndarray, xnorm: np.ndarray, yc: np.ndarray) -> np.ndarray:
    """r for centred ``xc [n, F]`` and centred labels ``yc [..., n]``; 0 where a side is constant."""
    ynorm = np.linalg.norm(yc, axis=-1, keepdims=True)
    denom = ynorm * xnorm
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc @ xc) / denom
    return np.where(denom > 0, r, 0.0)


def _percentile_ci(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.nanpercentile(samples, [tail, 100.0 - tail], axis=0)
    return lo, hi


def correlation_test(
    features: object,
    labels: object,
    *,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> TestResult:
    """Pearson r of every feature column with ``labels``, with a label-permutation p-value.

    Args:
        features: ``[n, F]`` per-text features (one column per head).
        labels: ``[n]`` numeric labels (0/1 for a binary label).
        n_permutations: label permutations (all columns share them, as in a max-type family).
        n_bootstrap: bootstrap resamples of the texts for the interval (0: interval is NaN).
        seed: seeds the permutations and the bootstrap.
        confidence: interval coverage.

    Returns:
        `TestResult`; a constant column gets r = 0 and p = 1.

    Example:
        >>> res = correlation_test(np.random.rand(50, 3), np.arange(50) % 2, n_permutations=200)
        >>> res.p_value.shape
        (3,)
    """
    x = _check_matrix(features, "features")
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels has {y.shape[0]} entries but features has {x.shape[0]} rows. "
            "Fix: give one label per text."
        )
    if np.ptp(y) == 0:
        raise ValueError(
            f"labels are all {y[0]!r}: a correlation needs at least two label values. "
            "Fix: include texts of both classes."
        )
    _check_counts(n_permutations, n_bootstrap)
    rng = np.random.default_rng(seed)
    n, f = x.shape
    xc = x - x.mean(0)
    xnorm = np.linalg.norm(xc, axis=0)
    yc = y - y.mean()
    r = _pearson(xc, xnorm, yc)
    target = np.abs(r) * (1 - _TIE)

    exceed = np.zeros(f)
    step = _rows_per_chunk(n, 1)
    for start in range(0, n_permutations, step):
        rows = min(step, n_permutations - start)
        # each row a fresh permutation of the (centred) labels; centring is permutation-invariant
        perm = rng.permuted(np.broadcast_to(yc, (rows, n)), axis=1)
        exceed += (np.abs(_pearson(xc, xnorm, perm)) >= target).sum(0)
    p = _p_from_null(exceed, n_permutations)

    lo = hi = np.full(f, np.nan)
    if n_bootstrap:
        draws = []
        step = _rows_per_chunk(n, f)
        for start in range(0, n_bootstrap, step):
            idx = rng.integers(0, n, size=(min(step, n_bootstrap - start), n))
            xb, yb = x[idx], y[idx]  # [b, n, F], [b, n]
            xbc = xb - xb.mean(1, keepdims=True)
            ybc = yb - yb.mean(1, keepdims=True)
            denom = np.linalg.norm(xbc, axis=1) * np.linalg.norm(ybc, axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                draws.append(np.einsum("bn,bnf->bf", ybc, xbc) / denom)
        lo, hi = _percentile_ci(np.concatenate(draws), confidence)
    return TestResult(r, p, lo, hi, n, int(n_permutations))


def paired_test(
    differences: object,
    *,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> TestResult:
    """Mean within-pair difference of every column, with a sign-flip permutation p-value.

    Args:
        differences: ``[n_pairs, F]``: feature of the first member minus the second, per pair.
        n_permutations: random sign-flip vectors (shared by all columns).
        n_bootstrap: bootstrap resamples of the pairs for the interval.
        seed: seeds the flips and the bootstrap.
        confidence: interval coverage.

    Returns:
        `TestResult` with ``effect`` = mean difference (same unit as the feature).
    """
    d = _check_matrix(differences, "differences")
    _check_counts(n_permutations, n_bootstrap)
    rng = np.random.default_rng(seed)
    n, f = d.shape
    mean = d.mean(0)
    target = np.abs(mean) * (1 - _TIE)
    exceed = np.zeros(f)
    step = _rows_per_chunk(n, 1)
    for start in range(0, n_permutations, step):
        rows = min(step, n_permutations - start)
        signs = rng.integers(0, 2, size=(rows, n)) * 2.0 - 1.0
        null = signs @ d / n
        # a column of exact zeros has |mean| = 0 and every null ≥ it: p = 1, as it should
        exceed += (np.abs(null) >= target).sum(0)
    p = _p_from_null(exceed, n_permutations)

    lo = hi = np.full(f, np.nan)
    if n_bootstrap:
        draws = []
        step = _rows_per_chunk(n, f)
        for start in range(0, n_bootstrap, step):
            idx = rng.integers(0, n, size=(min(step, n_bootstrap - start), n))
            draws.append(d[idx].mean(1))
        lo, hi = _percentile_ci(np.concatenate(draws), confidence)
    return TestResult(mean, p, lo, hi, n, int(n_permutations))


def bh_qvalues(p_values: object) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), same order as the input.

    ``q_(i) = min_{j ≥ i} m · p_(j) / j`` over the sorted p-values, capped at 1; a head is a
    discovery at false discovery rate α when ``q < α``. Matches
    ``scipy.stats.false_discovery_control(p, method="bh")``.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        return p
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[(p < 0) | (p > 1)][:3]}.")
    order = np.argsort(p)
    m = p.size
    scaled = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def split_halves(
    n: int, *, seed: int = 0, strata: object | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into a discovery half and a held-out half at random.

    With ``strata`` (e.g. the labels), each stratum is split in two, so both halves keep the
    class balance. Returns sorted index arrays ``(discovery, heldout)``.
    """
    rng = np.random.default_rng([seed, 1])  # a stream apart from the test's own draws
    groups = np.zeros(n, dtype=int) if strata is None else np.unique(strata, return_inverse=True)[1]
    first, second = [], []
    for g in np.unique(groups):
        idx = rng.permutation(np.flatnonzero(groups == g))
        half = len(idx) // 2
        first.append(idx[:half])
        second.append(idx[half:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def _run(design: Design, x: np.ndarray, y: np.ndarray | None, **kw) -> TestResult:
    if design == "correlation":
        return correlation_test(x, y, **kw)
    return paired_test(x, **kw)


def heads_table(
    features: object,
    *,
    model: str,
    n_layers: int,
    n_heads: int,
    probe: str,
    statistic: str,
    labels: object | None = None,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Test every head and return the tidy probe table (`PROBE_COLUMNS`), one row per head.

    ``labels`` given → correlation design on ``features [n, L*H]``; ``labels`` None → paired
    design on differences ``features [n_pairs, L*H]``. Columns ``effect``, ``ci_*``,
    ``p_value`` and ``q_value`` (BH over all heads) use every text.

    ``replicated`` is the held-out check: texts (pairs) are split at random into two halves
    (stratified by label for correlations). A head replicates when it is a discovery on the
    first half (BH q < ``alpha`` over all heads) **and** on the held-out half its effect has the
    same sign with BH q < ``alpha`` over the heads that the first half selected. The halves'
    effects are in ``effect_discovery`` and ``effect_heldout``.
    """
    design: Design = "correlation" if labels is not None else "paired"
    x = _check_matrix(features, "features")
    if x.shape[1] != n_layers * n_heads:
        raise ValueError(
            f"features has {x.shape[1]} columns, expected layers × heads = "
            f"{n_layers} × {n_heads}. Fix: flatten [n, L, H] features to [n, L*H]."
        )
    y = None if labels is None else np.asarray(labels, dtype=np.float64).ravel()
    kw = {"n_permutations": n_permutations, "seed": seed}
    full = _run(design, x, y, n_bootstrap=n_bootstrap, **kw)
    q = bh_qvalues(full.p_value)

    replicated = np.zeros(x.shape[1], dtype=bool)
    a, b = split_halves(x.shape[0], seed=seed, strata=y)
    halves_ok = min(len(a), len(b)) >= 3 and (y is None or (np.ptp(y[a]) > 0 and np.ptp(y[b]) > 0))
    if halves_ok:
        disc = _run(design, x[a], None if y is None else y[a], n_bootstrap=0, **kw)
        held = _run(design, x[b], None if y is None else y[b], n_bootstrap=0, **kw)
        eff_a, eff_b = disc.effect, held.effect
        selected = bh_qvalues(disc.p_value) < alpha
        if selected.any():
            q_held = bh_qvalues(held.p_value[selected])
            same_sign = np.sign(held.effect[selected]) == np.sign(disc.effect[selected])
            replicated[selected] = (q_held < alpha) & same_sign
    else:  # too few texts to split: nothing can replicate, and the table says so with NaN
        warnings.warn(
            f"{x.shape[0]} rows are too few for a held-out split (each half needs 3, and both "
            "label values for a correlation): replicated is False for every head.",
            stacklevel=2,
        )
        eff_a = eff_b = np.full(x.shape[1], np.nan)

    layer, head = np.divmod(np.arange(x.shape[1]), n_heads)
    table = pd.DataFrame(
        {
            "model": model,
            "layer": layer,
            "head": head,
            "effect": full.effect,
            "ci_low": full.ci_low,
            "ci_high": full.ci_high,
            "p_value": full.p_value,
            "q_value": q,
            "n": full.n,
            "replicated": replicated,
            "effect_discovery": eff_a,
            "effect_heldout": eff_b,
            "probe": probe,
            "statistic": statistic,
            "n_permutations": int(n_permutations),
            "seed": int(seed),
        }
    )
    return table.loc[:, list(PROBE_COLUMNS)]
