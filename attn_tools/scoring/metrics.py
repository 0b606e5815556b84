"""The metric registry: one `MetricSpec` per metric, and the metrics as functions on arrays.

Every other module (the engine, classification, mixtures, the CLI's choices, figures, the
explorer, automation's choice and feedback text) reads a metric's properties from here, so adding
a metric means registering one `MetricSpec` in one place (see `register_metric`).

Built-in metrics (each name says its direction; ``get_metric(name).higher_is_better`` in code):

=================== ============ ========================================================
``jsd``             lower better Jensen–Shannon *distance* per row, mean over rows; [0, 1]
``sae``             lower better sum of absolute errors per row, mean over rows; [0, 2]
``mae``             lower better mean absolute error per row (sae / keys), mean over rows
``mul``             higher better TransformerLens: share of attention on the predicted cells
``abs``             higher better TransformerLens: 1 − Σ|attention − pattern| / n; [-1, 1]
``argmax_accuracy`` higher better Clark et al.: share of predicted rows whose argmax is predicted
=================== ============ ========================================================

Two kinds of metric:

- *row* metrics (``rows`` set) compare row distributions: the engine renormalises attention and
  pattern rows over the kept keys and calls ``rows(att [M, n, n], pat [Q, n, n], options)`` for a
  ``[M, Q, n]`` value per (head, pattern, row), then averages over rows;
- *block* metrics (``block`` set) see the raw matrices of a whole sentence and return ``[M, Q]``
  scores themselves (``mul`` and ``abs``, which follow TransformerLens's definitions exactly).

This module needs only numpy and scipy; torch tensors are accepted by `jsd`, `sae` and `mae`
without importing torch here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import xlogy

__all__ = [
    "METRICS",
    "MetricSpec",
    "ScoreOptions",
    "abs_score",
    "argmax_accuracy",
    "get_metric",
    "higher_is_better",
    "jsd",
    "mae",
    "metric_names",
    "mul_score",
    "register_metric",
    "row_values",
    "sae",
    "unregister_metric",
]

_LN2 = math.log(2.0)
_CHUNK_ELEMENTS = 1 << 22  # heads × predicted cells per block: bounds memory on long sentences


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ScoreOptions:
    """Settings of one scoring pass, handed to every metric's row or block function.

    Attributes:
        metric: the metric's name.
        rows: ``"all"`` rows or only the rows a pattern ``"scored"`` (predicts itself).
        base: logarithm base of ``jsd``.
        exclude_bos: leave key 0 (BOS / [CLS]) out.
        exclude_current_token: leave the diagonal out.
        decimals: round ``abs``'s error term like TransformerLens (``3``), or not (``None``).
    """

    metric: str = "jsd"
    rows: str = "all"
    base: float = 2.0
    exclude_bos: bool = False
    exclude_current_token: bool = False
    decimals: int | None = None
    drop: np.ndarray | None = field(default=None, compare=False, repr=False)

    def keep(self, n: int) -> np.ndarray | None:
        """``[n, n]`` bool mask of the cells that count, or None when every cell does.

        ``drop`` (``[n]`` bool, set per sentence by the engine from ``drop_keys``) removes those
        keys' columns too.
        """
        keep = _keep_cells(n, self.exclude_bos, self.exclude_current_token)
        if self.drop is None or not self.drop.any():
            return keep
        cols = np.broadcast_to(~self.drop[None, :], (n, n))
        return cols.copy() if keep is None else keep & cols


RowFunction = Callable[[np.ndarray, np.ndarray, ScoreOptions], np.ndarray]
BlockFunction = Callable[
    [np.ndarray, np.ndarray, np.ndarray, ScoreOptions], "tuple[np.ndarray, int]"
]


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class MetricSpec:
    """Everything the toolkit needs to know about one metric.

    Attributes:
        name: the registry key, used in score tables' ``metric`` column and on the CLI.
        higher_is_better: True for similarities, False for distances and errors.
        display: a human name for axes, legends and feedback text (``"JS distance"``).
        description: one line: what a score means.
        range: ``(lo, hi)`` of possible scores, None for an open end (axis limits use it).
        raw: True when the metric compares with the pattern's *raw* weights (validated and
            causally masked, not renormalised), as TransformerLens does for ``mul``/``abs``.
        ranks_patterns: True when scores of different patterns on one head compare, so the
            metric can choose a best-fitting pattern (`best_fit`, `linear_fit`, automation).
        scored_rows_only: True when the metric is defined only on the rows a pattern predicts
            (``argmax_accuracy``); the engine then ignores ``rows="all"``.
        rows: row metric: ``(att [M, n, n], pat [Q, n, n], options) -> [M, Q, n]`` on rows
            renormalised over the kept keys.
        block: block metric: ``(A [M, n, n], P [Q, n, n], use_rows [Q, n], options) -> ([M, Q],
            dropped_rows)`` on the raw matrices of one sentence; ``use_rows`` marks the query
            rows to average over (all rows or the pattern's own, less dropped keys).
        paired: the metric per row on paired arrays ``(a [..., n], p [..., n], options) ->
            [...]`` (e.g. a head against its own mixture in `linear_fit`); row metrics only.
    """

    name: str
    higher_is_better: bool
    display: str
    description: str = ""
    range: tuple[float | None, float | None] = (None, None)
    raw: bool = False
    ranks_patterns: bool = False
    scored_rows_only: bool = False
    rows: RowFunction | None = field(default=None, repr=False)
    block: BlockFunction | None = field(default=None, repr=False)
    paired: Callable[[Any, Any, ScoreOptions], Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                f"metric name must be a non-empty identifier, got {self.name!r}. "
                "Fix: use a short name like 'kl' or 'hellinger'."
            )
        if (self.rows is None) == (self.block is None):
            raise ValueError(
                f"metric {self.name!r} needs exactly one of rows= (a row metric) or block= "
                "(a whole-sentence metric)."
            )
        if self.ranks_patterns and self.raw:
            raise ValueError(
                f"metric {self.name!r}: a raw-weight metric cannot rank patterns (denser raw "
                "patterns always win). Fix: set ranks_patterns=False."
            )

    @property
    def direction(self) -> str:
        """``"higher is better"`` or ``"lower is better"``."""
        return "higher is better" if self.higher_is_better else "lower is better"

    @property
    def sort_ascending(self) -> bool:
        """For ``DataFrame.sort_values``: True when lower is better (best first)."""
        return not self.higher_is_better

    def best(self, values: Any) -> int:
        """Index of the best finite value of a 1-D array-like (ValueError when none is finite)."""
        arr = np.asarray(values, dtype=np.float64).ravel()
        if not np.isfinite(arr).any():
            raise ValueError(f"no finite {self.name} score to choose from")
        signed = np.where(np.isfinite(arr), -arr if self.higher_is_better else arr, np.inf)
        return int(np.argmin(signed))

    def better(self, a: float, b: float) -> bool:
        """True when score ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def signed(self, values: Any) -> Any:
        """Values turned so that lower is better (negated for similarities)."""
        return -values if self.higher_is_better else values


#: metric name → its spec, in registration order.
METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec, *, replace: bool = False) -> MetricSpec:
    """Add ``spec`` to the registry; every part of the toolkit sees it from then on.

    Example:
        >>> def hellinger_rows(att, pat, options):
        ...     root = np.sqrt(att)[:, None] - np.sqrt(pat)[None]     # [M, Q, n, n]
        ...     return np.sqrt(0.5 * (root ** 2).sum(-1))
        >>> register_metric(MetricSpec("hellinger", False, "Hellinger distance",
        ...                            range=(0.0, 1.0), ranks_patterns=True, rows=hellinger_rows))
    """
    if not isinstance(spec, MetricSpec):
        raise TypeError(f"register_metric takes a MetricSpec, got {type(spec).__name__}")
    if spec.name in METRICS and not replace:
        raise ValueError(
            f"metric {spec.name!r} is already registered. Fix: pick another name or pass "
            "replace=True."
        )
    METRICS[spec.name] = spec
    return spec


