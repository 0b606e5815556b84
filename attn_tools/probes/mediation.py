"""Causal mediation of the his/her prediction through single heads (Vig et al. 2020 style).

For a decoder and prompt pairs ``(base, counterfactual)`` whose next word is a pronoun ("The
engineer finished" / "The woman finished"), the outcome of a run is the logit difference at the
last position

    y = logit(" her") − logit(" his")          (targets[1] − targets[0])

- total effect ``TE = y(counterfactual) − y(base)``;
- indirect effect of head ``(l, h)``: ``y(base, with the head's output at the last position taken
  from the counterfactual run) − y(base)``. The head's output is its slice of the attention
  output projection's input (`ModelAdapter.hook_head_outputs`), so everything downstream of the
  head recomputes, as in Vig et al.'s "indirect effect" (they report it for the set-gender
  intervention and average over prompts).

Patching the last position only lets the two prompts differ in length (the occupation may be
several tokens), and it cannot change any earlier position of a decoder: the base prompt's prefix
runs once, and every patched variant runs only the last token on that prefix's key/value cache,
``batch_size`` variants (row r patches head r) per forward pass.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from attn_tools.models import ModelBundle
from attn_tools.models.adapters import ModelAdapter, get_adapter
from attn_tools.probes.bias import check_pairs

__all__ = ["MEDIATION_COLUMNS", "mediation_heads", "patched_logit_difference"]

MEDIATION_COLUMNS = (
    "model",
    "layer",
    "head",
    "indirect_effect",
    "ci_low",
    "ci_high",
    "share_of_total",
    "total_effect",
    "n",
)
HeadSet = Sequence[tuple[int, int]]


def _target_ids(bundle: ModelBundle, targets: tuple[str, str]) -> tuple[int, int]:
    ids = []
    for word in targets:
        toks = bundle.tokenizer.encode(" " + word.strip(), add_special_tokens=False)
        if len(toks) != 1:
            raise ValueError(
                f"target {word!r} is {len(toks)} tokens for {bundle.name} (with its leading "
                "space), so its logit is not one number. Fix: pick single-token targets, e.g. "
                "('his', 'her') or ('he', 'she')."
            )
        ids.append(int(toks[0]))
    return ids[0], ids[1]


def _ids(bundle: ModelBundle, text: str, index: int) -> torch.Tensor:
    from attn_tools.interventions.lens import encode_like_extract

    return torch.tensor([encode_like_extract(bundle, text, index)], device=bundle.device)


@torch.no_grad()
def _last_head_outputs(adapter: ModelAdapter, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Run ``ids [1, n]``; every layer's per-head outputs at the last position ``[H, d]``."""
    found: dict[int, torch.Tensor] = {}

    def reader(layer: int):
        def read(per_head: torch.Tensor) -> torch.Tensor:
            found[layer] = per_head[0, -1].detach().clone()
            return per_head

        return read

    handles = [adapter.hook_head_outputs(la, reader(la)) for la in range(adapter.n_layers)]
    try:
        adapter.model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return tuple(found[la] for la in range(adapter.n_layers))


@torch.no_grad()
def _patched_runs(
    adapter: ModelAdapter,
    ids: torch.Tensor,
    donor: tuple[torch.Tensor, ...],
    variants: Sequence[HeadSet],
    target: tuple[int, int],
    prefix: Any = None,
) -> np.ndarray:
    """``y`` for each variant: batch row r runs ``ids`` with the heads of ``variants[r]`` patched.

    ``prefix`` (from `_prefix_cache`) holds the keys and values of every position but the last;
    the patch touches only the last position, so with it each variant runs one token.
    """
    by_layer: dict[int, tuple[list[int], list[int]]] = {}
    for row, heads in enumerate(variants):
        for layer, head in heads:
            rows, hs = by_layer.setdefault(layer, ([], []))
            rows.append(row)
            hs.append(head)

    def patcher(layer: int, rows: list[int], heads: list[int]):
        r = torch.tensor(rows, device=ids.device)
        h = torch.tensor(heads, device=ids.device)

        def edit(per_head: torch.Tensor) -> torch.Tensor:
            new = per_head.clone()
            new[r, -1, h] = donor[layer][h].to(new.dtype)
            return new

        return edit

    handles = [
        adapter.hook_head_outputs(layer, patcher(layer, rows, heads))
        for layer, (rows, heads) in by_layer.items()
    ]
    try:
        logits = _last_logits(adapter, ids, len(variants), prefix)
    finally:
        for h in handles:
            h.remove()
    return (logits[:, target[1]] - logits[:, target[0]]).cpu().numpy()


