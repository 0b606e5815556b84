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
# # 03 · Analysis: score every head, find the best fits, check them on unseen text
#
# The full pipeline on small sentence sets so that it runs in about a minute: score all heads
# against all built-in patterns, draw the best-fit grid, look at the top heads of a pattern, check
# that each head's best pattern holds on held-out sentences, fit linear mixtures of patterns, and
# explore the heads live. Use `load_sentences("all")` (220 sentences) for real findings.

# %%
from attn_tools import extract, load_model, load_sentences, viz
from attn_tools.classify import best_fit, consistency, linear_fit, top_heads
from attn_tools.explorer import explore
from attn_tools.report import compare_head
from attn_tools.scoring import score_heads

# %%
minilm = load_model("minilm")
analysis = (
    load_sentences("story")[:8]
    + load_sentences("punctuation")[:6]
    + load_sentences("repetition")[:6]
)
heldout = load_sentences("heldout")[:12]
records = extract(minilm, analysis)
heldout_records = extract(minilm, heldout)
len(records), len(heldout_records)

# %% [markdown]
# ## Score every head against every pattern
#
# One tidy row per (head, pattern): the mean Jensen–Shannon distance over the sentences (0 =
# identical, 1 = disjoint; lower is better) and its spread.

# %%
scores = score_heads(records)
scores.sort_values("mean").head(10)

# %% [markdown]
# ## The best fit of every head
#
# A head is labelled with its best pattern only if that pattern beats the head's `uniform` score
# by a margin; near-ties are listed and drawn as split cells.

# %%
fit = best_fit(scores)
fit[fit["label"] != "none"].head(10)

# %%
viz.plot_best_fit_grid(fit)

# %% [markdown]
# A stricter rule: also require an absolute distance of at most 0.5.

# %%
viz.plot_best_fit_grid(best_fit(scores, threshold=0.5))

# %% [markdown]
# ## One pattern across all heads, and its top heads

# %%
viz.plot_pattern_scores(scores, "previous_token")

# %%
top_heads(scores, "punctuation_sink", k=5)

# %%
viz.plot_top_heads(top_heads(scores, "punctuation_sink", k=8))

# %%
best = top_heads(scores, "punctuation_sink", k=1).iloc[0]
viz.plot_head_vs_pattern(
    compare_head(records[9], int(best["layer"]), int(best["head"]), "punctuation_sink")
)

# %% [markdown]
# ## Does it hold on unseen sentences?
#
# `consistency` chooses each head's best pattern on the analysis sentences and, independently, on
# the held-out ones, and reports whether they agree and how much the score drifts.

# %%
patterns = ["previous_token", "next_token", "self", "first_token", "last_token",
            "punctuation", "punctuation_sink", "special_tokens", "dependency", "repetition"]  # fmt: skip
held = consistency(records, patterns, heldout=heldout_records)
held.attrs["agreement"], held[["layer", "head", "pattern_a", "pattern_b", "agree", "drift"]].head()

# %%
viz.plot_consistency(held)

# %% [markdown]
# ## Linear mixtures of patterns
#
# Some heads do two things at once (e.g. a little previous-token plus a sink on `[CLS]`).
# `linear_fit` fits each head as a non-negative mixture of patterns on one set of sentences and
# scores the mixture on another, next to the best single pattern.

# %%
mixes = linear_fit(records, heldout_records, patterns)
mixes[["layer", "head", "weights", "eval_score", "single_pattern", "single_eval_score"]].head(8)

# %%
viz.plot_linear_fit(mixes)

# %% [markdown]
# ## A decoder: SmolLM2
#
# Thirty layers of nine heads. A decoder cannot look ahead, so forward-looking patterns have no
# rows of their own there and are not candidates.

# %%
smollm2 = load_model("smollm2")
dec_records = extract(smollm2, analysis[:10])
dec_scores = score_heads(dec_records)
viz.plot_best_fit_grid(best_fit(dec_scores))

# %%
viz.plot_top_heads(top_heads(dec_scores, "previous_token", k=5))

# %% [markdown]
# ## Explore the heads live
#
# Sliders for layer and head, dropdowns for pattern and sentence, a box for your own sentence.
# On top, the interactive view (hover a cell for its weight, switch tokens/words, zoom) and the
# best-fit grid: click a head to jump to it; beside it, the head's top patterns against the
# uniform baseline. The tabs below are the static PNG view (what an exported notebook shows).

# %%
explore(minilm, records=records, scores=scores)

# %% [markdown]
# The view on its own: the same sentences in both models, side by side at the same layer and head,
# pooled to words so the two tokenizers line up (`compare=(layer, head)` shows a second head).

# %%
from attn_tools.explorer import attention_view

attention_view(records[:10], compare=dec_records, layer=1, head=2, level="word")

# %% [markdown]
# ## The same sentence in BertViz
#
# `show_bertviz` hands a record to BertViz's `head_view` (or `model_view`) in the format it
# expects. Unlike the explorer above, BertViz loads require.js and d3 from a CDN, so its view
# appears only where the browser can reach the internet; it warns above the token count where
# its drawing becomes unusably slow.

# %%
from attn_tools.explorer import show_bertviz

show_bertviz(records[0], "head", layer=0, heads=[2])
