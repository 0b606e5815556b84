"""Step 3: hypothesizers — whatever turns a head's examples into a pattern program.

One abstract `Hypothesizer` with one class per backend:

- `OpenAICompatible`: chat completions over HTTP (OpenAI, Gemini's OpenAI-compatible endpoint,
  Ollama, vLLM, llama.cpp servers), with timeouts, retries with backoff and clear errors. The API
  key is read from an environment variable at call time; it is never stored on the object, written
  to disk or shown in an error (errors are scrubbed of it).
- `LocalChatModel`: a transformers chat model on this machine (default SmolLM2-135M-Instruct,
  greedy decoding). Small models often fail; every failure is a `Proposal` with a status.
- `ProgramSearch`: no language model at all; `attn_tools.automate.hypothesize.search.fit_program`.

`make_backend(name, **kwargs)` builds one by name (``search``, ``local``, ``openai``, ``gemini``,
``ollama``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
    "LocalChatModel",
    "OpenAICompatible",
    "ProgramSearch",
    "Proposal",
    "RateLimitError",
    "ServerError",
    "make_backend",
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

    @abstractmethod
    def propose(self, task: HeadTask) -> Proposal:
        """One proposal for ``task``. Failures are returned as a `Proposal` with a status, except
        `AuthenticationError`, which is raised: no later head could succeed either."""

    def describe(self) -> dict[str, Any]:
        """Settings for the run record (JSON-ready, never a secret)."""
        return {"backend": self.name}


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
        text = "".join(f"[{m['role']}]\n{m['content']}\n\n" for m in messages)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        base = {"backend": self.name, "prompt": text, "prompt_hash": digest}
        try:
            raw = self.complete(messages)
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


# ----------------------------------------------------------------------------- OpenAI-compatible

_KEYISH = re.compile(r"[A-Za-z0-9_\-\.\*]{8,}")


class OpenAICompatible(ChatHypothesizer):
    """Chat completions over HTTP (``POST {base_url}/chat/completions``).

    Works with OpenAI (``https://api.openai.com/v1``), Gemini's OpenAI-compatible endpoint
    (``https://generativelanguage.googleapis.com/v1beta/openai``), Ollama
    (``http://localhost:11434/v1``), vLLM and llama.cpp servers.

    Args:
        base_url: the API root, up to and excluding ``/chat/completions``.
        model: the model name the server expects.
        api_key_env: the environment variable that holds the key (read at each call, never
            stored); None for servers without keys. A missing variable sends no key.
        timeout: seconds per HTTP request.
        max_retries: retries after a 429, a 5xx, a timeout or a refused connection.
        backoff: first retry delay in seconds, doubled each retry (with jitter), at most
            ``max_backoff``; a server's ``Retry-After`` is honoured up to ``max_backoff``.
        temperature, max_tokens: sampling settings sent with each request.
        library, max_sentences, max_pairs: prompt settings (see `build_prompt`).

    Example:
        >>> backend = OpenAICompatible("https://api.openai.com/v1", "gpt-4o-mini")
        >>> # export OPENAI_API_KEY=... in the shell that starts Jupyter
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        model: str = "gpt-4o-mini",
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        library: Sequence[str | Pattern] | None = None,
        max_sentences: int | None = 12,
        max_pairs: int | None = None,
    ) -> None:
        super().__init__(library=library, max_sentences=max_sentences, max_pairs=max_pairs)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must start with http:// or https://, got {base_url!r}. "
                "Fix: e.g. https://api.openai.com/v1 or http://localhost:11434/v1"
            )
        if max_retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("max_retries must be >= 0, timeout > 0 and backoff >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.temperature = temperature
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return (
            f"OpenAICompatible(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    # -- secrets

    def _key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        return key.strip() if key and key.strip() else None

    def _scrub(self, text: str) -> str:
        """Remove the key, and anything that looks like part of it, from ``text``."""
        key = self._key()
        text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
        if not key:
            return text
        text = text.replace(key, "***")
        head, tail = key[:6], key[-4:]

        def mask(m: re.Match[str]) -> str:
            token = m.group(0)
            return "***" if (len(key) >= 8 and (head in token or tail in token)) else token

        return _KEYISH.sub(mask, text)

    # -- HTTP

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff)
            except ValueError:
                pass
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * (0.5 + random.random() / 2)

    def complete(self, messages: list[dict[str, str]]) -> str:
        url = f"{self.base_url}/chat/completions"
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        last_status: int | None = None
        retry_after: str | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt - 1, retry_after))
            retry_after = None
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    payload = resp.read(8 * 1024 * 1024)
            except urllib.error.HTTPError as exc:
                status = exc.code
                detail = self._scrub(_error_detail(exc))
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if status in (401, 403):
                    where = (
                        f"${self.api_key_env} is not set"
                        if self.api_key_env and key is None
                        else f"the key in ${self.api_key_env}"
                        if self.api_key_env
                        else "no key was sent (api_key_env=None)"
                    )
                    raise AuthenticationError(
                        f"{url} refused the request with HTTP {status} ({detail}); {where}. "
                        f"Fix: export {self.api_key_env or 'YOUR_KEY_VARIABLE'}=<a valid key for "
                        "this endpoint> before starting Python, or pass api_key_env=.",
                        status=status,
                    ) from None
                if status == 429 or status >= 500 or status == 408:
                    last, last_status = f"HTTP {status}: {detail}", status
                    continue
                raise BackendError(
                    f"{url} answered HTTP {status}: {detail}. Fix: check the model name "
                    f"({self.model!r}) and base_url.",
                    status=status,
                ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                last, last_status = f"no answer ({self._scrub(str(reason))})", None
                continue
            return self._content(payload, url)
        if last_status == 429:
            raise RateLimitError(
                f"{url} kept answering 429 (rate limited) after {self.max_retries + 1} attempts: "
                f"{last}. Fix: wait, lower the request rate, or raise max_retries/backoff.",
                status=429,
            )
        raise ServerError(
            f"{url} failed after {self.max_retries + 1} attempts: {last}. Fix: check that the "
            "server is up and reachable, or raise timeout/max_retries.",
            status=last_status,
        )

    def _content(self, payload: bytes, url: str) -> str:
        try:
            data = json.loads(payload.decode("utf-8"))
            content = data["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError):
            snippet = self._scrub(payload[:200].decode("utf-8", "replace"))
            raise BackendError(
                f"{url} returned something that is not a chat completion: {snippet!r}"
            ) from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BackendError(f"{url} returned a message without text content")
        return content


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read(4096).decode("utf-8", "replace")
    except Exception:
        return exc.reason if isinstance(exc.reason, str) else "no detail"
    try:
        data = json.loads(raw)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
        return str(err)[:300]
    except json.JSONDecodeError:
        return raw.strip()[:300] or str(exc.reason)


# ----------------------------------------------------------------------------- local chat model


class LocalChatModel(ChatHypothesizer):
    """A transformers chat model on this machine, decoding greedily.

    The default, SmolLM2-135M-Instruct, is the offline default model: tiny, so it often fails to
    give a usable program; every failure is a `Proposal` with a status, never an exception. The
    prompt is the compact one (`build_prompt` with ``compact=True``: a few hundred tokens, since
    a CPU prefill of thousands of tokens takes minutes), and the reply is started with
    ``prefill`` so the model continues a JSON object.

    Args:
        name: a `load_model` alias or id (ignored when ``bundle`` is given).
        bundle: an already loaded `ModelBundle` with a chat template (reused, not reloaded).
        max_new_tokens: reply length limit.
        threads: torch threads while generating (restored afterwards); None keeps torch's
            setting. Decoding a small model is latency-bound, and one thread does not fight
            other work for the cores (oversubscribed threads slow CPU decoding several-fold).
    """

    name = "local"

    def __init__(
        self,
        name: str = "smollm2",
        *,
        bundle: Any = None,
        max_new_tokens: int = 384,
        library: Sequence[str | Pattern] | None = ("previous_token",),
        max_sentences: int | None = 3,
        max_pairs: int | None = 6,
        prefill: str = '{"hypotheses": ["',
        compact: bool = True,
        threads: int | None = 1,
    ) -> None:
        super().__init__(
            library=library,
            max_sentences=max_sentences,
            max_pairs=max_pairs,
            prefill=prefill,
            compact=compact,
        )
        self.threads = threads
        self.model_name = name if bundle is None else bundle.source
        self._bundle = bundle
        self.max_new_tokens = int(max_new_tokens)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model": self.model_name,
            "max_new_tokens": self.max_new_tokens,
            "max_sentences": self.max_sentences,
            "max_pairs": self.max_pairs,
            "compact": self.compact,
            "threads": self.threads,
            "decoding": "greedy",
        }

    @property
    def bundle(self) -> Any:
        if self._bundle is None:
            from attn_tools.models import load_model

            self._bundle = load_model(self.model_name)
        return self._bundle

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        try:
            bundle = self.bundle
            tok = bundle.tokenizer
            if not getattr(tok, "chat_template", None):
                raise BackendError(
                    f"{self.model_name!r} has no chat template; LocalChatModel needs an "
                    "instruction-tuned chat model (e.g. smollm2)"
                )
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            text += self.prefill
            enc = tok(text, return_tensors="pt", add_special_tokens=False)
            n_in = int(enc["input_ids"].shape[1])
            if n_in + self.max_new_tokens > bundle.max_length:
                raise BackendError(
                    f"the prompt has {n_in} tokens; with {self.max_new_tokens} new tokens it "
                    f"exceeds {bundle.name}'s context of {bundle.max_length}. Fix: lower "
                    "max_sentences/max_pairs."
                )
            model = bundle.model
            before = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(int(self.threads))
            try:
                out = self._generate(model, enc, tok, bundle.device)
            finally:
                torch.set_num_threads(before)
            reply = tok.decode(out[0, n_in:], skip_special_tokens=True)
        except BackendError:
            raise
        except Exception as exc:  # a local model failing is a result, not a crash
            raise BackendError(f"local generation failed: {type(exc).__name__}: {exc}") from exc
        return self.prefill + reply

    def _generate(self, model: Any, enc: Any, tok: Any, device: Any) -> Any:
        import torch

        with torch.no_grad():
            return model.generate(
                input_ids=enc["input_ids"].to(device),
                attention_mask=enc["attention_mask"].to(device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )


# ----------------------------------------------------------------------------- program search


class ProgramSearch(Hypothesizer):
    """No language model: search readable programs built from the registry (see
    `attn_tools.automate.hypothesize.search`) and return the best as source plus a one-line hypothesis.

    Refinement rounds widen the search by one more candidate rule per round (cross-validation
    still decides how many are kept); the loop stops when the program no longer changes.
    The atoms of the example sentences are computed once and reused for every head.
    """

    name = "program-search"

    def __init__(
        self,
        *,
        patterns: Sequence[str | Pattern] | None = None,
        max_rules: int = 4,
        max_terms: int = 3,
        min_gain: float = 0.003,
        min_support: int = 4,
        folds: int = 2,
    ) -> None:
        self.patterns = None if patterns is None else list(patterns)
        self.max_rules = max_rules
        self.max_terms = max_terms
        self.min_gain = min_gain
        self.min_support = min_support
        self.folds = folds
        self._space: Any = None
        self._last: tuple[Any, int, int, Proposal] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "patterns": None if self.patterns is None else [str(p) for p in self.patterns],
            "max_rules": self.max_rules,
            "max_terms": self.max_terms,
            "min_gain": self.min_gain,
            "min_support": self.min_support,
            "folds": self.folds,
        }

    def space_for(self, contexts: Sequence[PatternContext]) -> Any:
        """The search space of these sentences (cached for the last set seen)."""
        from attn_tools.automate.hypothesize.search import SearchSpace

        key = tuple((c.text, tuple(c.tokens)) for c in contexts)
        if self._space is None or self._space.key != key:
            self._space = SearchSpace(contexts, patterns=self.patterns)
        return self._space

    def propose(self, task: HeadTask) -> Proposal:
        from attn_tools.automate.hypothesize.search import fit_program

        start = time.perf_counter()
        extra = task.round
        space = self.space_for(task.contexts)
        key = (space.key, task.layer, task.head)
        last = self._last
        if task.round > 0 and last is not None and last[0] == key and last[1] < last[2]:
            # cross-validation already kept fewer rules than allowed: a wider search gives the
            # same program, so say so instead of searching again
            return replace(last[3], message="unchanged: the search already had room to spare")
        try:
            prog = fit_program(
                space,
                list(task.attention),
                max_rules=self.max_rules + extra,
                max_terms=self.max_terms,
                min_gain=self.min_gain,
                min_support=self.min_support,
                folds=self.folds,
            )
        except (ValueError, FloatingPointError) as exc:
            return Proposal(
                backend=self.name,
                status="backend_error",
                message=f"program search failed: {exc}",
                elapsed_s=time.perf_counter() - start,
            )
        proposal = Proposal(
            backend=self.name,
            status="ok",
            program=prog.source,
            hypothesis=prog.hypothesis,
            hypotheses=(prog.hypothesis,),
            evidence=(
                f"fitted on {len(task.contexts)} example sentences: mean JSD "
                f"{prog.train_score:.3f} (best single pattern {prog.single_name}: "
                f"{prog.single_score:.3f})"
            ),
            message="searched",
            elapsed_s=time.perf_counter() - start,
            details={
                "train_score": prog.train_score,
                "single_name": prog.single_name,
                "single_score": prog.single_score,
                **{k: v for k, v in prog.details.items() if k != "cv_scores"},
                "cv_scores": {str(k): v for k, v in prog.details.get("cv_scores", {}).items()},
            },
        )
        self._last = (key, len(prog.rules), self.max_rules + extra, proposal)
        return proposal


# ----------------------------------------------------------------------------- by name

_PRESETS: dict[str, dict[str, Any]] = {
    "openai": {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
               "api_key_env": "OPENAI_API_KEY"},
    "gemini": {"base_url": "https://generativelanguage.googleapis.com/v1beta/openai",
               "model": "gemini-2.0-flash", "api_key_env": "GEMINI_API_KEY"},
    "ollama": {"base_url": "http://localhost:11434/v1", "model": "llama3.1",
               "api_key_env": None},
}  # fmt: skip


def make_backend(name: str, /, **kwargs: Any) -> Hypothesizer:
    """A hypothesizer by name (``name`` is positional-only, so ``LocalChatModel``'s own
    ``name=`` passes through ``kwargs``).

    ``"search"`` → `ProgramSearch`; ``"local"`` → `LocalChatModel`; ``"openai"``, ``"gemini"``,
    ``"ollama"`` → `OpenAICompatible` with that service's defaults (``base_url``, ``model``,
    ``api_key_env``), any of which ``kwargs`` override (``None`` for ``model`` or ``base_url``
    keeps the default); ``"openai-compatible"`` needs ``base_url`` and ``model``.

    Example:
        >>> make_backend("gemini", model="gemini-2.5-flash")   # key from $GEMINI_API_KEY
    """
    key = str(name).strip().lower().replace("_", "-")
    if key in ("search", "program-search", "programsearch"):
        return ProgramSearch(**kwargs)
    if key in ("local", "local-chat", "smollm2"):
        if kwargs.get("name") is None:
            kwargs.pop("name", None)
        return LocalChatModel(**kwargs)
    if key in _PRESETS:
        # an unset model or base_url (None, e.g. from a command line) keeps the preset's
        given = {k: v for k, v in kwargs.items() if v is not None or k == "api_key_env"}
        return OpenAICompatible(**{**_PRESETS[key], **given})
    if key in ("openai-compatible", "http"):
        if "base_url" not in kwargs or "model" not in kwargs:
            raise ValueError("make_backend('openai-compatible') needs base_url= and model=")
        return OpenAICompatible(**kwargs)
    raise ValueError(
        f"unknown backend {name!r}. Fix: use one of search, local, openai, gemini, ollama, "
        "openai-compatible."
    )