def unregister_metric(name: str) -> None:
    """Remove a metric added with `register_metric` (built-ins stay)."""
    if name in BUILTIN_METRICS:
        raise ValueError(f"{name!r} is a built-in metric and cannot be removed")
    METRICS.pop(name, None)


def get_metric(name: str | MetricSpec) -> MetricSpec:
    """The spec of a registered metric (a spec passes through).

    Raises:
        ValueError: naming the metric and the registered choices.
    """
    if isinstance(name, MetricSpec):
        return name
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown metric {name!r}. Fix: use one of {list(METRICS)}.") from None


def metric_names(*, ranks_patterns: bool | None = None) -> list[str]:
    """Registered metric names in registration order; optionally only those that (do not) rank
    patterns against each other."""
    return [
        name
        for name, spec in METRICS.items()
        if ranks_patterns is None or spec.ranks_patterns == ranks_patterns
    ]


def higher_is_better(metric: str) -> bool:
    """True for similarity metrics (``mul``, ``abs``, ``argmax_accuracy``), False for distances."""
    return get_metric(metric).higher_is_better


# ----------------------------------------------------------------------------- array functions


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _log_base(base: float) -> float:
    if not (base > 0 and base != 1):
        raise ValueError(f"base must be positive and not 1, got {base!r}")
    return math.log(base)


