"""The all-heads scoring engine: every head of every sentence against every pattern at once.

Metrics and their definitions live in `attn_tools.scoring.metrics` (the registry); this module
streams records, builds each sentence's predictions once, and averages a metric's scores.

Rows (``rows=``): ``"all"`` (default) averages over every query row, fallback rows included, so
every pattern is judged on the same rows and scores compare across patterns; ``"scored"`` keeps only
the rows where the pattern predicts something of its own. Metrics defined only on predicted rows
(``argmax_accuracy``: Clark et al.'s accuracy is defined on the words that have the relation)
always use the scored rows.

Row metrics (``jsd``, ``sae``, ``mae``, ``argmax_accuracy``) compare row distributions: the
pattern is the framework's normalised prediction (causal mask, renormalised rows, self fallback),
and attention rows are renormalised too (float32 rows sum to 1 only to ~1e-7, as `scipy` also
renormalises). Raw-weight metrics (``mul`` and ``abs``) take the pattern's raw weights
(validated, causally masked, *not* renormalised), exactly as TransformerLens uses a detection
pattern, so for the 0/1 patterns ``previous_token_head``, ``duplicate_token_head`` and
``induction_head`` they reproduce ``transformer_lens.head_detector.detect_head`` (encoders
included, where TransformerLens refuses ``abs``). TransformerLens rounds ``abs`` to three
decimals; pass ``decimals=3`` to do the same.

The rule for empty and NaN rows (never silent):

- NaN or infinite attention is an error naming the sentence.
- ``exclude_bos`` (key column 0: BOS or [CLS]) and ``exclude_current_token`` (the diagonal) remove
  those keys. For row metrics both the attention and the pattern are renormalised over the
  remaining keys; a row left with no mass on either side is left out of that sentence's mean,
  and a sentence with no row left scores NaN and is left out of the mean and std over sentences
  (``n_sentences`` counts the sentences that scored). Attention rows dropped this way are counted in
  ``df.attrs["dropped_attention_rows"]`` and reported with a warning. For ``mul`` and ``abs`` the
  keys are removed as TransformerLens does (attention zeroed for ``mul``, differences zeroed for
  ``abs``); a head with no attention left on the kept cells gets NaN for ``mul``.

Engine: per sentence, all heads ``[L·H, n, n]`` against all distinct predictions ``[P, n, n]`` in
one vectorised expression (see `attn_tools.scoring.metrics.row_values`). `HeadScorer` is the
streaming form behind `score_heads`: its running sums can be checkpointed and merged, which is what
resumable and data-parallel runs (`attn_tools.runs`, `attn_tools.distributed`) build on.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from attn_tools.patterns import (
    Pattern,
    PatternContext,
    build_contexts,
    predict_many,
    resolve_patterns,
)
from attn_tools.scoring.metrics import ScoreOptions, _log_base, get_metric
from attn_tools.text import pool_patterns, pooling_matrices

__all__ = [
    "HeadScorer",
    "MEANING_COLUMNS",
    "SCORE_COLUMNS",
    "dropped_keys",
    "drop_keys_label",
    "score_heads",
    "score_pair",
]

#: a metric name; any name in `attn_tools.scoring.METRICS` (the built-ins are listed here).
Metric = Literal["jsd", "sae", "mae", "mul", "abs", "argmax_accuracy"]
Level = Literal["token", "word"]
Rows = Literal["all", "scored"]
#: which keys `score_heads` removes before comparing (see its ``drop_keys`` argument).
DropKeys = Literal["none", "first", "special", "special+punct"] | Callable[[Any], Any] | None

SCORE_COLUMNS = ("model", "layer", "head", "pattern", "metric", "mean", "std", "n_sentences")
#: the columns that carry a table's meaning through CSV, Parquet and ``pd.concat`` (attrs do not):
#: the settings, and per (model, pattern) the share of rows / number of rows / number of
#: sentences in which the pattern predicts something itself (its support).
MEANING_COLUMNS = (
    "rows", "level", "drop_keys", "coverage", "n_rows", "support_sentences"
)  # fmt: skip
_DROP_CHOICES = ("none", "first", "special", "special+punct")


def _score_block(
    A: np.ndarray, P: np.ndarray, mass: np.ndarray, opt: ScoreOptions
) -> tuple[np.ndarray, int]:
    """Scores ``[M, Q]`` of every head against every pattern on one sentence.

    ``A [M, n, n]`` attention (float64), ``P [Q, n, n]`` patterns (normalised, or raw for
    raw-weight metrics), ``mass [Q, n]`` the rows each pattern predicts itself. Also returns how
    many attention rows had no mass on the kept keys (left out by the documented rule). Query rows
    that are dropped keys themselves (``opt.drop``) are skipped silently.
    """
    spec = get_metric(opt.metric)
    scored = spec.scored_rows_only or opt.rows == "scored"
    use_rows = mass.copy() if scored else np.ones_like(mass)
    if opt.drop is not None:
        use_rows &= ~opt.drop[None, :]
    if spec.block is not None:
        return spec.block(A, P, use_rows, opt)
    # row metrics: renormalise both sides over the kept keys
    keep = opt.keep(A.shape[-1])
    att = A if keep is None else A * keep
    pat = P if keep is None else P * keep
    att, att_ok = _normalise_rows(att)
    pat, pat_ok = _normalise_rows(pat)
    values = spec.rows(att, pat, opt)
    weight = att_ok[:, None, :] & (pat_ok & use_rows)[None, :, :]
    count = weight.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = (values * weight).sum(axis=-1) / count
    lost = ~att_ok if opt.drop is None else ~att_ok & ~opt.drop[None, :]
    return np.where(count > 0, scores, np.nan), int(lost.sum())


def _normalise_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows divided by their sums; ``(normalised, has_mass)``; empty rows stay zero."""
    sums = x.sum(axis=-1, keepdims=True)
    mass = sums[..., 0] > 0
    return x / np.where(sums > 0, sums, 1.0), mass


