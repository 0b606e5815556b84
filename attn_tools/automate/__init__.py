"""Automating head categorisation: can a program say what an attention head does?

The pipeline, one public function per step:

1. `head_examples` — a head's top-weighted (query, key, weight) pairs as versioned JSON.
2. `build_prompt` / `parse_reply` — the prompt for a language model and its reply's parser.
3. Hypothesizers — `OpenAICompatible` (any chat-completions server), `LocalChatModel`
   (transformers, offline) and `ProgramSearch` (no language model); `make_backend` by name.
4. `run_program` — the sandbox: AST allow-list, then a child process with CPU, memory and
   wall-clock limits; every failure is a structured `SandboxResult`.
5. `HeadScorer` (``evaluate``) — metric-aware scores of a program against a head, the best
   built-in pattern and the library; `fair_baselines` (``fair``) — what a program must also
   beat to count as a discovery: the best built-in smoothed with uniform and a fitted mix of
   built-ins.
6. `automate_head` / `automate_heads` (``loop``) — refine, validate on held-out sentences and grow
   a `UserLibrary` on disk, in a `RunFolder` (``run``) that owns every file write, resumes, and
   stays consistent after ``kill -9``.

Layout by role: ``hypothesize/`` (chat backends, program search, prompt and reply), ``sandbox``,
``evaluate``, ``fair``, ``run``, ``library``, ``loop``.

Example:
    >>> from attn_tools import load_model
    >>> from attn_tools.automate import automate_heads, make_backend
    >>> df = automate_heads(load_model("smollm2"), [(5, 3)], backend=make_backend("search"),
    ...                     out="runs/smollm2")
"""

from __future__ import annotations

from attn_tools.automate.evaluate import HeadScorer, LibraryMatch, ranking_metric
from attn_tools.automate.examples import SCHEMA, SCHEMA_VERSION, check_examples, head_examples
from attn_tools.automate.fair import fair_baselines, smoothed_scores
from attn_tools.automate.hypothesize.backends import LocalChatModel, ProgramSearch, make_backend
from attn_tools.automate.hypothesize.base import (
    AuthenticationError,
    BackendError,
    ChatHypothesizer,
    HeadTask,
    Hypothesizer,
    Proposal,
    RateLimitError,
    ServerError,
)
from attn_tools.automate.hypothesize.http_chat import OpenAICompatible
from attn_tools.automate.hypothesize.prompt import (
    Feedback,
    Prompt,
    Reply,
    ReplyError,
    build_prompt,
    feedback_message,
    format_matrix,
    parse_reply,
)
from attn_tools.automate.hypothesize.search import FittedProgram, SearchSpace, fit_program
from attn_tools.automate.library import LibraryEntry, UserLibrary, sandboxed_pattern
from attn_tools.automate.loop import MAX_ROUNDS, automate_head, automate_heads, builtin_patterns
from attn_tools.automate.run import HeadFolder, HeadResult, LibraryAction, RunFolder
from attn_tools.automate.sandbox import (
    SandboxResult,
    check_program,
    precomputed_pattern,
    run_program,
)

__all__ = [
    "MAX_ROUNDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "AuthenticationError",
    "BackendError",
    "ChatHypothesizer",
    "Feedback",
    "FittedProgram",
    "HeadFolder",
    "HeadResult",
    "HeadScorer",
    "HeadTask",
    "Hypothesizer",
    "LibraryAction",
    "LibraryEntry",
    "LibraryMatch",
    "LocalChatModel",
    "OpenAICompatible",
    "ProgramSearch",
    "Prompt",
    "Proposal",
    "RateLimitError",
    "Reply",
    "ReplyError",
    "RunFolder",
    "SandboxResult",
    "SearchSpace",
    "ServerError",
    "UserLibrary",
    "automate_head",
    "automate_heads",
    "build_prompt",
    "builtin_patterns",
    "check_examples",
    "check_program",
    "fair_baselines",
    "feedback_message",
    "fit_program",
    "format_matrix",
    "head_examples",
    "make_backend",
    "parse_reply",
    "precomputed_pattern",
    "ranking_metric",
    "run_program",
    "sandboxed_pattern",
    "smoothed_scores",
]