def jsd(a: Any, p: Any, *, base: float = 2.0, axis: int = -1) -> Any:
    """Jensen–Shannon distance between distributions along ``axis`` (lower is better).

    ``sqrt(JSD)`` with ``JSD = H(m) − (H(a) + H(p)) / 2``, ``m = (a + p) / 2``, logs in ``base``.
    Base 2 (default) puts it in [0, 1]; ``base=math.e`` gives the natural-log numbers of earlier
    notebooks (at most ``sqrt(ln 2) ≈ 0.833``). Rounding is clamped to the exact range
    (divergence in [0, ln 2]), so identical rows give exactly 0 and disjoint ones exactly the
    maximum. Inputs are renormalised along ``axis`` like
    `scipy.spatial.distance.jensenshannon`; a slice summing to zero gives NaN, NaN propagates.

    Args:
        a, p: non-negative numpy arrays or torch tensors, broadcastable (``[..., n]``).
        base: logarithm base.
        axis: the distribution axis.

    Returns:
        The distances, shaped like the inputs without ``axis`` (a tensor for tensor inputs).

    Example:
        >>> float(jsd(np.array([1.0, 0.0]), np.array([0.0, 1.0])))
        1.0
    """
    scale = _log_base(base)
    if _is_tensor(a) or _is_tensor(p):
        import torch

        at = torch.as_tensor(a, dtype=torch.float64)
        pt = torch.as_tensor(p, dtype=torch.float64, device=at.device)
        if (at < 0).any() or (pt < 0).any():
            raise ValueError("jsd needs non-negative inputs (attention or pattern weights)")
        at = at / at.sum(dim=axis, keepdim=True)
        pt = pt / pt.sum(dim=axis, keepdim=True)
        m = (at + pt) / 2
        div = (torch.special.xlogy(at, at) + torch.special.xlogy(pt, pt)) / 2
        div = (div - torch.special.xlogy(m, m)).sum(dim=axis).clamp(0.0, _LN2)
        return (div / scale).sqrt()
    an = np.asarray(a, dtype=np.float64)
    pn = np.asarray(p, dtype=np.float64)
    if (an < 0).any() or (pn < 0).any():
        raise ValueError("jsd needs non-negative inputs (attention or pattern weights)")
    with np.errstate(invalid="ignore", divide="ignore"):
        an = an / an.sum(axis=axis, keepdims=True)
        pn = pn / pn.sum(axis=axis, keepdims=True)
        m = (an + pn) / 2
        div = (xlogy(an, an) + xlogy(pn, pn)) / 2 - xlogy(m, m)
        return np.sqrt(np.clip(div.sum(axis=axis), 0.0, _LN2) / scale)


