"""Do labels hold? Held-out agreement by kind of label, bootstrap stability, cross-corpus checks.

A headline such as "72/72 heads keep their best pattern" says little when almost every head is a
sink or "none": those agree trivially. So every head's label is given a *kind* —
``"pattern"`` (a label that says what the head does), ``"sink"`` (attention parked on [CLS],
[SEP], BOS/EOS or punctuation: `SINK_PATTERNS` and the ``special`` family) or ``"none"`` — and
agreement is reported per kind (`agreement_summary`).

Three checks, all on sentences a label was not chosen on or on resamples of them:

- *halves* (`consistency` without ``heldout``): the records are split at random in two; labels
  are chosen on each half independently.
- *cross-corpus* (`consistency` with ``heldout``): labels chosen on one sentence set (e.g.
  ``load_sentences("story")``) are compared with labels chosen on another (``"syntax"``) —
  different styles of text, not just different sentences.
- *stability* (`stability`): the share of bootstrap resamples of the sentences on which a head
  gets the same label. A resample's label is the best candidate on the resampled means if it
  beats the baselines' resampled means (by ``margin`` for the fast rule, by ``min_effect`` for
  the calibrated one; the interval itself is not recomputed inside each resample).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from attn_tools.bootstrap import resample_counts, resampled_means
from attn_tools.classify import (
    HEAD_KEYS,
    MIN_COVERAGE,
    MIN_ROWS,
    MIN_SENTENCES,
    N_BOOT,
    Baseline,
    _is_baseline,
    _sentence_matrix,
    _shared_sentences,
    best_fit,
    supported,
    with_shuffled,
)
from attn_tools.patterns import Pattern, build_contexts, get_pattern, resolve_patterns
from attn_tools.scoring import Level, Metric, Rows, get_metric, score_heads

__all__ = [
    "SINK_PATTERNS",
    "agreement_summary",
    "consistency",
    "label_kind",
    "stability",
]

#: labels that say "the head parks its attention" rather than what it does.
SINK_PATTERNS = frozenset(
    {"first_token", "last_token", "special_tokens", "punctuation_sink", "special_or_punctuation"}
)
Kind = Literal["pattern", "sink", "none"]
STABILITY_BOOT = 200


def label_kind(label: object) -> Kind:
    """``"none"`` for no label, ``"sink"`` for a sink pattern, else ``"pattern"``."""
    if label is None or (isinstance(label, float) and np.isnan(label)) or label == "none":
        return "none"
    name = str(label)
    if name in SINK_PATTERNS:
        return "sink"
    try:
        return "sink" if get_pattern(name).family == "special" and name != "uniform" else "pattern"
    except Exception:  # a pattern not registered in this process (a discovered program)
        return "pattern"


# ----------------------------------------------------------------------------- stability


def stability(
    scores: pd.DataFrame,
    *,
    n_boot: int = STABILITY_BOOT,
    seed: int = 0,
    fit: pd.DataFrame | None = None,
    **fit_options: Any,
) -> pd.DataFrame:
    """Per head, the share of bootstrap resamples of sentences that give it the same label.

    ``scores`` needs a ``per_sentence`` column (``score_heads(..., per_sentence=True)``) and the
    baseline rows the rule uses. ``fit_options`` are `best_fit`'s (the same rule is applied on
    every resample; see the module docstring); ``fit`` reuses an existing `best_fit` result.

    Returns:
        One row per head: ``model, layer, head, label, kind, stability`` (share of resamples with
        the same label), ``pattern_stability`` (same best pattern, whatever the verdict),
        ``n_boot``.
    """
    if "per_sentence" not in scores.columns:
        raise ValueError(
            "stability resamples sentences, but the table has no per_sentence column. Fix: "
            "score_heads(..., per_sentence=True)."
        )
    if fit is None:
        fit = best_fit(scores, **fit_options)
    spec = get_metric(str(scores["metric"].iloc[0]))
    orient = -1.0 if spec.higher_is_better else 1.0  # lower is better after orienting
    baseline = fit.attrs.get("baseline")
    ci = fit.attrs.get("ci")
    cut = fit.attrs.get("min_effect", 0.0) if ci is not None else fit.attrs.get("margin", 0.05)
    threshold = fit.attrs.get("threshold")
    opts = {k: fit.attrs[k] for k in ("min_coverage", "min_sentences", "min_rows")}
    ok = supported(scores, **opts) & ~_is_baseline(scores["pattern"])
    if baseline in ("uniform", "both"):
        ok &= scores["pattern"] != "uniform"
    table = scores.set_index([*HEAD_KEYS, "pattern"])["per_sentence"]
    frames = []
    for model, sub_fit in fit.groupby("model", sort=False):
        aliased = {n for names in fit.attrs["aliases"].get(str(model), {}).values() for n in names}
        sub = scores[(scores["model"] == model) & ok & ~scores["pattern"].isin(aliased)]
        cands = list(dict.fromkeys(sub["pattern"]))
        heads = [tuple(k) for k in sub_fit[HEAD_KEYS].itertuples(index=False)]

        def stack(names: Sequence[str], heads=heads) -> np.ndarray:
            keys = [(*h, n) for h in heads for n in names]
            cells = table.reindex(keys)
            if cells.isna().any():
                lost = keys[int(np.flatnonzero(cells.isna().to_numpy())[0])]
                raise ValueError(
                    f"stability needs per-sentence scores of {lost[-1]!r} for head {lost[:3]}, "
                    "which the table lacks. Fix: score with_shuffled(patterns) + ['uniform'] "
                    "with per_sentence=True."
                )
            mat = _sentence_matrix(cells.to_numpy(), keys, "per_sentence")
            return mat.reshape(len(heads), len(names), -1)

        labels = np.full((len(heads), n_boot), "none", dtype=object)
        best_b = np.full((len(heads), n_boot), -1)
        if cands:
            X = stack(cands)  # [H, Q, S]
            counts = resample_counts(X.shape[-1], n_boot, seed)
            R = orient * resampled_means(X, counts)  # [H, Q, B]
            R = np.where(np.isfinite(R), R, np.inf)
            best_b = np.argmin(R, axis=1)  # [H, B]
            has = np.isfinite(np.min(R, axis=1))
            pick = np.take_along_axis(R, best_b[:, None, :], axis=1)[:, 0]  # [H, B]
            passed = has.copy()
            if baseline in ("uniform", "both"):
                U = orient * resampled_means(stack(["uniform"])[:, 0], counts)
                passed &= (U - pick) > cut if ci is not None else (U - pick) >= cut
            if baseline in ("shuffled", "both"):
                Sh = orient * resampled_means(stack([f"shuffled({c})" for c in cands]), counts)
                own = np.take_along_axis(Sh, best_b[:, None, :], axis=1)[:, 0]
                passed &= (own - pick) > cut if ci is not None else (own - pick) >= cut
            if threshold is not None:
                passed &= pick <= orient * threshold
            names = np.array(cands, dtype=object)[best_b]
            labels = np.where(passed, names, "none")
        full = sub_fit["label"].to_numpy(dtype=object)[:, None]
        best_full = sub_fit["best_pattern"].to_numpy(dtype=object)[:, None]
        same_best = np.array(cands + [None], dtype=object)[best_b] == best_full
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "layer": sub_fit["layer"].to_numpy(),
                    "head": sub_fit["head"].to_numpy(),
                    "label": sub_fit["label"].to_numpy(),
                    "kind": [label_kind(x) for x in sub_fit["label"]],
                    "stability": (labels == full).mean(axis=1),
                    "pattern_stability": same_best.mean(axis=1),
                    "n_boot": n_boot,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- consistency


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
    baseline: Baseline | Literal["auto"] | None = "auto",
    threshold: float | None = None,
    margin: float = 0.05,
    tie_tolerance: float = 0.01,
    min_coverage: float = MIN_COVERAGE,
    min_sentences: int = MIN_SENTENCES,
    min_rows: int = MIN_ROWS,
    ci: float | None = None,
    n_boot: int = N_BOOT,
    stability_boot: int = STABILITY_BOOT,
    progress: bool = False,
    contexts: Sequence[Any] | None = None,
    **score_options: Any,
) -> pd.DataFrame:
    """Does each head's label hold on sentences it was not chosen on?

    The records are split at random (``seed``) into halves A and B (``split == "halves"``), or
    A = ``records`` and B = ``heldout``, a disjoint sentence set — another corpus for the
    cross-corpus check (``split == "heldout"``). `best_fit` (fast rule, or calibrated with
    ``ci``) labels each head on A and, independently, on B; `stability` resamples A's sentences.

    Returns:
        One row per head: ``model, layer, head, pattern_a, pattern_b, agree`` (same best pattern),
        ``score_a`` (pattern_a's score on A), ``score_b`` (pattern_a's score on B), ``drift``
        (``score_b − score_a``; for a distance, positive = worse on held-out text),
        ``label_a, label_b, label_agree``, ``kind_a, kind_b`` (`label_kind`), ``tied_agree``
        (pattern_a is among B's near-ties), ``rank_b`` (pattern_a's rank on B, 1 = best),
        ``stability_a`` (`stability` of label_a on A), ``n_a, n_b`` (sentences), ``split``.
        `agreement_summary` turns it into counts per kind; ``df.attrs`` repeats the rule and
        overall agreement for convenience.

    ``contexts`` (one `PatternContext` per record of ``records``, from `build_contexts`) are
    reused instead of built again, with the predictions memoised on them.
    """
    records = list(records)
    ctxs = None if contexts is None else list(contexts)
    if ctxs is not None and len(ctxs) != len(records):
        raise ValueError(
            f"{len(ctxs)} contexts for {len(records)} records. Fix: pass "
            "build_contexts(records), one per record, or leave contexts=None."
        )
    ctx_a = ctx_b = None
    if heldout is None:
        if len(records) < 2:
            raise ValueError("consistency needs at least 2 records to split in halves")
        ia, ib = _split(len(records), seed)
        fit_recs = [records[i] for i in ia]
        val_recs = [records[i] for i in ib]
        if ctxs is not None:
            ctx_a, ctx_b = [ctxs[i] for i in ia], [ctxs[i] for i in ib]
    else:
        fit_recs, val_recs = records, list(heldout)
        ctx_a = ctxs
        if not fit_recs or not val_recs:
            raise ValueError("consistency needs records on both sides")
        shared = _shared_sentences(fit_recs, val_recs)
        if shared:
            raise ValueError(
                f"{len(shared)} held-out sentence(s) are also in the fit records, e.g. "
                f"{next(iter(shared))[1][:60]!r}; a finding must be checked on unseen text. "
                "Fix: pass disjoint sets (load_sentences('heldout') is kept apart from 'all')."
            )
    names = [p.name for p in resolve_patterns(patterns) if not p.name.startswith("shuffled(")]
    used = ("uniform" if ci is None else "both") if baseline == "auto" else baseline
    if used in ("shuffled", "both"):
        names = with_shuffled([n for n in names if n != "uniform"]) + (
            ["uniform"] if "uniform" in names or used == "both" else []
        )
    if used in ("uniform", "both") and "uniform" not in names:
        names.append("uniform")
    opts = dict(
        metric=metric, level=level, rows=rows, progress=progress, per_sentence=True, **score_options
    )
    need_parse = level == "word" or any(p.needs_parse for p in resolve_patterns(names))
    if ctx_a is None:
        ctx_a = build_contexts(fit_recs, with_parse=need_parse)
    if ctx_b is None:
        ctx_b = build_contexts(val_recs, with_parse=need_parse)
    scores_a = score_heads(fit_recs, names, contexts=ctx_a, **opts)
    scores_b = score_heads(val_recs, names, contexts=ctx_b, **opts)
    fit_opts = dict(
        baseline=baseline,
        threshold=threshold,
        margin=margin,
        tie_tolerance=tie_tolerance,
        min_coverage=min_coverage,
        min_sentences=min_sentences,
        min_rows=min_rows,
        ci=ci,
        n_boot=n_boot,
        seed=seed,
    )
    fa_table = best_fit(scores_a, **fit_opts)
    fa = fa_table.set_index(HEAD_KEYS)
    fb = best_fit(scores_b, **fit_opts).set_index(HEAD_KEYS)
    stab = stability(scores_a, n_boot=stability_boot, seed=seed, fit=fa_table).set_index(HEAD_KEYS)
    table_b = scores_b.set_index([*HEAD_KEYS, "pattern"])["mean"]

    hib = get_metric(metric).higher_is_better
    cand_b = scores_b[~_is_baseline(scores_b["pattern"])]
    if used in ("uniform", "both"):
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
    out["kind_a"] = [label_kind(x) for x in out["label_a"]]
    out["kind_b"] = [label_kind(x) for x in out["label_b"]]
    out["tied_agree"] = [p in t for p, t in zip(out["pattern_a"], fb["tied"].reindex(fa.index))]
    out["rank_b"] = rank_b.reindex(keys).to_numpy()
    out["stability_a"] = stab["stability"].reindex(fa.index)
    out["n_a"] = len(fit_recs)
    out["n_b"] = len(val_recs)
    out["split"] = "halves" if heldout is None else "heldout"
    out = out.reset_index()
    out.attrs = {
        "metric": metric,
        "seed": seed,
        "n_a": len(fit_recs),
        "n_b": len(val_recs),
        "rule": fa_table.attrs.get("rule", ""),
        "agreement": float(out["agree"].mean()),
        "agreement_by_model": out.groupby("model")["agree"].mean().to_dict(),
    }
    return out


def agreement_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Agreement of a `consistency` table per model and kind of label on side A.

    Returns:
        One row per (model, kind) plus an ``"all"`` row per model: ``heads``, ``label_agree``
        (heads with the same label on B), ``pattern_agree`` (same best pattern), ``share``
        (``label_agree / heads``), ``mean_stability`` and ``split``. A claim about what heads do
        should quote the ``pattern`` row, not ``all``.
    """
    need = {"model", "label_a", "label_agree", "agree", "kind_a", "stability_a", "split"}
    missing = need - set(table.columns)
    if missing:
        raise ValueError(
            f"expected a consistency table, missing columns {sorted(missing)}. Fix: pass "
            "consistency(...)'s output."
        )
    rows = []
    for model, sub in table.groupby("model", sort=False):
        for kind in ("pattern", "sink", "none", "all"):
            part = sub if kind == "all" else sub[sub["kind_a"] == kind]
            rows.append(
                {
                    "model": model,
                    "kind": kind,
                    "heads": len(part),
                    "label_agree": int(part["label_agree"].sum()),
                    "pattern_agree": int(part["agree"].sum()),
                    "share": float(part["label_agree"].mean()) if len(part) else np.nan,
                    "mean_stability": float(part["stability_a"].mean()) if len(part) else np.nan,
                    "split": str(sub["split"].iloc[0]),
                }
            )
    return pd.DataFrame(rows)
