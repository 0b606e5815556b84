"""Logit lens: read every layer's residual stream as the model's next-token guess.

After each block the residual is passed through the model's own final norm and unembedding
(`ModelAdapter.logits`), exactly as the model treats its last residual, so the row for the last
layer is the model's real prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from attn_tools.models import ModelBundle
from attn_tools.models.adapters import ModelAdapter, get_adapter

__all__ = ["LENS_COLUMNS", "logit_lens", "residual_stream"]

LENS_COLUMNS = (
    "layer",
    "position",
    "token",
    "top_token_id",
    "top_token",
    "prob",
    "rank_of_actual_next",
)


def encode_like_extract(bundle: ModelBundle, text: str, index: int = 0) -> list[int]:
    """Token ids exactly as `attn_tools.extract.extract` builds them (BOS prepended for decoders)."""
    from attn_tools.extract import _check_sentence, _encode

    _check_sentence(index, text)
    return _encode(bundle, index, text, bundle.max_length, bundle.kind == "causal").ids


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


@torch.no_grad()
def residual_stream(adapter: ModelAdapter, input_ids: torch.Tensor) -> torch.Tensor:
    """The residual before block 0 and after every block, ``[L + 1, batch, seq, d_model]``.

    Read with hooks on the blocks rather than ``output_hidden_states``, whose last entry already
    has the final norm applied in some families (GPT-2) and not in others.
    """
    found: list[torch.Tensor] = []

    def before_first(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        found.append(args[0] if args else kwargs["hidden_states"])

    def after(_m: Any, _args: Any, output: Any) -> None:
        found.append(_first_tensor(output))

    handles = [adapter.layer(0).register_forward_pre_hook(before_first, with_kwargs=True)]
    handles += [adapter.layer(i).register_forward_hook(after) for i in range(adapter.n_layers)]
    try:
        adapter.model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(found)


@torch.no_grad()
def logit_lens(bundle: ModelBundle, text: str) -> pd.DataFrame:
    """The top next-token guess of every layer at every position of one text.

    Args:
        bundle: a decoder from `load_model` (an encoder without an LM head is refused).
        text: one sentence; tokenised as `extract` does (BOS prepended).

    Returns:
        A tidy DataFrame with one row per (layer, position) and the columns `LENS_COLUMNS`:
        ``layer`` counts the blocks applied (0 = embeddings, ``n_layers`` = the model's output),
        ``token`` is the input token at ``position``, ``top_token_id``/``top_token``/``prob`` the
        most likely next token and its probability, and ``rank_of_actual_next`` the rank (0 = top)
        of the token that really comes next (missing at the last position).

    Example:
        >>> lens = logit_lens(load_model("smollm2"), "The cat sat on the mat.")
        >>> lens[lens.layer == lens.layer.max()].top_token.tolist()
    """
    if not isinstance(bundle, ModelBundle):
        raise TypeError(
            f"logit_lens needs a ModelBundle, got {type(bundle).__name__}. "
            "Fix: pass load_model(...)."
        )
    adapter = get_adapter(bundle)
    if adapter.unembed is None:
        raise ValueError(
            f"{bundle.name} is an encoder without an LM head, so its layers cannot be read as "
            "next-token predictions. Fix: use a decoder such as load_model('smollm2')."
        )
    ids = encode_like_extract(bundle, text)
    input_ids = torch.tensor([ids], device=bundle.device)
    resid = residual_stream(adapter, input_ids)[:, 0]  # [L+1, n, d]
    n_layers, n = resid.shape[0], resid.shape[1]
    nxt = torch.tensor(ids[1:], device=resid.device).view(-1, 1)
    top = np.zeros((n_layers, n), dtype=np.int64)
    top_prob = np.zeros((n_layers, n), dtype=np.float64)
    ranks = np.full((n_layers, n), -1, dtype=np.int64)
    for layer in range(n_layers):  # one layer at a time bounds memory to [n, V] in float64
        # float64: a float32 softmax over ~50k logits is off by ~1e-5 in the top probability
        logprobs = torch.log_softmax(adapter.logits(resid[layer]).double(), dim=-1)  # [n, V]
        top_lp, top_id = logprobs.max(dim=-1)
        top[layer], top_prob[layer] = top_id.cpu().numpy(), top_lp.exp().cpu().numpy()
        if n > 1:
            actual = logprobs[:-1].gather(-1, nxt)
            ranks[layer, :-1] = (logprobs[:-1] > actual).sum(-1).cpu().numpy()
    tokens = bundle.tokenizer.convert_ids_to_tokens(ids)
    names = np.asarray(bundle.tokenizer.convert_ids_to_tokens(top.reshape(-1).tolist()), object)
    frame = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(n_layers), n),
            "position": np.tile(np.arange(n), n_layers),
            "token": np.tile(np.asarray(tokens, dtype=object), n_layers),
            "top_token_id": top.reshape(-1),
            "top_token": names,
            "prob": top_prob.reshape(-1),
            "rank_of_actual_next": pd.array(ranks.reshape(-1), dtype="Int64"),
        }
    )
    frame.loc[frame.position == n - 1, "rank_of_actual_next"] = pd.NA
    return frame[list(LENS_COLUMNS)]