def sae(a: Any, p: Any, *, axis: int = -1) -> Any:
    """Sum of absolute errors along ``axis`` (lower is better; in [0, 2] for distributions).

    Inputs are used as given (no renormalisation); NaN propagates.
    """
    if _is_tensor(a) or _is_tensor(p):
        import torch

        return (torch.as_tensor(a) - torch.as_tensor(p)).abs().sum(dim=axis)
    return np.abs(np.asarray(a, dtype=np.float64) - np.asarray(p, dtype=np.float64)).sum(axis=axis)


def mae(a: Any, p: Any, *, axis: int = -1) -> Any:
    """Mean absolute error along ``axis`` (`sae` divided by the axis length; lower is better)."""
    n = (a if hasattr(a, "shape") else np.asarray(a)).shape[axis]
    return sae(a, p, axis=axis) / n


def _keep_cells(n: int, exclude_bos: bool, exclude_current_token: bool) -> np.ndarray | None:
    if not (exclude_bos or exclude_current_token):
        return None
    keep = np.ones((n, n), dtype=bool)
    if exclude_bos:
        keep[:, 0] = False
    if exclude_current_token:
        np.fill_diagonal(keep, False)
    return keep


def mul_score(
    attention: Any,
    detection: Any,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
) -> np.ndarray:
    """TransformerLens ``mul`` score (higher is better): ``Σ a·d / Σ a`` over a ``[n, n]`` matrix.

    With a 0/1 detection pattern it is the share of the head's attention on the predicted cells.
    ``exclude_bos`` zeroes attention to key 0, ``exclude_current_token`` the diagonal, before both
    sums (as TransformerLens does). ``attention`` may carry leading axes ``[..., n, n]``.
    """
    att = np.array(attention, dtype=np.float64)
    det = np.asarray(detection, dtype=np.float64)
    keep = _keep_cells(att.shape[-1], exclude_bos, exclude_current_token)
    if keep is not None:
        att = att * keep
    with np.errstate(invalid="ignore", divide="ignore"):
        return (att * det).sum(axis=(-2, -1)) / att.sum(axis=(-2, -1))


def abs_score(
    attention: Any,
    detection: Any,
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    decimals: int | None = None,
) -> np.ndarray:
    """TransformerLens ``abs`` score (higher is better): ``1 − Σ|a − d| / n`` over ``[n, n]``.

    Excluded cells (key 0, the diagonal) contribute no difference; the sum is still divided by
    ``n``. ``decimals=3`` rounds the error term as TransformerLens does (taken to float32 first,
    the precision it computes in); default unrounded.
    """
    att = np.asarray(attention, dtype=np.float64)
    diff = np.abs(att - np.asarray(detection, dtype=np.float64))
    keep = _keep_cells(att.shape[-1], exclude_bos, exclude_current_token)
    if keep is not None:
        diff = diff * keep
    err = diff.sum(axis=(-2, -1)) / att.shape[-1]
    return 1.0 - _round_like_tl(err, decimals)


def _round_like_tl(err: np.ndarray, decimals: int | None) -> np.ndarray:
    """Round as TransformerLens does: it computes the error in float32, then rounds."""
    if decimals is None:
        return err
    return np.round(np.asarray(err).astype(np.float32).astype(np.float64), decimals)


def argmax_accuracy(a: Any, p: Any, *, axis: int = -1) -> np.ndarray:
    """Per row: 1.0 when the attention maximum falls on a predicted key (``p > 0``), else 0.0.

    An argmax accuracy in the spirit of Clark et al. (2019) (higher is better). Ties count as hits
    when any maximal key is predicted. Rows where ``p`` has no mass give NaN (not predicted).

    This is *not* Clark et al.'s protocol: every key stays a candidate (special tokens such as
    [CLS]/[SEP]/BOS and the word itself included, which a sink head wins), and score tables
    average it per sentence rather than over arcs. For the paper's dependency accuracy (specials
    and the word itself removed, micro-averaged over arcs, both directions, fixed-offset
    baseline) use `attn_tools.syntax.dependency_accuracy` and `attn_tools.syntax.syntax_table`.
    """
    an = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    pn = np.moveaxis(np.asarray(p, dtype=np.float64), axis, -1)
    an, pn = np.broadcast_arrays(an, pn)
    support = pn > 0
    best = np.where(support, an, -np.inf).max(axis=-1)
    hit = (best >= an.max(axis=-1)).astype(np.float64)
    return np.where(support.any(axis=-1), hit, np.nan)


