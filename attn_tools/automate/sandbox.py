"""Run an untrusted pattern program safely: check its syntax tree, then run it in a child process.

`run_program` never raises for anything the program does. It returns a `SandboxResult` whose
``status`` is one of

- ``ok``: every output matrix passed validation (``result.matrices`` holds them);
- ``rejected``: the static check refused the source (imports other than numpy/math, file,
  network, process or introspection access, dunder attributes, ``exec``/``eval``/``open``, ...);
- ``timeout``: the wall-clock or CPU-time limit was reached;
- ``crashed``: the program raised, hit the memory limit, or the child process died;
- ``invalid_output``: a returned value was not a finite, non-negative ``[n, n]`` array (and, for
  causal models, one with no weight on later tokens).

The program has the registry's signature, ``def pattern(ctx) -> np.ndarray``. In the child, ``ctx``
is a read-only, plain-data copy of `PatternContext` (same attribute names: ``n``, ``tokens``,
``token_ids``, ``offsets``, ``special_mask``, ``kind``, ``causal``, ``words``, ``alignment``,
``token_word``, ``stripped_tokens``, ``words_to_tokens``) plus ``token_pos``, ``token_dep``,
``token_is_punct`` and ``builtin("name", fallback=True)``, which returns a registry pattern's
normalised prediction (computed here, in the parent, before the child starts; with
``fallback=False`` the rows the pattern does not predict are zero).

Defence in depth: the child runs ``python -I`` on a file that imports only numpy; it gets a
restricted ``__builtins__`` (no ``open``, ``__import__`` of anything but numpy/math, ``getattr``,
...), limits on CPU time and address space, no file-size allowance, no new file descriptors (so no
files, sockets or pipes), no new processes (it drops root first when it has it), and its own
process group, which is killed whole on a wall-clock timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from attn_tools.automate import _child
from attn_tools.patterns.base import (
    Pattern,
    PatternContext,
    PatternError,
    build_contexts,
    get_pattern,
    predict,
)

__all__ = [
    "SandboxResult",
    "SandboxStatus",
    "check_program",
    "contexts_of",
    "precomputed_pattern",
    "run_program",
]

SandboxStatus = Literal["ok", "rejected", "timeout", "crashed", "invalid_output"]

_CHILD = Path(_child.__file__).resolve()


@dataclass(frozen=True, eq=False)
class SandboxResult:
    """What happened when a program ran on some sentences.

    Attributes:
        status: ``ok``, ``rejected``, ``timeout``, ``crashed`` or ``invalid_output``.
        message: one line saying what happened (the first problem when not ok).
        problems: every problem found (static-check findings, per-sentence errors).
        matrices: when ok, one validated raw ``[n, n]`` float64 output per sentence.
        elapsed_s: wall-clock seconds, including the child's start.
        printed: what the program printed (truncated).
    """

    status: SandboxStatus
    message: str
    problems: tuple[str, ...] = ()
    matrices: tuple[np.ndarray, ...] = field(default=(), repr=False)
    elapsed_s: float = 0.0
    printed: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the matrices are described by their shapes only)."""
        return {
            "status": self.status,
            "message": self.message,
            "problems": list(self.problems),
            "shapes": [list(m.shape) for m in self.matrices],
            "elapsed_s": round(self.elapsed_s, 3),
            "printed": self.printed,
        }


def check_program(source: str) -> list[str]:
    """The static check alone: a list of problems, empty when the program may run.

    Example:
        >>> check_program("import os\\ndef pattern(ctx):\\n    return os.listdir('.')")
        ["line 1: import of 'os' is not allowed (only numpy and math)"]
    """
    return _child.check_source(source)


def contexts_of(sentences: Sequence[Any]) -> list[PatternContext]:
    """`PatternContext`s for records or contexts (records are parsed in one batched spaCy pass)."""
    items = list(sentences)
    todo = [i for i, s in enumerate(items) if not isinstance(s, PatternContext)]
    if todo:
        made = build_contexts([items[i] for i in todo])
        for i, ctx in zip(todo, made):
            items[i] = ctx
    return items


def _plain(
    ctx: PatternContext, builtins: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    return {
        "text": ctx.text,
        "tokens": list(ctx.tokens),
        "token_ids": [int(i) for i in ctx.token_ids],
        "offsets": [[int(s), int(e)] for s, e in ctx.offsets],
        "special_mask": [bool(b) for b in ctx.special_mask],
        "kind": ctx.kind,
        "words": [
            [w.text, w.start, w.end, w.pos, w.tag, w.dep, w.head, w.lemma, w.is_punct]
            for w in ctx.words
        ],
        "token_words": [list(ws) for ws in ctx.alignment.token_words],
        "word_tokens": [list(ts) for ts in ctx.alignment.word_tokens],
        "units": [[list(ts), list(ws)] for ts, ws in ctx.alignment.units],
        "builtins": {
            k: {"matrix": _child.encode_matrix(m), "has_mass": [bool(b) for b in mass]}
            for k, (m, mass) in builtins.items()
        },
    }


def _child_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "SYSTEMROOT") if k in os.environ}
    # one thread each: a memory limit and thread pools do not mix, and the parent has the cores
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _snippet(text: str) -> str:
    return text[:50] + ("..." if len(text) > 50 else "")


