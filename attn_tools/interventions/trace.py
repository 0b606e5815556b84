"""Generation tracing: every head's attention and every layer's hidden-state norm while a decoder
writes text, token by token.

With a KV cache the model sees the whole prompt at the first step (a prompt × prompt attention
matrix) and one new token per later step (a single row over the context so far). `GenerationTrace`
hides that difference: step ``t`` holds the attention rows of the positions that step added —
all prompt positions at step 0, one position after — over every key before them, and the
hidden-state norms of the same positions. `GenerationTrace.attention_matrix` stitches the steps
into the ``[N, N]`` matrix a single forward pass over prompt + generated text would give (the
tests check that, to 1e-5, against such a pass).

Steps: step 0 reads the prompt and predicts generated token 0; step ``t ≥ 1`` reads generated
token ``t-1`` and predicts token ``t``. The last generated token is read by one more step, so the
trace covers every position of prompt + generated text.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from attn_tools.interventions.lens import encode_like_extract
from attn_tools.models import ModelBundle
from attn_tools.models.adapters import get_adapter

__all__ = ["GenerationStep", "GenerationTrace", "trace_generation"]


@dataclass(frozen=True, eq=False)
class GenerationStep:
    """What one forward step added.

    Attributes:
        positions: the positions this step's queries occupy (``range(0, n_prompt)`` at step 0,
            one position later).
        attention: float32 ``[L, H, q, k]``: the rows of those ``q`` positions over the ``k``
            keys before and at them (``k = positions[-1] + 1``; causal, so later keys are 0).
        norms: float32 ``[L + 1, q]``: L2 norm of the residual stream at those positions before
            block 0 (row 0, the embeddings) and after every block (rows 1..L), before the final
            norm.
        next_token_id: the token this step chose (None for the step that reads the last one).
    """

    positions: tuple[int, ...]
    attention: np.ndarray
    norms: np.ndarray
    next_token_id: int | None


@dataclass(frozen=True, eq=False)
class GenerationTrace:
    """A generation, step by step: see the module docstring for what each step holds.

    Attributes:
        model: the model's display name.
        token_ids, tokens: every position, prompt then generated (BOS first, as `extract` does).
        labels: readable token labels (each token decoded on its own; specials keep their name).
        n_prompt: how many positions the prompt has.
        steps: one `GenerationStep` per forward step.
        text: the generated continuation, decoded.
    """

    model: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    labels: tuple[str, ...]
    n_prompt: int
    steps: tuple[GenerationStep, ...]
    text: str

    @property
    def n_layers(self) -> int:
        return int(self.steps[0].attention.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.steps[0].attention.shape[1])

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def generated_ids(self) -> tuple[int, ...]:
        return self.token_ids[self.n_prompt :]

    def attention_matrix(self, layer: int, head: int) -> np.ndarray:
        """The ``[N, N]`` attention of one head over all positions (row = query), stitched from
        the steps; equal to one forward pass over the whole text."""
        if not (0 <= layer < self.n_layers and 0 <= head < self.n_heads):
            raise IndexError(
                f"layer {layer}, head {head} is outside this model's {self.n_layers} layers × "
                f"{self.n_heads} heads. Fix: pick layer < {self.n_layers}, head < {self.n_heads}."
            )
        n = self.n_tokens
        out = np.zeros((n, n), dtype=np.float32)
        for step in self.steps:
            rows = list(step.positions)
            out[rows, : step.attention.shape[-1]] = step.attention[layer, head]
        return out

    def norms(self) -> pd.DataFrame:
        """Tidy hidden-state norms: ``step, layer, position, token, norm`` (layer 0 = embeddings,
        layer ``l`` = after block ``l - 1``)."""
        rows = []
        for t, step in enumerate(self.steps):
            for layer in range(step.norms.shape[0]):
                for j, pos in enumerate(step.positions):
                    rows.append((t, layer, pos, self.tokens[pos], float(step.norms[layer, j])))
        return pd.DataFrame(rows, columns=["step", "layer", "position", "token", "norm"])

    def first_token_share(self) -> pd.DataFrame:
        """Tidy ``step, layer, head, position, share``: the attention that each step's last query
        (the token that predicts the next one) gives to position 0."""
        rows = []
        for t, step in enumerate(self.steps):
            share = step.attention[:, :, -1, 0]  # [L, H]
            pos = step.positions[-1]
            for layer in range(share.shape[0]):
                for head in range(share.shape[1]):
                    rows.append((t, layer, head, pos, float(share[layer, head])))
        return pd.DataFrame(rows, columns=["step", "layer", "head", "position", "share"])

    def __repr__(self) -> str:
        return (
            f"GenerationTrace(model={self.model!r}, n_prompt={self.n_prompt}, "
            f"generated={len(self.generated_ids)}, steps={len(self.steps)}, text={self.text!r:.60})"
        )


def _check_bundle(bundle: Any) -> ModelBundle:
    if not isinstance(bundle, ModelBundle):
        raise TypeError(
            f"bundle is {type(bundle).__name__}, not a ModelBundle. Fix: pass "
            "load_model('smollm2') or another causal model."
        )
    if bundle.kind != "causal":
        raise ValueError(
            f"{bundle.name} is an {bundle.kind} model: it does not generate text, so there is "
            "nothing to trace. Fix: pass a causal model, e.g. load_model('smollm2') or 'gpt2'."
        )
    if (
        not hasattr(bundle.model, "get_output_embeddings")
        or bundle.model.get_output_embeddings() is None
    ):
        raise ValueError(
            f"{bundle.name} has no language-model head, so it cannot choose next tokens. Fix: "
            "load the model's *ForCausalLM form."
        )
    return bundle


def _label(decoded: str, token: str) -> str:
    """A readable label: the decoded text, newlines shown as ⏎, the raw token if it is blank."""
    return decoded.strip() or decoded.replace("\n", "⏎").strip() or token


def _cache_argument(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` in recent transformers,
    ``past_key_values`` before (recent versions still accept it, with a deprecation warning)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def trace_generation(
    bundle: ModelBundle,
    prompt: str,
    max_new_tokens: int = 8,
    *,
    greedy: bool = True,
    seed: int = 0,
    use_cache: bool = True,
    stop_at_eos: bool = True,
) -> GenerationTrace:
    """Generate up to ``max_new_tokens`` tokens and record attention and norms at every step.

    Args:
        bundle: a causal model from `load_model` (encoders are refused).
        prompt: the text to continue; tokenised as `extract` does (BOS prepended).
        max_new_tokens: how many tokens to generate (at least 1).
        greedy: take the most likely token; False samples from the softmax with ``seed``.
        use_cache: reuse keys and values between steps (as generation does). False runs a full
            forward pass per step and keeps the new rows; the trace is the same either way.
        stop_at_eos: stop after the tokenizer's EOS token is generated.

    Returns:
        A `GenerationTrace`; its ``steps`` always cover every position of prompt + generated
        text, whatever ``use_cache`` is.

    Example:
        >>> tr = trace_generation(load_model("smollm2"), "The capital of France is", 5)
        >>> tr.first_token_share().groupby(["step", "layer"]).share.mean()
    """
    bundle = _check_bundle(bundle)
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(
            f"max_new_tokens is {max_new_tokens!r}; it must be a whole number >= 1. Fix: pass "
            "e.g. max_new_tokens=8."
        )
    ids = encode_like_extract(bundle, prompt)
    if len(ids) + max_new_tokens > bundle.max_length:
        raise ValueError(
            f"prompt of {len(ids)} tokens + {max_new_tokens} new tokens exceeds {bundle.name}'s "
            f"context of {bundle.max_length}. Fix: shorten the prompt or ask for fewer tokens."
        )
    adapter = get_adapter(bundle.model)
    cache_name = _cache_argument(bundle.model)
    model, device = bundle.model, bundle.device
    eos = getattr(bundle.tokenizer, "eos_token_id", None)
    generator = torch.Generator().manual_seed(seed)
    found: list[torch.Tensor] = []

    def before_first(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        found.append(args[0] if args else kwargs["hidden_states"])

    def after(_m: Any, _args: Any, output: Any) -> None:
        found.append(output[0] if isinstance(output, (tuple, list)) else output)

    handles = [adapter.layer(0).register_forward_pre_hook(before_first, with_kwargs=True)]
    handles += [adapter.layer(i).register_forward_hook(after) for i in range(adapter.n_layers)]
    steps: list[GenerationStep] = []
    all_ids = list(ids)
    past = None
    n_prompt = len(ids)
    try:
        new = list(ids)  # the positions this step adds
        while True:
            found.clear()
            start = len(all_ids) - len(new)
            if use_cache:
                feed = torch.tensor([new], device=device)
                out = model(input_ids=feed, use_cache=True, output_attentions=True,
                            **({cache_name: past} if past is not None else {}))  # fmt: skip
                past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            else:
                feed = torch.tensor([all_ids], device=device)
                out = model(input_ids=feed, use_cache=False, output_attentions=True)
            # the rows of the positions this step added, over every key up to the last of them
            att = torch.stack([a[0, :, -len(new) :, :] for a in out.attentions])
            resid = torch.stack([h[0, -len(new) :, :] for h in found])
            norms = resid.float().norm(dim=-1)
            logits = out.logits[0, -1].float()
            done = len(all_ids) - n_prompt >= max_new_tokens or (
                stop_at_eos and len(all_ids) > n_prompt and eos is not None and all_ids[-1] == eos
            )
            if done:
                nxt = None
            elif greedy:
                nxt = int(logits.argmax())
            else:
                probs = torch.softmax(logits, dim=-1).cpu()
                nxt = int(torch.multinomial(probs, 1, generator=generator))
            steps.append(
                GenerationStep(
                    positions=tuple(range(start, len(all_ids))),
                    attention=att.float().cpu().numpy(),
                    norms=norms.cpu().numpy(),
                    next_token_id=nxt,
                )
            )
            if nxt is None:
                break
            all_ids.append(nxt)
            new = [nxt]
    finally:
        for handle in handles:
            handle.remove()
    tok = bundle.tokenizer
    tokens = tok.convert_ids_to_tokens(all_ids)
    return GenerationTrace(
        model=bundle.name,
        token_ids=tuple(all_ids),
        tokens=tuple(tokens),
        labels=tuple(_label(tok.decode([i]), t) for i, t in zip(all_ids, tokens)),
        n_prompt=n_prompt,
        steps=tuple(steps),
        text=tok.decode(all_ids[n_prompt:]),
    )
