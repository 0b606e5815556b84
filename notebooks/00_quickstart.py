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
# # Quickstart: which attention heads do what?
#
# A transformer layer has several **attention heads**. For every token (the *query*), a head
# spreads one unit of attention over the tokens it can see (the *keys*). Some heads do simple,
# nameable things: look at the previous token, look at the first token, look at the punctuation.
#
# In this walkthrough (a few minutes on a laptop, no internet needed) you will:
#
# 1. load a small model and look at one head's attention on one sentence;
# 2. compare it with a *predicted pattern* ("each token attends to the token before it");
# 3. score every head against every pattern and draw the best fit of each head;
# 4. explore heads interactively.

# %%
from attn_tools import extract, load_model, load_sentences, viz
from attn_tools.classify import best_fit, top_heads
from attn_tools.report import compare_head
from attn_tools.scoring import score_heads

# %% [markdown]
# ## 1. A model and some sentences
#
# `minilm` is a small BERT-style encoder (6 layers × 12 heads) that ships with its weights, so it
# loads offline. `extract` runs the model once per batch and keeps each sentence's attention:
# `attention[layer, head, query, key]`.

# %%
bundle = load_model("minilm")
sentences = load_sentences("story")[:12]
records = extract(bundle, sentences)
bundle

# %%
record = records[0]
print(record.text)
print(record.tokens)
record.attention.shape  # (layers, heads, tokens, tokens)

# %% [markdown]
# One head on one sentence. Read a **row**: it is where that token looks. Each row sums to 1.

# %%
viz.plot_head(record, layer=2, head=0)

# %% [markdown]
# ## 2. A predicted pattern
#
# A *pattern* is a guess at what a head does, written as a matrix of the same shape. The
# `previous_token` pattern puts all of each row's attention on the token just before it.
# Which head looks most like it? First score every head against a few patterns: the score is the
# Jensen–Shannon distance between the head's rows and the pattern's rows (0 = identical, 1 = no
# overlap), averaged over the sentences.

# %%
patterns = ["previous_token", "next_token", "self", "first_token", "punctuation", "uniform"]
scores = score_heads(records, patterns)
scores.head()

# %%
top_heads(scores, "previous_token", k=3)

# %% [markdown]
# The best previous-token head, drawn next to the pattern on one sentence:

# %%
best = top_heads(scores, "previous_token", k=1).iloc[0]
viz.plot_head_vs_pattern(
    compare_head(record, int(best["layer"]), int(best["head"]), "previous_token")
)

# %% [markdown]
# ## 3. Every head at once
#
# `best_fit` picks, for each head, the pattern with the lowest distance — but only calls it a
# match if it beats the `uniform` pattern (attention spread evenly) by a margin; otherwise the head
# is labelled "none" and drawn white. The rule is printed under the figure.

# %%
fit = best_fit(scores)
viz.plot_best_fit_grid(fit)

# %%
viz.plot_pattern_scores(scores, "first_token")

# %% [markdown]
# ## 4. Explore
#
# Move the sliders to walk through the heads, pick a pattern and a sentence, or type your own
# sentence. The second tab shows the selected head's score for every pattern and where it sits
# in the best-fit grid.

# %%
from attn_tools.explorer import explore

explore(bundle, records=records, patterns=patterns, scores=scores)

# %% [markdown]
# ## Try it yourself
#
# - Change `layer=2, head=0` above to the heads in the best-fit grid that are coloured red
#   (`first_token`): many heads "park" their attention on `[CLS]` when they have nothing to do.
# - Load the decoder with `load_model("smollm2")`: a decoder can only look backwards, so
#   `next_token` can never fit there.
# - Notebook `02_patterns` shows every built-in pattern and how to write your own.
