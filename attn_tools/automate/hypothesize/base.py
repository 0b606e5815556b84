"""The hypothesizer contract: what a backend sees about a head and what it answers.

- `HeadTask`: a head's examples, contexts and attention on the example sentences (never the
  held-out ones), plus the previous round's `Feedback`.
- `Proposal`: one round's answer: a program and its hypothesis, or a status saying why not.
- `Hypothesizer`: the abstract backend; `ChatHypothesizer` adds prompt building and reply parsing
  for chat models, so a chat backend implements only `ChatHypothesizer.complete`.
- `BackendError` and its subclasses: a backend that could not answer.

Secrets: `Hypothesizer.scrub` removes whatever the backend must never write (an API key) from a
text; the chat hypothesizer scrubs the reply before parsing it, so the reply file, the proposal,
the program and a library entry derived from it can never hold the key.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from attn_tools.automate.hypothesize.prompt import (
    Feedback,
    Prompt,
    ReplyError,
    build_prompt,
    feedback_message,
    parse_reply,
)
from attn_tools.patterns.base import Pattern, PatternContext

__all__ = [
    "AuthenticationError",
    "BackendError",
    "ChatHypothesizer",
    "HeadTask",
    "Hypothesizer",
    "Proposal",
    "ProposalStatus",
    "RateLimitError",
    "ServerError",
]

ProposalStatus = Literal["ok", "unparseable", "backend_error"]


# ----------------------------------------------------------------------------- errors


class BackendError(RuntimeError):
    """A backend could not answer: network failure, HTTP error, or a response of the wrong shape.

    ``status`` is the HTTP status when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class AuthenticationError(BackendError):
    """HTTP 401/403: the key is missing, wrong, or not allowed this model. Not retried."""


class RateLimitError(BackendError):
    """HTTP 429 after every retry."""


class ServerError(BackendError):
    """HTTP 5xx (or no connection) after every retry."""


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True, eq=False)
class HeadTask:
    """Everything a hypothesizer may see about one head: never the held-out sentences.

    Attributes:
        examples: the `head_examples` JSON document of the example sentences.
        contexts: `PatternContext` of each example sentence.
        attention: the head's ``[n, n]`` attention on each example sentence.
        round: 0 for the first proposal, then 1, 2, ... in the refinement loop.
        feedback: what went wrong with the previous round's program (None in round 0).
    """

    examples: dict[str, Any]
    contexts: tuple[PatternContext, ...]
    attention: tuple[np.ndarray, ...]
    round: int = 0
    feedback: Feedback | None = None

    @property
    def layer(self) -> int:
        return int(self.examples["layer"])

    @property
    def head(self) -> int:
        return int(self.examples["head"])


