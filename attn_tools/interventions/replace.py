"""Attention replacement: make a head attend the way a pattern says, and measure the cost.

Replacing a head's attention means substituting its attention *probabilities* ``P`` (the
``[n, n]`` matrix that weights the value vectors) and letting the model go on: the head's output
becomes ``P_new @ V_head``, where ``V_head`` are the value vectors the head actually reads (under
grouped-query attention, query head ``h`` reads kv head ``h // (n_heads // n_kv_heads)``). The
value vectors are read with a hook on the value projection (`ModelAdapter.hook_values`) and the
head's slice of the output projection's input is rewritten (`ModelAdapter.hook_head_outputs`),
so nothing of the model is copied or monkey-patched, and every other head runs untouched.

A pattern's prediction goes through the framework's own `attn_tools.patterns.predict` (validated,
causally masked for decoders, rows renormalised, empty rows → attend to self), so the matrix put
into the model is the one the scores were computed against. Matrices and callables are passed
through the same `predict`, so they get the same checks and the same masking.

`explains_head` turns this into a faithfulness score per labelled head: the share of the head's
ablation effect that replacing it by its pattern recovers, ``1 − ΔL(replace) / ΔL(ablate)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, get_args

import numpy as np
import pandas as pd
import torch

from attn_tools.interventions.ablation import (
    MEASURE_CE,
    MEASURE_COSINE,
    AblationMethod,
    _ablation_hooks,
    _check_sentences,
    _interval,
    _per_token_effect,
    mean_head_outputs,
)
from attn_tools.models import ModelBundle
from attn_tools.models.adapters import ModelAdapter, get_adapter
from attn_tools.patterns import Pattern, build_context, get_pattern, predict

__all__ = [
    "EXPLAINS_COLUMNS",
    "REPLACE_COLUMNS",
    "Replacement",
    "explains_head",
    "replace_attention",
    "replacement_matrices",
]

#: what a head's attention can be replaced by: a pattern (name or `Pattern`), a function of the
#: sentence's `SentenceAttention` returning ``[n, n]``, one ``[n, n]`` array (every sentence must
#: have n tokens), or a list of arrays, one per sentence.
Replacement = str | Pattern | Callable[[Any], np.ndarray] | np.ndarray | Sequence[np.ndarray]

REPLACE_COLUMNS = ("replaced", "delta_loss", "ci_low", "ci_high", "n_tokens", "measure")
EXPLAINS_COLUMNS = (
    "layer",
    "head",
    "pattern",
    "delta_ablate",
    "delta_replace",
    "explained",
    "ci_low",
    "ci_high",
    "n_tokens",
    "measure",
    "method",
    "reason",
)
_MAX_VARIANTS = 64


# ----------------------------------------------------------------------------- matrices


def _label(spec: Replacement) -> str:
    if isinstance(spec, str):
        return get_pattern(spec).name
    if isinstance(spec, Pattern):
        return spec.name
    if isinstance(spec, np.ndarray):
        return "matrix"
    if callable(spec):
        return getattr(spec, "__name__", "callable")
    return "matrices"


def _as_pattern(spec: Replacement, record: Any, s: int, n_sentences: int, where: str) -> Pattern:
    """A `Pattern` that yields ``spec``'s raw matrix for this sentence (so `predict` checks it)."""
    if isinstance(spec, (str, Pattern)):
        return get_pattern(spec)
    if isinstance(spec, np.ndarray):
        matrix = spec
    elif callable(spec):
        matrix = spec(record)
    elif isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        if len(spec) != n_sentences:
            raise ValueError(
                f"{where}: {len(spec)} matrices for {n_sentences} sentences. Fix: pass one "
                "[n, n] matrix per sentence, or a function of the record."
            )
        matrix = spec[s]
    else:
        raise TypeError(
            f"{where}: {type(spec).__name__} is not a pattern name, Pattern, function or array. "
            "Fix: pass e.g. 'previous_token' or lambda record: record.attention[layer, head]."
        )
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().numpy()
    raw = np.asarray(matrix, dtype=np.float64) if not isinstance(matrix, np.ndarray) else matrix
    return Pattern(name=f"{where}", family="user", description="replacement", fn=lambda _c: raw)


