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
# # 08 · Hints: when a hint flips the answer, which heads looked at it?
#
# Ask multiple-choice questions three ways: plain, with a hint that points at a (wrong) option,
# and with the hint's neutral twin (same sentence, pointer replaced by `?`). Count only flips
# *to the hinted option*, and compare that rate with the neutral one: the difference is what the
# hint did. Then, per head, compare the attention from the answer position to the hint tokens on
# items that flipped against items that did not. Definitions: `docs/hints.md`.
#
# This notebook runs SmolLM2-135M-Instruct (offline) on a few built-in items so that it stays
# fast on a CPU; `attn-tools hints --items mmlu:abstract_algebra` runs the real benchmark.

# %%
from attn_tools import load_model
from attn_tools.hints import evaluate_hints, item_attention, load_items
from attn_tools.viz.hints import (
    plot_flip_matrix,
    plot_flip_rates,
    plot_hint_attention_map,
    plot_hint_item_attention,
)

bundle = load_model("smollm2")
items = load_items("builtin")[::7]  # 6 items, two per topic
print(items[0])

# %% [markdown]
# ## The prompt the model sees (chat template, hint after the options)

# %%
result = evaluate_hints(bundle, items, hint="sycophancy", target="wrong", seed=0)
print(result.prompts[0].text)
print("hint span:", result.prompts[0].hint_span, repr(result.prompts[0].hint))

# %% [markdown]
# ## Answers with and without the hint
# Answers are the options' letter log-likelihoods after `Answer:`; `p_*` are those softmaxed over
# the options. `eligible` items are those whose plain answer is not already the hinted option.

# %%
result.items[
    ["item", "correct_letter", "hinted_letter", "answer_without_letter", "answer_with_letter",
     "answer_neutral_letter", "eligible", "flipped_to_hint"]
]  # fmt: skip

# %%
result.summary.T

# %%
plot_flip_matrix(result.items)

# %%
plot_flip_rates(result.summary)

# %% [markdown]
# ## Which heads attend to the hint when it wins?
# Flipped-to-hint minus the other eligible items, per head; dots mark permutation p < 0.05
# (uncorrected; with 6 items this is an illustration, not evidence).

# %%
plot_hint_attention_map(result.head_attention)

# %%
flipped = result.items.index[result.items["flipped_to_hint"]].tolist()
if flipped and result.items["eligible"].sum() > len(flipped):
    layer, head = result.top_head()
    tokens, att, hint_idx = item_attention(bundle, result, flipped[0], layer, head)
    fig = plot_hint_item_attention(tokens, att, hint_idx, title=f"L{layer}H{head}")
else:
    print("no item flipped to the hint (or all did): no head contrast to show")
    fig = None
fig
