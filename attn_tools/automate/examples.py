"""Step 1: a head's behaviour on example sentences as a small, versioned JSON document.

Schema ``attn_tools.head_examples`` version 1 (every field is plain JSON)::

    {
      "schema": "attn_tools.head_examples",
      "version": 1,
      "model": "SmolLM2-135M-Instruct",      # SentenceAttention.model
      "kind": "causal",                      # or "encoder"
      "layer": 5, "head": 3,                 # 0-based
      "top_fraction": 0.1,                   # share of the allowed (query, key) pairs kept
      "include_special": false,              # were pairs touching special tokens allowed?
      "pair_fields": ["query", "key", "weight"],
      "sentences": [
        {
          "index": 0,                        # position in the records given
          "text": "The cat sat.",
          "tokens": ["<|im_start|>", "The", "Ġcat", "Ġsat", "."],   # the model's tokens
          "special": [0],                    # indices of special tokens
          "pos": ["", "DET", "NOUN", "VERB", "PUNCT"],  # coarse POS of each token's word
          "special_mass": 0.61,              # mean attention of non-special queries to specials
          "pairs": [[3, 2, 0.734], [2, 1, 0.52], ...]   # heaviest first
        }, ...
      ]
    }

``pairs`` holds the top ``top_fraction`` of the pairs a query may attend to (for causal models only
``key <= query``), at least one per sentence, heaviest first, weights rounded to 3 decimals.
Special tokens are excluded by default because most heads park spare attention on them; how much
they get is summarised by ``special_mass`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["SCHEMA", "SCHEMA_VERSION", "check_examples", "head_examples"]

SCHEMA = "attn_tools.head_examples"
SCHEMA_VERSION = 1


def _check_records(records: Sequence[Any], layer: int, head: int) -> None:
    if not records:
        raise ValueError("head_examples needs at least one SentenceAttention record; got none")
    models = {r.model for r in records}
    if len(models) > 1:
        raise ValueError(
            f"records come from several models {sorted(models)}; pass one model's records"
        )
    first = records[0]
    if not (0 <= layer < first.n_layers and 0 <= head < first.n_heads):
        raise ValueError(
            f"layer {layer}, head {head} is outside {first.model}'s {first.n_layers} layers × "
            f"{first.n_heads} heads (0-based)"
        )


def head_examples(
    records: Sequence[Any],
    layer: int,
    head: int,
    *,
    top_fraction: float = 0.10,
    include_special: bool = False,
    annotate: bool = True,
    decimals: int = 3,
) -> dict[str, Any]:
    """The top-weighted (query, key, weight) pairs of one head on each sentence, as JSON data.

    Args:
        records: `SentenceAttention` records of one model.
        layer, head: the head (0-based).
        top_fraction: share of the allowed pairs kept per sentence (at least one pair).
        include_special: also allow pairs whose query or key is a special token.
        annotate: add each token's coarse POS tag (from the cached spaCy parse).
        decimals: rounding of the weights.

    Returns:
        A dict following the schema in this module's docstring (``json.dumps`` works on it).

    Example:
        >>> doc = head_examples(records, 5, 3)
        >>> doc["sentences"][0]["pairs"][0]       # heaviest pair of the first sentence
        [3, 2, 0.734]
    """
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    _check_records(records, layer, head)
    pos_tags: list[list[str]] = [[] for _ in records]
    if annotate:
        from attn_tools.text import align, parse

        for i, (rec, parsed) in enumerate(zip(records, parse([r.text for r in records]))):
            alignment = align(rec, parsed)
            pos_tags[i] = [parsed.words[ws[0]].pos if ws else "" for ws in alignment.token_words]

    sentences = []
    for i, rec in enumerate(records):
        att = np.asarray(rec.head(layer, head), dtype=np.float64)
        n = att.shape[0]
        special = np.asarray(rec.special_mask, dtype=bool)
        allowed = np.ones((n, n), dtype=bool)
        if rec.kind == "causal":
            allowed &= np.tril(allowed)
        if not include_special:
            allowed &= ~special[:, None] & ~special[None, :]
        q_idx, k_idx = np.nonzero(allowed)
        entry: dict[str, Any] = {
            "index": i,
            "text": rec.text,
            "tokens": list(rec.tokens),
            "special": [int(t) for t in np.flatnonzero(special)],
        }
        if annotate:
            entry["pos"] = pos_tags[i]
        content = ~special
        entry["special_mass"] = (
            round(float(att[content][:, special].sum(axis=1).mean()), decimals)
            if content.any() and special.any()
            else 0.0
        )
        if q_idx.size:
            weights = att[q_idx, k_idx]
            keep = max(1, math.ceil(top_fraction * q_idx.size))
            order = np.lexsort((k_idx, q_idx, -weights))[:keep]  # heaviest first, ties by position
            entry["pairs"] = [
                [int(q_idx[j]), int(k_idx[j]), round(float(weights[j]), decimals)] for j in order
            ]
        else:
            entry["pairs"] = []
        sentences.append(entry)
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "model": records[0].model,
        "kind": records[0].kind,
        "layer": int(layer),
        "head": int(head),
        "top_fraction": float(top_fraction),
        "include_special": bool(include_special),
        "pair_fields": ["query", "key", "weight"],
        "sentences": sentences,
    }


def check_examples(doc: Any) -> None:
    """Raise ValueError naming the first thing in ``doc`` that does not follow the schema."""
    if not isinstance(doc, dict):
        raise ValueError(f"examples must be a JSON object, got {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"examples 'schema' is {doc.get('schema')!r}, expected {SCHEMA!r}")
    if doc.get("version") != SCHEMA_VERSION:
        raise ValueError(
            f"examples version {doc.get('version')!r} is not supported (this is {SCHEMA_VERSION})"
        )
    for key, kind in (
        ("model", str),
        ("kind", str),
        ("layer", int),
        ("head", int),
        ("sentences", list),
    ):
        if not isinstance(doc.get(key), kind):
            raise ValueError(
                f"examples field {key!r} must be {kind.__name__}, got {doc.get(key)!r}"
            )
    for s in doc["sentences"]:
        n = len(s.get("tokens", []))
        for pair in s.get("pairs", []):
            if not (
                isinstance(pair, list)
                and len(pair) == 3
                and 0 <= pair[0] < n
                and 0 <= pair[1] < n
                and 0 <= pair[2] <= 1
            ):
                raise ValueError(
                    f"sentence {s.get('index')}: pair {pair!r} is not [query, key, weight] "
                    f"within {n} tokens"
                )
