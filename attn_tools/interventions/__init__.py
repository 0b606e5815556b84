"""Causal interventions: what a head or a layer *does*, not only where it looks.

`logit_lens` reads every layer's residual as a next-token guess; `ablate_heads` measures how much
the model loses when a head's output is zeroed or replaced by its mean; `replace_attention` makes a
head attend as a pattern predicts and `explains_head` says how much of the head's effect that
keeps; `attribution_patching` estimates every head's ablation effect from one backward pass;
`capture` reads attention, residuals, MLP neurons and head outputs (cached) and `top_neurons`
ranks neurons. All go through the architecture adapters in `attn_tools.models.adapters`, so they
work for every supported family.
"""

from __future__ import annotations

from attn_tools.interventions.ablation import ABLATION_COLUMNS, ablate_heads, mean_head_outputs
from attn_tools.interventions.attribution import (
    ATTRIBUTION_COLUMNS,
    COMPARE_COLUMNS,
    attribution_patching,
    compare_attribution,
)
from attn_tools.interventions.capture import (
    NEURON_COLUMNS,
    Activations,
    capture,
    iter_capture,
    top_neurons,
)
from attn_tools.interventions.lens import LENS_COLUMNS, logit_lens, residual_stream
from attn_tools.interventions.replace import (
    EXPLAINS_COLUMNS,
    REPLACE_COLUMNS,
    explains_head,
    replace_attention,
    replacement_matrices,
)
from attn_tools.interventions.trace import GenerationStep, GenerationTrace, trace_generation

__all__ = [
    "ABLATION_COLUMNS",
    "ATTRIBUTION_COLUMNS",
    "COMPARE_COLUMNS",
    "EXPLAINS_COLUMNS",
    "GenerationStep",
    "GenerationTrace",
    "LENS_COLUMNS",
    "NEURON_COLUMNS",
    "Activations",
    "REPLACE_COLUMNS",
    "ablate_heads",
    "attribution_patching",
    "capture",
    "compare_attribution",
    "explains_head",
    "iter_capture",
    "logit_lens",
    "mean_head_outputs",
    "replace_attention",
    "replacement_matrices",
    "residual_stream",
    "trace_generation",
    "top_neurons",
]
