"""The user pattern library: accepted programs on disk, with provenance, usable as patterns.

Layout of a library folder (default ``<attn_tools cache>/user_patterns``)::

    index.json          {"schema": "attn_tools.user_library", "version": 1, "entries": [...]}
    <name>.py           each entry's program, with a header comment saying where it came from

Each entry records its provenance: the backend and its settings, the prompt hash, the model and
head it was found for, its held-out score next to the best built-in pattern's, and the heads of
near-duplicates merged into it. The programs were written by a hypothesizer, so they only ever run
in the sandbox: `UserLibrary.patterns` gives `Pattern` objects (family ``"user"``) whose ``fn``
runs the program in a child process (results are memoised per sentence; `prefetch` fills the
memo for many sentences with one child process).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attn_tools._cache import atomic_path, cache_dir
from attn_tools.automate import _killpoint
from attn_tools.automate.sandbox import run_program
from attn_tools.patterns.base import OPT_IN, REGISTRY, Pattern, PatternContext, PatternError

__all__ = ["LIBRARY_SCHEMA", "LibraryEntry", "UserLibrary", "prefetch", "sandboxed_pattern"]

LIBRARY_SCHEMA = "attn_tools.user_library"
LIBRARY_VERSION = 1

_MEMO: dict[tuple[str, str, tuple[str, ...]], np.ndarray] = {}
_MEMO_LIMIT = 20_000


def _sha(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def _key(source_sha: str, ctx: PatternContext) -> tuple[str, str, tuple[str, ...]]:
    return (source_sha, ctx.text, tuple(ctx.tokens))


def prefetch(source: str, contexts: Sequence[PatternContext], **limits: Any) -> tuple[str, str]:
    """Run ``source`` in the sandbox on every context not memoised yet (one child process).

    Returns ``(status, message)`` of the sandbox run (``("ok", ...)`` when nothing was missing).
    """
    sha = _sha(source)
    todo = [c for c in contexts if _key(sha, c) not in _MEMO]
    if not todo:
        return "ok", "memoised"
    res = run_program(source, todo, **limits)
    if res.ok:
        if len(_MEMO) > _MEMO_LIMIT:
            _MEMO.clear()
        for ctx, m in zip(todo, res.matrices):
            _MEMO[_key(sha, ctx)] = m
    return res.status, res.message


def sandboxed_pattern(name: str, source: str, description: str = "", **limits: Any) -> Pattern:
    """A `Pattern` (family ``"user"``) whose program runs in the sandbox, never in this process.

    A sandbox failure on a sentence raises `PatternError` (which `predict` reports with the
    pattern's name); call `prefetch` first to run many sentences in one child process.
    """
    sha = _sha(source)

    def fn(ctx: PatternContext) -> np.ndarray:
        key = _key(sha, ctx)
        if key not in _MEMO:
            status, message = prefetch(source, [ctx], **limits)
            if status != "ok":
                raise PatternError(f"user pattern {name!r} {status} in the sandbox: {message}")
        return _MEMO[key].copy()

    return Pattern(
        name=name,
        family="user",
        description=description or name,
        fn=fn,
        needs_parse=True,
    )


@dataclass
class LibraryEntry:
    """One accepted program with its provenance (see the module docstring)."""

    name: str
    hypothesis: str
    source_sha256: str
    provenance: dict[str, Any]
    merged: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""

    @property
    def heads(self) -> list[dict[str, Any]]:
        """Every (model, layer, head) this entry explains: its own and merged ones."""
        own = {k: self.provenance.get(k) for k in ("model", "layer", "head")}
        return [own, *({k: m.get(k) for k in ("model", "layer", "head")} for m in self.merged)]


class UserLibrary:
    """Accepted pattern programs on disk.

    Args:
        path: the library folder (created on first write); default
            ``<attn_tools cache>/user_patterns``.

    Example:
        >>> lib = UserLibrary()
        >>> [e.name for e in lib.entries]
        ['auto_smollm2_L5H3']
        >>> lib.register()          # now usable by name in score_heads(..., patterns=[...])
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else cache_dir() / "user_patterns"
        self._entries: list[LibraryEntry] | None = None

    def __repr__(self) -> str:
        return f"UserLibrary(path={str(self.path)!r}, entries={len(self.entries)})"

    # -- storage

    @property
    def index_file(self) -> Path:
        return self.path / "index.json"

    @property
    def entries(self) -> list[LibraryEntry]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> list[LibraryEntry]:
        if not self.index_file.is_file():
            return []
        try:
            data = json.loads(self.index_file.read_text(encoding="utf-8"))
            if data.get("schema") != LIBRARY_SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r}")
            return [LibraryEntry(**e) for e in data["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"the user library index {self.index_file} is unreadable ({exc}). Fix: move it "
                "away (the .py files beside it keep the programs) or pass another library path."
            ) from exc

    def _write(self) -> None:
        payload = {
            "schema": LIBRARY_SCHEMA,
            "version": LIBRARY_VERSION,
            "entries": [asdict(e) for e in self.entries],
        }
        with atomic_path(self.index_file, suffix=".json") as tmp:
            tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
        _killpoint.wrote(self.index_file)

    def source(self, name: str) -> str:
        """The program of entry ``name`` (checked against its recorded hash)."""
        entry = self.get(name)
        text = (self.path / f"{name}.py").read_text(encoding="utf-8")
        body = text.split("\n# ---\n", 1)[-1]
        if _sha(body) != entry.source_sha256:
            raise ValueError(
                f"{self.path / (name + '.py')} was edited after it was accepted (hash mismatch). "
                "Fix: restore it, or remove the entry and accept the program again."
            )
        return body

    def find(self, name: str) -> LibraryEntry | None:
        """Entry ``name``, or None when the library has none of that name."""
        return next((e for e in self.entries if e.name == name), None)

    def get(self, name: str) -> LibraryEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no entry {name!r} in {self.path}; it has {[e.name for e in self.entries]}")

    def add(
        self,
        name: str,
        source: str,
        hypothesis: str,
        provenance: dict[str, Any],
        *,
        merged: Sequence[dict[str, Any]] = (),
    ) -> LibraryEntry:
        """Store a program (replacing an entry of the same name); ``merged`` lists the provenance
        of near-duplicates it stands for."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"library names must be identifiers, got {name!r}")
        if (name in REGISTRY and REGISTRY[name].family != "user") or name in OPT_IN:
            raise ValueError(f"{name!r} is a built-in pattern name; choose another")
        entry = LibraryEntry(
            name=name,
            hypothesis=hypothesis,
            source_sha256=_sha(source),
            provenance=dict(provenance),
            merged=[dict(m) for m in merged],
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        header = "\n".join(
            [
                f"# {name}: {hypothesis}",
                f"# model {provenance.get('model')}, layer {provenance.get('layer')}, head "
                f"{provenance.get('head')}; backend {provenance.get('backend')}",
                f"# held-out {provenance.get('metric', 'jsd')} {provenance.get('heldout_score')} "
                "vs best built-in "
                f"{provenance.get('builtin_name')} {provenance.get('builtin_score')}",
                "# Written by a hypothesizer: run it only through attn_tools' sandbox.",
            ]
        )
        with atomic_path(self.path / f"{name}.py", suffix=".py") as tmp:
            tmp.write_text(header + "\n# ---\n" + source, encoding="utf-8")
        _killpoint.wrote(self.path / f"{name}.py")
        self._entries = [e for e in self.entries if e.name != name] + [entry]
        self._write()
        return entry

    def merge(self, keep: str, drop_provenance: dict[str, Any]) -> LibraryEntry:
        """Record that a near-duplicate (its provenance) is explained by entry ``keep``."""
        entry = self.get(keep)
        entry.merged.append(dict(drop_provenance))
        self._write()
        return entry

    def remove(self, name: str) -> None:
        entry = self.get(name)
        self._entries = [e for e in self.entries if e is not entry]
        (self.path / f"{name}.py").unlink(missing_ok=True)
        self._write()

    # -- as patterns

    def patterns(
        self, contexts: Sequence[PatternContext] | None = None, **limits: Any
    ) -> list[Pattern]:
        """Every entry as a sandboxed `Pattern`; with ``contexts``, prefetched on them."""
        out = []
        for e in self.entries:
            src = self.source(e.name)
            if contexts:
                prefetch(src, contexts, **limits)
            out.append(sandboxed_pattern(e.name, src, e.hypothesis, **limits))
        return out

    def register(self, registry: dict[str, Pattern] | None = None) -> list[str]:
        """Add every entry to ``registry`` (default the global one) as family ``"user"``."""
        target = REGISTRY if registry is None else registry
        names = []
        for p in self.patterns():
            if p.name in target and target[p.name].family != "user":
                raise ValueError(f"user pattern {p.name!r} would shadow a built-in pattern")
            target[p.name] = p
            names.append(p.name)
        return names
