"""Run untrusted pattern programs: static check, jailed child, validated results.

- `checker`: the static allow-list over the syntax tree (standard library only);
- `child`: what runs inside the jail (numpy, the standard library and
  `attn_tools.patterns.context` only): the plain namespaces a program sees, self-hardening
  (no new privileges, seccomp, rlimits, a CPU timer) and the JSON protocol;
- `runner`: the parent side — `run_program`, `SandboxResult`, the bubblewrap command, bounded
  reads and validation.

A program written by an LLM runs only under bubblewrap; where it is missing, `run_program`
refuses it (status ``rejected``, with the install hint) unless the caller passes
``unsafe_no_os_sandbox=True``. A program written by this project's own program search may be run
in-process with ``trusted=True``.
"""

from __future__ import annotations

from attn_tools.automate.sandbox.checker import builtin_names, check_source
from attn_tools.automate.sandbox.child import MAX_PRINTED_CHARS, NUMPY_NAMES, SAFE_BUILTINS
from attn_tools.automate.sandbox.runner import (
    MAX_STREAM_BYTES,
    MAX_WEIGHT,
    SandboxResult,
    SandboxStatus,
    SandboxUnavailable,
    bwrap_command,
    check_program,
    contexts_of,
    os_sandbox_problem,
    precomputed_pattern,
    require_os_sandbox,
    run_program,
)

__all__ = [
    "MAX_PRINTED_CHARS",
    "MAX_STREAM_BYTES",
    "MAX_WEIGHT",
    "NUMPY_NAMES",
    "SAFE_BUILTINS",
    "SandboxResult",
    "SandboxStatus",
    "SandboxUnavailable",
    "builtin_names",
    "bwrap_command",
    "check_program",
    "check_source",
    "contexts_of",
    "os_sandbox_problem",
    "precomputed_pattern",
    "require_os_sandbox",
    "run_program",
]
