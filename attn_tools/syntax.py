"""Clark et al. (2019)'s syntax analysis and head similarity, done as the paper does them.

*What Does BERT Look At? An Analysis of BERT's Attention* (Clark, Khandelwal, Levy and Manning,
BlackboxNLP 2019) treats every attention head as a dependency parser that needs no training:
each word's predicted head is the word it attends to most. This module reproduces that protocol
on spaCy parses:

- `dependency_accuracy`: per relation, direction, layer and head, the share of *arcs* (pooled
  over all sentences, not averaged per sentence) whose head word the attention head finds.
- `offset_baseline`: the paper's baseline, the best fixed offset (the word ``k`` positions away,
  ``k`` in −3..3 without 0) per relation.
- `syntax_table`: per relation the best head, its accuracy, the baseline and the gain, with
  percentile bootstrap intervals over sentences.
- `head_distances`, `embed_heads`, `cluster_heads` (in `attn_tools.similarity`, importable from
  here): the paper's head similarity (Section 6):
  the Jensen–Shannon distance between every pair of heads, averaged over rows and sentences, a
  classical-MDS map of the heads and a hierarchical clustering.

The candidate rules (the same for every function here): attention is pooled to word units with
`attn_tools.text.to_word_level` (attention *to* a word is the sum over its pieces, attention
*from* a word the mean over its pieces; a token that spans several spaCy words, ``can't``, makes
them one unit). Special tokens ([CLS], [SEP], BOS) are removed from the candidates and the word
itself is excluded, then the prediction is the argmax (the first one on exact ties, as
``np.argmax``). A row whose candidates all have zero weight predicts nothing (this only happens in
causal models, whose first words cannot see their heads). Arcs are those of the parse: the root
(no head word) is left out, and so is an arc whose two words share one unit (the word itself is
never a candidate). Relation labels are spaCy's (ClearNLP style); see ``docs/syntax.md`` for how
they differ from the paper's Stanford dependencies on the Penn Treebank.

Example:
    >>> recs = extract(load_model("minilm"), load_sentences("syntax"))
    >>> table = syntax_table(recs, min_arcs=20)
    >>> viz.plot_syntax_table(table)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from attn_tools.bootstrap import resample_counts
from attn_tools.text import Parse, align, parse, pooling_matrices

__all__ = [
    "ACCURACY_COLUMNS",
    "BASELINE_COLUMNS",
    "DEFAULT_OFFSETS",
    "TABLE_COLUMNS",
    "Direction",
    "HeadDistances",
    "cluster_heads",
    "dependency_accuracy",
    "embed_heads",
    "head_distances",
    "offset_baseline",
    "syntax_table",
]

#: ``"dep->head"``: does the dependent attend most to its head? ``"head->dep"``: the paper's
#: transposed mode (is the head the word that attends most to the dependent?); ``"both"``: both.
Direction = Literal["dep->head", "head->dep", "both"]
_DIRECTIONS: tuple[str, ...] = ("dep->head", "head->dep")
#: the paper's fixed offsets: −3..3 without 0 (offset 0 is the word itself, never a candidate).
DEFAULT_OFFSETS: tuple[int, ...] = (-3, -2, -1, 1, 2, 3)

ACCURACY_COLUMNS = (
    "model", "relation", "direction", "layer", "head", "accuracy", "n_correct", "n_arcs"
)  # fmt: skip
BASELINE_COLUMNS = ("model", "relation", "offset", "accuracy", "n_correct", "n_arcs")
TABLE_COLUMNS = (
    "model", "relation", "n_arcs", "layer", "head", "direction",
    "accuracy", "accuracy_low", "accuracy_high",
    "offset", "baseline", "baseline_low", "baseline_high",
    "gain", "gain_low", "gain_high", "n_sentences", "ci",
)  # fmt: skip


# ----------------------------------------------------------------------------- arcs and counts


@dataclass(frozen=True)
class _SentenceArcs:
    """One sentence's arcs on word units: dependent unit, head unit and relation of each."""

    dep: np.ndarray  # [a] int, indices into the word units (special units removed)
    head: np.ndarray  # [a] int
    relation: tuple[str, ...]  # [a]
    keep_units: np.ndarray  # [u'] indices of the alignment's units that hold words
    n_units: int  # all units, special ones included


