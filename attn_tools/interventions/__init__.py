"""Causal interventions: what a head or a layer *does*, not only where it looks.

`logit_lens` reads every layer's residual as a next-token guess; `ablate_heads` measures how much
the model loses when a head's output is zeroed or replaced by its mean. Both go through the
architecture adapters in `attn_tools.models.adapters`, so they work for every supported family.
"""

from __future__ import annotations

from attn_tools.interventions.ablation import ABLATION_COLUMNS, ablate_heads, mean_head_outputs
from attn_tools.interventions.lens import LENS_COLUMNS, logit_lens, residual_stream
from attn_tools.interventions.trace import GenerationStep, GenerationTrace, trace_generation

__all__ = [
    "ABLATION_COLUMNS",
    "GenerationStep",
    "GenerationTrace",
    "LENS_COLUMNS",
    "ablate_heads",
    "logit_lens",
    "mean_head_outputs",
    "residual_stream",
    "trace_generation",
]
