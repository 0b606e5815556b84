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
# # 01 · Data: models, sentences, extraction, the cache, alignment
#
# Everything downstream (patterns, scores, figures) reads `SentenceAttention` records. This
# notebook shows where they come from.

# %%
import tempfile
import time
from pathlib import Path

from attn_tools import (
    align,
    extract,
    list_models,
    list_sentence_sets,
    load_model,
    load_sentences,
    parse,
    to_word_level,
    viz,
)

# %% [markdown]
# ## Models
#
# Two offline defaults ship their weights in Python packages: `minilm` (all-MiniLM-L6-v2, a BERT
# encoder) and `smollm2` (SmolLM2-135M-Instruct, a Llama-style decoder). Any Hugging Face id or
# local folder works too when the hub is reachable.

# %%
list_models()

# %%
minilm = load_model("minilm")
smollm2 = load_model("smollm2")
minilm, smollm2

# %% [markdown]
# ## Sentence sets
#
# Built-in sets were written for this project; `heldout` is kept apart for validation.
# Files (`.txt`, `.jsonl`, `.csv`) and Hugging Face datasets (`hf:name`) load the same way.

# %%
list_sentence_sets()

# %%
story = load_sentences("story", limit=8)
story[:3]

# %%
folder = Path(tempfile.mkdtemp())
(folder / "mine.txt").write_text("Cats sleep a lot.\nDogs, however, do not.\n", encoding="utf-8")
load_sentences(folder / "mine.txt")

# %% [markdown]
# ## Extraction
#
# One forward pass per batch; padding is removed, so each record holds exactly its own tokens.
# Decoder inputs get a BOS token in front (as TransformerLens does), so "first token" heads have a
# fixed token to attend to.

# %%
records = extract(minilm, story)
dec_records = extract(smollm2, story)
rec, dec = records[0], dec_records[0]
rec, dec

# %%
list(zip(rec.tokens, rec.offsets, rec.special_mask))[:6]

# %%
dec.tokens[:6], dec.labels[:6]  # labels: the text each token covers (no "Ġ" markers)

# %% [markdown]
# Every row is a probability distribution over the keys, and a decoder's rows never look ahead:

# %%
rec.attention.sum(axis=-1).min(), rec.attention.sum(axis=-1).max()

# %%
viz.plot_head(dec, layer=3, head=1)

# %% [markdown]
# ## The cache
#
# Attention is cached on disk (`~/.cache/attn_tools`, or `$ATTN_TOOLS_CACHE`), keyed by the
# model's fingerprint, the exact text and the settings. A second call does no forward pass:

# %%
start = time.perf_counter()
again = extract(smollm2, story)
print(f"second extraction of {len(story)} sentences: {time.perf_counter() - start:.2f} s")
(again[0].attention == dec.attention).all()

# %% [markdown]
# Long inputs are cut to the model's context (or `max_length`) with a warning:

# %%
cut = extract(minilm, [" ".join(story)], max_length=32, cache=False)[0]
cut.n_tokens, cut.truncated

# %% [markdown]
# ## Alignment: model tokens ↔ words
#
# Linguistic patterns are defined on spaCy words, the model sees word pieces. The alignment uses
# character offsets, so it works the same for WordPiece (`##ing`), byte-level BPE (`Ġworld`) and
# SentencePiece.

# %%
tricky = extract(minilm, ["The unbelievable bakers don't stop kneading, do they?"])[0]
parsed = parse(tricky.text)[0]
viz.plot_alignment(tricky, parsed)

# %%
alignment = align(tricky, parsed)
alignment.token_words[:8]

# %% [markdown]
# Word-level attention (Clark et al. 2019): attention *to* a word is the sum over its pieces,
# attention *from* a word the mean over its pieces, so rows still sum to 1.

# %%
words = to_word_level(tricky, alignment)
words.labels, words.attention.shape

# %%
viz.plot_head(words, layer=2, head=3)

# %% [markdown]
# The same sentence through the decoder's tokenizer:

# %%
viz.plot_alignment(extract(smollm2, [tricky.text])[0], parsed)
