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

# %%

# %% [markdown]
# # 06 · From "looks like" to "does": ablation, attention replacement, attribution, logit lens
#
# Scores say a head's attention *looks like* a pattern. Here we ask what heads *do*:
#
# 1. `ablate_heads` — how much worse the model gets without each head (ΔLoss, nats);
# 2. `attribution_patching` — the same numbers estimated from one backward pass, next to the exact
#    ones (`compare_attribution`, Spearman ρ);
# 3. `explains_head` — replace a head's attention *probabilities* by its pattern's prediction and
#    measure how much of its ablation effect that keeps (1 = the label is causally faithful);
# 4. `logit_lens` — every layer's residual read as a next-token guess;
# 5. `top_neurons` — the MLP neurons that fire hardest, and on which tokens.
#
# To stay within a notebook's time on a laptop CPU, the SmolLM2 ablation matrix covers layers 0–1
# (18 of its 270 heads) on three short sentences; MiniLM's full 6 × 12 matrix is computed.
# `attn-tools ablate --model smollm2` writes the full SmolLM2 matrix.

# %%
from attn_tools import extract, load_model, viz
from attn_tools.interventions import (
    ablate_heads,
    compare_attribution,
    explains_head,
    logit_lens,
    top_neurons,
)
from attn_tools.scoring import score_heads

smollm2 = load_model("smollm2")
minilm = load_model("minilm")
sentences = [
    "The old fisherman mended his nets on the quiet harbour wall.",
    "After the storm, the children collected shells along the beach.",
    "She promised to call her brother before the train left.",
]

# %% [markdown]
# ## 1 · Ablation matrix
#
# MiniLM has no LM head, so its effect is 1 − cosine between each token's final hidden state with
# and without the head (the `measure` column says so). Zero ablation sets the head's output to 0.

# %%
minilm_ablation = ablate_heads(minilm, sentences, "all", method="zero")
viz.plot_ablation_matrix(minilm_ablation, title="MiniLM: zero ablation, every head")

# %%
subset = [(layer, head) for layer in range(2) for head in range(smollm2.n_heads)]
smollm2_ablation = ablate_heads(smollm2, sentences, subset, method="zero")
smollm2_ablation.sort_values("delta_loss", ascending=False).head(5)

# %% [markdown]
# ## 2 · Attribution patching vs the exact effect
#
# One forward and one backward pass per sentence estimate all 270 heads; here they are compared
# with the exact values of the 18 heads ablated above.

# %%
versus = compare_attribution(smollm2, sentences, exact=smollm2_ablation)
viz.plot_attribution(versus, title="SmolLM2 layers 0–1: exact vs first-order estimate")

# %% [markdown]
# ## 3 · Do the previous-token heads *use* the previous token?
#
# The four heads whose attention puts the most mass on the previous token (TransformerLens's
# `mul` score) are replaced by `previous_token` — each query attends only to the token before it
# — and `explains_head` reports the share of each head's ablation effect this keeps, with a
# bootstrap interval over sentences.

# %%
records = extract(smollm2, sentences, progress=False)
prev = score_heads(records, ["previous_token"], metric="mul")
top4 = prev.sort_values("mean", ascending=False).head(4)
explained = explains_head(
    smollm2, sentences, [(r.layer, r.head, "previous_token") for r in top4.itertuples()]
)
explained

# %%
viz.plot_explains(explained, title="SmolLM2: previous-token heads replaced by previous_token")

# %% [markdown]
# ## 4 · Logit lens
#
# Each layer's residual goes through the model's own final norm and unembedding; the last layer
# is the model's real prediction. Only the last 12 layers are drawn.

# %%
lens = logit_lens(smollm2, "The capital of France is Paris, and the capital of Italy is")
viz.plot_logit_lens(lens, layers=12)

# %% [markdown]
# ## 5 · Top MLP neurons
#
# The hidden MLP activation of layer 10 (after SiLU and the gate), its five strongest neurons and
# the tokens that drive them (`s<sentence>:<position>`).

# %%
top_neurons(smollm2, sentences, layer=10, k=5, cache=False)