def _sentence_arcs(record: Any, parsed: Parse) -> tuple[_SentenceArcs, np.ndarray, np.ndarray]:
    """The arcs of one sentence and its pooling matrices restricted to word units."""
    alignment = align(record, parsed)
    keep = np.array([i for i, (_, words) in enumerate(alignment.units) if words], dtype=np.int64)
    unit_of_word = np.full(len(parsed.words), -1, dtype=np.int64)
    for position, unit in enumerate(keep.tolist()):
        unit_of_word[list(alignment.units[unit][1])] = position
    deps, heads, relations = [], [], []
    for w, word in enumerate(parsed.words):
        if word.head == w or word.dep == "ROOT":
            continue  # the root has no head word to attend to
        du, hu = int(unit_of_word[w]), int(unit_of_word[word.head])
        if du < 0 or hu < 0 or du == hu:
            continue  # cut off by truncation, or both words inside one unit (ca|n't)
        deps.append(du)
        heads.append(hu)
        relations.append(word.dep)
    sum_to, mean_from = pooling_matrices(alignment)
    arcs = _SentenceArcs(
        dep=np.array(deps, dtype=np.int64),
        head=np.array(heads, dtype=np.int64),
        relation=tuple(relations),
        keep_units=keep,
        n_units=alignment.n_units,
    )
    return arcs, mean_from[keep], sum_to[keep]


def _word_attention(record: Any, mean_from: np.ndarray, sum_to: np.ndarray) -> np.ndarray:
    """``W [L·H, u, u]``: Clark's word-level attention over word units only.

    Rows are the mean over a unit's pieces, columns the sum; special-token units are removed from
    both axes (so rows no longer sum to 1, which an argmax does not need).
    """
    att = np.asarray(record.attention)
    L, H, n, _ = att.shape
    return mean_from @ att.reshape(L * H, n, n).astype(np.float64) @ sum_to.T