def replacement_matrices(
    records: Sequence[Any], replacements: Mapping[tuple[int, int], Replacement]
) -> list[dict[tuple[int, int], np.ndarray]]:
    """Per sentence, each replaced head's new attention ``[n, n]`` as the framework predicts it.

    Every spec goes through `attn_tools.patterns.predict`: validated (shape ``[n, n]``, finite,
    non-negative; a `PatternError` naming the head and sentence otherwise), masked to ``k ≤ q``
    for decoders, rows renormalised, rows without mass attending to themselves.
    """
    specs = {(int(la), int(h)): spec for (la, h), spec in replacements.items()}
    needs_parse = any(
        isinstance(s, (str, Pattern)) and get_pattern(s).needs_parse for s in specs.values()
    )
    out = []
    for s, record in enumerate(records):
        ctx = build_context(record, with_parse=needs_parse)
        mats = {}
        for (layer, head), spec in specs.items():
            where = f"replacement of layer {layer} head {head}"
            pat = _as_pattern(spec, record, s, len(records), where)
            mats[(layer, head)] = predict(pat, ctx)[0]
        out.append(mats)
    return out


# ----------------------------------------------------------------------------- hooks


def _replacement_hooks(
    adapter: ModelAdapter, variants: Sequence[Mapping[tuple[int, int], np.ndarray]]
) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks so that batch row r has the heads of ``variants[r]`` attend as given.

    Per layer, one hook keeps the value vectors of the current forward and one rewrites the
    replaced heads' slices with ``P_new @ V``; all replaced (row, head) pairs of a layer are done
    in one batched matmul.
    """
    by_layer: dict[int, list[tuple[int, int, np.ndarray]]] = {}
    for row, variant in enumerate(variants):
        for (layer, head), matrix in variant.items():
            by_layer.setdefault(layer, []).append((row, head, matrix))
    handles = []
    for layer, items in by_layer.items():
        store: dict[str, torch.Tensor] = {}
        rows = torch.tensor([r for r, _, _ in items])
        heads = torch.tensor([h for _, h, _ in items])
        kv = torch.tensor([adapter.kv_head(h) for _, h, _ in items])
        probs = torch.from_numpy(np.stack([m for _, _, m in items]))  # [E, n, n] float64

        def keep(values: torch.Tensor, store=store) -> None:
            store["v"] = values

        def edit(per_head, store=store, rows=rows, heads=heads, kv=kv, probs=probs, layer=layer):
            values = store.pop("v", None)
            if values is None:
                raise RuntimeError(
                    f"layer {layer}: the value vectors were not seen before the output "
                    "projection. Fix: the adapter's `value` path is wrong for this model."
                )
            dev = per_head.device
            r, h, k = rows.to(dev), heads.to(dev), kv.to(dev)
            # float64 where the device has it: the new output is then the correctly rounded
            # P_new @ V, so a replacement by the head's own attention is a no-op up to the
            # last bit of the model's own float32 matmul
            wide = torch.float32 if dev.type == "mps" else torch.float64
            p = probs.to(device=dev, dtype=wide)
            new = torch.matmul(p, values[r, :, k].to(wide))  # [E, n, n] @ [E, n, d]
            per_head = per_head.clone()  # never write into a tensor the model may reuse
            per_head[r, :, h] = new.to(per_head.dtype)
            return per_head

        handles.append(adapter.hook_values(layer, keep))
        handles.append(adapter.hook_head_outputs(layer, edit))
    return handles


def _run_with(
    adapter: ModelAdapter, handles: list[torch.utils.hooks.RemovableHandle], *args: Any
) -> torch.Tensor:
    try:
        return _per_token_effect(adapter, *args)
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------- inputs


def _records(bundle: ModelBundle, texts: list[str], cache: bool) -> list[Any]:
    from attn_tools.extract import extract

    return extract(bundle, texts, cache=cache, progress=False)


def _check_bundle(bundle: object, name: str) -> None:
    if not isinstance(bundle, ModelBundle):
        raise TypeError(
            f"{name} needs a ModelBundle, got {type(bundle).__name__}. Fix: pass load_model(...)."
        )


def _check_head(key: object, adapter: ModelAdapter, where: str) -> tuple[int, int]:
    ok = (
        isinstance(key, tuple)
        and len(key) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in key)
        and 0 <= key[0] < adapter.n_layers
        and 0 <= key[1] < adapter.n_heads
    )
    if not ok:
        raise ValueError(
            f"{where} {key!r} is not a (layer, head) pair inside {adapter.n_layers} layers × "
            f"{adapter.n_heads} heads. Fix: use e.g. (3, 1)."
        )
    return int(key[0]), int(key[1])


def _measure(adapter: ModelAdapter) -> str:
    return MEASURE_CE if adapter.kind == "causal" else MEASURE_COSINE


def _clean(adapter: ModelAdapter, row: torch.Tensor, text: str, s: int) -> tuple[Any, float, int]:
    if adapter.kind == "causal" and row.shape[1] < 2:
        raise ValueError(
            f"sentence {s} ({text[:60]!r}) has {row.shape[1]} token(s): no next token to "
            "predict. Fix: drop it or pass a longer sentence."
        )
    clean = _per_token_effect(adapter, row, None)
    base = clean.double().sum().item() if adapter.kind == "causal" else 0.0
    return clean, base, int(clean.shape[1])


# ----------------------------------------------------------------------------- public


@torch.no_grad()
def replace_attention(
    bundle: ModelBundle,
    sentences: str | Sequence[str],
    replacements: Mapping[tuple[int, int], Replacement],
    *,
    cache: bool = True,
) -> pd.DataFrame:
    """ΔLoss when the given heads attend as ``replacements`` say (all of them at once).

    Args:
        bundle: a model from `load_model`.
        sentences: texts to measure on; tokenised by `extract` (same ids as its records).
        replacements: ``{(layer, head): spec}``; a spec is a pattern name or `Pattern`, a function
            ``record -> [n, n]`` (``record`` is the sentence's `SentenceAttention`), an ``[n, n]``
            array, or a list with one array per sentence. See `replacement_matrices`.
        cache: let `extract` use its attention cache for the records.

    Returns:
        One row, columns `REPLACE_COLUMNS`: ``replaced`` (``"L3H1=previous_token; ..."``),
        ``delta_loss`` (replaced minus clean, token-weighted mean over sentences, the measure of
        `ablate_heads`), its 95% CI over sentences (delta method; NaN for one sentence),
        ``n_tokens`` and ``measure``.

    Example:
        >>> replace_attention(bundle, sentences, {(3, 1): "previous_token"})
    """
    _check_bundle(bundle, "replace_attention")
    adapter = get_adapter(bundle)
    texts = _check_sentences(sentences, "sentences")
    if not isinstance(replacements, Mapping) or not replacements:
        raise ValueError(
            f"replacements must be a non-empty {{(layer, head): pattern}} dict, got "
            f"{replacements!r}. Fix: pass e.g. {{(3, 1): 'previous_token'}}."
        )
    heads = [_check_head(k, adapter, "replacements key") for k in replacements]
    specs = dict(zip(heads, replacements.values()))
    records = _records(bundle, texts, cache)
    matrices = replacement_matrices(records, specs)
    sums = np.zeros((len(texts), 1))
    counts = np.zeros(len(texts))
    for s, record in enumerate(records):
        row = torch.tensor([list(record.token_ids)], device=bundle.device)
        clean, base, counts[s] = _clean(adapter, row, texts[s], s)
        effect = _run_with(adapter, _replacement_hooks(adapter, [matrices[s]]), row, clean)
        sums[s, 0] = effect.double().sum().item() - base
    estimate, low, high = _interval(sums, counts)
    label = "; ".join(f"L{la}H{h}={_label(spec)}" for (la, h), spec in specs.items())
    return pd.DataFrame(
        {
            "replaced": [label],
            "delta_loss": estimate,
            "ci_low": low,
            "ci_high": high,
            "n_tokens": int(counts.sum()),
            "measure": _measure(adapter),
        }
    )[list(REPLACE_COLUMNS)]


def _targets(heads_or_labels: Any, adapter: ModelAdapter) -> list[tuple[int, int, Pattern]]:
    """``(layer, head, pattern)`` from a best-fit/label table or a list of triples."""
    if isinstance(heads_or_labels, pd.DataFrame):
        table = heads_or_labels
        col = next((c for c in ("pattern", "label", "best_pattern") if c in table.columns), None)
        if col is None or not {"layer", "head"} <= set(table.columns):
            raise ValueError(
                f"the table has columns {list(table.columns)}; it needs layer, head and one of "
                "pattern / label / best_pattern. Fix: pass best_fit(...) or label_heads(...)."
            )
        items = [
            (r.layer, r.head, getattr(r, col))
            for r in table.itertuples()
            if isinstance(getattr(r, col), str) and getattr(r, col) not in ("", "none")
        ]
        if not items:
            raise ValueError(
                f"no labelled head in the table (every {col!r} is 'none' or empty). Fix: pass "
                "heads with a label, or a list of (layer, head, pattern)."
            )
    else:
        items = list(heads_or_labels) if isinstance(heads_or_labels, Sequence) else [None]
    out = []
    for item in items:
        if not (isinstance(item, Sequence) and len(item) == 3):
            raise ValueError(
                f"{item!r} is not a (layer, head, pattern). Fix: pass e.g. "
                "[(3, 1, 'previous_token')] or a best_fit table."
            )
        layer, head = _check_head((item[0], item[1]), adapter, "head")
        out.append((layer, head, get_pattern(item[2])))
    if not out:
        raise ValueError("no heads to explain. Fix: pass at least one (layer, head, pattern).")
    return out


def _ratio_bootstrap(
    rep: np.ndarray, abl: np.ndarray, n_boot: int, seed: int, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap over sentences of ``1 − Σrep/Σabl`` (per-sentence sums ``[S, T]``).

    Token weights come for free: the sums are per sentence, so resampling sentences and taking
    ratios of totals weights each token once, as the point estimate does.
    """
    k = rep.shape[0]
    if k < 2:
        nan = np.full(rep.shape[1], np.nan)
        return nan, nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, k, size=(n_boot, k))
    r, a = rep[idx].sum(1), abl[idx].sum(1)  # [n_boot, T]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = 1.0 - r / a
    tail = (1.0 - level) / 2 * 100
    return np.nanpercentile(ratios, tail, axis=0), np.nanpercentile(ratios, 100 - tail, axis=0)


