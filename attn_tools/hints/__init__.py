"""Chain-of-thought hint evaluation: when a hint flips a model's answer, which heads looked at it?

>>> from attn_tools.hints import load_items, evaluate_hints  # doctest: +SKIP
>>> result = evaluate_hints(load_model("smollm2"), load_items("builtin"), hint="sycophancy")
>>> result.summary  # doctest: +SKIP

See docs/hints.md for the definitions behind every number.
"""

from __future__ import annotations

from attn_tools.hints.evaluate import HintResult, evaluate_hints, item_attention, parse_letter
from attn_tools.hints.items import Item, ItemError, load_items, mmlu_path, mmlu_topics
from attn_tools.hints.prompts import HINT_KINDS, Prompt, build_prompt, hint_text

__all__ = [
    "HINT_KINDS",
    "HintResult",
    "Item",
    "ItemError",
    "Prompt",
    "build_prompt",
    "evaluate_hints",
    "hint_text",
    "item_attention",
    "load_items",
    "mmlu_path",
    "mmlu_topics",
    "parse_letter",
]
