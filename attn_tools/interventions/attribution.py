"""Attribution patching: every head's ablation effect estimated from one forward and one backward.

For head ``h`` of layer ``l`` with output ``z`` (its slice of the output projection's input) and
ablated output ``z'`` (0, or its mean output), the loss change is, to first order,

    ΔL ≈ ∂L/∂z · (z' − z)

summed over positions and the head's dimensions. One backward pass gives ``∂L/∂z`` for every head
of every layer at once (the gradient is taken *through* the later heads, so indirect effects are
included to first order), so the whole layers × heads matrix costs one forward and one backward
per sentence instead of one forward per head. It is exact for a loss linear in ``z``; heads whose
removal changes the loss non-linearly (large effects, saturated softmaxes) are estimated less
well, which is why `compare_attribution` reports the estimate next to `ablate_heads`.

Loss: the sum over tokens of next-token cross-entropy, divided by the tokens measured (the
measure of `ablate_heads`, so the numbers are on the same scale). Encoders are refused: their
measure (1 − cosine to the clean output) is at its minimum on the clean run, where its gradient is
zero, so a first-order estimate is always 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from attn_tools.interventions.ablation import (
    MEASURE_CE,
    AblationMethod,
    _check_sentences,
    _interval,
    ablate_heads,
    mean_head_outputs,
)
from attn_tools.interventions.lens import encode_like_extract
from attn_tools.models import ModelBundle
from attn_tools.models.adapters import get_adapter

__all__ = ["ATTRIBUTION_COLUMNS", "COMPARE_COLUMNS", "attribution_patching", "compare_attribution"]

ATTRIBUTION_COLUMNS = (
    "layer",
    "head",
    "estimate",
    "ci_low",
    "ci_high",
    "n_tokens",
    "measure",
    "method",
)
COMPARE_COLUMNS = ("layer", "head", "exact", "estimate", "spearman_rho", "measure", "method")


def _head_gradients(
    bundle: ModelBundle, ids: list[int]
) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """Summed next-token CE of one sentence, and per layer the head outputs and their gradients.

    The per-head outputs get a zero tensor added that requires grad: its gradient is the
    gradient w.r.t. the head outputs, the graph through later layers stays intact, and no
    parameter gradient is stored.
    """
    adapter = get_adapter(bundle)
    probes: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def edit(per_head: torch.Tensor) -> torch.Tensor:
        probe = torch.zeros_like(per_head, requires_grad=True)
        probes.append(probe)
        outputs.append(per_head.detach())
        return per_head + probe

    handles = [adapter.hook_head_outputs(la, edit) for la in range(adapter.n_layers)]
    try:
        with torch.enable_grad():
            row = torch.tensor([ids], device=bundle.device)
            logits = bundle.model(input_ids=row, use_cache=False).logits[0, :-1]
            if logits.dtype != torch.float64:
                logits = logits.float()
            loss = F.cross_entropy(logits, row[0, 1:], reduction="sum")
            grads = torch.autograd.grad(loss, probes)
    finally:
        for handle in handles:
            handle.remove()
    if len(probes) != adapter.n_layers:
        raise RuntimeError(
            f"saw {len(probes)} output projections for {adapter.n_layers} layers. Fix: the "
            "adapter's out_proj paths are wrong for this model."
        )
    return float(loss.detach()), outputs, list(grads)


def attribution_patching(
    bundle: ModelBundle,
    sentences: str | Sequence[str],
    *,
    method: AblationMethod = "zero",
    reference: Sequence[str] | None = None,
) -> pd.DataFrame:
    """First-order estimate of every head's ablation effect (one forward + backward per sentence).

    Args:
        bundle: a decoder from `load_model` (see the module docstring for why not encoders).
        sentences: texts to measure on (tokenised as `extract` does).
        method: the ablation being estimated, ``"zero"`` or ``"mean"`` (as in `ablate_heads`).
        reference: sentences for the mean (default: ``sentences``).

    Returns:
        One row per (layer, head), columns `ATTRIBUTION_COLUMNS`: ``estimate`` is the estimated
        ΔLoss in the units of `ablate_heads` (token-weighted mean next-token CE, nats), with a 95%
        CI over sentences (delta method; NaN for one sentence).

    Example:
        >>> est = attribution_patching(load_model("smollm2"), load_sentences("story")[:8])
    """
    if not isinstance(bundle, ModelBundle):
        raise TypeError(
            f"attribution_patching needs a ModelBundle, got {type(bundle).__name__}. "
            "Fix: pass load_model(...)."
        )
    if method not in get_args(AblationMethod):
        raise ValueError(
            f"method={method!r} is not one of {get_args(AblationMethod)}. Fix: pick one of those."
        )
    adapter = get_adapter(bundle)
    if adapter.kind != "causal":
        raise ValueError(
            f"{bundle.name} is an encoder: its ablation measure (1 − cosine to the clean output) "
            "has zero gradient on the clean run, so a first-order estimate is 0 for every head. "
            "Fix: use ablate_heads for encoders, or a decoder such as 'smollm2'."
        )
    texts = _check_sentences(sentences, "sentences")
    means = None
    if method == "mean":
        means = mean_head_outputs(bundle, texts if reference is None else reference)
    L, H = adapter.n_layers, adapter.n_heads
    sums = np.zeros((len(texts), L * H))
    counts = np.zeros(len(texts))
    for s, text in enumerate(texts):
        ids = encode_like_extract(bundle, text, s)
        if len(ids) < 2:
            raise ValueError(
                f"sentence {s} ({text[:60]!r}) has {len(ids)} token(s): no next token to "
                "predict. Fix: drop it or pass a longer sentence."
            )
        _, outputs, grads = _head_gradients(bundle, ids)
        for layer in range(L):
            z, g = outputs[layer][0].double(), grads[layer][0].double()  # [n, H, d]
            target = torch.zeros_like(z) if means is None else means[layer].to(z)[None].expand_as(z)
            sums[s, layer * H : (layer + 1) * H] = (g * (target - z)).sum(dim=(0, 2)).cpu().numpy()
        counts[s] = len(ids) - 1
    estimate, low, high = _interval(sums, counts)
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(L), H),
            "head": np.tile(np.arange(H), L),
            "estimate": estimate,
            "ci_low": low,
            "ci_high": high,
            "n_tokens": int(counts.sum()),
            "measure": MEASURE_CE,
            "method": method,
        }
    )[list(ATTRIBUTION_COLUMNS)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra = pd.Series(np.asarray(a, dtype=float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, dtype=float)).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def compare_attribution(
    bundle: ModelBundle,
    sentences: str | Sequence[str],
    *,
    method: AblationMethod = "zero",
    reference: Sequence[str] | None = None,
    exact: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Attribution estimates next to the exact ablation effects, with their rank correlation.

    Args:
        bundle, sentences, method, reference: as in `attribution_patching` / `ablate_heads`.
        exact: an `ablate_heads` table already computed on the same sentences and method
            (default: computed here, the full layers × heads matrix).

    Returns:
        One row per head, columns `COMPARE_COLUMNS`; ``spearman_rho`` (the same on every row)
        is the rank correlation of ``exact`` and ``estimate`` over all heads.
    """
    estimate = attribution_patching(bundle, sentences, method=method, reference=reference)
    if exact is None:
        exact = ablate_heads(bundle, sentences, "all", method=method, reference=reference)
    missing = {"layer", "head", "delta_loss"} - set(exact.columns)
    if missing:
        raise ValueError(
            f"exact lacks columns {sorted(missing)}. Fix: pass an ablate_heads(...) table."
        )
    joined = estimate.merge(
        exact[["layer", "head", "delta_loss"]].rename(columns={"delta_loss": "exact"}),
        on=["layer", "head"],
        how="inner",
    )
    if joined.empty:
        raise ValueError("exact shares no (layer, head) with the model. Fix: ablate 'all' heads.")
    joined["spearman_rho"] = spearman(joined.exact.to_numpy(), joined.estimate.to_numpy())
    return joined[list(COMPARE_COLUMNS)]