@torch.no_grad()
def explains_head(
    bundle: ModelBundle,
    sentences: str | Sequence[str],
    heads_or_labels: pd.DataFrame | Sequence[tuple[int, int, str]],
    *,
    method: AblationMethod = "zero",
    reference: Sequence[str] | None = None,
    min_effect: float = 1e-3,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    cache: bool = True,
) -> pd.DataFrame:
    """How much of each head's ablation effect its pattern explains: ``1 − ΔL(replace)/ΔL(ablate)``.

    1 means attending as the pattern says loses nothing the head provides (the label is causally
    faithful on these sentences); 0 means the pattern is as bad as removing the head; negative
    means worse than removing it. Ablation and replacement of each head are separate forwards
    stacked on the batch axis; every other head runs untouched.

    Args:
        bundle: a model from `load_model`.
        sentences: texts to measure on.
        heads_or_labels: a `best_fit`/`label_heads` table (its ``layer``, ``head`` and
            ``pattern``, ``label`` or ``best_pattern`` column; heads labelled ``"none"`` are
            skipped) or a list of ``(layer, head, pattern)``.
        method: the ablation to compare against, ``"zero"`` or ``"mean"`` (see `ablate_heads`).
        reference: sentences for the mean ablation (default: ``sentences``).
        min_effect: ablation effects at or below this (in the measure's units) are too small to
            divide by: ``explained`` is NaN and ``reason`` says why.
        n_boot, ci, seed: the percentile bootstrap over sentences for ``ci_low``/``ci_high``
            (NaN with one sentence).
        cache: let `extract` use its attention cache for the records.

    Returns:
        One row per target, columns `EXPLAINS_COLUMNS`; ``delta_ablate`` and ``delta_replace``
        are token-weighted mean effects (`ablate_heads`'s measure), ``reason`` is ``""`` when
        ``explained`` is defined.

    Example:
        >>> explains_head(bundle, sentences, [(3, 1, "previous_token")])
    """
    _check_bundle(bundle, "explains_head")
    if method not in get_args(AblationMethod):
        raise ValueError(
            f"method={method!r} is not one of {get_args(AblationMethod)}. Fix: pick one of those."
        )
    adapter = get_adapter(bundle)
    texts = _check_sentences(sentences, "sentences")
    targets = _targets(heads_or_labels, adapter)
    means = None
    if method == "mean":
        means = mean_head_outputs(bundle, texts if reference is None else reference)
    records = _records(bundle, texts, cache)
    # one matrix per (head, pattern): a head listed with two patterns gets both
    by_target = [replacement_matrices(records, {(la, h): p}) for la, h, p in targets]
    heads = [(la, h) for la, h, _ in targets]
    abl = np.zeros((len(texts), len(targets)))
    rep = np.zeros((len(texts), len(targets)))
    counts = np.zeros(len(texts))
    for s, record in enumerate(records):
        row = torch.tensor([list(record.token_ids)], device=bundle.device)
        clean, base, counts[s] = _clean(adapter, row, texts[s], s)
        for start in range(0, len(targets), _MAX_VARIANTS):
            stop = min(len(targets), start + _MAX_VARIANTS)
            batch = row.expand(stop - start, -1)
            hooks = _ablation_hooks(adapter, heads[start:stop], method, means)
            abl[s, start:stop] = (
                _run_with(adapter, hooks, batch, clean).double().sum(1).cpu() - base
            )
            variants = [by_target[t][s] for t in range(start, stop)]
            hooks = _replacement_hooks(adapter, variants)
            rep[s, start:stop] = (
                _run_with(adapter, hooks, batch, clean).double().sum(1).cpu() - base
            )
    n_total = counts.sum()
    d_abl, d_rep = abl.sum(0) / n_total, rep.sum(0) / n_total
    with np.errstate(divide="ignore", invalid="ignore"):
        explained = 1.0 - d_rep / d_abl
    low, high = _ratio_bootstrap(rep, abl, n_boot, seed, ci)
    reasons = []
    for t, d in enumerate(d_abl):
        if d <= min_effect:
            why = "ablation lowers the loss" if d < 0 else "ablation effect below min_effect"
            reasons.append(f"{why} ({d:.2g} ≤ {min_effect:g}): nothing to explain")
            explained[t] = low[t] = high[t] = np.nan
        else:
            reasons.append("")
    return pd.DataFrame(
        {
            "layer": [la for la, _, _ in targets],
            "head": [h for _, h, _ in targets],
            "pattern": [p.name for _, _, p in targets],
            "delta_ablate": d_abl,
            "delta_replace": d_rep,
            "explained": explained,
            "ci_low": low,
            "ci_high": high,
            "n_tokens": int(n_total),
            "measure": _measure(adapter),
            "method": method,
            "reason": reasons,
        }
    )[list(EXPLAINS_COLUMNS)]
