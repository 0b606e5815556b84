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
# # 05 · Head statistics: what kind of head is each head?
#
# Before asking which *pattern* a head follows, a few numbers say what its attention looks like:
# how spread out its rows are (entropy), how sharp (focus: the mean largest weight), where the
# mass goes (first token, previous token, itself, special tokens, punctuation) and how far it
# looks. From those, every head gets one type — previous-token, first-token, self, focused, broad
# or mixed — under thresholds you can change. Then we check that the types hold on other
# sentences, watch how the strategy changes with depth, and trace SmolLM2 while it writes.
#
# Small sentence sets keep this quick; use `load_sentences("all")` for real findings.

# %%
import pandas as pd

from attn_tools import extract, load_model, load_sentences, viz
from attn_tools.interventions import trace_generation
from attn_tools.stats import HeadTypeThresholds, assign_head_types, head_stats, head_type_agreement

# %%
analysis = load_sentences("story")[:12]
heldout = load_sentences("heldout")[:12]  # disjoint from the analysis sentences
models = {name: load_model(name) for name in ("minilm", "smollm2")}
records = {name: extract(bundle, analysis) for name, bundle in models.items()}
held_records = {name: extract(bundle, heldout) for name, bundle in models.items()}

# %% [markdown]
# ## Statistics of every head
#
# One row per head. For a decoder, row 0 can only attend to itself, so it is left out of every
# statistic (its normalised entropy would be 0/0); each row is renormalised over the keys it may
# see, and `entropy_norm` divides by log2 of that number (1 = uniform over what the row can see).

# %%
stats = {name: head_stats(recs) for name, recs in records.items()}
stats["smollm2"].head()

# %% [markdown]
# ## Head types: MiniLM
#
# The same cells as the best-fit grid of notebook 03; positional types share the colour of the
# matching pattern and "mixed" is white like "no pattern". Each cell prints the statistic that
# earned its type.

# %%
viz.plot_head_type_grid(stats["minilm"])

# %% [markdown]
# ## Head types: SmolLM2
#
# Most SmolLM2 heads send more than half their attention to the first token (the attention sink),
# so they are typed first-token. `drop_keys="first"` removes that key and asks what the heads do
# with the rest.

# %%
viz.plot_head_type_grid(stats["smollm2"])

# %%
no_sink = head_stats(records["smollm2"], drop_keys="first")
viz.plot_head_type_grid(no_sink, title="SmolLM2 head types with the first token removed")

# %% [markdown]
# The thresholds are a frozen dataclass; re-typing a table does not recompute its statistics.

# %%
strict = assign_head_types(stats["smollm2"], HeadTypeThresholds(positional=0.7))
strict["head_type"].value_counts()

# %% [markdown]
# ## Do the types hold on other sentences?
#
# The same heads on the held-out sentences: the share of heads keeping their type, and Cohen's
# kappa (agreement corrected for what chance would give with these type frequencies).

# %%
agreements = {
    name: head_type_agreement(stats[name], head_stats(held_records[name])) for name in models
}
pd.concat([a.summary for a in agreements.values()], ignore_index=True)

# %% [markdown]
# Where SmolLM2's heads change type (rows: analysis sentences, columns: held-out sentences):

# %%
agreements["smollm2"].matrix()

# %% [markdown]
# ## Strategy by depth
#
# Share of each type per layer, and how spread out and how far the heads look, layer by layer.

# %%
viz.plot_layer_progression(stats["minilm"])

# %%
viz.plot_layer_progression(stats["smollm2"])

# %% [markdown]
# ## Syntax (Clark et al. 2019)
#
# Read each head as a dependency parser: at word level (attention *to* a word sums its pieces,
# *from* a word averages them), with [CLS]/[SEP] and the word itself removed from the candidates,
# the word a head attends to most is its guess. For each relation, the best head's accuracy over
# all arcs is compared with the best fixed offset (e.g. "the word two to the left"), with
# bootstrap intervals over sentences. The labels are spaCy's, not the paper's, so the numbers are
# not comparable one to one (see `docs/syntax.md`). A parse needs enough arcs, so this uses 80
# sentences (MiniLM is quick).

# %%
from attn_tools.syntax import embed_heads, head_distances, syntax_table

syntax_records = extract(models["minilm"], load_sentences("all")[:80])
table = syntax_table(syntax_records, min_arcs=15)
table[["relation", "n_arcs", "layer", "head", "direction", "accuracy", "baseline", "gain",
       "gain_low", "gain_high"]].round(2)  # fmt: skip

# %%
viz.plot_syntax_table(table)

# %% [markdown]
# ## Which heads behave alike?
#
# Clark et al.'s head distances: the Jensen–Shannon distance between two heads' attention rows,
# averaged over rows and sentences, for every pair of heads, then laid out in 2-D by classical
# multidimensional scaling. Special tokens are removed first so the [CLS]/[SEP] sink does not
# make every sink head look alike; colours are the head types from above.

# %%
distances = head_distances(records["minilm"], drop_keys="special")
viz.plot_head_embedding(embed_heads(distances), stats["minilm"], label_column="head_type")

# %% [markdown]
# ## Tracing SmolLM2 while it writes
#
# `trace_generation` records, at every step, each head's attention for the new token over the
# context so far (the prompt × prompt block at step 0) and the hidden-state norm after every
# layer. The trace has the same structure with or without a KV cache, and equals one forward pass
# over the whole text (checked in the tests).

# %%
trace = trace_generation(models["smollm2"], "The capital of France is", max_new_tokens=4)
trace

# %%
viz.plot_norm_growth(trace)

# %%
viz.plot_first_token_share(trace)

# %%
viz.plot_generation_attention(trace, layer=2, head=1)
