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
# # 04 · Filter automation: can a program say what a head does?
#
# The built-in patterns are hand-written hypotheses. Here a *hypothesizer* writes new ones: it
# looks at a head's strongest attention pairs, proposes a pattern program, the program runs in a
# sandbox, and it is kept only if it beats every built-in pattern on sentences the hypothesizer
# never saw. Five steps, one public function each:
#
# 1. `head_examples` — the head on example sentences, as JSON;
# 2. `build_prompt` — the request to a language model (and `parse_reply` for its answer);
# 3. a hypothesizer — `ProgramSearch` (no language model), `LocalChatModel` (SmolLM2, offline) or
#    `OpenAICompatible` (any chat-completions API; switched off below);
# 4. `run_program` — the sandbox;
# 5. `automate_head` / `automate_heads` — refine, validate on held-out sentences, grow a library.
#
# Everything here runs offline on the small default decoder, SmolLM2-135M-Instruct.

# %%
import json

from attn_tools import extract, load_model, load_sentences, report, viz
from attn_tools.automate import (
    HeadTask,
    LocalChatModel,
    ProgramSearch,
    UserLibrary,
    automate_head,
    automate_heads,
    build_prompt,
    head_examples,
    make_backend,
    parse_reply,
    precomputed_pattern,
    run_program,
)
from attn_tools.automate.sandbox import contexts_of
from attn_tools.scoring import score_heads

# %% [markdown]
# Example sentences (every 11th of the built-in sets, all styles) for the hypothesizer, and
# held-out sentences that only the validation step sees.

# %%
bundle = load_model("smollm2")
train_texts = load_sentences("all")[::11]
heldout_texts = load_sentences("heldout")[:20]
train = extract(bundle, train_texts)
heldout = extract(bundle, heldout_texts)
train_ctx, heldout_ctx = contexts_of(train), contexts_of(heldout)
len(train), len(heldout)

# %% [markdown]
# ## 1 · The head on example sentences
#
# Layer 14, head 2. For each sentence the document lists the tokens, their part of speech and the
# top 10% (query, key, weight) pairs; special tokens are left out of the pairs and summarised as
# `special_mass` (this head, like most decoder heads, parks much of its attention on the BOS).

# %%
LAYER, HEAD = 14, 2
examples = head_examples(train, LAYER, HEAD)
print(json.dumps({k: v for k, v in examples.items() if k != "sentences"}))
print(json.dumps(examples["sentences"][0], ensure_ascii=False))

# %%
viz.plot_head(train[0], LAYER, HEAD)

# %% [markdown]
# ## 2 · The prompt
#
# Model, layer and head; the examples; the pattern API; two or three library patterns as worked
# examples (their code and a small predicted matrix); and the instructions: three hypotheses,
# pick one, cite evidence, draw a small matrix, write `def pattern(ctx)`, check it is valid. The
# reply must be JSON; `parse_reply` tolerates code fences and says exactly what is malformed.

# %%
prompt = build_prompt(examples, max_sentences=3)
print(prompt.user[:2500], "\n...")

# %%
try:
    parse_reply('{"hypotheses": ["previous token"], "chosen": 0 "program": "..."}')
except ValueError as err:
    print(err)

# %% [markdown]
# ## 3 · Hypothesizers
#
# ### Program search (no language model)
#
# Searches decision lists whose leaves are sparse mixes of library patterns ("punctuation attends
# to …; every other token attends to 80% the first token + 20% …"), fitted on the example
# sentences, with the number of rules chosen by cross-validation. It returns readable Python and
# a one-line hypothesis.

# %%
task = HeadTask(
    examples=examples,
    contexts=tuple(train_ctx),
    attention=tuple(r.head(LAYER, HEAD) for r in train),
)
search = ProgramSearch()
proposal = search.propose(task)
print(proposal.hypothesis)
print(proposal.evidence)
print(proposal.program)

# %% [markdown]
# ### The local chat model
#
# SmolLM2-135M-Instruct, greedy decoding, a compact prompt. It is tiny and usually fails to write
# a working program; the failure is a result with a status, not an exception.

# %%
local = LocalChatModel(bundle=bundle, max_new_tokens=96)
local_proposal = local.propose(task)
print(local_proposal.status, local_proposal.problems)
print(local_proposal.raw_reply[:400])

# %% [markdown]
# ### An API model (switched off)
#
# Any chat-completions server works: OpenAI, Gemini's OpenAI-compatible endpoint, Ollama, vLLM,
# llama.cpp. The key is read from an environment variable when a request is made; it is never
# stored, written to the run folder or printed. Set `USE_API = True` after exporting the key in the
# shell that started Jupyter.

# %%
USE_API = False
if USE_API:
    api = make_backend("openai", model="gpt-4o-mini")  # key from $OPENAI_API_KEY
    # api = make_backend("gemini", model="gemini-2.0-flash")  # key from $GEMINI_API_KEY
    # api = make_backend("ollama", model="qwen2.5-coder")  # a local server, no key
    api_proposal = api.propose(task)
    print(api_proposal.status, api_proposal.hypothesis)
    print(api_proposal.program)

