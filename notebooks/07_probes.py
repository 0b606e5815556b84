# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Probes with statistics: sentiment, bias and instruction heads
#
# Three probes ask whether a head's attention to some words tracks a property of the text. With
# 72 heads (MiniLM) or 270 (SmolLM2) some raw correlation is always large, so every head gets a
# permutation p-value, a Benjamini–Hochberg q-value across heads, a bootstrap interval and a
# held-out replication flag. This notebook uses small subsets and 200 permutations so that it
# runs in under a minute; `attn-tools probe --model minilm` runs the full sets with 1,000.

# %%
import numpy as np

from attn_tools import extract, load_model, viz
from attn_tools.probes import (
    bias_heads,
    instruction_heads,
    load_bias_pairs,
    load_instruction_pairs,
    load_sentiment,
    sentiment_heads,
)
from attn_tools.probes.results import head_entropy, top_heads

minilm = load_model("minilm")
FAST = {"n_permutations": 200, "n_bootstrap": 200, "seed": 0}

# %% [markdown]
# ## Sentiment: attention to sentiment words vs the label
#
# Feature per text and head: mean over query rows of the attention mass on sentiment keywords
# (all word pieces of a keyword count). Effect: Pearson r with the label (1 = positive).

# %%
texts, labels = load_sentiment()
pick = [i for i in range(len(texts)) if i % 10 in (0, 5)]  # 40 texts, both classes
texts, labels = [texts[i] for i in pick], [labels[i] for i in pick]
records = extract(minilm, texts, progress=False)
sentiment = sentiment_heads(records, texts, labels, **FAST)
top_heads(sentiment, k=5)

# %%
viz.plot_probe_map(sentiment)

# %% [markdown]
# The same table after shuffling the labels: a null with no real effect. BH keeps the share of
# "significant" heads near zero, where raw p < 0.05 would flag about 5 % of them by chance.

# %%
shuffled = np.random.default_rng(1).permutation(labels)
null = sentiment_heads(records, texts, shuffled, **FAST)
print(f"raw p < 0.05: {(null.p_value < 0.05).mean():.1%} of heads; "
      f"BH q < 0.05: {(null.q_value < 0.05).mean():.1%}")  # fmt: skip

# %% [markdown]
# ## Gender bias: "his" vs "her" in matched occupational sentences
#
# Effect: mean over pairs of (attention mass on "his") − (mass on "her"), sign-flip test.

# %%
bias = bias_heads(minilm, load_bias_pairs()[:12], **FAST)
viz.plot_volcano(bias)

# %% [markdown]
# ## Instruction heads: a verb as a directive vs the same verb in prose
#
# "Please [write] a short summary" vs "She [wrote] a short summary": effect = mean mass
# difference on the bracketed verb (instruction − prose).

# %%
instructions, prose = load_instruction_pairs()
instruction = instruction_heads(minilm, instructions[:12], prose[:12], **FAST)
top_heads(instruction, k=5)

# %% [markdown]
# ## Summary: entropy and the three probes
#
# Outlined heads pass q < 0.05; thick outlines also replicated on the held-out half. With these
# small subsets few heads replicate: run the full sets before drawing conclusions.

# %%
tables = {"sentiment": sentiment, "bias": bias, "instruction": instruction}
viz.plot_probe_summary(head_entropy(records), tables, title=minilm.name)

# %% [markdown]
# Causal mediation (`attn_tools.probes.mediation.mediation_heads`) needs a decoder and one
# forward per head batch per prompt; run it with `attn-tools probe --model smollm2`.