# ----------------------------------------------------------------------------- row kernels
#
# Every head [M, n, n] against every pattern [Q, n, n] visiting only the patterns' non-zero
# cells. For jsd, JSD = H(m) − (H(a) + H(p)) / 2 with m = (a + p) / 2: a pattern row is zero
# outside its support S, so off S, m = a/2 and the row contributes (ln 2)/2 · Σa in total; the
# work is proportional to heads × non-zero predicted cells, not heads × patterns × n².


def _pattern_blocks(nz_pattern: np.ndarray, n_heads: int, n_patterns: int) -> Iterator[slice]:
    """Slices of the non-zero list, whole patterns per slice, ≤ `_CHUNK_ELEMENTS` heads × cells."""
    bounds = np.searchsorted(nz_pattern, np.arange(n_patterns + 1))
    per_block = max(1, _CHUNK_ELEMENTS // max(n_heads, 1))
    start = 0
    for q in range(1, n_patterns + 1):
        if bounds[q] - bounds[start] > per_block and q - 1 > start:
            yield slice(int(bounds[start]), int(bounds[q - 1]))
            start = q - 1
    yield slice(int(bounds[start]), int(bounds[n_patterns]))


def row_values(A: np.ndarray, P: np.ndarray, kind: str) -> np.ndarray:
    """Per-row comparison of every head with every pattern: ``[M, Q, n]``.

    ``A [M, n, n]`` and ``P [Q, n, n]`` are float64. ``kind`` ``"jsd"``: the rows of both must
    sum to 1 (or be empty); the result is the natural-log JS *divergence* (not yet the distance).
    ``"sae"``: ``Σ_k |a − p|``. ``"argmax"``: 1.0 where the row's maximum falls in the pattern's
    support. Only the pattern's non-zero cells are visited.
    """
    M, n, _ = A.shape
    Q = P.shape[0]
    flat = A.reshape(M, n * n)
    if kind == "jsd":
        base_rows = 0.5 * _LN2 * A.sum(axis=-1)
        a_log_a = xlogy(flat, flat)
    elif kind == "sae":
        base_rows = A.sum(axis=-1)
    elif kind == "argmax":
        base_rows = np.zeros((M, n))
        row_max = A.max(axis=-1)
    else:
        raise ValueError(f"row_values kind must be 'jsd', 'sae' or 'argmax', got {kind!r}")
    out = np.broadcast_to(base_rows[:, None, :], (M, Q, n)).copy().reshape(M, Q * n)
    qi, r, c = np.nonzero(P)
    if qi.size == 0:
        return out.reshape(M, Q, n)
    cells = r * n + c
    segments = qi * n + r  # which (pattern, row) each non-zero cell belongs to; sorted
    weights = P[qi, r, c]
    for block in _pattern_blocks(qi, M, Q):
        seg = segments[block]
        if seg.size == 0:
            continue
        starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        a = flat[:, cells[block]]  # [M, nnz]
        p = weights[block]
        if kind == "jsd":
            m = 0.5 * (a + p)
            terms = 0.5 * a_log_a[:, cells[block]] + 0.5 * xlogy(p, p) - xlogy(m, m)
            terms -= (0.5 * _LN2) * a
            out[:, seg[starts]] += np.add.reduceat(terms, starts, axis=1)
        elif kind == "sae":
            out[:, seg[starts]] += np.add.reduceat(np.abs(a - p) - a, starts, axis=1)
        else:
            best = np.maximum.reduceat(a, starts, axis=1)
            rows = seg[starts] % n
            out[:, seg[starts]] = (best >= row_max[:, rows]).astype(np.float64)
    return out.reshape(M, Q, n)


def _keys_per_row(n: int, opt: ScoreOptions) -> np.ndarray | int:
    keep = opt.keep(n)
    return n if keep is None else keep.sum(axis=-1)


def _jsd_rows(att: np.ndarray, pat: np.ndarray, opt: ScoreOptions) -> np.ndarray:
    return np.sqrt(np.clip(row_values(att, pat, "jsd"), 0.0, _LN2) / _log_base(opt.base))


def _sae_rows(att: np.ndarray, pat: np.ndarray, opt: ScoreOptions) -> np.ndarray:
    return row_values(att, pat, "sae")


def _mae_rows(att: np.ndarray, pat: np.ndarray, opt: ScoreOptions) -> np.ndarray:
    return row_values(att, pat, "sae") / _keys_per_row(att.shape[-1], opt)


def _argmax_rows(att: np.ndarray, pat: np.ndarray, opt: ScoreOptions) -> np.ndarray:
    return row_values(att, pat, "argmax")


def _mul_block(
    A: np.ndarray, P: np.ndarray, use_rows: np.ndarray, opt: ScoreOptions
) -> tuple[np.ndarray, int]:
    M, n, _ = A.shape
    keep = opt.keep(n)
    att = A if keep is None else A * keep
    num = att.reshape(M, n * n) @ (P * use_rows[:, :, None]).reshape(len(P), n * n).T
    den = att.sum(axis=-1) @ use_rows.T.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den, 0


def _abs_block(
    A: np.ndarray, P: np.ndarray, use_rows: np.ndarray, opt: ScoreOptions
) -> tuple[np.ndarray, int]:
    keep = opt.keep(A.shape[-1])
    att = A if keep is None else A * keep
    pat = P if keep is None else P * keep
    totals = row_values(att, pat, "sae")  # Σ_k |a − p| over kept keys, [M, Q, n]
    err = (totals * use_rows[None]).sum(axis=-1) / np.maximum(use_rows.sum(axis=-1), 1)
    err = _round_like_tl(err, opt.decimals)
    return np.where(use_rows.any(axis=-1)[None], 1.0 - err, np.nan), 0


def _paired_jsd(a: Any, p: Any, opt: ScoreOptions) -> Any:
    return jsd(a, p, base=opt.base)


def _paired_sae(a: Any, p: Any, opt: ScoreOptions) -> Any:
    return sae(a, p)


def _paired_mae(a: Any, p: Any, opt: ScoreOptions) -> Any:
    return mae(a, p)


def _paired_argmax(a: Any, p: Any, opt: ScoreOptions) -> Any:
    return argmax_accuracy(a, p)


_BUILTIN: tuple[MetricSpec, ...] = (
    MetricSpec(
        "jsd", False, "JS distance",
        "Jensen–Shannon distance per row (base-2 logs), mean over rows: 0 identical, 1 disjoint",
        range=(0.0, 1.0), ranks_patterns=True, rows=_jsd_rows, paired=_paired_jsd,
    ),
    MetricSpec(
        "sae", False, "sum of absolute errors",
        "Σ|attention − pattern| per row, mean over rows: 0 identical, 2 disjoint",
        range=(0.0, 2.0), ranks_patterns=True, rows=_sae_rows, paired=_paired_sae,
    ),
    MetricSpec(
        "mae", False, "mean absolute error",
        "sum of absolute errors per row divided by the number of keys, mean over rows",
        range=(0.0, 2.0), ranks_patterns=True, rows=_mae_rows, paired=_paired_mae,
    ),
    MetricSpec(
        "mul", True, "mul score",
        "TransformerLens: share of the head's attention on the pattern's predicted cells",
        range=(0.0, None), raw=True, block=_mul_block,
    ),
    MetricSpec(
        "abs", True, "abs score",
        "TransformerLens: 1 − Σ|attention − pattern| / n over the whole matrix",
        range=(None, 1.0), raw=True, block=_abs_block,
    ),
    MetricSpec(
        "argmax_accuracy", True, "argmax accuracy",
        "Clark et al.: share of predicted rows whose attention maximum is a predicted key",
        range=(0.0, 1.0), scored_rows_only=True, rows=_argmax_rows, paired=_paired_argmax,
    ),
)  # fmt: skip
for _spec in _BUILTIN:
    register_metric(_spec)

#: the built-in metric names, in order (for docs and `typing.Literal` style checks).
BUILTIN_METRICS: Sequence[str] = tuple(METRICS)