@dataclass(frozen=True)
class Proposal:
    """A hypothesizer's answer for one round.

    Attributes:
        backend: the backend's name.
        status: ``ok`` (a program to run), ``unparseable`` (a reply without a usable program) or
            ``backend_error`` (no reply: network, HTTP or model failure).
        program: Python source defining ``pattern(ctx)``, or None.
        hypothesis: the chosen hypothesis in one line.
        hypotheses, evidence, matrix: as the model gave them (empty for program search).
        prompt: the full text sent (None for program search); ``prompt_hash`` its sha256.
        raw_reply: the model's reply exactly as received.
        problems: what was malformed (tolerated or fatal).
        message: one line on what happened.
        details: backend-specific facts (fitted train score, timings, ...), JSON-ready.
    """

    backend: str
    status: ProposalStatus
    program: str | None = None
    hypothesis: str = ""
    hypotheses: tuple[str, ...] = ()
    evidence: str = ""
    matrix: str = ""
    prompt: str | None = None
    prompt_hash: str | None = None
    raw_reply: str | None = None
    problems: tuple[str, ...] = ()
    message: str = ""
    elapsed_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.program)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the prompt and reply texts are saved as separate files by the loop)."""
        return {
            "backend": self.backend,
            "status": self.status,
            "hypothesis": self.hypothesis,
            "hypotheses": list(self.hypotheses),
            "evidence": self.evidence,
            "matrix": self.matrix,
            "prompt_hash": self.prompt_hash,
            "problems": list(self.problems),
            "message": self.message,
            "elapsed_s": round(self.elapsed_s, 3),
            "details": self.details,
        }


# ----------------------------------------------------------------------------- the interface


class Hypothesizer(ABC):
    """Proposes a pattern program for a head from its examples (one class per backend)."""

    name: str = "hypothesizer"
    #: True only when this project writes the programs itself (program search): the sandbox may
    #: then run them in-process. Anything a language model wrote is untrusted.
    trusted_programs: bool = False

    @abstractmethod
    def propose(self, task: HeadTask) -> Proposal:
        """One proposal for ``task``. Failures are returned as a `Proposal` with a status, except
        `AuthenticationError`, which is raised: no later head could succeed either."""

    def describe(self) -> dict[str, Any]:
        """Settings for the run record (JSON-ready, never a secret)."""
        return {"backend": self.name}

    def scrub(self, text: str) -> str:
        """``text`` without any secret this backend holds (nothing to remove by default).

        Whoever writes a backend's output to disk passes it through here first.
        """
        return text


class ChatHypothesizer(Hypothesizer):
    """A hypothesizer that asks a chat model: builds the prompt, parses the reply.

    Subclasses implement `complete`. In refinement rounds the conversation is the original prompt,
    the previous reply and a feedback message (`feedback_message`).
    """

    def __init__(
        self,
        *,
        library: Sequence[str | Pattern] | None = None,
        max_sentences: int | None = None,
        max_pairs: int | None = None,
        prefill: str = "",
        compact: bool = False,
    ) -> None:
        self.library = library
        self.max_sentences = max_sentences
        self.max_pairs = max_pairs
        self.prefill = prefill
        self.compact = compact

    @abstractmethod
    def complete(self, messages: list[dict[str, str]]) -> str:
        """The assistant's reply to ``messages``; raises `BackendError` when there is none."""

    def prompt_for(self, task: HeadTask) -> Prompt:
        return build_prompt(
            task.examples,
            library=self.library,
            max_sentences=self.max_sentences,
            max_pairs=self.max_pairs,
            compact=self.compact,
        )

    def messages_for(self, task: HeadTask) -> list[dict[str, str]]:
        messages = self.prompt_for(task).messages
        fb = task.feedback
        if fb is not None and fb.previous_reply:
            messages += [
                {"role": "assistant", "content": fb.previous_reply},
                {"role": "user", "content": feedback_message(fb)},
            ]
        return messages

    def propose(self, task: HeadTask) -> Proposal:
        start = time.perf_counter()
        messages = self.messages_for(task)
        text = self.scrub("".join(f"[{m['role']}]\n{m['content']}\n\n" for m in messages))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        base = {"backend": self.name, "prompt": text, "prompt_hash": digest}
        try:
            # scrubbed before parsing: the reply file, the program and any library entry made
            # from it are then free of the key even when a server echoes it back
            raw = self.scrub(self.complete(messages))
        except AuthenticationError:
            raise
        except BackendError as exc:
            return Proposal(
                status="backend_error",
                message=str(exc),
                elapsed_s=time.perf_counter() - start,
                **base,
            )
        try:
            reply = parse_reply(raw)
        except ReplyError as exc:
            return Proposal(
                status="unparseable",
                raw_reply=raw,
                problems=tuple(exc.problems),
                message=f"the reply holds no usable program: {exc}",
                elapsed_s=time.perf_counter() - start,
                **base,
            )
        return Proposal(
            status="ok",
            program=reply.program,
            hypothesis=reply.chosen or (reply.hypotheses[0] if reply.hypotheses else ""),
            hypotheses=reply.hypotheses,
            evidence=reply.evidence,
            matrix=reply.matrix,
            raw_reply=raw,
            problems=reply.problems,
            message="parsed"
            + (f" with {len(reply.problems)} problem(s)" if reply.problems else ""),
            elapsed_s=time.perf_counter() - start,
            **base,
        )