def _validate(m: np.ndarray, ctx: PatternContext, index: int) -> str | None:
    where = f"sentence {index} ({_snippet(ctx.text)!r})"
    if m.shape != (ctx.n, ctx.n):
        return f"{where}: returned shape {tuple(m.shape)}, expected ({ctx.n}, {ctx.n})"
    if not np.isfinite(m).all():
        return f"{where}: returned NaN or infinite values"
    if (m < 0).any():
        return f"{where}: returned negative values (min {m.min():.3g})"
    if ctx.causal:
        ahead = np.triu(m, 1)
        if (ahead > 0).any():
            q, k = np.unravel_index(int(np.argmax(ahead)), ahead.shape)
            return (
                f"{where}: row {q} puts weight {ahead[q, k]:.3g} on the later token {k}; a causal "
                "model cannot attend ahead (use np.tril on the matrix)"
            )
    return None


def run_program(
    source: str,
    sentences: Sequence[Any],
    *,
    cpu_seconds: float = 5.0,
    memory_mb: int = 512,
    timeout: float = 30.0,
) -> SandboxResult:
    """Check ``source`` and run its ``pattern(ctx)`` on each sentence in a limited child process.

    Args:
        source: Python source defining ``def pattern(ctx) -> np.ndarray``.
        sentences: `PatternContext`s or `SentenceAttention` records (parsed here if needed).
        cpu_seconds: CPU-time limit of the child (all sentences together).
        memory_mb: address space the child may add after its start.
        timeout: wall-clock limit in seconds; the child's process group is killed after it.

    Returns:
        A `SandboxResult`; never raises for anything the program does.

    Example:
        >>> res = run_program("def pattern(ctx):\\n    return np.eye(ctx.n, k=-1)", records)
        >>> res.status, res.matrices[0].shape
        ('ok', (12, 12))
    """
    start = time.perf_counter()

    def done(status: SandboxStatus, problems: Sequence[str], **kw: Any) -> SandboxResult:
        problems = tuple(problems)
        message = problems[0] if problems else kw.pop("message", status)
        kw.pop("message", None)
        return SandboxResult(
            status=status,
            message=message,
            problems=problems,
            elapsed_s=time.perf_counter() - start,
            **kw,
        )

    problems = check_program(source)
    if problems:
        return done("rejected", problems)
    contexts = contexts_of(sentences)
    if not contexts:
        return done("ok", [], message="no sentences")

    builtins: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [{} for _ in contexts]
    for name in _child.builtin_names(source):
        try:
            pat = get_pattern(name)
        except PatternError as exc:
            return done("rejected", [f"ctx.builtin({name!r}): {exc}"])
        try:
            for slot, ctx in zip(builtins, contexts):
                slot[name] = predict(pat, ctx)
        except PatternError as exc:
            return done("crashed", [f"ctx.builtin({name!r}) failed: {exc}"])

    payload = {
        "source": source,
        "cpu_seconds": float(cpu_seconds),
        "memory_mb": int(memory_mb),
        "contexts": [_plain(c, b) for c, b in zip(contexts, builtins)],
    }
    data = json.dumps(payload).encode("utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-I", str(_CHILD)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
        cwd="/",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        return done(
            "timeout", [f"the program ran longer than the wall-clock limit of {timeout:g} s"]
        )
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
    rc = proc.returncode
    if rc is not None and rc < 0:
        sig = -rc
        if sig == signal.SIGXCPU:
            return done("timeout", [f"the program used more than {cpu_seconds:g} s of CPU time"])
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return done("crashed", [f"the child process was killed by signal {name}"])
    try:
        answer = json.loads(out.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
        return done(
            "crashed",
            [f"the child process exited with code {rc} and no readable result: {' | '.join(tail)}"],
        )
    printed = str(answer.get("printed", ""))[: _child.MAX_PRINTED_CHARS]
    if "setup_error" in answer:
        return done(
            "crashed", [f"defining the program failed: {answer['setup_error']}"], printed=printed
        )
    results = answer.get("results")
    if not isinstance(results, list) or len(results) != len(contexts):
        return done("crashed", ["the child process returned the wrong number of results"])

    crashed: list[str] = []
    invalid: list[str] = []
    matrices: list[np.ndarray] = []
    for i, (res, ctx) in enumerate(zip(results, contexts)):
        if not isinstance(res, dict):
            crashed.append(f"sentence {i}: unreadable result")
            continue
        if "error" in res:
            line = f"sentence {i} ({_snippet(ctx.text)!r}): {res['error']}"
            (invalid if res.get("kind") == "type" else crashed).append(line)
            continue
        try:
            m = _child.decode_matrix(res)
        except (ValueError, TypeError) as exc:
            invalid.append(f"sentence {i}: {exc}")
            continue
        problem = _validate(m, ctx, i)
        if problem:
            invalid.append(problem)
        else:
            matrices.append(m)
    if crashed:
        return done("crashed", crashed + invalid, printed=printed)
    if invalid:
        return done("invalid_output", invalid, printed=printed)
    return done(
        "ok",
        [],
        message=f"ran on {len(contexts)} sentences",
        matrices=tuple(matrices),
        printed=printed,
    )


def precomputed_pattern(
    name: str,
    matrices: Sequence[np.ndarray],
    contexts: Sequence[PatternContext],
    *,
    description: str = "",
    family: str = "user",
) -> Pattern:
    """Wrap sandbox outputs as a `Pattern` for these contexts, so `predict` and the scoring engine
    apply the same rules (causal mask, renormalisation, fallback) as to built-in patterns.

    The pattern only knows the given sentences; on any other it raises `PatternError`.
    """
    table = {(c.text, tuple(c.tokens)): np.asarray(m) for c, m in zip(contexts, matrices)}

    def fn(ctx: PatternContext) -> np.ndarray:
        key = (ctx.text, tuple(ctx.tokens))
        if key not in table:
            raise PatternError(
                f"pattern {name!r} was computed for other sentences; run it on "
                f"{_snippet(ctx.text)!r} in the sandbox first"
            )
        return table[key].copy()

    return Pattern(name=name, family=family, description=description or name, fn=fn)