def _score_unique(
    A: np.ndarray, P: np.ndarray, mass: np.ndarray, opt: ScoreOptions
) -> tuple[np.ndarray, int]:
    """`_score_block` on the distinct predictions only, copied back to every pattern.

    On one sentence many patterns predict the same matrix (``previous_token`` and
    ``previous_token_head``; every relation absent from the sentence is all self fallback, and so
    is every look-ahead pattern on a decoder), so scoring each distinct one once saves work.
    """
    seen: dict[bytes, int] = {}
    first: list[int] = []
    inverse = np.empty(len(P), dtype=np.int64)
    for q in range(len(P)):
        key = P[q].tobytes() + mass[q].tobytes()
        if key not in seen:
            seen[key] = len(first)
            first.append(q)
        inverse[q] = seen[key]
    if len(first) == len(P):
        return _score_block(A, P, mass, opt)
    scores, lost = _score_block(A, P[first], mass[first], opt)
    return scores[:, inverse], lost


def score_pair(
    attention: Any,
    predicted: Any,
    metric: str = "jsd",
    *,
    base: float = 2.0,
    rows: Rows = "all",
    has_mass: Any = None,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    decimals: int | None = None,
    drop: Any = None,
) -> float:
    """Score one head's ``[n, n]`` attention against one ``[n, n]`` prediction.

    Same definitions as `score_heads` (see the module docstring), for figure titles and the live
    explorer. ``predicted`` is used as given: a normalised prediction for the distribution
    metrics (`attn_tools.patterns.predict`'s first output), raw weights for ``mul``/``abs``.
    ``has_mass`` (``[n]`` bool, `predict`'s second output) marks the rows ``rows="scored"`` keeps;
    by default, the rows of ``predicted`` with any mass. ``drop`` (``[n]`` bool, e.g.
    `dropped_keys(ctx, "first")`) removes those keys as `score_heads`' ``drop_keys`` does.

    Example:
        >>> score_pair(rec.head(2, 3), predict("previous_token", ctx)[0])
        0.41...
    """
    get_metric(metric)
    A = np.asarray(attention, dtype=np.float64)
    P = np.asarray(predicted, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or P.shape != A.shape:
        raise ValueError(
            f"score_pair needs two square matrices of one shape, got {A.shape} and {P.shape}"
        )
    if not (np.isfinite(A).all() and np.isfinite(P).all()):
        raise ValueError("score_pair got NaN or infinite values; check the attention/prediction")
    mass = P.sum(axis=-1) > 0 if has_mass is None else np.asarray(has_mass, dtype=bool)
    mask = None if drop is None else np.asarray(drop, dtype=bool)
    if mask is not None and mask.shape != (len(A),):
        raise ValueError(f"drop must be a bool mask of {len(A)} keys, got shape {mask.shape}")
    opt = ScoreOptions(
        metric, rows, base, exclude_bos, exclude_current_token, decimals,
        drop=mask if mask is not None and mask.any() else None,
    )  # fmt: skip
    scores, _ = _score_block(A[None], P[None], mass[None], opt)
    return float(scores[0, 0])


# ----------------------------------------------------------------------------- score_heads


@dataclass
class _Accumulator:
    """Running sums per (head, pattern) for one model: memory independent of the corpus."""

    n_layers: int
    n_heads: int
    n_patterns: int
    keep_sentences: bool
    total: np.ndarray = field(init=False)
    total_sq: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)
    predicted_rows: np.ndarray = field(init=False)
    support_sentences: np.ndarray = field(init=False)
    rows: int = 0
    sentences: list[np.ndarray] = field(default_factory=list)
    #: the corpus number of each entry of ``sentences`` (they are ordered by it in the table)
    order: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        shape = (self.n_layers * self.n_heads, self.n_patterns)
        self.total = np.zeros(shape)
        self.total_sq = np.zeros(shape)
        self.count = np.zeros(shape, dtype=np.int64)
        self.predicted_rows = np.zeros(self.n_patterns, dtype=np.int64)
        self.support_sentences = np.zeros(self.n_patterns, dtype=np.int64)

    def add(
        self, scores: np.ndarray, mass: np.ndarray, drop: np.ndarray | None, number: int
    ) -> None:
        own = mass if drop is None else mass & ~drop[None, :]
        self.predicted_rows += own.sum(axis=-1)
        self.support_sentences += own.any(axis=-1)
        self.rows += own.shape[-1] - (0 if drop is None else int(drop.sum()))
        ok = np.isfinite(scores)
        vals = np.where(ok, scores, 0.0)
        self.total += vals
        self.total_sq += vals * vals
        self.count += ok
        if self.keep_sentences:
            self.sentences.append(scores.astype(np.float64))
            self.order.append(int(number))

    def arrays(self) -> dict[str, np.ndarray]:
        """Every running sum as an array (the checkpoint format)."""
        M, Q = self.total.shape
        return {
            "shape": np.array([self.n_layers, self.n_heads, self.n_patterns, self.rows]),
            "total": self.total,
            "total_sq": self.total_sq,
            "count": self.count,
            "predicted_rows": self.predicted_rows,
            "support_sentences": self.support_sentences,
            "sentences": np.stack(self.sentences) if self.sentences else np.zeros((0, M, Q)),
            "order": np.asarray(self.order, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], keep_sentences: bool) -> _Accumulator:
        L, H, Q, rows = (int(v) for v in arrays["shape"])
        acc = cls(L, H, Q, keep_sentences)
        acc.rows = rows
        for name in ("total", "total_sq", "count", "predicted_rows", "support_sentences"):
            setattr(acc, name, np.array(arrays[name], dtype=getattr(acc, name).dtype))
        if keep_sentences:
            acc.sentences = [np.array(x, dtype=np.float64) for x in arrays["sentences"]]
            acc.order = [int(i) for i in arrays["order"]]
        return acc

    def resum(self) -> None:
        """Recompute the float sums from the per-sentence scores, adding them in corpus order
        (the order a single process adds them in, so the sums come out identical)."""
        order = np.argsort(self.order, kind="stable")
        self.sentences = [self.sentences[k] for k in order]
        self.order = [self.order[k] for k in order]
        self.total = np.zeros_like(self.total)
        self.total_sq = np.zeros_like(self.total_sq)
        self.count = np.zeros_like(self.count)
        for scores in self.sentences:
            ok = np.isfinite(scores)
            vals = np.where(ok, scores, 0.0)
            self.total += vals
            self.total_sq += vals * vals
            self.count += ok

    def merge(self, other: _Accumulator) -> None:
        if (other.n_layers, other.n_heads, other.n_patterns) != (
            self.n_layers, self.n_heads, self.n_patterns
        ):  # fmt: skip
            raise ValueError("cannot merge running sums of different head or pattern counts")
        self.total += other.total
        self.total_sq += other.total_sq
        self.count += other.count
        self.predicted_rows += other.predicted_rows
        self.support_sentences += other.support_sentences
        self.rows += other.rows
        self.sentences.extend(other.sentences)
        self.order.extend(other.order)


