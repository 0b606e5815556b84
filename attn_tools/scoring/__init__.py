"""Compare attention with predicted patterns: the metric registry and the all-heads engine.

- `attn_tools.scoring.metrics` — one `MetricSpec` per metric (direction, raw or normalised
  weights, display name, range, whether it ranks patterns, its row or block function) and the
  metrics as plain array functions (`jsd`, `sae`, `mae`, `mul_score`, `abs_score`,
  `argmax_accuracy`). Adding a metric is one `register_metric` call.
- `attn_tools.scoring.engine` — `score_heads` (every head × every pattern, streamed over
  sentences) and `score_pair` (one head, one prediction).

Example:
    >>> from attn_tools.scoring import score_heads, get_metric
    >>> df = score_heads(records, ["previous_token", "punctuation"], metric="jsd")
    >>> df.sort_values("mean", ascending=get_metric("jsd").sort_ascending).head(3)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from attn_tools.scoring.metrics import (
    BUILTIN_METRICS,
    METRICS,
    MetricSpec,
    ScoreOptions,
    abs_score,
    argmax_accuracy,
    get_metric,
    higher_is_better,
    jsd,
    mae,
    metric_names,
    mul_score,
    register_metric,
    row_values,
    sae,
    unregister_metric,
)

# The engine needs pandas and the patterns; the registry alone (for the CLI's choices) does not.
_ENGINE = frozenset(
    {
        "MEANING_COLUMNS", "SCORE_COLUMNS", "DropKeys", "HeadScorer", "Level", "Metric", "Rows",
        "dropped_keys", "drop_keys_label", "score_heads", "score_pair",
    }
)  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        value = getattr(importlib.import_module("attn_tools.scoring.engine"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attn_tools.scoring' has no attribute {name!r}")


if TYPE_CHECKING:
    from attn_tools.scoring.engine import (
        MEANING_COLUMNS,
        SCORE_COLUMNS,
        DropKeys,
        HeadScorer,
        Level,
        Metric,
        Rows,
        drop_keys_label,
        dropped_keys,
        score_heads,
        score_pair,
    )

__all__ = [
    "BUILTIN_METRICS",
    "MEANING_COLUMNS",
    "METRICS",
    "SCORE_COLUMNS",
    "DropKeys",
    "HeadScorer",
    "Level",
    "Metric",
    "MetricSpec",
    "Rows",
    "ScoreOptions",
    "abs_score",
    "argmax_accuracy",
    "drop_keys_label",
    "dropped_keys",
    "get_metric",
    "higher_is_better",
    "jsd",
    "mae",
    "metric_names",
    "mul_score",
    "register_metric",
    "row_values",
    "sae",
    "score_heads",
    "score_pair",
    "unregister_metric",
]