def _predictions(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted partner unit of every unit, per head: ``(dep->head [M, u], head->dep [M, u])``.

    The diagonal is excluded; -1 where every candidate has zero weight (no prediction).
    """
    M, u, _ = W.shape
    X = W.copy()
    X[:, np.arange(u), np.arange(u)] = -np.inf
    out = []
    for axis in (-1, -2):  # row argmax: whom I attend to; column argmax: who attends to me
        pred = X.argmax(axis=axis)
        best = X.max(axis=axis)
        out.append(np.where(best > 0, pred, -1))
    return out[0], out[1]


@dataclass(frozen=True)
class _Counts:
    """Per-sentence hit counts of every head and every offset, per relation."""

    model: str
    n_layers: int
    n_heads: int
    relations: tuple[str, ...]
    hits: np.ndarray  # [S, 2, M, R] int32: direction 0 dep->head, 1 head->dep
    offset_hits: np.ndarray  # [S, K, R] int32
    offsets: tuple[int, ...]
    n: np.ndarray  # [S, R] int32 arcs per sentence and relation


def _check_records(records: Any) -> list[Any]:
    if records is None or isinstance(records, (str, bytes)):
        raise TypeError(
            f"records is {type(records).__name__}, not a list of SentenceAttention. "
            "Fix: pass extract(bundle, sentences)."
        )
    recs = [records] if hasattr(records, "attention") else list(records)
    if not recs:
        raise ValueError("records is empty. Fix: pass extract(bundle, sentences) with sentences.")
    for i, r in enumerate(recs):
        if not all(hasattr(r, a) for a in ("attention", "text", "offsets", "special_mask")):
            raise TypeError(
                f"record {i} is {type(r).__name__}, not a SentenceAttention. "
                "Fix: pass the output of attn_tools.extract."
            )
    models = sorted({str(r.model) for r in recs})
    if len(models) > 1:
        raise ValueError(
            f"records come from several models ({', '.join(models)}); each analysis here is of "
            "one model. Fix: call it once per model and concatenate the tables."
        )
    shapes = {tuple(np.shape(r.attention)[:2]) for r in recs}
    if len(shapes) > 1:
        raise ValueError(f"records disagree on layers × heads: {sorted(shapes)}")
    return recs


def _parses(recs: Sequence[Any], parses: Sequence[Parse] | None) -> list[Parse]:
    if parses is None:
        return parse([r.text for r in recs])
    parses = list(parses)
    if len(parses) != len(recs):
        raise ValueError(
            f"got {len(parses)} parses for {len(recs)} records. "
            "Fix: pass one parse per record (parse([r.text for r in records]))."
        )
    for i, (r, p) in enumerate(zip(recs, parses)):
        if not isinstance(p, Parse) or p.text != r.text:
            raise ValueError(
                f"parse {i} is not a Parse of record {i}'s text ({r.text[:40]!r}). "
                "Fix: parse([r.text for r in records])."
            )
    return parses


def _relations(wanted: Iterable[str] | str | None, seen: Sequence[str]) -> tuple[str, ...]:
    if wanted is None:
        # most frequent first, so tables and figures lead with the relations that carry weight
        labels, counts = np.unique(np.array(seen, dtype=object), return_counts=True)
        order = sorted(zip(-counts, labels.tolist()))
        return tuple(str(label) for _, label in order)
    rels = (wanted,) if isinstance(wanted, str) else tuple(wanted)
    for r in rels:
        if not isinstance(r, str) or not r.strip():
            raise ValueError(
                f"relations must be dependency labels such as 'nsubj' or 'dobj', got {r!r}. "
                "Fix: relations=['nsubj', 'dobj'] or None for every label in the parses."
            )
    if not rels:
        raise ValueError("relations is empty. Fix: name some labels, or pass None for all.")
    return tuple(dict.fromkeys(rels))


def _count(
    records: Any,
    relations: Iterable[str] | str | None,
    parses: Sequence[Parse] | None,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
) -> _Counts:
    """One pass over the sentences: hits of every head (both directions) and every offset.

    Records of a data-parallel run (`attn_tools.distributed`) carry their shard: each rank
    parses and counts its own sentences, the relation labels are counted over all ranks, and the
    per-sentence rows are gathered in sentence order, so every rank gets the single-process
    counts (integers: exactly). A collective call then; every rank must make it.
    """
    offs = tuple(int(k) for k in offsets)
    if not offs or 0 in offs:
        raise ValueError(
            f"offsets must be non-zero word distances, got {offsets!r}. Fix: use the default "
            "(−3..3 without 0); offset 0 is the word itself, never a candidate."
        )
    shard = getattr(records, "shard", None)
    if shard is None or not shard.world.distributed:
        recs = _check_records(records)
        per_sentence = _arcs_of(recs, parses)
        rels = _relations(relations, [rel for arcs, _, _ in per_sentence for rel in arcs.relation])
        L, H = np.shape(recs[0].attention)[:2]
        rows = _count_rows(recs, per_sentence, rels, offs)
        return _counts(str(recs[0].model), int(L), int(H), rels, offs, rows)

    from attn_tools.distributed import gather_outcome, merge_in_sentence_order

    w = shard.world
    local: dict[str, Any] = {}

    def first() -> tuple[str, int, int, list[str]] | None:
        if isinstance(records, list) and not records:  # a rank may get no sentence
            local.update(recs=[], arcs=[])
            return None
        recs = _check_records(records)
        local.update(recs=recs, arcs=_arcs_of(recs, parses))
        L, H = np.shape(recs[0].attention)[:2]
        labels = [rel for arcs, _, _ in local["arcs"] for rel in arcs.relation]
        return str(recs[0].model), int(L), int(H), labels

    heads = [h for h in gather_outcome(first, w) if h is not None]
    if not heads:
        raise ValueError("records is empty. Fix: pass extract(bundle, sentences) with sentences.")
    if len({h[:3] for h in heads}) > 1:
        raise ValueError(
            f"the ranks hold records of different models or shapes ({sorted({h[:3] for h in heads})})."
            " Fix: load the same model on every rank."
        )
    model, L, H = heads[0][:3]
    # the label list in rank order: _relations only counts labels, so the order is immaterial
    rels = _relations(relations, [rel for h in heads for rel in h[3]])
    parts = gather_outcome(lambda: _count_rows(local["recs"], local["arcs"], rels, offs), w)
    return _counts(model, L, H, rels, offs, merge_in_sentence_order(parts))


def _arcs_of(
    recs: list[Any], parses: Sequence[Parse] | None
) -> list[tuple[_SentenceArcs, np.ndarray, np.ndarray]]:
    """Arcs and pooling matrices of each record (cheap; attention is read later)."""
    return [_sentence_arcs(r, p) for r, p in zip(recs, _parses(recs, parses))]


def _count_rows(
    recs: list[Any],
    per_sentence: list[tuple[_SentenceArcs, np.ndarray, np.ndarray]],
    rels: tuple[str, ...],
    offs: tuple[int, ...],
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per sentence: head hits ``[2, M, R]``, offset hits ``[K, R]`` and arcs ``[R]`` (int32)."""
    index = {r: i for i, r in enumerate(rels)}
    R, K = len(rels), len(offs)
    rows = []
    # attention one sentence at a time: memory stays that of one sentence
    for rec, (arcs, mean_from, sum_to) in zip(recs, per_sentence):
        L, H = np.shape(rec.attention)[:2]
        hits = np.zeros((2, L * H, R), dtype=np.int32)
        offset_hits = np.zeros((K, R), dtype=np.int32)
        n = np.zeros(R, dtype=np.int32)
        rel = np.array([index.get(r, -1) for r in arcs.relation], dtype=np.int64)
        use = rel >= 0
        if use.any():
            d, h, rel = arcs.dep[use], arcs.head[use], rel[use]
            one_hot = np.zeros((len(rel), R), dtype=np.int32)
            one_hot[np.arange(len(rel)), rel] = 1
            n = one_hot.sum(axis=0).astype(np.int32)
            to_head, from_head = _predictions(_word_attention(rec, mean_from, sum_to))
            # [M, a] hits of every head at once, summed into relations by one matrix product
            hits[0] = (to_head[:, d] == h).astype(np.int32) @ one_hot
            hits[1] = (from_head[:, d] == h).astype(np.int32) @ one_hot
            offset_hits = (np.array(offs)[:, None] == (h - d)[None, :]).astype(np.int32) @ one_hot
        rows.append((hits, offset_hits, n))
    return rows


def _counts(
    model: str,
    L: int,
    H: int,
    rels: tuple[str, ...],
    offs: tuple[int, ...],
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> _Counts:
    M, R, K = L * H, len(rels), len(offs)
    return _Counts(
        model=model,
        n_layers=L,
        n_heads=H,
        relations=rels,
        hits=np.stack([r[0] for r in rows]) if rows else np.zeros((0, 2, M, R), np.int32),
        offset_hits=np.stack([r[1] for r in rows]) if rows else np.zeros((0, K, R), np.int32),
        offsets=offs,
        n=np.stack([r[2] for r in rows]) if rows else np.zeros((0, R), np.int32),
    )


def _directions(direction: Direction) -> list[int]:
    if direction not in get_args(Direction):
        raise ValueError(
            f"direction must be one of {list(get_args(Direction))}, got {direction!r}. "
            "Fix: direction='dep->head' (the dependent attends to its head), 'head->dep' "
            "(the paper's transposed mode) or 'both'."
        )
    return [0, 1] if direction == "both" else [_DIRECTIONS.index(direction)]


def _ratio(correct: np.ndarray, total: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.where(total > 0, total, 1), np.nan)


# ----------------------------------------------------------------------------- public tables


def dependency_accuracy(
    records: Any,
    relations: Iterable[str] | str | None = None,
    *,
    direction: Direction = "both",
    parses: Sequence[Parse] | None = None,
) -> pd.DataFrame:
    """Clark et al. (2019)'s per-head dependency accuracy, micro-averaged over arcs.

    For every arc (dependent ``d`` → head ``h``, relation ``r``) of the spaCy parses and every
    attention head, at word level with special tokens and the word itself removed from the
    candidates (see the module docstring):

    - ``"dep->head"``: a hit when ``argmax_j W[d, j] == h``: the word ``d`` attends to most is
      its head (the paper's "normal" mode).
    - ``"head->dep"``: a hit when ``argmax_j W[j, d] == h``: among all words, the head is the one
      that attends most to ``d``. This is the paper's *transposed* mode exactly as its analysis
      code computes it (the argmax of the transposed attention matrix, row ``d``); it is *not*
      "the head's own argmax lands on ``d``", which could credit at most one of a head's several
      dependents of one relation.

    Accuracy is ``n_correct / n_arcs`` with both summed over all sentences (each arc weighs the
    same; a sentence with many ``det`` arcs counts more than one with few). Not the paper's
    ``poss`` special case (it scored ``'s`` in its place); spaCy attaches ``'s`` as ``case``.

    Args:
        records: `SentenceAttention` records of one model (`attn_tools.extract`).
        relations: labels to score (``"nsubj"``, ``["det", "dobj"]``); None: every label in
            the parses, most frequent first. A label with no arc gets ``n_arcs`` 0 and NaN.
        direction: ``"dep->head"``, ``"head->dep"`` or ``"both"`` (rows for each).
        parses: one `attn_tools.text.Parse` per record; None parses the texts (cached).

    Returns:
        One row per (relation, direction, layer, head): columns `ACCURACY_COLUMNS`
        (``model, relation, direction, layer, head, accuracy, n_correct, n_arcs``).

    Example:
        >>> acc = dependency_accuracy(recs, ["dobj"], direction="dep->head")
        >>> acc.nlargest(1, "accuracy")[["layer", "head", "accuracy", "n_arcs"]]
    """
    dirs = _directions(direction)
    counts = _count(records, relations, parses)
    L, H, R = counts.n_layers, counts.n_heads, len(counts.relations)
    total = counts.n.sum(axis=0)  # [R]
    frames = []
    for k in dirs:
        correct = counts.hits[:, k].sum(axis=0)  # [M, R]
        layer, head = np.divmod(np.arange(L * H), H)
        frames.append(
            pd.DataFrame(
                {
                    "model": counts.model,
                    "relation": np.tile(np.array(counts.relations, dtype=object), L * H),
                    "direction": _DIRECTIONS[k],
                    "layer": np.repeat(layer, R),
                    "head": np.repeat(head, R),
                    "accuracy": _ratio(correct, total[None, :]).ravel(),
                    "n_correct": correct.ravel().astype(np.int64),
                    "n_arcs": np.tile(total, L * H).astype(np.int64),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    order = {r: i for i, r in enumerate(counts.relations)}
    out = out.sort_values(
        ["relation", "direction", "layer", "head"],
        key=lambda c: c.map(order) if c.name == "relation" else c,
        kind="stable",
    )
    return out.reset_index(drop=True)[list(ACCURACY_COLUMNS)]


def offset_baseline(
    records: Any,
    relations: Iterable[str] | str | None = None,
    *,
    parses: Sequence[Parse] | None = None,
    offsets: Sequence[int] = DEFAULT_OFFSETS,
    best_only: bool = True,
) -> pd.DataFrame:
    """The paper's fixed-offset baseline: predict the word ``k`` positions away as the head.

    Positions count word units with special tokens removed (the candidates of
    `dependency_accuracy`); an offset that lands outside the sentence predicts nothing (a miss;
    the paper's code clipped it to the first or last word). The arcs are the same as in
    `dependency_accuracy`, so the two are comparable per relation. Both of its directions
    share this baseline: the head is ``k`` words from the dependent exactly when the dependent is
    ``−k`` words from the head.

    Args:
        records, relations, parses: as in `dependency_accuracy`.
        offsets: the offsets tried (default −3..3 without 0).
        best_only: True: one row per relation, the best offset (the smallest ``|k|`` on ties,
            then the negative one); False: one row per (relation, offset).

    Returns:
        Columns `BASELINE_COLUMNS` (``model, relation, offset, accuracy, n_correct, n_arcs``).
    """
    counts = _count(records, relations, parses, offsets)
    return _baseline_frame(counts, best_only=best_only)


def _best_offsets(counts: _Counts) -> np.ndarray:
    """Index of the best offset per relation ``[R]`` (ties: smaller |k|, then negative)."""
    correct = counts.offset_hits.sum(axis=0)  # [K, R]
    offs = counts.offsets
    order = sorted(range(len(offs)), key=lambda i: (abs(offs[i]), offs[i]))
    rank = np.empty(len(offs), dtype=np.int64)
    rank[order] = np.arange(len(offs))
    # most hits first, then the preferred offset (lexsort sorts by its last key first)
    return np.array(
        [np.lexsort((rank, -correct[:, r]))[0] for r in range(correct.shape[1])], dtype=np.int64
    )


def _baseline_frame(counts: _Counts, *, best_only: bool) -> pd.DataFrame:
    correct = counts.offset_hits.sum(axis=0)  # [K, R]
    total = counts.n.sum(axis=0)
    rows = []
    best = _best_offsets(counts)
    for r, rel in enumerate(counts.relations):
        chosen = [best[r]] if best_only else range(len(counts.offsets))
        for k in chosen:
            rows.append(
                {
                    "model": counts.model,
                    "relation": rel,
                    "offset": counts.offsets[k],
                    "accuracy": float(_ratio(correct[k, r], total[r])),
                    "n_correct": int(correct[k, r]),
                    "n_arcs": int(total[r]),
                }
            )
    return pd.DataFrame(rows, columns=list(BASELINE_COLUMNS))


def syntax_table(
    records: Any,
    relations: Iterable[str] | str | None = None,
    *,
    direction: Direction = "both",
    parses: Sequence[Parse] | None = None,
    min_arcs: int = 10,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per relation: the best head, its accuracy, the offset baseline and the gain, with CIs.

    The paper's table (its Figure 5 / Table 2): for each relation the single most accurate head
    over the requested directions (ties: ``dep->head`` first, then the lowest layer and head),
    its accuracy, the best fixed offset and its accuracy, and ``gain = accuracy − baseline``.
    Intervals are percentile bootstrap intervals over *sentences* (`attn_tools.bootstrap`): a
    resample draws sentences with replacement and recomputes each ratio over the arcs it drew;
    accuracy, baseline and gain share the resamples, so the gain's interval is paired. The best
    head and offset are chosen once on all sentences and then held fixed (the interval does not
    include the uncertainty of choosing the best of ``L·H·2`` heads, which favours the head).

    Args:
        records, relations, direction, parses: as in `dependency_accuracy`.
        min_arcs: leave out relations with fewer arcs than this over all sentences.
        n_boot: number of bootstrap resamples; ``ci``: their coverage in (0, 1); ``seed``.

    Returns:
        One row per relation, most frequent first, columns `TABLE_COLUMNS`:
        ``model, relation, n_arcs, layer, head, direction, accuracy, accuracy_low,
        accuracy_high, offset, baseline, baseline_low, baseline_high, gain, gain_low, gain_high,
        n_sentences`` (sentences with at least one arc of the relation) ``, ci``.
    """
    dirs = _directions(direction)
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be a coverage strictly between 0 and 1, got {ci!r}")
    if int(min_arcs) < 1:
        raise ValueError(f"min_arcs must be at least 1, got {min_arcs!r}")
    counts = _count(records, relations, parses)
    total = counts.n.sum(axis=0)  # [R]
    use = np.flatnonzero(total >= int(min_arcs))
    if use.size == 0:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    hits = counts.hits[:, dirs][..., use]  # [S, D, M, R']
    correct = hits.sum(axis=0)  # [D, M, R']
    D, M, R = correct.shape
    best = correct.reshape(D * M, R).argmax(axis=0)  # first maximum: dep->head, low layer first
    d_best, m_best = np.divmod(best, M)
    cols = np.arange(R)
    head_hits = hits[:, d_best, m_best, cols]  # [S, R']
    off_best = _best_offsets(counts)[use]
    base_hits = counts.offset_hits[:, off_best, use]  # [S, R']
    n = counts.n[:, use]  # [S, R']
    C = resample_counts(len(n), n_boot, seed)  # [B, S]
    n_b = C @ n
    acc_b = _ratio(C @ head_hits, n_b)
    base_b = _ratio(C @ base_hits, n_b)
    q = [(1 - ci) / 2, (1 + ci) / 2]
    acc_q = np.nanquantile(acc_b, q, axis=0)
    base_q = np.nanquantile(base_b, q, axis=0)
    gain_q = np.nanquantile(acc_b - base_b, q, axis=0)
    acc = _ratio(head_hits.sum(axis=0), total[use])
    base = _ratio(base_hits.sum(axis=0), total[use])
    layer, head = np.divmod(m_best, counts.n_heads)
    return pd.DataFrame(
        {
            "model": counts.model,
            "relation": [counts.relations[r] for r in use],
            "n_arcs": total[use].astype(np.int64),
            "layer": layer.astype(np.int64),
            "head": head.astype(np.int64),
            "direction": [_DIRECTIONS[dirs[k]] for k in d_best],
            "accuracy": acc,
            "accuracy_low": acc_q[0],
            "accuracy_high": acc_q[1],
            "offset": [counts.offsets[k] for k in off_best],
            "baseline": base,
            "baseline_low": base_q[0],
            "baseline_high": base_q[1],
            "gain": acc - base,
            "gain_low": gain_q[0],
            "gain_high": gain_q[1],
            "n_sentences": (n > 0).sum(axis=0).astype(np.int64),
            "ci": float(ci),
        }
    )[list(TABLE_COLUMNS)]


# head similarity lives in its own module; these names stay importable from here
from attn_tools.similarity import (  # noqa: E402 - after the helpers it imports lazily
    HeadDistances,
    cluster_heads,
    embed_heads,
    head_distances,
)