def _prefix_cache(adapter: ModelAdapter, ids: torch.Tensor) -> Any:
    """The key/value cache of ``ids[:, :-1]``, or None where the model cannot give one."""
    if ids.shape[1] < 2:
        return None
    try:
        with torch.no_grad():
            out = adapter.model(input_ids=ids[:, :-1], use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    except (TypeError, ValueError):
        return None
    return cache if hasattr(cache, "batch_repeat_interleave") else None


def _cache_argument(model: Any) -> str:
    """The forward's name for a key/value cache: ``cache`` (transformers ≥ 5.2x) or the old one."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _last_logits(adapter: ModelAdapter, ids: torch.Tensor, rows: int, prefix: Any) -> torch.Tensor:
    """Last-position logits ``[rows, vocab]`` of ``ids`` repeated ``rows`` times (hooks apply)."""
    if prefix is not None:
        cache = copy.deepcopy(prefix)  # the forward appends to it: keep the original clean
        cache.batch_repeat_interleave(rows)
        kw = {_cache_argument(adapter.model): cache}
        out = adapter.model(input_ids=ids[:, -1:].expand(rows, 1), use_cache=True, **kw)
        return out.logits[:, -1].double()
    batch = ids.expand(rows, -1)
    try:  # only the last position's logits are read: skip the vocabulary product elsewhere
        out = adapter.model(input_ids=batch, use_cache=False, logits_to_keep=1)
    except TypeError:  # a family whose forward has no logits_to_keep
        out = adapter.model(input_ids=batch, use_cache=False)
    return out.logits[:, -1].double()


def _check_decoder(bundle: object) -> ModelAdapter:
    if not isinstance(bundle, ModelBundle):
        raise TypeError(
            f"expected a ModelBundle, got {type(bundle).__name__}. Fix: load_model('smollm2')."
        )
    if bundle.kind != "causal":
        raise ValueError(
            f"{bundle.name} is an {bundle.kind}: mediation reads next-token logits, which only a "
            "decoder has. Fix: use a causal model such as load_model('smollm2')."
        )
    return get_adapter(bundle)


def patched_logit_difference(
    bundle: ModelBundle,
    base: str,
    counterfactual: str,
    heads: HeadSet | str,
    *,
    targets: tuple[str, str] = ("his", "her"),
) -> float:
    """``y`` of ``base`` with ``heads`` (a list of (layer, head), or ``"all"``) patched jointly
    from ``counterfactual`` at the last position. ``heads=[]`` gives ``y(base)``."""
    adapter = _check_decoder(bundle)
    target = _target_ids(bundle, targets)
    if heads == "all":
        heads = [(la, h) for la in range(adapter.n_layers) for h in range(adapter.n_heads)]
    donor = _last_head_outputs(adapter, _ids(bundle, counterfactual, 1))
    return float(_patched_runs(adapter, _ids(bundle, base, 0), donor, [list(heads)], target)[0])


def mediation_heads(
    bundle: ModelBundle,
    pairs: Sequence[tuple[str, str]],
    *,
    targets: tuple[str, str] = ("his", "her"),
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    reuse_prefix: bool = True,
) -> pd.DataFrame:
    """Indirect effect of every head on the ``targets[1] − targets[0]`` logit difference.

    Args:
        bundle: a decoder `ModelBundle`.
        pairs: ``(base prompt, counterfactual prompt)``, e.g. `load_bias_prompts`.
        targets: the two next-word candidates (single tokens with a leading space).
        n_bootstrap: resamples of the prompts for the percentile interval of the mean.
        seed: bootstrap seed.
        batch_size: patched variants per forward pass.
        reuse_prefix: run the base prompt's prefix once and each patched variant on the last
            token only, with the prefix's key/value cache (the patch cannot change earlier
            positions in a decoder); False reruns the whole prompt per variant.

    Returns:
        `MEDIATION_COLUMNS`, one row per head: ``indirect_effect`` (mean over prompts, logits),
        its interval, ``share_of_total`` = mean indirect / mean total effect, ``total_effect``.

    Example:
        >>> mediation_heads(load_model("smollm2"), load_bias_prompts()[:20])
    """
    adapter = _check_decoder(bundle)
    pairs = check_pairs(pairs, "pairs", minimum=1)
    target = _target_ids(bundle, targets)
    heads = [(la, h) for la in range(adapter.n_layers) for h in range(adapter.n_heads)]
    indirect = np.zeros((len(pairs), len(heads)))
    total = np.zeros(len(pairs))
    for i, (base, cf) in enumerate(pairs):
        base_ids, cf_ids = _ids(bundle, base, 2 * i), _ids(bundle, cf, 2 * i + 1)
        donor = _last_head_outputs(adapter, cf_ids)
        y_base = _patched_runs(adapter, base_ids, donor, [[]], target)[0]
        y_cf = _patched_runs(adapter, cf_ids, donor, [[]], target)[0]
        total[i] = y_cf - y_base
        prefix = _prefix_cache(adapter, base_ids) if reuse_prefix else None
        for start in range(0, len(heads), batch_size):
            chunk = [[hd] for hd in heads[start : start + batch_size]]
            indirect[i, start : start + len(chunk)] = (
                _patched_runs(adapter, base_ids, donor, chunk, target, prefix) - y_base
            )
    mean = indirect.mean(0)
    lo = hi = np.full(len(heads), np.nan)
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(pairs), size=(n_bootstrap, len(pairs)))
        draws = indirect[idx].mean(1)  # [B, heads]
        lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    te = float(total.mean())
    layer, head = np.divmod(np.arange(len(heads)), adapter.n_heads)
    return pd.DataFrame(
        {
            "model": bundle.name,
            "layer": layer,
            "head": head,
            "indirect_effect": mean,
            "ci_low": lo,
            "ci_high": hi,
            "share_of_total": mean / te if te != 0 else np.nan,
            "total_effect": te,
            "n": len(pairs),
        }
    ).loc[:, list(MEDIATION_COLUMNS)]