def _check_record(rec: Any, index: int) -> np.ndarray:
    att = getattr(rec, "attention", None)
    if not isinstance(att, np.ndarray) or att.ndim != 4:
        raise TypeError(
            f"record {index} is {type(rec).__name__}, not a SentenceAttention with attention "
            "[layers, heads, n, n]. Fix: pass the output of attn_tools.extract()."
        )
    n = len(rec.tokens)
    if att.shape[2:] != (n, n):
        raise ValueError(
            f"record {index} ({rec.text[:50]!r}) has attention {att.shape} for {n} tokens"
        )
    if not np.isfinite(att).all():
        bad = np.argwhere(~np.isfinite(att))[0]
        raise ValueError(
            f"attention of {getattr(rec, 'model', '?')} on sentence {index} ({rec.text[:50]!r}) "
            f"has NaN/inf values (first at layer {bad[0]}, head {bad[1]}, row {bad[2]}). "
            "Fix: re-extract it (delete its cache file); half-precision models may overflow."
        )
    return att


def _chunks(
    records: Iterable[Any], contexts: Iterable[PatternContext] | None, size: int
) -> Iterator[list[tuple[Any, PatternContext | None]]]:
    """Pairs of (record, context or None), ``size`` at a time; contexts must not run out."""
    rec_it = iter(records)
    ctx_it = iter(contexts) if contexts is not None else None
    done = 0
    while True:
        recs = list(itertools.islice(rec_it, size))
        if not recs:
            return
        if ctx_it is None:
            yield [(r, None) for r in recs]
        else:
            ctxs = list(itertools.islice(ctx_it, len(recs)))
            if len(ctxs) < len(recs):
                raise ValueError(
                    f"contexts ran out after {done + len(ctxs)} records. Fix: pass one context "
                    "per record (build_contexts(records)) or leave contexts=None."
                )
            yield list(zip(recs, ctxs))
        done += len(recs)


