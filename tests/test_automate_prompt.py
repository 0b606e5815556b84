"""Steps 1 and 2: the head-examples document, the prompt, and the reply parser."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from attn_tools.automate.examples import SCHEMA, SCHEMA_VERSION, check_examples, head_examples
from attn_tools.automate.hypothesize.prompt import (
    Disagreement,
    Feedback,
    ReplyError,
    build_prompt,
    feedback_message,
    format_matrix,
    parse_reply,
    toy_context,
)
from attn_tools.patterns.base import Pattern, predict


def two_back(ctx):
    # each token attends to the token two places before it
    return np.eye(ctx.n, k=-2)


TINY = {
    "schema": "attn_tools.head_examples",
    "version": 1,
    "model": "tiny",
    "kind": "causal",
    "layer": 1,
    "head": 2,
    "top_fraction": 0.1,
    "include_special": False,
    "pair_fields": ["query", "key", "weight"],
    "sentences": [
        {
            "index": 0,
            "text": "A cat sat.",
            "tokens": ["<s>", "A", "Ġcat", "Ġsat", "."],
            "special": [0],
            "pos": ["", "DET", "NOUN", "VERB", "PUNCT"],
            "special_mass": 0.5,
            "pairs": [[3, 1, 0.9], [4, 2, 0.8]],
        }
    ],
}

EXPECTED_USER = r"""
# Task
Explain what attention head 1.2 (layer 1, head 2, counting from 0) of the causal model tiny does, and write the explanation as a pattern program.

# The head on example sentences
For each sentence: the model's tokens (the index is the position), the part of speech of each token's word, and the heaviest [query, key, weight] pairs: token `query` attends to token `key` with attention `weight` (the weights of one query over all keys sum to 1). Pairs that involve special tokens are left out; `special_mass` says how much attention the sentence's ordinary tokens give to special tokens on average.
```json
{
  "schema": "attn_tools.head_examples",
  "version": 1,
  "model": "tiny",
  "kind": "causal",
  "layer": 1,
  "head": 2,
  "top_fraction": 0.1,
  "include_special": false,
  "pair_fields": ["query", "key", "weight"],
  "sentences": [
    {"index": 0, "text": "A cat sat.", "tokens": ["<s>", "A", "Ġcat", "Ġsat", "."], "special": [0], "pos": ["", "DET", "NOUN", "VERB", "PUNCT"], "special_mass": 0.5, "pairs": [[3, 1, 0.9], [4, 2, 0.8]]}
  ]
}
```

# How a pattern is written
A pattern is a Python function `def pattern(ctx):` that returns where each token attends.
- Return a numpy array of shape (ctx.n, ctx.n): row q says where token q attends, column k is
  the key. Values must be finite and non-negative. Rows are normalised for you; an all-zero row
  means "attend to itself".
- Only `import numpy as np` and `import math` are allowed; no files, network, eval/exec, or
  attributes that start with an underscore. print() output is kept for the log only.
- Call numpy as `np.<function>(...)`; arrays offer the common methods (.sum, .max, .argmax,
  .mean, .copy, .reshape, .T, ...) called directly. No `out=`, no object arrays; a dtype, when
  needed, is written as a literal (`dtype=float`).
- This is a causal (decoder) model: token q can only attend to keys k <= q, so every
  entry above the diagonal must be 0 (use np.tril).
What `ctx` offers:
- ctx.text: the sentence.
- ctx.tokens: the model's token strings.
- ctx.token_ids: the token ids.
- ctx.offsets: (start, end) characters of each token in ctx.text.
- ctx.special_mask: bool array [n], True for special tokens ([CLS], [SEP], BOS, ...).
- ctx.kind: "encoder" or "causal".
- ctx.words: spaCy words, each with .text .start .end .pos .tag .dep .head (index of its head
  word; a root points to itself) .lemma .is_punct.
- ctx.alignment: alignment.token_words[t]: the word indices of token t;
  alignment.word_tokens[w]: the token indices of word w; alignment.units: (tokens, words)
  groups.
