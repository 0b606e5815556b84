"""Head ablation: how much worse the model gets when one attention head's output is removed.

A head is ablated by rewriting its slice of the attention output projection's input (see
`ModelAdapter.hook_head_outputs`): ``"zero"`` sets it to 0, ``"mean"`` to the head's mean output
over reference sentences. Variants are stacked on the batch axis, so one forward pass ablates many
heads at once (row r of the batch ablates head r) instead of one forward per head.

Measure: for decoders, ΔLoss = token-weighted mean next-token cross-entropy (nats) with the head
ablated minus without, on the token ids `extract` uses (BOS prepended). Encoders without an LM
head (MiniLM) have no loss; there the effect is 1 − cosine between the final hidden state of each
token and the clean one, averaged over tokens. The ``measure`` column says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from attn_tools.interventions.lens import encode_like_extract
from attn_tools.models import ModelBundle
from attn_tools.models.adapters import ModelAdapter, get_adapter

__all__ = ["ABLATION_COLUMNS", "AblationMethod", "ablate_heads", "mean_head_outputs"]

AblationMethod = Literal["zero", "mean"]
ABLATION_COLUMNS = (
    "layer",
    "head",
    "delta_loss",
    "ci_low",
    "ci_high",
    "n_tokens",
    "measure",
    "method",
)
MEASURE_CE = "delta_next_token_ce_nats"
MEASURE_COSINE = "one_minus_cosine_final_hidden"
_LOGIT_BUDGET = 2**28  # bytes of logits (and their log-softmax) per forward; bounds memory
_MAX_VARIANTS = 128


def _check_sentences(sentences: object, name: str) -> list[str]:
    if isinstance(sentences, str):
        sentences = [sentences]
    if not isinstance(sentences, Sequence) or not sentences:
        raise ValueError(
            f"{name} must be a non-empty list of strings, got {sentences!r}. "
            "Fix: pass e.g. load_sentences('story')[:20]."
        )
    return list(sentences)


def _check_heads(heads: object, adapter: ModelAdapter) -> list[tuple[int, int]]:
    if isinstance(heads, str):
        if heads != "all":
            raise ValueError(f"heads={heads!r} is not 'all'. Fix: pass 'all' or [(layer, head)].")
        return [(la, h) for la in range(adapter.n_layers) for h in range(adapter.n_heads)]
    out = []
    for item in heads if isinstance(heads, Sequence) else [None]:
        ok = (
            isinstance(item, Sequence)
            and len(item) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in item)
            and 0 <= item[0] < adapter.n_layers
            and 0 <= item[1] < adapter.n_heads
        )
        if not ok:
            raise ValueError(
                f"heads entry {item!r} is not a (layer, head) pair inside {adapter.n_layers} "
                f"layers × {adapter.n_heads} heads. Fix: pass 'all' or e.g. [(0, 1), (3, 2)]."
            )
        out.append((int(item[0]), int(item[1])))
    if not out:
        raise ValueError("heads is empty. Fix: pass 'all' or at least one (layer, head) pair.")
    return out


def _head_output_sums(
    bundle: ModelBundle, adapter: ModelAdapter, sentences: Sequence[str], numbers: Sequence[int]
) -> tuple[np.ndarray, int]:
    """Every head's output summed over all tokens of ``sentences`` (float64 ``[L, H, d]``) and
    the number of tokens; ``numbers`` are the sentences' corpus numbers (for errors)."""
    total = torch.zeros(
        adapter.n_layers, adapter.n_heads, adapter.head_dim, dtype=torch.float64
    ).to(bundle.device)
    count = 0

    def reader(layer: int):
        def read(per_head: torch.Tensor) -> torch.Tensor:
            # a model split over GPUs runs each layer on its own device
            total[layer] += per_head.double().sum(dim=(0, 1)).to(total.device)
            return per_head

        return read

    handles = [adapter.hook_head_outputs(la, reader(la)) for la in range(adapter.n_layers)]
    try:
        for i, text in zip(numbers, sentences):
            ids = encode_like_extract(bundle, text, i)
            bundle.model(input_ids=torch.tensor([ids], device=bundle.device), use_cache=False)
            count += len(ids)
    finally:
        for handle in handles:
            handle.remove()
    return total.cpu().numpy(), count


@torch.no_grad()
def mean_head_outputs(
    bundle: ModelBundle, sentences: Sequence[str], *, shard: bool = False
) -> torch.Tensor:
    """Every head's output averaged over all tokens of ``sentences``: ``[L, H, head_dim]``.

    With ``shard=True`` under ``torchrun`` each rank sums its share of the sentences and the
    ranks' float64 sums are added (a collective call: every rank must make it; `ablate_heads`
    does). The default reads every sentence here, so callers that run on one rank (attribution
    patching, attention replacement) never wait for the others.
    """
    adapter = get_adapter(bundle)
    sentences = _check_sentences(sentences, "reference")
    mine, part = _my_share(sentences, shard)
    numbers = list(range(len(sentences))) if part is None else list(part.indices)

    def local() -> tuple[np.ndarray, int]:
        return _head_output_sums(bundle, adapter, mine, numbers)

    if part is None:
        total, count = local()
    else:
        from attn_tools.distributed import gather_outcome, sum_in_rank_order

        parts = gather_outcome(local, part.world)
        total = sum_in_rank_order([{"total": t} for t, _ in parts])["total"]
        count = sum(c for _, c in parts)
    return torch.from_numpy(total).to(bundle.device) / count