def _sentence_inputs(
    att: np.ndarray,
    ctx: PatternContext,
    patterns: Sequence[Pattern],
    raw: bool,
    level: str,
    drop_keys: DropKeys,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(A [M, n, n], P [Q, n, n], mass [Q, n], drop [n] or None)`` for one sentence, at the
    requested level. At word level ``n`` counts units (`attn_tools.text.Alignment.units`):
    attention is pooled as in Clark et al., predictions by `attn_tools.text.pool_patterns` (only a
    unit's tokens that predict something themselves make its row, so no self fallback leaks into
    a merged unit such as ``ca|n't``), and a unit is dropped when every token of it is."""
    L, H, n, _ = att.shape
    P, mass = predict_many(patterns, ctx, normalize=not raw)
    A = att.reshape(L * H, n, n).astype(np.float64)
    drop = dropped_keys(ctx, drop_keys)
    if level == "word":
        sum_to, mean_from = pooling_matrices(ctx.alignment)
        A = mean_from @ A @ sum_to.T
        P, mass = pool_patterns(P, mass, ctx.alignment)
        if drop is not None:
            drop = (sum_to @ (~drop).astype(np.float64)) == 0
    return A, P, mass, drop


def dropped_keys(ctx: PatternContext, drop_keys: DropKeys) -> np.ndarray | None:
    """The ``[n]`` bool mask of tokens that ``drop_keys`` removes from a sentence (None: none).

    ``"first"`` is token 0 (BOS or [CLS]); ``"special"`` every special token ([CLS], [SEP], BOS,
    EOS, padding never occurs); ``"special+punct"`` those plus punctuation tokens; a callable gets
    the `PatternContext` and returns the mask itself.
    """
    if drop_keys is None or drop_keys == "none":
        return None
    n = len(ctx.tokens)
    if drop_keys == "first":
        mask = np.zeros(n, dtype=bool)
        mask[:1] = True
    elif drop_keys == "special":
        mask = np.asarray(ctx.special_mask, dtype=bool).copy()
    elif drop_keys == "special+punct":
        mask = np.asarray(ctx.special_mask, dtype=bool) | np.asarray(ctx.punct_mask, dtype=bool)
    elif callable(drop_keys):
        mask = np.asarray(drop_keys(ctx))
        if mask.shape != (n,) or mask.dtype != bool:
            raise ValueError(
                f"drop_keys callable returned {mask.dtype} {mask.shape} for {ctx.text[:40]!r}; "
                f"it must return a bool array of shape ({n},), one entry per token."
            )
    else:
        raise ValueError(
            f"drop_keys must be None, 'first', 'special', 'special+punct' or a callable "
            f"ctx -> bool[n], got {drop_keys!r}"
        )
    return mask if mask.any() else None


def drop_keys_label(drop_keys: DropKeys) -> str:
    """How ``drop_keys`` is written in a score table's ``drop_keys`` column."""
    if drop_keys is None:
        return "none"
    if callable(drop_keys):
        return f"custom:{getattr(drop_keys, '__name__', type(drop_keys).__name__)}"
    return str(drop_keys)


def score_heads(
    records: Iterable[Any],
    patterns: Iterable[str | Pattern] | str | Pattern | None = None,
    *,
    metric: Metric = "jsd",
    level: Level = "token",
    rows: Rows = "all",
    contexts: Iterable[PatternContext] | None = None,
    per_sentence: bool = False,
    base: float = 2.0,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    decimals: int | None = None,
    drop_keys: DropKeys = None,
    progress: bool = False,
    chunk_size: int = 64,
) -> pd.DataFrame:
    """Score every head of every record against every pattern; one tidy row per (head, pattern).

    Streams over ``records`` (any iterable of `SentenceAttention`, e.g. `iter_extract`'s
    generator): contexts are built ``chunk_size`` records at a time (one batched spaCy pass, skipped
    when no pattern needs a parse), each sentence is scored in one vectorised pass, and only running
    sums are kept, so memory does not grow with the corpus (unless ``per_sentence=True``).

    Args:
        records: `SentenceAttention` records (several models may be mixed; rows carry ``model``).
        patterns: names or `Pattern` objects; default every registered pattern.
        metric: ``jsd`` (default), ``sae``, ``mae``, ``mul``, ``abs``, ``argmax_accuracy``; the
            module docstring gives each one's definition and direction.
        level: ``"token"`` (model tokens, special tokens included) or ``"word"`` (attention and
            patterns pooled to word units as in Clark et al.: sum over the pieces attended to,
            mean over the pieces attending).
        rows: ``"all"`` rows or only the rows a pattern ``"scored"`` (predicts itself).
        contexts: precomputed `PatternContext` per record, in the same order (skips spaCy).
        per_sentence: add a ``per_sentence`` column: each row's score on every sentence, in
            record order (NaN where a sentence had no scorable row).
        base: logarithm base of ``jsd`` (2 → [0, 1]; ``math.e`` → natural-log numbers).
        exclude_bos, exclude_current_token: leave key 0 / the diagonal out (see module docstring).
        decimals: round each sentence's ``abs`` error term (3 reproduces TransformerLens).
        drop_keys: remove sink keys before comparing: ``"first"`` (BOS / [CLS]), ``"special"``
            ([CLS], [SEP], BOS, EOS), ``"special+punct"``, or a callable ``ctx -> bool[n]``. The
            keys are removed from attention and prediction, both renormalised over the rest;
            query rows that are dropped keys themselves are skipped (no warning). Answers
            "what does the head do besides the sink?".
        progress: show a tqdm bar over sentences.
        chunk_size: records per spaCy batch.

    Returns:
        DataFrame with columns ``model, layer, head, pattern, metric, mean, std, n_sentences,
        family`` (the mean and population std over the ``n_sentences`` sentences that scored),
        then the columns that keep the table's meaning through CSV, Parquet and ``pd.concat``:
        ``rows``, ``level``, ``drop_keys`` (the settings), and per (model, pattern) ``coverage``
        (share of query rows the pattern predicts itself; 0 means pure self fallback, like
        ``next_token`` on a decoder), ``n_rows`` (how many rows it predicts itself) and
        ``support_sentences`` (in how many sentences it predicts some row), plus
        ``per_sentence`` when asked. ``df.attrs`` repeats the settings for convenience and adds
        ``higher_is_better`` and ``dropped_attention_rows``; nothing downstream depends on it.

    Example:
        >>> df = score_heads(extract(load_model("minilm"), load_sentences("story")))
        >>> df.sort_values("mean").head(3)   # the best-fitting (head, pattern) pairs by JSD
    """
    scorer = HeadScorer(
        patterns, metric=metric, level=level, rows=rows, per_sentence=per_sentence, base=base,
        exclude_bos=exclude_bos, exclude_current_token=exclude_current_token, decimals=decimals,
        drop_keys=drop_keys,
    )  # fmt: skip
    _check_records_arg(records)
    # records of a data-parallel run (`attn_tools.distributed`) know their shard: each rank scores
    # its own sentences and the running sums are reduced, so every rank gets the whole table
    shard = getattr(records, "shard", None)
    indices = None if shard is None else shard.indices
    scorer.update(records, contexts, indices=indices, progress=progress, chunk_size=chunk_size)
    if shard is not None:
        from attn_tools.distributed import reduce_scorer

        reduce_scorer(scorer, shard)
    return scorer.table(warn_stacklevel=3)


def _check_records_arg(records: Any) -> None:
    if hasattr(records, "attention"):
        raise TypeError("records is a single record, not a list of them. Fix: pass [record].")
    if records is None or isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
        raise TypeError(
            f"records is {type(records).__name__} ({records!r:.60}), not a list of "
            "SentenceAttention. Fix: pass the output of attn_tools.extract()."
        )


class HeadScorer:
    """The streaming form of `score_heads`: feed records in pieces, save or merge, then `table`.

    Holds only running sums per (model, head, pattern), so it can be checkpointed (`state` /
    `load_state`) and combined with scorers that saw other sentences (`merge`): the merged table
    equals the one `score_heads` gives on all the sentences (integer counts exactly, float64 sums
    up to the order of additions, ~1e-16 relative), with per-sentence rows in sentence order.
    The arguments are `score_heads`' own.

    Example:
        >>> a, b = HeadScorer(metric="jsd"), HeadScorer(metric="jsd")
        >>> a.update(recs[:10]); b.update(recs[10:], indices=range(10, len(recs)))
        >>> a.merge(b); a.table()   # == score_heads(recs)
    """

    def __init__(
        self,
        patterns: Iterable[str | Pattern] | str | Pattern | None = None,
        *,
        metric: Metric = "jsd",
        level: Level = "token",
        rows: Rows = "all",
        per_sentence: bool = False,
        base: float = 2.0,
        exclude_bos: bool = False,
        exclude_current_token: bool = False,
        decimals: int | None = None,
        drop_keys: DropKeys = None,
    ) -> None:
        spec = get_metric(metric)
        if level not in ("token", "word"):
            raise ValueError(f"level must be 'token' or 'word', got {level!r}")
        if rows not in ("all", "scored"):
            raise ValueError(f"rows must be 'all' or 'scored', got {rows!r}")
        _log_base(base)
        pats = resolve_patterns(patterns)
        if not pats:
            raise ValueError(
                "no patterns to score. Fix: pass pattern names or leave patterns=None."
            )
        if not (drop_keys is None or callable(drop_keys) or drop_keys in _DROP_CHOICES):
            raise ValueError(
                f"drop_keys must be None, one of {list(_DROP_CHOICES)} or a callable ctx -> "
                f"bool[n], got {drop_keys!r}"
            )
        self.spec = spec
        self.patterns = list(pats)
        self.level = level
        self.per_sentence = per_sentence
        self.drop_keys = drop_keys
        self.need_parse = level == "word" or any(p.needs_parse for p in pats)
        self.options = ScoreOptions(
            metric, rows, base, exclude_bos, exclude_current_token, decimals
        )
        self.accs: dict[str, _Accumulator] = {}
        self.dropped = 0
        self.n_records = 0

    @property
    def settings(self) -> dict[str, str]:
        """The settings written in the table's meaning columns."""
        return {
            "metric": self.options.metric,
            "rows": "scored" if self.spec.scored_rows_only else self.options.rows,
            "level": self.level,
            "drop_keys": drop_keys_label(self.drop_keys),
        }

    def update(
        self,
        records: Iterable[Any],
        contexts: Iterable[PatternContext] | None = None,
        *,
        indices: Iterable[int] | None = None,
        progress: bool = False,
        chunk_size: int = 64,
    ) -> int:
        """Score ``records`` (and their ``contexts``, if built) into the running sums.

        ``indices`` numbers the records in the whole corpus (default: on from the records seen
        so far); per-sentence rows are ordered by it. Returns how many records were scored.
        """
        _check_records_arg(records)
        opt, pats, level, drop_keys = self.options, self.patterns, self.level, self.drop_keys
        numbers = itertools.count(self.n_records) if indices is None else iter(indices)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            total = len(records) if isinstance(records, Sequence) else None
            bar = tqdm(total=total, desc=f"scoring · {opt.metric}", unit="sent", leave=False)
        index = self.n_records
        try:
            for chunk in _chunks(records, contexts, chunk_size):
                recs = [r for r, _ in chunk]
                ctxs = [c for _, c in chunk]
                for offset, rec in enumerate(recs):  # before spaCy sees a bad record
                    _check_record(rec, index + offset)
                if any(c is None for c in ctxs):
                    ctxs = build_contexts(recs, with_parse=self.need_parse)
                for rec, ctx in zip(recs, ctxs):
                    att = _check_record(rec, index)
                    if ctx.text != rec.text or ctx.n != len(rec.tokens):
                        raise ValueError(
                            f"context {index} is for {ctx.text[:40]!r}, record for "
                            f"{rec.text[:40]!r}. Fix: pass contexts in the same order as the "
                            "records."
                        )
                    L, H = att.shape[:2]
                    acc = self.accs.get(rec.model)
                    if acc is None:
                        acc = _Accumulator(L, H, len(pats), self.per_sentence)
                        self.accs[rec.model] = acc
                    elif (acc.n_layers, acc.n_heads) != (L, H):
                        raise ValueError(
                            f"record {index} of {rec.model!r} has {L}×{H} heads, earlier ones "
                            f"{acc.n_layers}×{acc.n_heads}; records of one model must agree."
                        )
                    A, P, mass, drop = _sentence_inputs(
                        att, ctx, pats, self.spec.raw, level, drop_keys
                    )
                    scores, lost = _score_unique(A, P, mass, replace(opt, drop=drop))
                    self.dropped += lost
                    acc.add(scores, mass, drop, next(numbers))
                    index += 1
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        done = index - self.n_records
        self.n_records = index
        return done

    def state(self) -> dict[str, np.ndarray]:
        """The running sums as plain arrays (``np.savez``-able): a checkpoint of this scorer."""
        out: dict[str, np.ndarray] = {
            "models": np.array(list(self.accs), dtype=str),
            "counters": np.array([self.dropped, self.n_records], dtype=np.int64),
        }
        for k, acc in enumerate(self.accs.values()):
            for name, value in acc.arrays().items():
                out[f"{k}.{name}"] = value
        return out

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace the running sums by a `state` (from a scorer with the same settings)."""
        self.dropped, self.n_records = (int(v) for v in state["counters"])
        self.accs = {
            str(model): _Accumulator.from_arrays(
                {key.split(".", 1)[1]: v for key, v in state.items() if key.startswith(f"{k}.")},
                self.per_sentence,
            )
            for k, model in enumerate(state["models"])
        }
        if any(len(acc.total[0]) != len(self.patterns) for acc in self.accs.values()):
            raise ValueError(
                f"the saved state scores a different number of patterns than the "
                f"{len(self.patterns)} asked for. Fix: resume with the same patterns."
            )

    def merge(self, other: HeadScorer) -> None:
        """Add the sentences ``other`` scored (same settings, other sentences) to this one."""
        if other.settings != self.settings or [p.name for p in other.patterns] != [
            p.name for p in self.patterns
        ]:
            raise ValueError("merge needs two scorers with the same patterns and settings")
        for model, acc in other.accs.items():
            mine = self.accs.get(model)
            if mine is None:
                self.accs[model] = _Accumulator.from_arrays(acc.arrays(), self.per_sentence)
            else:
                mine.merge(acc)
        self.dropped += other.dropped
        self.n_records += other.n_records

    def table(self, *, warn_stacklevel: int = 2) -> pd.DataFrame:
        """The tidy score table of every record fed so far (see `score_heads`' Returns)."""
        if self.n_records == 0:
            raise ValueError("score_heads got no records. Fix: pass the output of extract().")
        opt = self.options
        if self.dropped:
            warnings.warn(
                f"{self.dropped} attention rows had no mass on the kept keys (exclude_bos="
                f"{opt.exclude_bos}, exclude_current_token={opt.exclude_current_token}) and were "
                "left out of the row means; see df.attrs['dropped_attention_rows'].",
                stacklevel=warn_stacklevel,
            )
        settings = self.settings
        names = [p.name for p in self.patterns]
        df = _table(self.accs, self.patterns, settings, self.per_sentence)
        df.attrs.update(
            {
                "metric": opt.metric,
                "higher_is_better": self.spec.higher_is_better,
                "level": self.level,
                "rows": settings["rows"],
                "base": opt.base,
                "exclude_bos": opt.exclude_bos,
                "exclude_current_token": opt.exclude_current_token,
                "decimals": opt.decimals,
                "drop_keys": settings["drop_keys"],
                "n_records": self.n_records,
                "dropped_attention_rows": self.dropped,
                "coverage": {
                    model: dict(zip(names, (acc.predicted_rows / acc.rows).tolist()))
                    for model, acc in self.accs.items()
                },
            }
        )
        return df


def _table(
    accs: dict[str, _Accumulator],
    pats: Sequence[Pattern],
    settings: dict[str, str],
    per_sentence: bool,
) -> pd.DataFrame:
    frames = []
    names = np.array([p.name for p in pats], dtype=object)
    families = np.array([p.family for p in pats], dtype=object)
    for model, acc in accs.items():
        M, Q = acc.total.shape
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = acc.total / acc.count
            var = np.clip(acc.total_sq / acc.count - mean * mean, 0.0, None)
        mean = np.where(acc.count > 0, mean, np.nan)
        std = np.where(acc.count > 0, np.sqrt(var), np.nan)
        coverage = acc.predicted_rows / max(acc.rows, 1)
        data = {
            "model": np.full(M * Q, model, dtype=object),
            "layer": np.repeat(np.arange(acc.n_layers), acc.n_heads * Q),
            "head": np.tile(np.repeat(np.arange(acc.n_heads), Q), acc.n_layers),
            "pattern": np.tile(names, M),
            "metric": np.full(M * Q, settings["metric"], dtype=object),
            "mean": mean.ravel(),
            "std": std.ravel(),
            "n_sentences": acc.count.ravel(),
            "family": np.tile(families, M),
            "rows": np.full(M * Q, settings["rows"], dtype=object),
            "level": np.full(M * Q, settings["level"], dtype=object),
            "drop_keys": np.full(M * Q, settings["drop_keys"], dtype=object),
            "coverage": np.tile(coverage, M),
            "n_rows": np.tile(acc.predicted_rows, M),
            "support_sentences": np.tile(acc.support_sentences, M),
        }
        frame = pd.DataFrame(data)
        if per_sentence:
            ordered = [acc.sentences[k] for k in np.argsort(acc.order, kind="stable")]
            stacked = np.stack(ordered, axis=-1).reshape(M * Q, -1)
            frame["per_sentence"] = list(stacked)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
