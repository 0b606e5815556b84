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
# # 09 · Character models: what do their heads do, in English and in Hebrew?
#
# Two small character-level transformers ship with the package, trained by
# `scripts/train_char_models.py` on the same Bible verses in two languages: English (Bible in
# Basic English) and Hebrew (consonantal text, no vowel points). Their tokens are single
# characters, so they get their own patterns (`charlevel`: previous character, last space, word
# start, last vowel or consonant, ...). This notebook
#
# 1. plugs a model you build yourself into the toolkit (a few lines),
# 2. trains a tiny model for a few steps (the shipped ones took 15–20 minutes each),
# 3. scores the shipped models' heads on sentences written for this notebook, never trained on,
# 4. sets the two languages side by side.
#
# Details: `docs/charlm.md` (models, training, licences) and `docs/charpatterns.md` (patterns,
# vowels, right-to-left text).

# %%
from attn_tools import extract
from attn_tools.charlm import char_model_info, load_char_model, train_char_model
from attn_tools.classify import best_fit, label_heads
from attn_tools.compare import compare_languages
from attn_tools.patterns import char_patterns
from attn_tools.scoring import score_heads
from attn_tools.stats import head_stats
from attn_tools.viz import plot_char_head

# %% [markdown]
# ## Sentences the models never saw
#
# Written for this notebook, in the plain style of the training text; none is a verse.

# %%
english = [
    "The old man went up the hill with his son at the start of the day.",
    "She gave bread and water to the children who were sitting by the door.",
    "Then the king sent his servants into the town to get news of the war.",
    "And the rain came down on the fields for seven days and seven nights.",
    "He made a house of stone near the river, and his sheep were with him.",
    "The women took their baskets and went out to the trees for fruit.",
    "When the light came, the men got up and went on their way in peace.",
    "Let the word of the wise be kept in your heart all the days of your life.",
]
hebrew = [
    "הילד הלך אל הבית ואמו ישבה בפתח",
    "האיש נתן לחם ומים לאנשים אשר באו מן השדה",
    "וישלח המלך את עבדיו אל העיר לדעת מה היה",
    "וירד הגשם על הארץ שבעה ימים ושבעה לילות",
    "ויבן בית אבנים על יד הנהר וצאנו עמו",
    "והנשים לקחו את הסלים ויצאו אל העצים",
    "ויהי בבקר ויקמו האנשים וילכו לדרכם בשלום",
    "שמע בני את דברי אביך ואל תעזב את תורת אמך",
]

# %% [markdown]
# ## 1 · Bring your own model
#
# Anything that exposes per-layer attention probabilities becomes a `ModelBundle`: the character
# models here are plain `torch.nn.Module`s plugged in through the same seam a model of yours
# would use (`docs/charlm.md`, "Bring your own model"). Here: a tiny model trained for a few
# steps on the English sentences above, only to show the calls.

# %%
tiny = train_char_model(
    english[:6], held_out=english[6:], layers=2, heads=2, d_model=32, steps=20, seed=0,
    progress=False,
)  # fmt: skip
tiny_bundle = tiny.bundle("tiny-char")
print(tiny_bundle)
print(extract(tiny_bundle, english[:1], cache=False, progress=False)[0].attention.shape)

# %% [markdown]
# ## 2 · The shipped models

# %%
models = {"English": load_char_model("english"), "Hebrew": load_char_model("hebrew")}
for name, bundle in models.items():
    info = char_model_info(bundle.source.split(":", 1)[1])
    print(name, bundle, {k: info[k] for k in info if "bits" in k or k in ("steps", "seed")})

# %% [markdown]
# ## 3 · Which heads do what, on unseen sentences

# %%
texts = {"English": english, "Hebrew": hebrew}
language = {"English": "english", "Hebrew": "hebrew"}
records, fits, stats = {}, {}, {}
for name, bundle in models.items():
    records[name] = extract(bundle, texts[name], progress=False)
    scores = score_heads(records[name], char_patterns(language[name]))
    fits[name] = best_fit(scores)
    stats[name] = head_stats(records[name])
    labelled = fits[name][fits[name]["label"] != "none"]
    print(f"{name}: {len(labelled)} of {len(fits[name])} heads labelled")
    print(labelled["label"].value_counts().to_string(), "\n")

# %% [markdown]
# How much of each model's attention goes to the previous character, head by head (`prev_mass`
# from `head_stats`, averaged over these unseen sentences; 1 would be a perfect previous-character
# head).

# %%
for name in models:
    top = stats[name].sort_values("prev_mass", ascending=False).head(3)
    print(name, top[["layer", "head", "prev_mass", "head_type"]].to_string(index=False), "\n")

# %% [markdown]
# The closest-pattern rule above labels a head with the pattern it fits best. The calibrated rule
# is stricter: a head keeps a label only if it beats the shuffled and uniform baselines with a
# bootstrap interval above zero and the label's cells hold at least half of its attention
# (`share`). Here it is for the previous character:

# %%
calibrated = {}
for name in models:
    calibrated[name] = label_heads(records[name], char_patterns(language[name]))
    prev = calibrated[name][calibrated[name]["label"] == "char_previous"]
    print(
        name,
        prev[["layer", "head", "share", "share_low", "share_high"]].round(3).to_string(index=False),
        "\n",
    )

# %% [markdown]
# The clearest head of each model, drawn on one sentence (the Hebrew title reads right to left;
# the axes keep the typing order, first character at the left, in both languages).

# %%
for name in models:
    f = calibrated[name]
    prev = f[f["label"] == "char_previous"]
    row = prev.sort_values("share").iloc[-1] if len(prev) else fits[name].iloc[0]
    plot_char_head(records[name][0], int(row["layer"]), int(row["head"]))

# %% [markdown]
# ## 4 · Two languages side by side

# %%
cmp = compare_languages(fits, stats=stats)
cmp.figure()

# %%
cmp.table.head(20)
