"""Step 2: the prompt that asks a language model for a pattern program, and the reply parser.

`build_prompt` turns a `head_examples` document into a `Prompt` (system + user text): the model,
layer and head; the examples as JSON; two or three registry patterns as worked examples (their
source and a small predicted matrix); and the instructions (three hypotheses, pick one, cite
evidence, draw a small matrix, implement ``def pattern(ctx)``, check that its matrix is valid).

`parse_reply` reads the JSON reply ``{"hypotheses": [...], "chosen": ..., "evidence": ...,
"program": "..."}``. It tolerates code fences and prose around the JSON and code fences inside
the program; when something is wrong it says exactly what (`ReplyError.problems`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attn_tools.patterns.base import Pattern, PatternContext, get_pattern, predict
from attn_tools.patterns.context import describe_context_api
from attn_tools.scoring import get_metric

__all__ = [
    "DEFAULT_WORKED_EXAMPLES",
    "CONTEXT_API",
    "Disagreement",
    "Feedback",
    "Prompt",
    "Reply",
    "ReplyError",
    "build_prompt",
    "feedback_message",
    "format_matrix",
    "parse_reply",
    "toy_context",
    "trim_examples",
]

#: registry patterns shown as worked examples unless ``library=`` says otherwise.
DEFAULT_WORKED_EXAMPLES = ("previous_token", "first_token", "pos_alignment")
TOY_SENTENCE = "The old dog saw the cat."

SYSTEM = (
    "You are an interpretability researcher. You explain what one attention head of a "
    "transformer does by writing a small, exact Python program that predicts its attention. "
    "You answer with a single JSON object."
)

#: what a program may use; generated from `PatternContext` itself, so it cannot drift from the
#: context the sandbox child builds.
CONTEXT_API = describe_context_api()

RULES = """\
- Return a numpy array of shape (ctx.n, ctx.n): row q says where token q attends, column k is
  the key. Values must be finite and non-negative. Rows are normalised for you; an all-zero row
  means "attend to itself".
- Only `import numpy as np` and `import math` are allowed; no files, network, eval/exec, or
  attributes that start with an underscore. print() output is kept for the log only.
- Call numpy as `np.<function>(...)`; arrays offer the common methods (.sum, .max, .argmax,
  .mean, .copy, .reshape, .T, ...) called directly. No `out=`, no object arrays; a dtype, when
  needed, is written as a literal (`dtype=float`)."""


# ----------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Prompt:
    """A chat prompt: ``system`` and ``user`` text; ``messages`` for a chat-completions API."""

    system: str
    user: str

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    @property
    def text(self) -> str:
        return f"[system]\n{self.system}\n\n[user]\n{self.user}\n"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Reply:
    """A parsed reply. ``problems`` lists what was malformed but tolerated."""

    program: str
    hypotheses: tuple[str, ...] = ()
    chosen: str = ""
    evidence: str = ""
    matrix: str = ""
    problems: tuple[str, ...] = ()


class ReplyError(ValueError):
    """The reply holds no usable program; ``problems`` says exactly what was wrong."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Disagreement:
    """One query row where a program and the head disagree most (for the refinement loop)."""

    sentence: int
    text: str
    query: int
    query_token: str
    head_top: tuple[tuple[int, str, float], ...]
    program_top: tuple[tuple[int, str, float], ...]
    jsd: float  # the row's value of the feedback's metric (named jsd for older run files)


@dataclass(frozen=True)
class Feedback:
    """What the refinement loop tells a hypothesizer about its previous program."""

    round: int
    status: str  # the sandbox status, or "unparseable" / "backend_error"
    message: str
    score: float | None = None
    baseline_name: str | None = None
    baseline_score: float | None = None
    disagreements: tuple[Disagreement, ...] = field(default=())
    previous_reply: str | None = None
    previous_program: str | None = None
    metric: str = "jsd"  # a registry metric: its display name and direction go in the text


