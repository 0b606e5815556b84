"""Head statistics and head types: what every head's attention looks like, in a few numbers.

`head_stats` summarises each head of each model over a set of sentences — how spread out its rows
are (entropy), how sharp (focus), where the mass goes (first token, previous token, itself,
special tokens, punctuation) and how far it looks (mean attended distance) — and gives it one
`head_type` in `HEAD_TYPES` under documented, overridable thresholds (`HeadTypeThresholds`).
`head_type_agreement` checks that the types hold on other sentences (share kept, confusion
counts, Cohen's kappa).

Which rows count (one rule for every statistic):

- Row ``q`` may attend to its *allowed keys*: every key for an encoder, keys ``k ≤ q`` for a
  decoder, minus the keys that ``drop_keys`` removes (same choices and meaning as
  `attn_tools.scoring.score_heads`: ``"first"``, ``"special"``, ``"special+punct"`` or a callable
  ``ctx -> bool[n]``). Each row is renormalised over its allowed keys.
- A row with fewer than two allowed keys has no choice to make, so it is left out of every
  statistic. For a decoder this is row 0 (it can only attend to itself; its normalised entropy
  would be 0/0), and with ``drop_keys="first"`` also row 1. A query row that is itself a dropped
  key is left out too (as in scoring), and so is a row with no mass on its allowed keys.
- Per head, a statistic is the mean over the kept rows of a sentence, then the mean over the
  sentences in which the head kept at least one row (``n_sentences``); ``n_rows`` counts the
  kept rows. Sentence-weighted, as `score_heads` averages.

Definitions per kept row ``p`` (renormalised, query ``q``): ``entropy_bits = -Σ p log2 p``;
``entropy_norm = entropy_bits / log2(#allowed keys)`` in [0, 1] (1 = uniform over what the row
may see); ``focus = max p``; ``first_mass = p[0]``; ``prev_mass = p[q-1]`` (0 for ``q = 0``);
``self_mass = p[q]``; ``special_mass`` and ``punct_mass`` the mass on special tokens and on
punctuation tokens (`PatternContext.special_mask` / ``punct_mask``); ``distance = Σ p[k]·|q-k|``
in tokens. A dropped key has no mass, so e.g. ``first_mass`` is 0 under ``drop_keys="first"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from attn_tools.extract import check_records
from attn_tools.scoring.engine import _DROP_CHOICES, DropKeys, drop_keys_label, dropped_keys

__all__ = [
    "HEAD_TYPES",
    "STAT_COLUMNS",
    "HeadType",
    "HeadTypeThresholds",
    "TypeAgreement",
    "assign_head_types",
    "head_stats",
    "head_type_agreement",
    "type_shares",
    "write_stats",
]

HeadType = Literal["previous-token", "first-token", "self", "focused", "broad", "mixed"]
#: every head type, in the order the rule tries them (positional types first)
HEAD_TYPES: tuple[str, ...] = get_args(HeadType)
#: the statistics, in table order (each a mean over kept rows, then over sentences)
STAT_COLUMNS = (
    "entropy_bits", "entropy_norm", "focus", "first_mass", "prev_mass", "self_mass",
    "special_mass", "punct_mass", "distance",
)  # fmt: skip
# cells per block of heads computed at once (bounds memory on long sentences)
_CHUNK_CELLS = 4_000_000
# the positional types and the statistic each one reads
_POSITIONAL = (
    ("previous-token", "prev_mass"),
    ("first-token", "first_mass"),
    ("self", "self_mass"),
)


@dataclass(frozen=True)
class HeadTypeThresholds:
    """The cut-offs that turn a head's statistics into its `head_type`.

    The rule, tried in order:

    1. **previous-token / first-token / self**: the head's mean mass on that position is at least
       ``positional``; when several are, the largest wins (ties: in that order).
    2. **focused**: mean max weight (``focus``) at least ``focused`` — sharp rows, but not on a
       fixed position ([SEP], punctuation, one content word).
    3. **broad**: normalised entropy at least ``broad`` — rows close to uniform over what they
       may see.
    4. **mixed**: anything else.

    Example:
        >>> assign_head_types(stats, HeadTypeThresholds(positional=0.4))
    """

    positional: float = 0.5
    focused: float = 0.5
    broad: float = 0.7

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"HeadTypeThresholds.{f.name} is {value!r}, not a number. Fix: pass a float "
                    "in [0, 1], e.g. 0.5."
                )
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(
                    f"HeadTypeThresholds.{f.name} is {value}, outside [0, 1] (it cuts a share of "
                    "attention mass or a normalised entropy). Fix: pass a value in [0, 1]."
                )

    def describe(self) -> str:
        """The rule in one line (written to the table's ``type_rule`` column)."""
        return (
            f"previous-token/first-token/self: mean mass >= {self.positional:g} (largest wins); "
            f"focused: mean max weight >= {self.focused:g}; broad: normalised entropy >= "
            f"{self.broad:g}; else mixed"
        )


# ----------------------------------------------------------------------------- one sentence


def _sentence_stats(
    att: np.ndarray, causal: bool, special: np.ndarray, punct: np.ndarray, drop: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-head sums over kept rows ``[M, S]`` and kept-row counts ``[M]`` for one sentence.

    ``att`` is ``[M, n, n]`` (all heads of all layers at once), so every statistic of every head
    is one array expression.
    """
    M, n, _ = att.shape
    allowed = np.tril(np.ones((n, n), dtype=bool)) if causal else np.ones((n, n), dtype=bool)
    row_ok = np.ones(n, dtype=bool)
    if drop is not None:
        allowed &= ~drop[None, :]
        row_ok &= ~drop  # a dropped key's own row is not scored (as in score_heads)
    n_allowed = allowed.sum(axis=1)
    row_ok &= n_allowed >= 2  # one allowed key: no choice (decoder row 0)
    p = att * allowed
    sums = p.sum(axis=-1)
    ok = row_ok[None, :] & (sums > 0)  # [M, n]
    p = p / np.where(sums > 0, sums, 1.0)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(p > 0, np.log2(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -(p * logp).sum(axis=-1)
    log_allowed = np.log2(np.maximum(n_allowed, 2)).astype(np.float64)
    prev = np.zeros((M, n))
    if n > 1:
        prev[:, 1:] = p[:, np.arange(1, n), np.arange(n - 1)]
    idx = np.arange(n)
    distance = np.abs(idx[:, None] - idx[None, :]).astype(np.float64)
    per_row = np.stack(
        [
            entropy,
            entropy / log_allowed[None, :],
            p.max(axis=-1),
            p[:, :, 0],
            prev,
            p[:, idx, idx],
            p @ special.astype(np.float64),
            p @ punct.astype(np.float64),
            np.einsum("mqk,qk->mq", p, distance),
        ],
        axis=-1,
    )  # [M, n, S]
    counts = ok.sum(axis=1)
    sums_ok = (per_row * ok[..., None]).sum(axis=1)
    return sums_ok, counts


# ----------------------------------------------------------------------------- head_stats


@dataclass
class _Model:
    kind: str
    n_layers: int
    n_heads: int
    total: np.ndarray  # [M, S] sum over sentences of per-sentence means
    n_sentences: np.ndarray  # [M]
    n_rows: np.ndarray  # [M]
    first: int = 0  # position of the model's first record (orders models in a reduction)


def head_stats(
    records: Iterable[Any],
    *,
    drop_keys: DropKeys = None,
    thresholds: HeadTypeThresholds | None = None,
    contexts: Iterable[Any] | None = None,
) -> pd.DataFrame:
    """Statistics and a head type for every head; one row per (model, layer, head).

    Args:
        records: `SentenceAttention` records (a list, or a stream from `iter_extract`); several
            models may be mixed, each gets its own rows.
        drop_keys: keys removed before anything is measured, as in `score_heads`: ``None`` /
            ``"none"``, ``"first"`` (BOS / [CLS]), ``"special"``, ``"special+punct"``, or a
            callable ``ctx -> bool[n]``.
        thresholds: the head-type cut-offs (default `HeadTypeThresholds()`).
        contexts: `PatternContext` per record, only needed when a ``drop_keys`` callable reads
            the parse; by default each record gets a parse-free context (special tokens and
            punctuation come from the tokens, not spaCy).

    Returns:
        Columns ``model, layer, head``, the statistics `STAT_COLUMNS` (see the module docstring
        for which rows count and each definition), ``head_type``, ``n_sentences``, ``n_rows``,
        ``drop_keys`` and ``type_rule`` (the settings travel with the table). A head with no kept
        row in any sentence has NaN statistics and type ``"mixed"``. ``attrs`` holds
        ``sentences_per_rank`` (provenance).

    Under ``torchrun`` the records of `extract` carry their shard: each rank sums its own
    sentences and the ranks' sums are added in rank order (a collective call: every rank must
    make it), so every rank gets the single-process table, counts exactly and means up to the
    order of the float64 additions (~1e-16).

    Example:
        >>> stats = head_stats(extract(load_model("smollm2"), load_sentences("story")[:24]))
        >>> stats.groupby("layer").head_type.value_counts()
    """
    if not (drop_keys is None or callable(drop_keys) or drop_keys in _DROP_CHOICES):
        raise ValueError(
            f"drop_keys must be None, 'none', 'first', 'special', 'special+punct' or a callable "
            f"ctx -> bool[n], got {drop_keys!r}. Fix: pick one of those."
        )
    thresholds = thresholds or HeadTypeThresholds()
    if not isinstance(thresholds, HeadTypeThresholds):
        raise TypeError(
            f"thresholds is {type(thresholds).__name__}, not HeadTypeThresholds. Fix: pass "
            "HeadTypeThresholds(positional=..., focused=..., broad=...)."
        )
    # records of a data-parallel run (`attn_tools.distributed`) know their shard: each rank
    # sums its own sentences, then the sums of every rank are added (collective call)
    shard = getattr(records, "shard", None)
    if shard is None or not shard.world.distributed:
        models, n_records = _accumulate(records, drop_keys, contexts)
        per_rank = [n_records]
    else:
        from attn_tools.distributed import gather_outcome

        empty = isinstance(records, list) and not records  # a rank may get no sentence
        parts = gather_outcome(
            lambda: ({}, 0) if empty else _accumulate(records, drop_keys, contexts), shard.world
        )
        models, per_rank = _merge_models(parts, shard), [n for _, n in parts]
        if shard.total is not None and sum(per_rank) != shard.total:
            raise RuntimeError(
                f"the ranks measured {per_rank} sentences, {sum(per_rank)} in all, for a corpus "
                f"of {shard.total}. Fix: pass head_stats every record a rank extracted."
            )
    if not models:
        raise ValueError("records held no record. Fix: extract at least one sentence first.")
    frames = []
    for name, m in models.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            means = m.total / np.where(m.n_sentences > 0, m.n_sentences, np.nan)[:, None]
        df = pd.DataFrame(means, columns=list(STAT_COLUMNS))
        df.insert(0, "model", name)
        df.insert(1, "layer", np.repeat(np.arange(m.n_layers), m.n_heads))
        df.insert(2, "head", np.tile(np.arange(m.n_heads), m.n_layers))
        df["n_sentences"] = m.n_sentences
        df["n_rows"] = m.n_rows
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    table["drop_keys"] = drop_keys_label(drop_keys)
    table = assign_head_types(table, thresholds)
    table.attrs["sentences_per_rank"] = per_rank  # provenance (run.json), not meaning
    return table


def _accumulate(
    records: Iterable[Any], drop_keys: DropKeys, contexts: Iterable[Any] | None
) -> tuple[dict[str, _Model], int]:
    """Per model, the sums over this process' sentences (`_Model`) and the number of records."""
    from attn_tools.patterns import build_context

    ctx_iter = iter(contexts) if contexts is not None else None
    models: dict[str, _Model] = {}
    S = len(STAT_COLUMNS)
    index = -1
    for index, rec in enumerate(check_records(records)):
        ctx = next(ctx_iter, None) if ctx_iter is not None else None
        if ctx_iter is not None and ctx is None:
            raise ValueError(
                f"contexts ran out at record {index}. Fix: pass one context per record."
            )
        if ctx is None:
            ctx = build_context(rec, with_parse=False)
        att = rec.attention
        if not np.isfinite(att).all():
            raise ValueError(
                f"record {index} ({rec.text[:40]!r}) has NaN or infinite attention. Fix: "
                "re-extract it (extract(..., cache=False))."
            )
        L, H, n, _ = att.shape
        m = models.get(rec.model)
        if m is None:
            m = models[rec.model] = _Model(
                rec.kind, L, H, np.zeros((L * H, S)), np.zeros(L * H, int), np.zeros(L * H, int),
                first=index,
            )  # fmt: skip
        elif (m.n_layers, m.n_heads) != (L, H):
            raise ValueError(
                f"record {index} of model {rec.model!r} has {L}×{H} heads, earlier ones "
                f"{m.n_layers}×{m.n_heads}. Fix: records of one model name must come from one "
                "model."
            )
        drop = dropped_keys(ctx, drop_keys)
        flat = att.reshape(L * H, n, n)
        special = np.asarray(ctx.special_mask, dtype=bool)
        punct = np.asarray(ctx.punct_mask, dtype=bool)
        # heads in chunks of about _CHUNK_CELLS cells: a 512-token sentence of a 270-head model
        # would otherwise hold several [270, 512, 512] float64 temporaries at once
        step = max(1, _CHUNK_CELLS // (n * n))
        parts = [
            _sentence_stats(flat[i : i + step].astype(np.float64), rec.kind == "causal",
                            special, punct, drop)
            for i in range(0, L * H, step)
        ]  # fmt: skip
        sums = np.concatenate([p[0] for p in parts])
        counts = np.concatenate([p[1] for p in parts])
        has = counts > 0
        m.total[has] += sums[has] / counts[has, None]
        m.n_sentences += has
        m.n_rows += counts
    return models, index + 1


def _merge_models(parts: list[tuple[dict[str, _Model], int]], shard: Any) -> dict[str, _Model]:
    """The ranks' sums added in rank order; models in the order a single process meets them
    (by the corpus number of each model's first sentence)."""
    W = shard.world.world_size
    first: dict[str, int] = {}
    for rank, (models, _) in enumerate(parts):
        for name, m in models.items():
            number = rank + m.first * W  # record k of rank r is sentence r + k * W
            first[name] = min(first.get(name, number), number)
    merged: dict[str, _Model] = {}
    for name in sorted(first, key=first.__getitem__):
        for rank, (models, _) in enumerate(parts):
            m = models.get(name)
            if m is None:
                continue
            if name not in merged:
                merged[name] = _Model(
                    m.kind, m.n_layers, m.n_heads, m.total.copy(), m.n_sentences.copy(),
                    m.n_rows.copy(), first=first[name],
                )  # fmt: skip
                continue
            into = merged[name]
            if (into.n_layers, into.n_heads) != (m.n_layers, m.n_heads):
                raise ValueError(
                    f"rank {rank} has model {name!r} with {m.n_layers}×{m.n_heads} heads, "
                    f"another rank {into.n_layers}×{into.n_heads}. Fix: load the same model "
                    "on every rank."
                )
            into.total += m.total
            into.n_sentences += m.n_sentences
            into.n_rows += m.n_rows
    return merged


def assign_head_types(
    stats: pd.DataFrame, thresholds: HeadTypeThresholds | None = None
) -> pd.DataFrame:
    """A copy of a `head_stats` table with ``head_type`` and ``type_rule`` under ``thresholds``.

    Re-types heads without recomputing their statistics (e.g. to try stricter cut-offs).
    """
    thresholds = thresholds or HeadTypeThresholds()
    need = {"focus", "entropy_norm"} | {col for _, col in _POSITIONAL}
    missing = sorted(need - set(stats.columns))
    if missing:
        raise ValueError(
            f"stats lacks the column(s) {missing}. Fix: pass a table from head_stats()."
        )
    out = stats.copy()
    pos = out[[col for _, col in _POSITIONAL]].to_numpy(dtype=np.float64)
    pos = np.nan_to_num(pos, nan=-1.0)
    best = pos.argmax(axis=1)  # first of equal maxima: the documented tie order
    best_value = pos[np.arange(len(pos)), best]
    focus = out["focus"].to_numpy(dtype=np.float64)
    broad = out["entropy_norm"].to_numpy(dtype=np.float64)
    names = np.array([t for t, _ in _POSITIONAL], dtype=object)
    types = np.where(
        best_value >= thresholds.positional,
        names[best],
        np.where(focus >= thresholds.focused, "focused",
                 np.where(broad >= thresholds.broad, "broad", "mixed")),
    )  # fmt: skip
    out["head_type"] = pd.Categorical(types.astype(str), categories=list(HEAD_TYPES))
    out["type_rule"] = thresholds.describe()
    return out


# ----------------------------------------------------------------------------- stability


@dataclass(frozen=True)
class TypeAgreement:
    """How well head types computed on two sentence sets agree.

    Attributes:
        summary: one row per model: ``n_heads``, ``n_same`` (heads with the same type on both),
            ``agreement`` (their share), ``expected`` (the agreement two independent labelings
            with these type frequencies would reach by chance) and ``kappa`` (Cohen's kappa,
            ``(agreement - expected) / (1 - expected)``; NaN when ``expected`` is 1, i.e. both
            sets give every head one and the same type).
        confusion: long table ``model, type_a, type_b, count`` over every pair of types
            (zeros included), ``type_a`` from the first table.
    """

    summary: pd.DataFrame
    confusion: pd.DataFrame

    def matrix(self, model: str | None = None) -> pd.DataFrame:
        """The confusion counts of one model as a types × types table (rows: first set)."""
        models = list(self.summary["model"])
        if model is None:
            if len(models) != 1:
                raise ValueError(f"several models {models}. Fix: pass model=one of them.")
            model = models[0]
        sub = self.confusion[self.confusion["model"] == model]
        if sub.empty:
            raise ValueError(f"no model {model!r} here. Fix: pass one of {models}.")
        return sub.pivot(index="type_a", columns="type_b", values="count").loc[
            list(HEAD_TYPES), list(HEAD_TYPES)
        ]

    def _repr_html_(self) -> str:
        return self.summary.to_html(index=False)


def head_type_agreement(stats_a: pd.DataFrame, stats_b: pd.DataFrame) -> TypeAgreement:
    """Compare the head types of two `head_stats` tables (e.g. analysis vs held-out sentences).

    Heads are matched on ``(model, layer, head)``; both tables must hold the same heads.

    Example:
        >>> agree = head_type_agreement(head_stats(recs_story), head_stats(recs_heldout))
        >>> agree.summary[["model", "agreement", "kappa"]]
    """
    key = ["model", "layer", "head"]
    for label, t in (("stats_a", stats_a), ("stats_b", stats_b)):
        if not isinstance(t, pd.DataFrame) or not {*key, "head_type"} <= set(t.columns):
            raise ValueError(
                f"{label} is not a head_stats table (needs columns {key + ['head_type']}). "
                "Fix: pass head_stats(records) for each sentence set."
            )
    a = stats_a[[*key, "head_type"]].astype({"head_type": str})
    b = stats_b[[*key, "head_type"]].astype({"head_type": str})
    merged = a.merge(b, on=key, how="outer", suffixes=("_a", "_b"), indicator=True)
    unmatched = merged[merged["_merge"] != "both"]
    if len(unmatched):
        first = unmatched.iloc[0]
        raise ValueError(
            f"{len(unmatched)} head(s) are in only one table (first: {first['model']} "
            f"L{first['layer']} H{first['head']}). Fix: compute both tables on the same model(s)."
        )
    rows, conf = [], []
    for model, sub in merged.groupby("model", sort=False):
        ta, tb = sub["head_type_a"].to_numpy(), sub["head_type_b"].to_numpy()
        n = len(sub)
        observed = float(np.mean(ta == tb))
        expected = float(sum(np.mean(ta == t) * np.mean(tb == t) for t in HEAD_TYPES))
        kappa = (observed - expected) / (1 - expected) if expected < 1 else float("nan")
        rows.append((model, n, int((ta == tb).sum()), observed, expected, kappa))
        for t1 in HEAD_TYPES:
            for t2 in HEAD_TYPES:
                conf.append((model, t1, t2, int(((ta == t1) & (tb == t2)).sum())))
    summary = pd.DataFrame(
        rows, columns=["model", "n_heads", "n_same", "agreement", "expected", "kappa"]
    )
    confusion = pd.DataFrame(conf, columns=["model", "type_a", "type_b", "count"])
    return TypeAgreement(summary, confusion)


def type_shares(stats: pd.DataFrame) -> pd.DataFrame:
    """Share of each head type per (model, layer): columns ``model, layer`` + `HEAD_TYPES`."""
    counts = (
        stats.astype({"head_type": str})
        .groupby(["model", "layer"])["head_type"]
        .value_counts(normalize=True)
        .unstack(fill_value=0.0)
    )
    for t in HEAD_TYPES:
        if t not in counts.columns:
            counts[t] = 0.0
    return counts[list(HEAD_TYPES)].reset_index()


# ----------------------------------------------------------------------------- files


def write_stats(
    model: str,
    sentences: str,
    out: str | Path,
    *,
    holdout: str | None = None,
    drop_keys: DropKeys = None,
    thresholds: HeadTypeThresholds | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    syntax: bool = False,
    similarity: bool = False,
) -> list[Path]:
    """Extract, compute `head_stats`, and write the table and figures for one model.

    Writes under ``out``: ``head_stats_<model>.csv`` and ``.parquet``, the head-type grid and
    the layer-progression figure (PNG), and with ``holdout`` (a second sentence set) the held-out
    table, ``type_agreement_<model>.csv`` and ``type_confusion_<model>.csv``. With ``syntax``:
    `attn_tools.syntax.syntax_table` as ``syntax_<model>.csv`` and its bar chart; with
    ``similarity``: the heads' Jensen–Shannon distances mapped by classical MDS and coloured by
    head type (``head_map_<model>.csv`` and ``.png``; its cost grows with (layers × heads)² ×
    tokens², so use it on tens of sentences), and ``run.json`` (how the tables were made:
    world size, backend, sentences per rank; `attn_tools.distributed.write_provenance`).
    Returns the paths.

    Under ``torchrun`` every rank calls it: each extracts its share of the sentences, the head
    statistics (and the held-out ones) are reduced over ranks, rank 0 writes everything and
    returns the paths, the other ranks return ``[]``. ``syntax`` and ``similarity`` are reduced
    the same way (`attn_tools.syntax`).
    """
    import time

    from attn_tools import viz
    from attn_tools.data import load_sentences
    from attn_tools.distributed import default_device, rank_info, world, write_provenance
    from attn_tools.extract import extract
    from attn_tools.models import load_model
    from attn_tools.report import file_slug, write_table

    out = Path(out)
    w = world()
    texts = load_sentences(sentences, limit=limit, progress=progress)
    held_texts: list[str] = []
    if holdout is not None:  # checked before any work, so a bad set costs nothing
        held_texts = load_sentences(holdout, limit=limit, progress=progress)
        overlap = set(texts) & set(held_texts)
        if overlap:
            raise ValueError(
                f"the held-out set shares {len(overlap)} sentence(s) with the analysis set (e.g. "
                f"{next(iter(overlap))[:50]!r}), so agreement would not test stability. Fix: pass "
                "a disjoint --holdout set (the built-in 'heldout' set is disjoint from the others)."
            )
    bundle = load_model(model, device=default_device(w))
    show = progress and w.is_main
    # under torchrun every rank extracts its own sentences and head_stats adds the ranks' sums
    t0 = time.perf_counter()
    records = extract(bundle, texts, batch_size=batch_size, progress=show)
    stats = head_stats(records, drop_keys=drop_keys, thresholds=thresholds)
    ranks = rank_info(len(records), time.perf_counter() - t0, w)
    held_stats = None
    if holdout is not None:
        held = extract(bundle, held_texts, batch_size=batch_size, progress=show)
        held_stats = head_stats(held, drop_keys=drop_keys, thresholds=thresholds)
    # syntax_table and head_distances reduce over ranks too (collective calls: every rank)
    syntax_rows = distances = None
    if syntax:
        from attn_tools.syntax import syntax_table

        syntax_rows = syntax_table(records)
    if similarity:
        from attn_tools.syntax import head_distances

        distances = head_distances(records, drop_keys=drop_keys)
    if not w.is_main:  # one writer: rank 0
        return []
    slug = file_slug(bundle.name)
    paths = write_table(stats, out, f"head_stats_{slug}")
    paths += viz.save_figure(viz.plot_head_type_grid(stats), out / f"head_types_{slug}.png")
    paths += viz.save_figure(viz.plot_layer_progression(stats), out / f"layers_{slug}.png")
    if held_stats is not None:
        paths += write_table(held_stats, out, f"head_stats_{slug}_holdout")
        agreement = head_type_agreement(stats, held_stats)
        for name, table in (("agreement", agreement.summary), ("confusion", agreement.confusion)):
            path = out / f"type_{name}_{slug}.csv"
            table.to_csv(path, index=False)
            paths.append(path)
    if syntax_rows is not None:
        paths += write_table(syntax_rows, out, f"syntax_{slug}")
        paths += viz.save_figure(viz.plot_syntax_table(syntax_rows), out / f"syntax_{slug}.png")
    if distances is not None:
        from attn_tools.syntax import embed_heads

        emb = embed_heads(distances)
        paths += write_table(emb, out, f"head_map_{slug}")
        fig = viz.plot_head_embedding(emb, stats, label_column="head_type")
        paths += viz.save_figure(fig, out / f"head_map_{slug}.png")
    entry = {
        "command": "stats",
        "model": bundle.name,
        "fingerprint": bundle.fingerprint,
        "sentences": sentences,
        "holdout": holdout,
        "holdout_per_rank": None if held_stats is None else held_stats.attrs["sentences_per_rank"],
        "drop_keys": drop_keys_label(drop_keys),
        "type_rule": (thresholds or HeadTypeThresholds()).describe(),
        "batch_size": batch_size,
        "sharded": ["head_stats"]
        + (["holdout"] if holdout is not None else [])
        + (["syntax"] if syntax else [])
        + (["similarity"] if similarity else []),
        "files": [str(p.relative_to(out)) for p in paths],
    }
    key = f"head_stats_{slug}" + ("" if entry["drop_keys"] == "none" else f"_{entry['drop_keys']}")
    paths.append(write_provenance(out, key, entry, ranks=ranks, n_sentences=len(texts), w=w))
    return paths
