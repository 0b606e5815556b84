"""The concrete hypothesizers that need no network, and `make_backend` to build any by name.

- `LocalChatModel`: a transformers chat model on this machine (default SmolLM2-135M-Instruct,
  greedy decoding). Small models often fail; every failure is a `Proposal` with a status.
- `ProgramSearch`: no language model at all; `attn_tools.automate.hypothesize.search.fit_program`.
- `OpenAICompatible` (chat completions over HTTP) lives in `http_chat`.

`make_backend(name, **kwargs)` builds one by name (``search``, ``local``, ``openai``, ``gemini``,
``ollama``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from attn_tools.automate.hypothesize.base import (
    BackendError,
    ChatHypothesizer,
    HeadTask,
    Hypothesizer,
    Proposal,
)
from attn_tools.automate.hypothesize.http_chat import OpenAICompatible
from attn_tools.patterns.base import Pattern, PatternContext

__all__ = ["LocalChatModel", "ProgramSearch", "make_backend"]


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

    def reuse(self, bundle: Any) -> bool:
        """Use the already loaded ``bundle`` as the chat model when it is the model this backend
        would load (so an analysed chat model is not loaded twice). Returns whether it was."""
        if self._bundle is None and self.model_name == getattr(bundle, "source", None):
            self._bundle = bundle
            return True
        return False

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
    trusted_programs = True  # programs are assembled from this project's own templates

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