# ----------------------------------------------------------------------------- helpers


def toy_context(text: str = TOY_SENTENCE, kind: str = "causal") -> PatternContext:
    """A `PatternContext` without a model: spaCy words as tokens, plus ``<s>`` (causal) or
    ``[CLS]``/``[SEP]`` (encoder) as special tokens. Used to draw small example matrices."""
    from attn_tools.text import parse

    parsed = parse(text)[0]
    words = [(w.text, w.start, w.end) for w in parsed.words]
    if kind == "causal":
        tokens = ["<s>", *(w for w, _, _ in words)]
        offsets = [(0, 0), *((s, e) for _, s, e in words)]
        special = [True] + [False] * len(words)
    else:
        tokens = ["[CLS]", *(w for w, _, _ in words), "[SEP]"]
        offsets = [(0, 0), *((s, e) for _, s, e in words), (0, 0)]
        special = [True] + [False] * len(words) + [True]

    class _Record:
        pass

    rec = _Record()
    rec.text, rec.tokens, rec.offsets = text, tuple(tokens), tuple(offsets)
    rec.special_mask = np.array(special, dtype=bool)
    rec.token_ids = tuple(range(len(tokens)))
    rec.kind = kind
    from attn_tools.patterns.base import build_context

    return build_context(rec, parsed)


def format_matrix(m: np.ndarray, labels: Sequence[str], *, decimals: int = 2) -> str:
    """A plain-text matrix: rows are queries, columns keys; zeros print as ``.``."""
    labels = [str(x)[:8] for x in labels]
    width = max(max(len(x) for x in labels), decimals + 2)
    head = " " * (width + 1) + " ".join(x.rjust(width) for x in labels)
    rows = [head]
    for label, row in zip(labels, np.asarray(m)):
        cells = [(f"{v:.{decimals}f}" if v > 0 else ".").rjust(width) for v in row]
        rows.append(label.rjust(width) + " " + " ".join(cells))
    return "\n".join(rows)


def _pattern_source(p: Pattern) -> str:
    try:
        src = textwrap.dedent(inspect.getsource(p.fn))
    except (OSError, TypeError):
        return f"# (source of {p.name} is not available)"
    lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith("@")]
    text = "\n".join(lines)
    # annotations name classes the sandbox does not have; the program should not copy them
    text = re.sub(r"\(ctx: PatternContext\)", "(ctx)", text)
    return re.sub(r"\) -> np\.ndarray:", "):", text)


def trim_examples(
    examples: dict[str, Any], *, max_sentences: int | None = None, max_pairs: int | None = None
) -> dict[str, Any]:
    """A copy of an examples document with fewer sentences and pairs (for small models)."""
    out = dict(examples)
    sentences = list(examples["sentences"])[: max_sentences or None]
    if max_pairs is not None:
        sentences = [dict(s, pairs=s["pairs"][:max_pairs]) for s in sentences]
    out["sentences"] = sentences
    return out


def _examples_json(doc: dict[str, Any]) -> str:
    """JSON with one sentence per line: compact but readable."""
    head = {k: v for k, v in doc.items() if k != "sentences"}
    lines = ["{"]
    for k, v in head.items():
        lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)},")
    lines.append('  "sentences": [')
    sents = doc.get("sentences", [])
    for i, s in enumerate(sents):
        comma = "," if i < len(sents) - 1 else ""
        lines.append("    " + json.dumps(s, ensure_ascii=False) + comma)
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines)


def _worked_example(p: Pattern, kind: str) -> str:
    ctx = toy_context(TOY_SENTENCE, kind)
    m = predict(p, ctx)[0]
    return (
        f"## {p.name}: {p.description}\n"
        f"```python\n{_pattern_source(p)}\n```\n"
        f'On "{TOY_SENTENCE}" it predicts (rows = queries, columns = keys; after normalisation):\n'
        f"```\n{format_matrix(m, ctx.tokens)}\n```"
    )