- ctx.n: number of tokens.
- ctx.causal: True for causal (decoder) models.
- ctx.token_word: int array [n], the first word of each token (-1 for special tokens).
- ctx.token_pos: the POS tag of each token's word ("" for special tokens).
- ctx.token_dep: the dependency label of each token's word ("" for special tokens).
- ctx.token_is_punct: bool array [n], True where spaCy marks the token's word as punctuation.
- ctx.stripped_tokens: token strings without tokenizer markers (##, Ġ, ▁).
- ctx.token_texts: the text each token covers (special tokens keep their name).
- ctx.punct_mask: bool array [n], True for tokens whose text is all punctuation.
- ctx.word_attr(name): One attribute of every word as an array [w], e.g. ctx.word_attr("pos").
- ctx.words_to_tokens(word_matrix): Expand a word-level [w, w] matrix to tokens [n, n]: every
  piece of a word gets the word's row, attention to a word is spread over its pieces; special
  tokens get zeros.
- ctx.builtin(name, fallback): The normalised [n, n] prediction of a library pattern, e.g.
  ctx.builtin("previous_token"); with fallback=False the rows it does not predict are zero. The
  name must be a string literal.
- ctx.fallback(): The rule for rows with no mass: attend to self ([n, n] identity).

# Worked examples from the pattern library
## two_back: Each token attends to the token two places before it.
```python
def two_back(ctx):
    # each token attends to the token two places before it
    return np.eye(ctx.n, k=-2)
```
On "The old dog saw the cat." it predicts (rows = queries, columns = keys; after normalisation):
```
      <s>  The  old  dog  saw  the  cat    .
 <s> 1.00    .    .    .    .    .    .    .
 The    . 1.00    .    .    .    .    .    .
 old 1.00    .    .    .    .    .    .    .
 dog    . 1.00    .    .    .    .    .    .
 saw    .    . 1.00    .    .    .    .    .
 the    .    .    . 1.00    .    .    .    .
 cat    .    .    .    . 1.00    .    .    .
   .    .    .    .    .    . 1.00    .    .
```

# What to do
1. Propose three different hypotheses about what the head does.
2. Pick the hypothesis that fits the examples best.
3. Cite evidence from the examples: sentences and (query -> key) pairs that support it.
4. Draw a small example matrix of your pattern on the sentence "The old dog saw the cat."
5. Implement it as `def pattern(ctx):` (the library's signature), returning an array
   of shape (ctx.n, ctx.n).
6. Check that its matrix is valid: the right shape, finite, non-negative, zero above the diagonal.

# Reply format
Reply with one JSON object and nothing else:
{"hypotheses": ["...", "...", "..."], "chosen": 0, "evidence": "...", "matrix": "...", "program": "import numpy as np\n\ndef pattern(ctx):\n    ..."}
`chosen` is the index of the chosen hypothesis; `matrix` is your small example matrix as text; `program` is the complete Python source as one JSON string."""


# ----------------------------------------------------------------------------- examples


@pytest.mark.parametrize("which", ["minilm_records", "smollm2_records"])
def test_head_examples_schema_and_top_pairs(request, which):
    records = request.getfixturevalue(which)[:6]
    doc = head_examples(records, 1, 2)
    check_examples(doc)
    assert json.loads(json.dumps(doc)) == doc  # plain JSON
    assert (doc["schema"], doc["version"]) == (SCHEMA, SCHEMA_VERSION)
    assert (doc["model"], doc["layer"], doc["head"]) == (records[0].model, 1, 2)
    assert len(doc["sentences"]) == 6
    for rec, s in zip(records, doc["sentences"]):
        att = rec.head(1, 2)
        n = rec.n_tokens
        special = set(np.flatnonzero(rec.special_mask).tolist())
        assert s["tokens"] == list(rec.tokens)
        assert s["special"] == sorted(special)
        assert len(s["pos"]) == n and all(s["pos"][t] == "" for t in special)
        allowed = (n - len(special)) ** 2
        if rec.kind == "causal":
            ordinary = n - len(special)
            allowed = ordinary * (ordinary + 1) // 2
        assert len(s["pairs"]) == math.ceil(0.1 * allowed)
        weights = [w for _, _, w in s["pairs"]]
        assert weights == sorted(weights, reverse=True)
        for q, k, w in s["pairs"]:
            assert q not in special and k not in special
            assert w == round(float(att[q, k]), 3)
            if rec.kind == "causal":
                assert k <= q
        # the kept pairs are the heaviest allowed ones
        mask = np.ones((n, n), dtype=bool)
        mask[list(special), :] = False
        mask[:, list(special)] = False
        if rec.kind == "causal":
            mask &= np.tril(mask)
        cutoff = np.sort(att[mask])[::-1][len(weights) - 1]
        assert min(att[q, k] for q, k, _ in s["pairs"]) >= cutoff - 1e-7


def test_head_examples_options_and_errors(minilm_records):
    recs = minilm_records[:3]
    with_special = head_examples(recs, 0, 0, include_special=True, top_fraction=1.0, annotate=False)
    s = with_special["sentences"][0]
    assert len(s["pairs"]) == len(s["tokens"]) ** 2
    assert "pos" not in s
    with pytest.raises(ValueError, match="outside all-MiniLM-L6-v2's 6 layers"):
        head_examples(recs, 6, 0)
    with pytest.raises(ValueError, match="top_fraction"):
        head_examples(recs, 0, 0, top_fraction=0)
    with pytest.raises(ValueError, match="at least one"):
        head_examples([], 0, 0)
    bad = json.loads(json.dumps(TINY))
    bad["sentences"][0]["pairs"].append([9, 0, 0.1])
    with pytest.raises(ValueError, match=r"pair \[9, 0, 0.1\] is not"):
        check_examples(bad)


# ----------------------------------------------------------------------------- prompt


def test_build_prompt_exact_text():
    lib = [
        Pattern(
            "two_back", "user", "Each token attends to the token two places before it.", two_back
        )
    ]
    prompt = build_prompt(TINY, library=lib)
    assert prompt.user == EXPECTED_USER.strip("\n")
    assert prompt.system.startswith("You are an interpretability researcher.")
    assert [m["role"] for m in prompt.messages] == ["system", "user"]
    assert len(prompt.sha256) == 64
    assert build_prompt(TINY, library=lib).sha256 == prompt.sha256


def test_build_prompt_defaults_and_trimming(smollm2_records, minilm_records):
    doc = head_examples(smollm2_records[:8], 3, 2)
    prompt = build_prompt(doc)
    for name in ("previous_token", "first_token", "pos_alignment"):
        assert f"## {name}: " in prompt.user
    assert "SmolLM2-135M-Instruct" in prompt.user and "head 3.2" in prompt.user
    assert "zero above the diagonal" in prompt.user
    short = build_prompt(doc, max_sentences=2, max_pairs=1, library=["previous_token"])
    assert short.user.count('{"index": ') == 2
    assert len(short.user) < len(prompt.user)
    enc = build_prompt(head_examples(minilm_records[:2], 0, 0))
    assert "This is a causal (decoder) model" not in enc.user and "[CLS]" in enc.user


def test_toy_context_and_matrix_format():
    ctx = toy_context("The dog ran.", "encoder")
    assert ctx.tokens == ("[CLS]", "The", "dog", "ran", ".", "[SEP]")
    m = predict("previous_token", ctx)[0]
    text = format_matrix(m, ctx.tokens)
    lines = text.splitlines()
    assert len(lines) == 7
    assert lines[2].split() == ["The", "1.00", ".", ".", ".", ".", "."]


def test_feedback_message_lists_disagreements():
    fb = Feedback(
        round=1,
        status="ok",
        message="",
        score=0.4321,
        baseline_name="first_token",
        baseline_score=0.3,
        disagreements=(
            Disagreement(0, "A cat sat.", 3, "sat", ((1, "A", 0.9),), ((2, "cat", 1.0),), 0.95),
        ),
    )
    text = feedback_message(fb)
    assert text.splitlines() == [
        "Round 1: your previous program's result: ok.",
        "Its JS distance to the head on the example sentences is 0.432 (lower is better; from 0 "
        "to 1); the best library pattern, first_token, scores 0.300.",
        "The rows where it disagrees most with the head:",
        "- sentence 0 ('A cat sat.'), query 3 'sat': the head attends to 1 'A' (0.90); your "
        "program predicts 2 'cat' (1.00) (JS distance 0.95).",
        "Improve the program. Reply in the same JSON format.",
    ]
    # the metric's registry entry names it and its direction: nothing says Jensen-Shannon
    sae = feedback_message(dataclasses.replace(fb, metric="sae")).splitlines()
    assert sae[1].startswith(
        "Its sum of absolute errors to the head on the example sentences is 0.432 (lower is "
        "better; from 0 to 2)"
    )
    assert sae[3].endswith("(sum of absolute errors 0.95).")
    with pytest.raises(ValueError, match="nope"):
        feedback_message(dataclasses.replace(fb, metric="nope"))
    failed = feedback_message(
        Feedback(round=2, status="rejected", message="line 1: import of 'os'")
    )
    assert "Problem: line 1: import of 'os'" in failed


# ----------------------------------------------------------------------------- reply parser

PROGRAM = "import numpy as np\n\ndef pattern(ctx):\n    return np.eye(ctx.n, k=-1)\n"
GOOD = {
    "hypotheses": ["previous token", "first token", "same POS"],
    "chosen": 0,
    "evidence": "sentence 0: 3 -> 2 (0.9)",
    "matrix": "...",
    "program": PROGRAM,
}


def test_parse_reply_plain_and_fenced():
    plain = parse_reply(json.dumps(GOOD))
    assert plain.program == PROGRAM.strip("\n")
    assert plain.chosen == "previous token"
    assert plain.hypotheses == ("previous token", "first token", "same POS")
    assert plain.problems == ()
    fenced = parse_reply(
        "Sure! Here is my answer:\n```json\n" + json.dumps(GOOD) + "\n```\nThanks."
    )
    assert fenced.program == plain.program and fenced.problems == ()
    inner = dict(GOOD, program="```python\n" + PROGRAM + "```")
    assert parse_reply(json.dumps(inner)).program == plain.program
    # raw newlines inside the JSON string (a common model mistake) are tolerated
    raw = json.dumps(GOOD).replace("\\n", "\n")
    assert parse_reply(raw).program == plain.program


def test_parse_reply_reports_exactly_what_is_malformed():
    with pytest.raises(ReplyError) as err:
        parse_reply('{"hypotheses": ["a", "b", "c"], "chosen": 0 "program": "x"}')
    assert err.value.problems == [
        "the reply is not valid JSON: Expecting ',' delimiter at line 1, column 45"
    ]
    with pytest.raises(ReplyError) as err:
        parse_reply(json.dumps({k: v for k, v in GOOD.items() if k != "program"}))
    assert err.value.problems == ["no 'program' in the reply", "missing key(s): 'program'"]
    with pytest.raises(ReplyError, match="does not define `def pattern"):
        parse_reply(json.dumps(dict(GOOD, program="def f(ctx):\n    return 1")))
    with pytest.raises(ReplyError, match="must be a string of Python source, got list"):
        parse_reply(json.dumps(dict(GOOD, program=["def pattern(ctx): pass"])))
    with pytest.raises(ReplyError, match="the reply is empty"):
        parse_reply("   ")
    with pytest.raises(ReplyError, match="contains no"):
        parse_reply("I cannot help with that.")
    loose = parse_reply(
        json.dumps(dict(GOOD, hypotheses="just one", chosen=7, evidence=["a", "b"]))
    )
    assert loose.problems == (
        "'hypotheses' should be a list of strings, got one string",
        "expected three hypotheses, got 1",
        "'chosen' index 7 is outside the 1 hypotheses",
    )
    assert loose.evidence == "a\nb"
    with pytest.raises(ReplyError):
        parse_reply(json.dumps(dict(GOOD, hypotheses="just one")), strict=True)


def test_parse_reply_salvages_a_python_block():
    text = "My hypothesis is previous token.\n```python\n" + PROGRAM + "```"
    reply = parse_reply(text)
    assert reply.program == PROGRAM.strip("\n")
    assert reply.problems[0].startswith("the reply is not valid JSON")
    with pytest.raises(ReplyError):
        parse_reply(text, salvage=False)