def _my_share(texts: list[str], shard: bool | None) -> tuple[list[str], Any]:
    """This rank's sentences and their `Shard` under torchrun; ``(texts, None)`` otherwise."""
    if shard is not None and not shard:
        return texts, None
    from attn_tools.distributed import shard_sentences

    mine, part = shard_sentences(texts)
    return list(mine), part


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half precision is widened; a float64 model keeps its precision (parity tests run there)."""
    return x if x.dtype == torch.float64 else x.float()


def _per_token_effect(
    adapter: ModelAdapter, ids: torch.Tensor, clean: torch.Tensor | None
) -> torch.Tensor:
    """One forward of a ``[B, n]`` batch → per-token CE ``[B, n-1]`` or final hidden ``[B, n, d]``."""
    out = adapter.model(input_ids=ids, use_cache=False)
    if adapter.kind == "causal":
        logits = _at_least_float32(out.logits[:, :-1])
        target = ids[:, 1:]
        return F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    hidden = _at_least_float32(out.last_hidden_state)
    if clean is None:
        return hidden
    return 1.0 - F.cosine_similarity(hidden, clean.expand_as(hidden), dim=-1)


def _ablation_hooks(
    adapter: ModelAdapter,
    chunk: Sequence[tuple[int, int]],
    method: AblationMethod,
    means: torch.Tensor | None,
) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks so that batch row r has head ``chunk[r]`` ablated (and nothing else)."""
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for row, (layer, head) in enumerate(chunk):
        by_layer.setdefault(layer, []).append((row, head))
    handles = []
    for layer, pairs in by_layer.items():
        rows = torch.tensor([r for r, _ in pairs])
        heads = torch.tensor([h for _, h in pairs])

        def edit(per_head: torch.Tensor, rows=rows, heads=heads, layer=layer) -> torch.Tensor:
            per_head = per_head.clone()  # never write into a tensor the model may reuse
            r, h = rows.to(per_head.device), heads.to(per_head.device)
            if method == "zero":
                per_head[r, :, h] = 0.0
            else:
                value = means[layer, heads].to(per_head.device, per_head.dtype)  # type: ignore[index]
                per_head[r, :, h] = value[:, None, :].expand(-1, per_head.shape[1], -1)
            return per_head

        handles.append(adapter.hook_head_outputs(layer, edit))
    return handles