# ----------------------------------------------------------------------------- the prompt


def build_prompt(
    examples: dict[str, Any],
    *,
    library: Sequence[str | Pattern] | None = None,
    max_sentences: int | None = None,
    max_pairs: int | None = None,
    compact: bool = False,
) -> Prompt:
    """The prompt for one head.

    Args:
        examples: a `head_examples` document.
        library: registry patterns (names or `Pattern`s) shown as worked examples; default
            `DEFAULT_WORKED_EXAMPLES` (those registered).
        max_sentences, max_pairs: shorten the examples (small local models have short contexts).
        compact: a short prompt for small local models (a few hundred tokens): the same task,
            examples and reply format, with one-line rules and the worked examples' code only.

    Returns:
        A `Prompt`; ``prompt.messages`` is ready for a chat-completions API.
    """
    doc = trim_examples(examples, max_sentences=max_sentences, max_pairs=max_pairs)
    if compact:
        return _compact_prompt(doc, library)
    kind = doc.get("kind", "causal")
    if library is None:
        library = []
        for name in DEFAULT_WORKED_EXAMPLES:
            try:
                library.append(get_pattern(name))
            except ValueError:
                continue
    worked = [get_pattern(p) for p in library]
    causal_rule = (
        "- This is a causal (decoder) model: token q can only attend to keys k <= q, so every\n"
        "  entry above the diagonal must be 0 (use np.tril).\n"
        if kind == "causal"
        else ""
    )
    special_note = (
        "Pairs that involve special tokens are left out; `special_mass` says how much attention "
        "the sentence's ordinary tokens give to special tokens on average."
        if not doc.get("include_special")
        else "Pairs with special tokens are included."
    )
    parts = [
        "# Task",
        f"Explain what attention head {doc['layer']}.{doc['head']} (layer {doc['layer']}, head "
        f"{doc['head']}, counting from 0) of the {kind} model {doc['model']} does, and write "
        "the explanation as a pattern program.",
        "",
        "# The head on example sentences",
        "For each sentence: the model's tokens (the index is the position), the part of speech of "
        "each token's word, and the heaviest [query, key, weight] pairs: token `query` attends to "
        "token `key` with attention `weight` (the weights of one query over all keys sum to 1). "
        + special_note,
        "```json",
        _examples_json(doc),
        "```",
        "",
        "# How a pattern is written",
        "A pattern is a Python function `def pattern(ctx):` that returns where each token attends.",
        RULES,
        causal_rule.rstrip("\n"),
        "What `ctx` offers:",
        CONTEXT_API,
        "",
        "# Worked examples from the pattern library",
        *(_worked_example(p, kind) + "\n" for p in worked),
        "# What to do",
        "1. Propose three different hypotheses about what the head does.",
        "2. Pick the hypothesis that fits the examples best.",
        "3. Cite evidence from the examples: sentences and (query -> key) pairs that support it.",
        f'4. Draw a small example matrix of your pattern on the sentence "{TOY_SENTENCE}"',
        "5. Implement it as `def pattern(ctx):` (the library's signature), returning an array\n"
        "   of shape (ctx.n, ctx.n).",
        "6. Check that its matrix is valid: the right shape, finite, non-negative"
        + (", zero above the diagonal." if kind == "causal" else "."),
        "",
        "# Reply format",
        "Reply with one JSON object and nothing else:",
        '{"hypotheses": ["...", "...", "..."], "chosen": 0, "evidence": "...", "matrix": "...", '
        '"program": "import numpy as np\\n\\ndef pattern(ctx):\\n    ..."}',
        "`chosen` is the index of the chosen hypothesis; `matrix` is your small example matrix as "
        "text; `program` is the complete Python source as one JSON string.",
    ]
    user = "\n".join(p for p in parts if p is not None)
    user = re.sub(r"\n{3,}", "\n\n", user)
    return Prompt(system=SYSTEM, user=user)


