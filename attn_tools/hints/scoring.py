"""Option log-likelihoods and per-head attention reductions from batched forward passes.

The answer to a prompt is the option whose continuation after the cue ``"Answer:"`` has the
highest log-likelihood: the sum of the log-softmax of each continuation token given the prompt and
the continuation tokens before it. The continuation is the option's letter (``" A"``, the default)
or its text (``" 42"``), see ``prompts.continuations``. When an item's continuations are all single
tokens (letters are, for SmolLM2, GPT-2 and Llama tokenizers), one forward pass of the prompt gives
every option at its last position; otherwise each option is scored with its own
``prompt + continuation`` sequence. The text score is a sum, so it favours short options.
Sequences are right-padded, so real tokens keep positions ``0..n-1`` and a batch gives the same
numbers as one prompt at a time (up to float rounding).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attn_tools.hints.prompts import Prompt

__all__ = ["Encoded", "encode_prompt", "hint_tokens", "match_tokens", "option_logprobs"]

#: reducer(index of the prompt, attention [L, H, n, n] of its tokens) -> any per-prompt value
Reducer = Callable[[int, torch.Tensor], Any]


@dataclass(frozen=True)
class Encoded:
    """A tokenized prompt: ids and character offsets into ``Prompt.text``."""

    ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]


def encode_prompt(tokenizer: Any, prompt: Prompt) -> Encoded:
    enc = tokenizer(
        prompt.text, add_special_tokens=prompt.add_special_tokens, return_offsets_mapping=True
    )
    return Encoded(tuple(enc["input_ids"]), tuple(tuple(o) for o in enc["offset_mapping"]))


def hint_tokens(enc: Encoded, prompt: Prompt) -> np.ndarray:
    """Indices of the tokens whose characters overlap the hint span (empty without a hint)."""
    if prompt.hint_span is None:
        return np.zeros(0, dtype=int)
    h0, h1 = prompt.hint_span
    return np.array([i for i, (s, e) in enumerate(enc.offsets) if s < h1 and e > h0 and e > s])


def match_tokens(
    with_hint: Encoded, with_prompt: Prompt, without: Encoded
) -> tuple[np.ndarray, np.ndarray, int]:
    """Pair the tokens the two prompts share (same id, same characters outside the insertion).

    Returns ``(idx_with, idx_without, first_after)``: index arrays of equal length into each
    prompt, and the position in those arrays of the first shared token after the hint.
    """
    assert with_prompt.inserted is not None
    start, length = with_prompt.inserted
    lookup = {(tok, off): i for i, (tok, off) in enumerate(zip(without.ids, without.offsets))}
    pairs = []
    for i, (tok, (s, e)) in enumerate(zip(with_hint.ids, with_hint.offsets)):
        if e <= start:
            key = (tok, (s, e))
        elif s >= start + length:
            key = (tok, (s - length, e - length))
        else:
            continue
        j = lookup.get(key)
        if j is not None:
            pairs.append((i, j, s >= start + length))
    idx_with = np.array([p[0] for p in pairs], dtype=int)
    idx_without = np.array([p[1] for p in pairs], dtype=int)
    after = [k for k, p in enumerate(pairs) if p[2]]
    return idx_with, idx_without, (after[0] if after else len(pairs))


@torch.no_grad()
def option_logprobs(
    bundle: Any,
    prompts: Sequence[Prompt],
    options: Sequence[Sequence[str]],
    *,
    batch_size: int = 8,
    reducer: Reducer | None = None,
    names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[Any]]:
    """Log-likelihood of each option's continuation after each prompt.

    Parameters
    ----------
    bundle : a causal ``ModelBundle``.
    prompts : prompts ending with the answer cue.
    options : the continuation strings scored after each prompt (``continuations(item)``).
    reducer : if given, called once per prompt with its attention ``[L, H, n, n]`` (prompt tokens
        only) and its index; its return values come back in order.
    names : item names for error messages.

    Returns
    -------
    (logprobs, reduced) : ``logprobs[i, j]`` for option ``j`` of prompt ``i`` (NaN past
    ``len(options[i])``), and the reducer's values (empty list without a reducer).
    """
    tok = bundle.tokenizer
    if len(options) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(options)} option lists. Fix: one each.")
    width = max(len(o) for o in options)
    conts = [[tok(c, add_special_tokens=False)["input_ids"] for c in opts] for opts in options]
    encoded = [encode_prompt(tok, p) for p in prompts]
    # (prompt index, option index or -1 for "all options at the last position", ids)
    jobs: list[tuple[int, int, list[int]]] = []
    for i, enc in enumerate(encoded):
        if all(len(c) == 1 for c in conts[i]):
            jobs.append((i, -1, list(enc.ids)))
        else:
            jobs.extend((i, j, list(enc.ids) + conts[i][j]) for j in range(len(conts[i])))
    for i, _, ids in jobs:
        if len(ids) > bundle.max_length:
            name = names[i] if names else f"prompt {i}"
            raise ValueError(
                f"{name}: the prompt is {len(ids)} tokens, longer than {bundle.name}'s context of "
                f"{bundle.max_length}. Fix: use shorter items or a hint kind with less text."
            )
    keep_ok = "logits_to_keep" in inspect.signature(bundle.model.forward).parameters
    out = np.full((len(prompts), width), np.nan)
    reduced: list[Any] = [None] * len(prompts) if reducer else []
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    # Longest first: batches of similar lengths waste less padding.
    order = sorted(range(len(jobs)), key=lambda k: -len(jobs[k][2]))
    for b0 in range(0, len(order), batch_size):
        batch = [jobs[k] for k in order[b0 : b0 + batch_size]]
        lengths = [len(ids) for _, _, ids in batch]
        w = max(lengths)
        ids_t = torch.full((len(batch), w), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(batch), w), dtype=torch.long)
        for r, (_, _, ids) in enumerate(batch):
            ids_t[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
        want_att = reducer is not None and any(j in (-1, 0) for _, j, _ in batch)
        # positions whose next-token distribution is scored (the last prompt token onwards)
        needed = sorted(
            {
                len(encoded[i].ids) - 1 + t
                for i, j, _ in batch
                for t in range(1 if j == -1 else len(conts[i][j]))
            }
        )
        kwargs: dict[str, Any] = {}
        if keep_ok:
            # the unembedding over a 50k vocabulary at every position dominates small models
            kwargs["logits_to_keep"] = torch.tensor(needed, device=bundle.device)
        res = bundle.model(
            input_ids=ids_t.to(bundle.device),
            attention_mask=mask.to(bundle.device),
            output_attentions=want_att,
            use_cache=False,
            **kwargs,
        )
        column = {p: k for k, p in enumerate(needed)} if keep_ok else {p: p for p in range(w)}
        logits = res.logits
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        for r, (i, j, _) in enumerate(batch):
            n_prompt = len(encoded[i].ids)
            if j == -1:
                ids_last = [c[0] for c in conts[i]]
                row = logp[r, column[n_prompt - 1], ids_last]
                out[i, : len(ids_last)] = row.double().numpy()
            else:
                cont = conts[i][j]
                pos = [column[n_prompt - 1 + t] for t in range(len(cont))]
                out[i, j] = float(logp[r, pos, cont].double().sum())
            if reducer is not None and j in (-1, 0):
                # causal: rows of prompt tokens never see the continuation, so one job suffices
                att = torch.stack([a[r, :, :n_prompt, :n_prompt].float() for a in res.attentions])
                reduced[i] = reducer(i, att.cpu())
    return out, reduced
