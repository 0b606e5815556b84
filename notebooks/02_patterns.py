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
# # 02 · Patterns: what a head might be doing
#
# A pattern predicts, for each query token, where it attends: a matrix of the same shape as a
# head's attention. The framework (not each pattern) masks a decoder's predictions so they never
# look ahead, renormalises each row, and lets a row with nothing to attend to fall back to the
# token itself. Every pattern has one colour, the same in every figure.

# %%
import numpy as np

from attn_tools import extract, load_model, load_sentences, viz
from attn_tools.classify import top_heads
from attn_tools.patterns import build_context, list_patterns, pattern, predict
from attn_tools.report import compare_head
from attn_tools.scoring import score_heads

# %%
viz.pattern_table()

# %% [markdown]
# ## The built-in families on example sentences
#
# One sentence per family, chosen so that the family has something to point at.

# %%
minilm = load_model("minilm")
examples = {
    "story": load_sentences("story")[1],
    "repetition": load_sentences("repetition")[0],
    "syntax": load_sentences("syntax")[0],
    "punctuation": load_sentences("punctuation")[1],
}
records = dict(zip(examples, extract(minilm, list(examples.values()))))

# %% [markdown]
# **Positional**: fixed offsets and fixed positions.

# %%
viz.plot_patterns(records["story"], list_patterns("positional"))

# %% [markdown]
# **Lexical**: token identity — punctuation ahead, repeated words, and the TransformerLens
# detection patterns (`previous_token_head`, `duplicate_token_head`, `induction_head`).

# %%
viz.plot_patterns(records["repetition"], list_patterns("lexical"))

# %% [markdown]
# **Linguistic**: spaCy's parse mapped onto model tokens — dependency arcs (both directions, to
# the head, to the children, one relation at a time) and part-of-speech alignment.

# %%
viz.plot_patterns(records["syntax"], list_patterns("linguistic"), ncols=7)

# %% [markdown]
# **Special** tokens and punctuation as attention sinks, and **character**-level patterns on word
# pieces.

# %%
viz.plot_patterns(records["punctuation"], list_patterns("special") + list_patterns("character"))

# %% [markdown]
# ## A decoder sees only the past
#
# The same patterns on SmolLM2: everything above the diagonal is masked, so `next_token` has
# nothing left and falls back to `self` on every row.

# %%
smollm2 = load_model("smollm2")
dec = extract(smollm2, [examples["repetition"]])[0]
viz.plot_patterns(
    dec, ["previous_token", "next_token", "first_token", "punctuation", "induction_head", "uniform"]
)

# %% [markdown]
# ## Parametrised patterns
#
# Some families are built by name: `offset(k)`, `dep(relation)`, `dep_rev(relation)`, and the
# chance-level baseline `shuffled(name)` (each row's weights moved to random keys).

# %%
viz.plot_patterns(
    records["syntax"],
    ["offset(-3)", "offset(3)", "dep(nsubj)", "dep(prep)", "shuffled(dependency)"],
)

# %% [markdown]
# ## Writing a new pattern
#
# A pattern is a function of a `PatternContext` (tokens, offsets, special tokens, the spaCy words
# and their alignment to tokens) that returns non-negative weights `[n, n]`. Register it with
# `@pattern`; it then works everywhere: `predict`, `score_heads`, `best_fit`, the explorer.
#
# Two examples: one positional, one that reads the parse.


# %%
@pattern(name="two_back", family="user")
def two_back(ctx):
    """Each token attends to the token two places before it."""
    return np.eye(ctx.n, k=-2)


@pattern(name="main_verb", family="user", needs_parse=True)
def main_verb(ctx):
    """Every word attends to the sentence's root (usually its main verb)."""
    words = np.zeros((len(ctx.words), len(ctx.words)))
    roots = [i for i, w in enumerate(ctx.words) if w.dep == "ROOT"]
    words[:, roots] = 1.0
    return ctx.words_to_tokens(words)


# %%
ctx = build_context(records["syntax"])
matrix, has_mass = predict("main_verb", ctx)
matrix.shape, has_mass.sum()

# %%
viz.plot_patterns(records["syntax"], ["two_back", "offset(-2)", "main_verb"], context=ctx)

# %% [markdown]
# `two_back` and the built-in `offset(-2)` agree, as they should. Now score the new patterns on
# every head of MiniLM over a few sentences and look at the best head for `main_verb`:

# %%
sentences = load_sentences("syntax")[:12]
syntax_records = extract(minilm, sentences)
scores = score_heads(syntax_records, ["main_verb", "two_back", "uniform"])
top_heads(scores, "main_verb", k=3)

# %%
best = top_heads(scores, "main_verb", k=1).iloc[0]
viz.plot_head_vs_pattern(
    compare_head(syntax_records[0], int(best["layer"]), int(best["head"]), "main_verb")
)