def _compact_prompt(doc: dict[str, Any], library: Sequence[str | Pattern] | None) -> Prompt:
    kind = doc.get("kind", "causal")
    sentences = [{"tokens": s["tokens"], "pairs": s["pairs"]} for s in doc.get("sentences", [])]
    worked = [get_pattern(p) for p in (library or ())]
    parts = [
        f"Attention head {doc['layer']}.{doc['head']} of the {kind} model {doc['model']}. "
        "For each sentence: its tokens and the heaviest [query, key, weight] pairs (token "
        "`query` attends to token `key`).",
        json.dumps(sentences, ensure_ascii=False),
        "Write `def pattern(ctx):` returning a numpy array of shape (ctx.n, ctx.n): row q is "
        "where token q attends. ctx has n, tokens, token_pos, special_mask, punct_mask and "
        'builtin("previous_token") / builtin("first_token") / builtin("self").'
        + (" Keep it zero above the diagonal (np.tril)." if kind == "causal" else ""),
        *(f"Example:\n```python\n{_pattern_source(p)}\n```" for p in worked),
        'Answer with JSON only: {"hypotheses": [three short guesses], "chosen": 0, '
        '"evidence": "...", "program": "def pattern(ctx):\\n    ..."}',
    ]
    return Prompt(system=SYSTEM, user="\n".join(parts))


def _fmt_top(top: Sequence[tuple[int, str, float]]) -> str:
    return ", ".join(f"{k} {tok!r} ({w:.2f})" for k, tok, w in top) or "nothing"


def feedback_message(feedback: Feedback) -> str:
    """The user message of a refinement round: what went wrong and the largest disagreements."""
    lines = [f"Round {feedback.round}: your previous program's result: {feedback.status}."]
    if feedback.message and feedback.status != "ok":
        lines.append(f"Problem: {feedback.message}")
    spec = get_metric(feedback.metric)
    if feedback.score is not None:
        ref = ""
        if feedback.baseline_name is not None and feedback.baseline_score is not None:
            ref = (
                f"; the best library pattern, {feedback.baseline_name}, scores "
                f"{feedback.baseline_score:.3f}"
            )
        lo, hi = spec.range
        span = f"; from {lo:g} to {hi:g}" if lo is not None and hi is not None else ""
        lines.append(
            f"Its {spec.display} to the head on the example sentences is {feedback.score:.3f} "
            f"({spec.direction}{span}){ref}."
        )
    if feedback.disagreements:
        lines.append("The rows where it disagrees most with the head:")
        for d in feedback.disagreements:
            lines.append(
                f"- sentence {d.sentence} ({d.text[:60]!r}), query {d.query} {d.query_token!r}: "
                f"the head attends to {_fmt_top(d.head_top)}; your program predicts "
                f"{_fmt_top(d.program_top)} ({spec.display} {d.jsd:.2f})."
            )
    lines.append("Improve the program. Reply in the same JSON format.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the reply

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.S)
REQUIRED_KEYS = ("hypotheses", "chosen", "evidence", "program")


def _strip_fences(code: str) -> str:
    m = _FENCE.search(code)
    if m and "def " in m.group(2):
        return m.group(2).strip("\n")
    return code.strip("\n")