def _interval(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token-weighted mean over sentences and its 95% CI (delta method for a ratio estimator).

    ``sums`` is ``[S, V]`` (per sentence, per variant), ``counts`` ``[S]``. With one sentence the
    interval is NaN: there is no spread over sentences to estimate it from.
    """
    n_total = counts.sum()
    estimate = sums.sum(0) / n_total
    k = len(counts)
    if k < 2:
        nan = np.full_like(estimate, np.nan)
        return estimate, nan, nan
    resid = sums - estimate[None, :] * counts[:, None]
    se = np.sqrt(k / (k - 1) * (resid**2).sum(0)) / n_total
    return estimate, estimate - 1.96 * se, estimate + 1.96 * se


@torch.no_grad()
def ablate_heads(
    bundle: ModelBundle,
    sentences: str | Sequence[str],
    heads: Literal["all"] | Sequence[tuple[int, int]] = "all",
    method: AblationMethod = "zero",
    reference: Sequence[str] | None = None,
    *,
    variants_per_forward: int | None = None,
    shard: bool | None = None,
) -> pd.DataFrame:
    """The effect of ablating each head, one head at a time, batched on the batch axis.

    Args:
        bundle: a model from `load_model`.
        sentences: the texts to measure on (tokenised as `extract` does).
        heads: ``"all"`` (the full layers × heads matrix) or a list of ``(layer, head)``.
        method: ``"zero"`` (the head's output set to 0) or ``"mean"`` (set to its mean output over
            ``reference``, default the same sentences).
        reference: sentences for the mean; only used with ``method="mean"``.
        variants_per_forward: ablations stacked in one forward pass; default as many as fit a
            256 MiB logit budget (at most 128). ``1`` runs one forward per head (the reference
            loop of ``benchmarks/bench_ablation.py``).
        shard: under ``torchrun``/``accelerate launch`` the default (None) measures only this
            rank's sentences (``i % world_size == rank``, `attn_tools.distributed`) and gathers
            the per-sentence effects of every rank in sentence order, so every rank returns the
            single-process table (a collective call: every rank must make it; the mean of
            ``method="mean"`` is reduced the same way). ``False`` measures every sentence here.

    Returns:
        A DataFrame with the columns `ABLATION_COLUMNS`, one row per head: ``delta_loss`` (the
        token-weighted mean effect; see ``measure``), its 95% CI over sentences (NaN for one
        sentence), ``n_tokens`` (tokens measured), ``measure`` and ``method``. ``attrs`` holds
        ``sentences_per_rank`` (provenance).

    Example:
        >>> table = ablate_heads(load_model("smollm2"), load_sentences("story")[:8])
        >>> table.pivot(index="layer", columns="head", values="delta_loss")
    """
    if not isinstance(bundle, ModelBundle):
        raise TypeError(
            f"ablate_heads needs a ModelBundle, got {type(bundle).__name__}. "
            "Fix: pass load_model(...)."
        )
    if method not in get_args(AblationMethod):
        raise ValueError(
            f"method={method!r} is not one of {get_args(AblationMethod)}. Fix: pick one of those."
        )
    if variants_per_forward is not None and (
        isinstance(variants_per_forward, bool)
        or not isinstance(variants_per_forward, int)
        or variants_per_forward < 1
    ):
        raise ValueError(
            f"variants_per_forward={variants_per_forward!r} must be a positive integer or None."
        )
    adapter = get_adapter(bundle)
    texts = _check_sentences(sentences, "sentences")
    targets = _check_heads(heads, adapter)
    mine, part = _my_share(texts, shard)
    numbers = list(range(len(texts))) if part is None else list(part.indices)
    means = None
    if method == "mean":
        ref = texts if reference is None else _check_sentences(reference, "reference")
        means = mean_head_outputs(bundle, ref, shard=part is not None)

    def local() -> list[tuple[np.ndarray, int]]:
        return _sentence_effects(bundle, adapter, mine, numbers, targets, method, means,
                                 variants_per_forward)  # fmt: skip

    if part is None:
        rows, per_rank = local(), [len(texts)]
    else:
        from attn_tools.distributed import gather_outcome, merge_in_sentence_order

        parts = gather_outcome(local, part.world)
        rows, per_rank = merge_in_sentence_order(parts), [len(p) for p in parts]
        if len(rows) != len(texts):
            raise RuntimeError(
                f"the ranks measured {per_rank} sentences, {len(rows)} in all, for "
                f"{len(texts)}. Fix: start every process with the same sentences."
            )
    sums = np.stack([effect for effect, _ in rows])  # [S, V], in sentence order
    counts = np.array([n for _, n in rows], dtype=np.float64)
    estimate, low, high = _interval(sums, counts)
    table = pd.DataFrame(
        {
            "layer": [la for la, _ in targets],
            "head": [h for _, h in targets],
            "delta_loss": estimate,
            "ci_low": low,
            "ci_high": high,
            "n_tokens": int(counts.sum()),
            "measure": MEASURE_CE if adapter.kind == "causal" else MEASURE_COSINE,
            "method": method,
        }
    )[list(ABLATION_COLUMNS)]
    table.attrs["sentences_per_rank"] = per_rank  # provenance (run.json), not meaning
    return table


def _sentence_effects(
    bundle: ModelBundle,
    adapter: ModelAdapter,
    texts: Sequence[str],
    numbers: Sequence[int],
    targets: Sequence[tuple[int, int]],
    method: AblationMethod,
    means: torch.Tensor | None,
    variants_per_forward: int | None,
) -> list[tuple[np.ndarray, int]]:
    """Per sentence: the summed effect of ablating each target ``[V]`` and the tokens measured.

    ``numbers`` are the sentences' corpus numbers (tokenisation and errors use them).
    """
    causal = adapter.kind == "causal"
    vocab = int(bundle.model.config.vocab_size) if causal else 1
    rows = []
    for s, text in zip(numbers, texts):
        ids = encode_like_extract(bundle, text, s)
        if causal and len(ids) < 2:
            raise ValueError(
                f"sentence {s} ({text[:60]!r}) has {len(ids)} token(s): no next token to "
                "predict. Fix: drop it or pass a longer sentence."
            )
        row = torch.tensor([ids], device=bundle.device)
        clean = _per_token_effect(adapter, row, None)  # CE [1, n-1] or hidden [1, n, d]
        base = clean.double().sum().item() if causal else 0.0
        effects = np.zeros(len(targets), dtype=np.float64)
        size = variants_per_forward or max(
            1, min(_MAX_VARIANTS, _LOGIT_BUDGET // max(1, len(ids) * vocab * 8))
        )
        for start in range(0, len(targets), size):
            chunk = targets[start : start + size]
            handles = _ablation_hooks(adapter, chunk, method, means)
            try:
                effect = _per_token_effect(adapter, row.expand(len(chunk), -1), clean)
            finally:
                for handle in handles:
                    handle.remove()
            effects[start : start + len(chunk)] = effect.double().sum(1).cpu().numpy() - base
        rows.append((effects, int(clean.shape[1])))
    return rows
