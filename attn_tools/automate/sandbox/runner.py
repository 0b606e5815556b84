"""The parent side of the sandbox: check a program, run it in a jailed child, trust nothing back.

`run_program` never raises. It returns a `SandboxResult` whose ``status`` is one of

- ``ok``: every output matrix passed validation (``result.matrices`` holds them);
- ``rejected``: the static check refused the source, or no operating-system sandbox is available
  for an untrusted program (the message says how to install bubblewrap);
- ``timeout``: the wall-clock or CPU-time limit was reached;
- ``crashed``: the program raised, hit the memory limit, or the child process died;
- ``invalid_output``: a returned value was not a finite, non-negative ``[n, n]`` array with
  every cell at most `MAX_WEIGHT` (and, for causal models, no weight on later tokens).

Two layers, both required for a program written by an LLM (see `attn_tools.automate.sandbox`):
the language layer of `child` (plain namespaces, no module objects, the static check of
`checker`), and the operating system's: the child runs under bubblewrap (`bwrap_command`) with
every namespace unshared (no network, its own PID/IPC/UTS/user namespace), no capabilities, a
new session, read-only binds of the interpreter, numpy and two files of this package only, an
empty ``/tmp``, its own ``/proc``, and no home, cache or work folder. The child adds
``PR_SET_NO_NEW_PRIVS``, a seccomp filter and rlimits. The parent reads at most a bounded
number of bytes from it and validates every value. The jail's command line and its probe live
in `attn_tools.automate.sandbox.jail`.

Known limit (subreapers): bubblewrap's init inside the PID namespace can outlive the outer
``bwrap`` process by a moment and is then re-parented. Normally that is the system's init, which
reaps it; a caller that made itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``) gets it
instead and must reap its children itself (as any subreaper must) or keep one zombie per run.
The parent does not reap other children here: that would steal the exit status of the
caller's own subprocesses.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from attn_tools.automate.sandbox import child as _child
from attn_tools.automate.sandbox.checker import builtin_names, check_source
from attn_tools.automate.sandbox.jail import (  # noqa: F401 - re-exported for callers and tests
    _JAIL_CHILD,
    _JAIL_SITE,
    INSTALL_HINT,
    JAIL_UID,
    SandboxUnavailable,
    bwrap_command,
    child_env,
    os_sandbox_problem,
    require_os_sandbox,
    unjailed_command,
)
from attn_tools.patterns import base as _base
from attn_tools.patterns.base import (
    Pattern,
    PatternError,
    build_contexts,
    get_pattern,
    predict,
)
from attn_tools.patterns.context import PatternContext, context_to_plain, decode_matrix

__all__ = [
    "JAIL_UID",
    "MAX_BUILTIN_PATTERNS",
    "MAX_PAYLOAD_BYTES",
    "MAX_STREAM_BYTES",
    "MAX_WEIGHT",
    "SandboxResult",
    "SandboxStatus",
    "SandboxUnavailable",
    "bwrap_command",
    "check_program",
    "contexts_of",
    "os_sandbox_problem",
    "precomputed_pattern",
    "require_os_sandbox",
    "run_program",
]

SandboxStatus = Literal["ok", "rejected", "timeout", "crashed", "invalid_output"]

#: bytes read from the child's stderr (and the slack on stdout beyond the expected result)
MAX_STREAM_BYTES = 64 * 1024
#: the largest input sent to a child (sentences and their ctx.builtin matrices)
MAX_PAYLOAD_BYTES = 64 * 2**20
#: distinct library patterns (after resolving spellings) one program may ask for
MAX_BUILTIN_PATTERNS = 16
MAX_WEIGHT = _child.MAX_WEIGHT
TRUNCATED = " [... truncated]"
_MAX_LINE = 500


@dataclass(frozen=True, eq=False)
class SandboxResult:
    """What happened when a program ran on some sentences.

    Attributes:
        status: ``ok``, ``rejected``, ``timeout``, ``crashed`` or ``invalid_output``.
        message: one line saying what happened (the first problem when not ok).
        problems: every problem found (static-check findings, per-sentence errors).
        matrices: when ok, one validated raw ``[n, n]`` float64 output per sentence.
        elapsed_s: wall-clock seconds, including the child's start.
        printed: what the program printed (truncated, with a marker, when long).
        isolation: ``"bwrap"``, ``"process"`` (the unsafe opt-in: rlimits and seccomp only),
            ``"in-process"`` (trusted programs) or ``""`` (it never ran).
    """

    status: SandboxStatus
    message: str
    problems: tuple[str, ...] = ()
    matrices: tuple[np.ndarray, ...] = field(default=(), repr=False)
    elapsed_s: float = 0.0
    printed: str = ""
    isolation: str = ""

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
            "isolation": self.isolation,
            "printed": self.printed,
        }


def check_program(source: str) -> list[str]:
    """The static check alone: a list of problems, empty when the program may run.

    Example:
        >>> check_program("import os\\ndef pattern(ctx):\\n    return os.listdir('.')")
        ["line 1: import of 'os' is not allowed (only numpy and math)"]
    """
    return check_source(source)


def contexts_of(sentences: Sequence[Any]) -> list[PatternContext]:
    """`PatternContext`s for records or contexts (records are parsed in one batched spaCy pass)."""
    items = list(sentences)
    todo = [i for i, s in enumerate(items) if not isinstance(s, PatternContext)]
    if todo:
        made = build_contexts([items[i] for i in todo])
        for i, ctx in zip(todo, made):
            items[i] = ctx
    return items


# ----------------------------------------------------------------------------- reading the child


def _kill_group(proc: subprocess.Popen) -> None:
    # the child leads its own process group (start_new_session), so killpg reaches it. No
    # proc.kill() after it: Popen polls first and may reap the child, and the wait4 that
    # follows would then find no child (ChildProcessError) and lose the CPU time and status
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _read_bounded(
    proc: subprocess.Popen, limits: dict[int, int], deadline: float
) -> tuple[dict[int, bytearray], dict[int, int], bool]:
    """Read stdout and stderr until both close or ``deadline``: keep at most ``limits[fd]``
    bytes of each, count (and drop) the rest, so a flood cannot grow this process's memory."""
    kept = {fd: bytearray() for fd in limits}
    total = dict.fromkeys(limits, 0)
    sel = selectors.DefaultSelector()
    for key, stream in ((1, proc.stdout), (2, proc.stderr)):
        os.set_blocking(stream.fileno(), False)
        sel.register(stream.fileno(), selectors.EVENT_READ, data=key)
    timed_out = False
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for sk, _ in sel.select(timeout=min(left, 0.5)):
                fd = sk.data
                try:
                    chunk = os.read(sk.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(sk.fd)
                    continue
                total[fd] += len(chunk)
                room = limits[fd] - len(kept[fd])
                if room > 0:
                    kept[fd] += chunk[:room]
    finally:
        sel.close()
    return kept, total, timed_out


def _clip(value: Any, limit: int = _MAX_LINE) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + TRUNCATED


_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def printable(text: str) -> str:
    """``text`` with control, bidirectional, zero-width, surrogate and unassigned characters
    written as ``\\uXXXX`` (newlines and tabs kept), so what a program printed cannot reorder
    or hide text in a file, a terminal or the next prompt."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch not in "\n\t" and unicodedata.category(ch) in _HIDDEN_CATEGORIES:
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


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
    if m.size and m.max() > MAX_WEIGHT:
        return (
            f"{where}: returned a weight of {m.max():.3g}; weights may be at most {MAX_WEIGHT:g} "
            "(rows are normalised for you, so scale them down)"
        )
    if ctx.causal:
        ahead = np.triu(m, 1)
        if (ahead > 0).any():
            q, k = np.unravel_index(int(np.argmax(ahead)), ahead.shape)
            return (
                f"{where}: row {q} puts weight {ahead[q, k]:.3g} on the later token {k}; a causal "
                "model cannot attend ahead (use np.tril on the matrix)"
            )
    return None


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


# ----------------------------------------------------------------------------- running


def _run_in_process(source: str, contexts: list[PatternContext]) -> dict[str, Any]:
    """A trusted program (written by this project) with the child's namespace, no OS layer."""
    payload = {
        "source": source,
        "contexts": [context_to_plain(c) for c in contexts],
        "cpu_seconds": 0.0,
        "memory_mb": 0,
    }
    return _child.run_payload(payload, harden_process=False)


def _feed(stream: Any, data: bytes) -> None:
    """Write ``data`` to the child's stdin and close it; a child that exits first is fine."""
    try:
        view = memoryview(data)
        while view:
            view = view[stream.write(view[: 1 << 20]) or 0 :]
    except (BrokenPipeError, OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError, ValueError):
            stream.close()


def _reap(proc: subprocess.Popen, deadline: float, timed_out: bool) -> tuple[float, bool]:
    """Wait for the child (killing its group at the deadline); ``(cpu seconds, timed_out)``.

    ``wait4`` reports the CPU time of the child and everything it waited for (the jail's
    processes), which ``Popen.wait`` would throw away.
    """
    while not timed_out:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is gone, say so plainly
            proc.returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
            return 0.0, False
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime, False
        if time.monotonic() >= deadline:
            timed_out = True
        else:
            time.sleep(0.01)
    _kill_group(proc)
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler of the caller's): timed out
        proc.returncode = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        return 0.0, True
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, True


def _run_child(
    cmd: list[str], payload: dict[str, Any], contexts: list[PatternContext], timeout: float
) -> tuple[dict[str, Any] | None, str | None, SandboxStatus, float]:
    """Run the child; ``(answer, problem, status_if_problem, cpu_s)``."""
    expected = sum(12 * c.n * c.n + 256 for c in contexts)
    limits = {1: MAX_STREAM_BYTES + expected, 2: MAX_STREAM_BYTES}
    data = json.dumps(payload).encode("utf-8")
    # the payload goes in through a pipe, never a host file: a child that broke out of the
    # language layer could grow or truncate a file it holds open (fallocate on fd 0)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd="/",
        start_new_session=True,
        close_fds=True,
    )
    # written from a thread while stdout/stderr are drained here, so neither side can block
    # the other whatever the sizes; a child that stops reading is killed at the deadline
    writer = threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True)
    writer.start()
    deadline = time.monotonic() + timeout
    try:
        kept, total, timed_out = _read_bounded(proc, limits, deadline)
        cpu_s, timed_out = _reap(proc, deadline, timed_out)
    finally:
        if proc.returncode is None:  # an error on our side: leave no child behind
            _kill_group(proc)
            proc.wait()
        writer.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            stream.close()
    rc = proc.returncode
    if timed_out:
        return (
            None,
            f"the program ran longer than the wall-clock limit of {timeout:g} s",
            "timeout",
            cpu_s,
        )
    sig = -rc if rc < 0 else (rc - 128 if rc > 128 else 0)
    if sig in (signal.SIGPROF, signal.SIGXCPU):
        return (
            None,
            f"the program used more than {payload['cpu_seconds']:g} s of CPU time",
            "timeout",
            cpu_s,
        )
    if total[1] > limits[1]:
        return (
            None,
            f"the child wrote {total[1]} bytes, more than the {limits[1]} expected",
            "crashed",
            cpu_s,
        )
    err_tail = " | ".join(kept[2].decode("utf-8", "replace").strip().splitlines()[-3:])
    if sig:
        return None, f"the child process was killed by signal {_signal_name(sig)}", "crashed", cpu_s
    try:
        answer = json.loads(kept[1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        answer = None
    if not isinstance(answer, dict):
        return (
            None,
            _clip(f"the child process exited with code {rc} and no readable result: {err_tail}"),
            "crashed",
            cpu_s,
        )
    return answer, None, "ok", cpu_s


def run_program(
    source: str,
    sentences: Sequence[Any],
    *,
    cpu_seconds: float = 5.0,
    memory_mb: int = 512,
    timeout: float = 30.0,
    trusted: bool = False,
    unsafe_no_os_sandbox: bool = False,
) -> SandboxResult:
    """Check ``source`` and run its ``pattern(ctx)`` on each sentence; never raises.

    Args:
        source: Python source defining ``def pattern(ctx) -> np.ndarray``.
        sentences: `PatternContext`s or `SentenceAttention` records (parsed here if needed).
        cpu_seconds: CPU-time limit of the child (all sentences together), to a fraction of a
            second.
        memory_mb: address space the child may add after its start.
        timeout: wall-clock limit in seconds; the child's process group is killed after it.
        trusted: the program was written by this project (the offline program search): run it
            in this process, with the same namespace and validation but no OS layer or limits.
        unsafe_no_os_sandbox: run an untrusted program without bubblewrap where bubblewrap is
            missing (rlimits, seccomp and the language layer only). Only for programs you have
            read; without it such programs are refused with an install hint.

    Returns:
        A `SandboxResult`.

    Example:
        >>> res = run_program("def pattern(ctx):\\n    return np.eye(ctx.n, k=-1)", records)
        >>> res.status, res.matrices[0].shape
        ('ok', (12, 12))
    """
    start = time.perf_counter()
    try:
        return _run_program(
            source, sentences, start, cpu_seconds, memory_mb, timeout, trusted, unsafe_no_os_sandbox
        )
    except Exception as exc:  # the contract is "never raises": say what broke instead
        return SandboxResult(
            status="crashed",
            message=_clip(
                f"the sandbox failed before the program ran: {type(exc).__name__}: {exc}"
            ),
            elapsed_s=time.perf_counter() - start,
        )


class _Refused(Exception):
    """A program the parent will not prepare (``status`` says how it ends)."""

    def __init__(self, message: str, status: SandboxStatus = "rejected") -> None:
        super().__init__(message)
        self.status = status


def _too_big(size: int) -> str:
    return (
        f"the program's input would be {size / 2**20:.0f} MiB; the limit is "
        f"{MAX_PAYLOAD_BYTES / 2**20:.0f} MiB. Fix: fewer or shorter sentences, or fewer "
        "ctx.builtin patterns."
    )


def _payload_bytes(payload: dict[str, Any]) -> int:
    # the matrices dominate: 8 bytes -> 4/3 base64 characters each; the rest is small text
    total = len(payload["source"])
    for c in payload["contexts"]:
        total += len(json.dumps({k: v for k, v in c.items() if k != "prepared"}))
        total += sum(len(p["matrix"]["data"]) + 8 * len(p["has_mass"]) + 64
                     for p in c["prepared"].values())  # fmt: skip
    return total


def _resolve_builtin(name: str) -> Pattern:
    """The registry pattern for a ``ctx.builtin`` name, leaving no new entry in the registry's
    cache of parametrised names (a program's spellings must not accumulate in this process)."""
    before = set(_base._MADE)
    try:
        return get_pattern(name)
    finally:
        for key in set(_base._MADE) - before:
            _base._MADE.pop(key, None)


def _prepare_builtins(
    names: Sequence[str], contexts: Sequence[PatternContext], deadline: float = float("inf")
) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The predictions of the program's ``ctx.builtin`` names for every sentence, keyed by
    the literal name. Each distinct pattern is computed once; more than `MAX_BUILTIN_PATTERNS`
    distinct patterns, or more than `MAX_PAYLOAD_BYTES` of matrices, is refused *before* any
    is computed, so a program cannot make this process hold gigabytes. The work counts against
    the program's wall-clock limit: past ``deadline`` (``time.monotonic``) it stops with status
    ``timeout``."""
    resolved: dict[str, Pattern] = {}
    for name in names:
        try:
            resolved[name] = _resolve_builtin(name)
        except (PatternError, RecursionError, ValueError) as exc:
            raise _Refused(f"ctx.builtin({_clip(name, 80)!r}): {_clip(exc, 300)}") from None
    distinct = {p.name: p for p in resolved.values()}
    if len(distinct) > MAX_BUILTIN_PATTERNS:
        raise _Refused(
            f"the program uses {len(distinct)} different ctx.builtin patterns; the limit is "
            f"{MAX_BUILTIN_PATTERNS}. Fix: use a few library patterns and combine them."
        )
    cells = sum(c.n * c.n for c in contexts)
    estimate = len(resolved) * cells * 11  # base64 of float64
    if estimate > MAX_PAYLOAD_BYTES:
        raise _Refused(_too_big(estimate))
    prepared: list[dict[str, tuple[np.ndarray, np.ndarray]]] = [{} for _ in contexts]
    for slot, ctx in zip(prepared, contexts):
        made: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, pat in resolved.items():
            if time.monotonic() > deadline:
                raise _Refused(
                    "computing the program's ctx.builtin patterns took longer than its "
                    "wall-clock limit. Fix: fewer or simpler ctx.builtin patterns, or fewer "
                    "sentences.",
                    "timeout",
                )
            try:
                if pat.name not in made:
                    made[pat.name] = predict(pat, ctx)
            except (PatternError, RecursionError) as exc:
                raise _Refused(
                    f"ctx.builtin({name!r}) failed: {_clip(exc, 300)}", "crashed"
                ) from None
            slot[name] = made[pat.name]
    return prepared


def _run_program(
    source: str,
    sentences: Sequence[Any],
    start: float,
    cpu_seconds: float,
    memory_mb: int,
    timeout: float,
    trusted: bool,
    unsafe: bool,
) -> SandboxResult:
    isolation = ""

    def done(status: SandboxStatus, problems: Sequence[str], **kw: Any) -> SandboxResult:
        # everything that reaches a result (and from there a file or a prompt) is escaped
        problems = tuple(_clip(printable(_clip(p, 4 * _MAX_LINE))) for p in problems)
        message = problems[0] if problems else _clip(printable(kw.pop("message", status)))
        kw.pop("message", None)
        if "printed" in kw:
            shown = printable(kw["printed"])
            if len(shown) > _child.MAX_PRINTED_CHARS + len(TRUNCATED):
                shown = shown[: _child.MAX_PRINTED_CHARS] + TRUNCATED
            kw["printed"] = shown
        return SandboxResult(
            status=status,
            message=message,
            problems=problems,
            elapsed_s=time.perf_counter() - start,
            isolation=isolation,
            **kw,
        )

    problems = check_program(source)
    if problems:
        return done("rejected", problems)
    if not trusted:
        problem = os_sandbox_problem()
        if problem and not unsafe:
            return done(
                "rejected",
                [
                    f"refused to run an untrusted program without an OS sandbox: {problem}. {INSTALL_HINT}"
                ],
            )
        isolation = "process" if problem else "bwrap"
    else:
        isolation = "in-process"
    contexts = contexts_of(sentences)
    if not contexts:
        return done("ok", [], message="no sentences")

    deadline = time.monotonic() + timeout
    try:
        prepared = _prepare_builtins(builtin_names(source), contexts, deadline)
    except _Refused as exc:
        return done(exc.status, [str(exc)])
    # what the parent spent on ctx.builtin is the program's time too
    timeout = max(deadline - time.monotonic(), 0.001)

    cpu_s = 0.0
    if trusted:
        answer = _run_in_process(
            source,
            [
                PatternContext(
                    text=c.text,
                    tokens=c.tokens,
                    token_ids=c.token_ids,
                    offsets=c.offsets,
                    special_mask=c.special_mask,
                    kind=c.kind,
                    words=c.words,
                    alignment=c.alignment,
                    prepared=p,
                )  # fmt: skip
                for c, p in zip(contexts, prepared)
            ],
        )
    else:
        payload = {
            "source": source,
            "cpu_seconds": float(cpu_seconds),
            "memory_mb": int(memory_mb),
            "contexts": [context_to_plain(c, p) for c, p in zip(contexts, prepared)],
        }
        size = _payload_bytes(payload)
        if size > MAX_PAYLOAD_BYTES:
            return done("rejected", [_too_big(size)])
        cmd = bwrap_command() if isolation == "bwrap" else unjailed_command()
        answer, problem, status, cpu_s = _run_child(cmd, payload, contexts, timeout)
        if problem:
            return done(status, [problem])
    return _collect(answer, contexts, done, cpu_s)


def _collect(
    answer: dict[str, Any], contexts: list[PatternContext], done: Any, cpu_s: float
) -> SandboxResult:
    """Validate the child's answer: every string clipped, every matrix decoded and checked."""
    printed = answer.get("printed", "")
    printed = printed if isinstance(printed, str) else ""
    if answer.get("printed_truncated") is True or len(printed) > _child.MAX_PRINTED_CHARS:
        printed = printed[: _child.MAX_PRINTED_CHARS] + TRUNCATED
    if "setup_error" in answer:
        return done(
            "crashed", [f"defining the program failed: {_clip(answer['setup_error'])}"],
            printed=printed,
        )  # fmt: skip
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
            line = f"sentence {i} ({_snippet(ctx.text)!r}): {_clip(res['error'])}"
            (invalid if res.get("kind") == "type" else crashed).append(line)
            continue
        try:
            m = decode_matrix(res, max_elements=ctx.n * ctx.n)
        except (ValueError, TypeError) as exc:
            invalid.append(f"sentence {i}: {_clip(exc)}")
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