def _find_object(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The first JSON object in ``text`` (fenced or not) and, if none, the first decode error."""
    decoder = json.JSONDecoder(strict=False)  # raw newlines inside strings are tolerated
    first_error: str | None = None
    starts = [m.start() for m in re.finditer(r"\{", text)][:50]
    for start in starts:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            if first_error is None:
                line = text.count("\n", 0, exc.pos) + 1
                col = exc.pos - (text.rfind("\n", 0, exc.pos) + 1) + 1
                first_error = f"{exc.msg} at line {line}, column {col}"
            continue
        if isinstance(obj, dict):
            return obj, None
    return None, first_error or "the reply contains no '{'"


def parse_reply(text: Any, *, strict: bool = False, salvage: bool = True) -> Reply:
    """Read a model's reply into a `Reply`.

    Tolerated (and listed in ``Reply.problems``): prose or code fences around the JSON, code
    fences inside ``program``, a single string for ``hypotheses``, evidence given as a list, a
    missing ``hypotheses``/``chosen``/``evidence``. With ``salvage=True`` a reply that is not
    JSON but holds a fenced Python block defining ``pattern`` still yields its program.

    Raises:
        ReplyError: no usable program (or, with ``strict=True``, any problem); ``.problems`` lists
            exactly what was malformed.
    """
    if not isinstance(text, str) or not text.strip():
        raise ReplyError(["the reply is empty"])
    obj, error = _find_object(text)
    problems: list[str] = []
    if obj is None:
        problem = f"the reply is not valid JSON: {error}"
        if salvage:
            for lang, body in _FENCE.findall(text):
                if lang.lower() in ("", "python", "py") and re.search(r"def\s+pattern\s*\(", body):
                    if strict:
                        break
                    return Reply(
                        program=body.strip("\n"),
                        problems=(problem, "used the fenced Python block as the program"),
                    )
        raise ReplyError([problem])

    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        problems.append(f"missing key(s): {', '.join(repr(k) for k in missing)}")
    fatal: list[str] = []
    program = obj.get("program")
    if program is None:
        fatal.append("no 'program' in the reply")
    elif not isinstance(program, str):
        fatal.append(f"'program' must be a string of Python source, got {type(program).__name__}")
    else:
        program = _strip_fences(program)
        if not program.strip():
            fatal.append("'program' is empty")
        elif not re.search(r"def\s+pattern\s*\(", program):
            fatal.append("'program' does not define `def pattern(ctx):`")

    hyps = obj.get("hypotheses", [])
    if isinstance(hyps, str):
        problems.append("'hypotheses' should be a list of strings, got one string")
        hyps = [hyps]
    elif not isinstance(hyps, list) or not all(isinstance(h, str) for h in hyps):
        problems.append(f"'hypotheses' must be a list of strings, got {json.dumps(hyps)[:80]}")
        hyps = [str(h) for h in hyps] if isinstance(hyps, list) else []
    if hyps and len(hyps) != 3:
        problems.append(f"expected three hypotheses, got {len(hyps)}")

    chosen_raw = obj.get("chosen", "")
    if isinstance(chosen_raw, bool):
        problems.append(f"'chosen' must be an index or a hypothesis, got {chosen_raw!r}")
        chosen = ""
    elif isinstance(chosen_raw, int):
        if 0 <= chosen_raw < len(hyps):
            chosen = hyps[chosen_raw]
        elif 1 <= chosen_raw <= len(hyps):  # a 1-based index
            chosen = hyps[chosen_raw - 1]
            problems.append(f"'chosen' {chosen_raw} read as 1-based")
        else:
            problems.append(f"'chosen' index {chosen_raw} is outside the {len(hyps)} hypotheses")
            chosen = ""
    elif isinstance(chosen_raw, str):
        chosen = chosen_raw
    else:
        problems.append(f"'chosen' must be an index or a string, got {type(chosen_raw).__name__}")
        chosen = ""

    evidence = obj.get("evidence", "")
    if isinstance(evidence, list):
        evidence = "\n".join(str(e) for e in evidence)
    elif not isinstance(evidence, str):
        problems.append(f"'evidence' must be a string, got {type(evidence).__name__}")
        evidence = json.dumps(evidence)[:500]
    matrix = obj.get("matrix", "")
    if not isinstance(matrix, str):
        matrix = json.dumps(matrix)[:2000]

    if fatal or (strict and problems):
        raise ReplyError(fatal + problems)
    return Reply(
        program=program,
        hypotheses=tuple(hyps),
        chosen=chosen,
        evidence=evidence,
        matrix=matrix,
        problems=tuple(problems),
    )