# %% [markdown]
# ## 4 · The sandbox
#
# The program is parsed and checked first (imports of numpy/math only; no files, network,
# processes, introspection, dunder attributes, `exec`/`eval`/`open`), then run in a child process
# with CPU-time, memory and wall-clock limits, and every output matrix is validated. The searched
# program runs cleanly on the held-out sentences:

# %%
result = run_program(proposal.program, heldout_ctx)
result.status, result.message, len(result.matrices)

# %% [markdown]
# Hostile or broken programs come back as structured results:

# %%
attempts = {
    "reads a file": "def pattern(ctx):\n    return open('/etc/passwd').read()\n",
    "imports os": "import os\ndef pattern(ctx):\n    os.system('ls')\n",
    "escapes via dunders": "def pattern(ctx):\n    return ().__class__.__subclasses__()\n",
    "loops forever": "def pattern(ctx):\n    while True:\n        pass\n",
    "wrong shape": "import numpy as np\ndef pattern(ctx):\n    return np.ones((2, 2))\n",
    "looks ahead (decoder)": "import numpy as np\ndef pattern(ctx):\n    return np.eye(ctx.n, k=1)\n",
}
for what, source in attempts.items():
    res = run_program(source, heldout_ctx[:2], cpu_seconds=1, timeout=5)
    print(f"{what:>22}: {res.status:<15} {res.message[:90]}")
if local_proposal.program:
    local_result = run_program(local_proposal.program, heldout_ctx)
    print(f"{'the local model':>22}: {local_result.status:<15} {local_result.message[:90]}")

# %% [markdown]
# The validated outputs become a pattern like any other (the framework masks, renormalises and
# falls back the same way), so the figures work with them:

# %%
program = precomputed_pattern("searched program", result.matrices, heldout_ctx)
viz.plot_head_vs_pattern(
    report.compare_head(heldout[1], LAYER, HEAD, program, context=heldout_ctx[1])
)

# %% [markdown]
# ## 5 · Validate on held-out sentences and grow the library
#
# `automate_head` runs the refinement loop (at most `rounds` proposals; the largest disagreements
# go back to the hypothesizer), scores the best program on the held-out sentences next to the best
# built-in pattern, and adds it to a user library on disk when it beats every built-in and library
# pattern by a margin. Every prompt, reply, program, sandbox result and score is written to `out`.
#
# Beating the sharp built-ins is not enough: against a diffuse head, "89 % first token + 11 %
# everything" beats `first_token` only because it is less sharp. So a program must also beat, by
# the margin, the best built-in *smoothed with uniform* (`smoothed_name`, `smoothed_alpha`,
# `smoothed_score`: α·pattern + (1−α)·uniform, α fitted on the example sentences) and
# `linear_fit`'s mix of built-ins (`mix_score`), both scored on the held-out sentences
# (`beats_smoothed`, `beats_mix`; `accepted` needs both).

# %%
library = UserLibrary("automation/library")
head_result = automate_head(
    LAYER,
    HEAD,
    backend=search,
    train_records=train,
    heldout_records=heldout,
    train_contexts=train_ctx,
    heldout_contexts=heldout_ctx,
    library=library,
    out="automation/head_14_2",
)
{
    k: getattr(head_result, k)
    for k in (
        "status", "heldout_score", "builtin_name", "builtin_score", "smoothed_name",
        "smoothed_alpha", "smoothed_score", "mix_score", "beats_smoothed", "beats_mix",
        "library_entry",
    )
}  # fmt: skip

# %% [markdown]
# The same loop over several heads, resumable (a second call skips finished heads), with a
# progress bar:

# %%
runs = automate_heads(
    bundle,
    [(12, 4), (16, 2), (18, 8)],
    backend=search,
    out="automation/smollm2",
    sentences=train_texts,
    heldout=heldout_texts,
    library=library,
)
runs[
    [
        "layer", "head", "status", "heldout_score", "builtin_name", "builtin_score",
        "smoothed_score", "mix_score", "beats_smoothed", "beats_mix", "hypothesis",
    ]
]  # fmt: skip

# %% [markdown]
# The small local model goes through the same loop; when it writes nothing usable the head ends
# with a status instead of an error.

# %%
local_run = automate_head(
    LAYER,
    HEAD,
    backend=local,
    train_records=train,
    heldout_records=heldout,
    train_contexts=train_ctx,
    heldout_contexts=heldout_ctx,
    rounds=1,
    library=None,
    out="automation/local_14_2",
)
local_run.status, local_run.message

# %% [markdown]
# The library keeps each program with its provenance (backend, prompt hash, scores). Its programs
# become patterns of family `user` (`library.register()` adds them to the registry); they still
# run only in the sandbox, and score like the built-ins:

# %%
[(e.name, e.provenance["heldout_score"], e.provenance["builtin_score"]) for e in library.entries]

# %%
user_patterns = library.patterns(heldout_ctx)  # one sandbox process per program
scores = score_heads(heldout, user_patterns, contexts=heldout_ctx)
scores[(scores["layer"] == LAYER) & (scores["head"] == HEAD)]

# %% [markdown]
# From the command line: `attn-tools automate --model smollm2 --heads 14.2,12.4 --backend search
# --out runs/smollm2`.
