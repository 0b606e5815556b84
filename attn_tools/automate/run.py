"""The run folder: every file an automate run writes, atomically, in an order that survives
``kill -9`` at any point.

Layout::

    out/
      run.json                      run id, model, sentences, backend settings (never a key)
      summary.csv                   one row per finished head (rewritten after each head)
      heads/L05_H03/
        examples.json               the head_examples document the hypothesizer saw
        round_0/prompt.txt reply.txt proposal.json program.py sandbox.json score.json
        validation.json             held-out sandbox result and scores
        decision.json               the journal: the head's result and its library action
        result.json                 written last: the head is finished (skipped on resume)

**The commit protocol** (`HeadFolder.commit`). Everything before ``decision.json`` is scratch: a
kill there redoes the head from the start, and nothing outside the head folder has changed yet.
``decision.json`` records the finished result *and* the library action (add an entry, or merge
this head into one), with an operation id unique to the run and head. Then the action is
applied, idempotently (an entry already carrying the op id is left alone), and ``result.json``
is written. A resume that finds ``decision.json`` without ``result.json`` replays the action
and writes ``result.json`` from the journal; it never asks the hypothesizer again and never
compares the program with the library it has already changed. So a head is never re-labelled
and never listed as its own near-duplicate, wherever the process died.

Every text goes through the backend's ``scrub`` before it is written, so no key reaches disk.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from attn_tools._cache import atomic_path
from attn_tools.automate import _killpoint
from attn_tools.automate.library import UserLibrary

__all__ = ["HeadFolder", "HeadResult", "LibraryAction", "RunFolder"]

RUN_SCHEMA = "attn_tools.automate_run"
RUN_VERSION = 3  # 3: heads carry the fair baselines (smoothed built-in, mix)
#: run.json keys that must match for a folder to be resumed (with their value in older runs).
RESUME_KEYS = {"model": None, "fingerprint": None, "train_sha": None, "heldout_sha": None,
               "metric": "jsd"}  # fmt: skip


def _same(text: str) -> str:
    return text


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _scrubbed(obj: Any, scrub: Callable[[str], str]) -> Any:
    """``obj`` with every string scrubbed (before serialising, so JSON escapes stay intact)."""
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: _scrubbed(v, scrub) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_scrubbed(v, scrub) for v in obj]
    return obj


@dataclass(frozen=True)
class HeadResult:
    """The outcome for one head (``to_dict`` is one row of the run's summary).

    ``status``: ``accepted`` (joined or merged into the library), ``validated`` (valid on held-out
    sentences but not better than the library by the margin), ``invalid_on_heldout`` (it failed in
    the sandbox on held-out sentences), ``no_program`` (no round gave a program that ran), or
    ``backend_error`` (no round got an answer). Scores use ``metric`` (a registry name).

    The fair baselines (`attn_tools.automate.fair`), fitted on the example sentences and scored
    on held-out ones: ``smoothed_name``/``smoothed_alpha``/``smoothed_score`` (the best built-in
    mixed with uniform, ``α·pattern + (1−α)·uniform``) and ``mix_score``/``mix_weights``
    (`linear_fit`'s mix of built-ins). ``beats_smoothed``/``beats_mix``: the program beats them
    by the margin (None without a held-out score). ``rule`` says how ``accepted`` was decided:
    ``"fair"`` (built-in, library, smoothed and mix, each by the margin) or ``"legacy"`` (a run
    folder written before the fair baselines: built-in and library only; its fair columns are
    recomputed on resume, its decision is left as it was made).
    """

    model: str
    layer: int
    head: int
    status: str
    backend: str
    hypothesis: str = ""
    program: str | None = None
    rounds_run: int = 0
    train_score: float | None = None
    heldout_score: float | None = None
    builtin_name: str | None = None
    builtin_score: float | None = None
    library_name: str | None = None
    library_score: float | None = None
    beats_builtin: bool = False
    accepted: bool = False
    library_entry: str | None = None
    message: str = ""
    folder: str | None = None
    metric: str = "jsd"
    smoothed_name: str | None = None
    smoothed_alpha: float | None = None
    smoothed_score: float | None = None
    mix_score: float | None = None
    mix_weights: dict[str, float] | None = None
    beats_smoothed: bool | None = None
    beats_mix: bool | None = None
    rule: str = "legacy"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LibraryAction:
    """One change to the user library, journalled before it is made.

    ``kind`` ``add`` stores ``program`` under ``name`` (replacing an entry of that name, whose
    provenance then goes into ``merged``); ``merge`` records ``provenance`` as one more head that
    entry ``name`` explains. ``op`` identifies the run and head, so applying twice changes
    nothing.
    """

    kind: Literal["add", "merge"]
    name: str
    op: str
    provenance: dict[str, Any]
    program: str = ""
    hypothesis: str = ""
    merged: tuple[dict[str, Any], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LibraryAction:
        return cls(**{**data, "merged": tuple(data.get("merged", ()))})

    def applied(self, library: UserLibrary) -> bool:
        """True when ``library`` already holds this action's effect."""
        entry = library.find(self.name)
        if entry is None:
            return False
        if self.kind == "add":
            return entry.provenance.get("op") == self.op
        return any(m.get("op") == self.op for m in entry.merged)

    def apply(self, library: UserLibrary) -> None:
        """Make the change unless it is already there."""
        if self.applied(library):
            return
        provenance = {**self.provenance, "op": self.op}
        if self.kind == "add":
            library.add(self.name, self.program, self.hypothesis, provenance, merged=self.merged)
        elif library.find(self.name) is not None:
            library.merge(self.name, provenance)
        # a merge into an entry someone removed since has nothing left to record


class HeadFolder:
    """One head's files (``path`` None: nothing is written, library actions still apply)."""

    def __init__(
        self, path: str | Path | None, *, scrub: Callable[[str], str] = _same, op: str = ""
    ) -> None:
        self.path = None if path is None else Path(path)
        self.scrub = scrub
        self.op = op or uuid.uuid4().hex

    @property
    def where(self) -> str | None:
        return None if self.path is None else str(self.path)

    # -- scratch files (a kill before decision.json redoes the head)

    def write_text(self, name: str, text: str) -> None:
        if self.path is None:
            return
        target = self.path / name
        with atomic_path(target) as tmp:
            tmp.write_text(self.scrub(text), encoding="utf-8")
        _killpoint.wrote(target)

    def write_json(self, name: str, obj: Any) -> None:
        if self.path is None:
            return
        text = json.dumps(
            _scrubbed(obj, self.scrub), indent=2, ensure_ascii=False, default=_json_default
        )
        target = self.path / name
        with atomic_path(target, suffix=".json") as tmp:
            tmp.write_text(text, encoding="utf-8")
        _killpoint.wrote(target)

    def write_round(self, r: int, proposal: Any) -> None:
        """A proposal's prompt, reply, record and program under ``round_<r>/``."""
        if proposal.prompt is not None:
            self.write_text(f"round_{r}/prompt.txt", proposal.prompt)
        if proposal.raw_reply is not None:
            self.write_text(f"round_{r}/reply.txt", proposal.raw_reply)
        self.write_json(f"round_{r}/proposal.json", proposal.to_dict())
        if proposal.program:
            self.write_text(f"round_{r}/program.py", proposal.program)

    # -- the commit protocol

    def _read(self, name: str) -> dict[str, Any] | None:
        if self.path is None or not (self.path / name).is_file():
            return None
        try:
            data = json.loads((self.path / name).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # atomic writes make this unlikely; a damaged file means "not done"
        return data if isinstance(data, dict) else None

    def finished(self) -> dict[str, Any] | None:
        """The head's result when it is finished (a ``backend_error`` counts as not finished:
        transient failures are retried on resume)."""
        result = self._read("result.json")
        if result is None or result.get("status") == "backend_error":
            return None
        return result

    def commit(
        self, result: HeadResult, action: LibraryAction | None, library: UserLibrary | None
    ) -> HeadResult:
        """Journal the outcome, apply its library action, then mark the head finished."""
        data = self.scrub_result(result)
        if action is not None and not action.op:
            action = replace(action, op=self.op)
        self.write_json("decision.json", {"result": data, "library": action and action.to_dict()})
        if action is not None and library is not None:
            action.apply(library)
        self.write_json("result.json", data)
        return HeadResult(**data)

    def replay(self, library: UserLibrary | None) -> dict[str, Any] | None:
        """Finish a head whose decision was journalled but not completed (None: there is none).

        The journalled library action is applied again (a no-op when it had been), then
        ``result.json`` is written from the journal.
        """
        journal = self._read("decision.json")
        if journal is None or not isinstance(journal.get("result"), dict):
            return None
        if journal["result"].get("status") == "backend_error":
            return None  # retried, as a finished backend_error would be
        if journal.get("library") and library is not None:
            LibraryAction.from_dict(journal["library"]).apply(library)
        self.write_json("result.json", journal["result"])
        return journal["result"]

    def scrub_result(self, result: HeadResult) -> dict[str, Any]:
        return _scrubbed(result.to_dict(), self.scrub)


class RunFolder:
    """The folder of an `automate_heads` run: run.json, the summary and one `HeadFolder` per
    head. Every write is atomic; see the module docstring for the order.

    Args:
        root: the folder (created).
        scrub: applied to every text before it is written (the backend's `scrub`).
    """

    def __init__(self, root: str | Path, *, scrub: Callable[[str], str] = _same) -> None:
        self.root = Path(root).expanduser()
        self.scrub = scrub
        self.run_id = ""

    def open(
        self,
        settings: dict[str, Any],
        heads: Sequence[tuple[int, int]],
        train_texts: Sequence[str],
        heldout_texts: Sequence[str],
    ) -> None:
        """Write (or check and extend) run.json: a folder holding another model, other
        sentences or another metric is refused, since its finished heads would not apply."""
        run = {"schema": RUN_SCHEMA, "version": RUN_VERSION, **settings}
        path = self.root / "run.json"
        old = self._old_run(path)
        if old is not None:
            for key, default in RESUME_KEYS.items():
                if old.get(key, default) != run.get(key):
                    raise ValueError(
                        f"{self.root} holds a run with another {key} ({old.get(key, default)!r} "
                        f"vs {run.get(key)!r}). Fix: pass a new out folder, or the same model, "
                        "sentences and metric to resume."
                    )
            run["heads"] = sorted({*map(tuple, old.get("heads", [])), *map(tuple, heads)})
            run["created"] = old.get("created")
            run["run_id"] = old.get("run_id") or uuid.uuid4().hex
        else:
            run["heads"] = [tuple(h) for h in heads]
            run["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            run["run_id"] = uuid.uuid4().hex
        self.run_id = run["run_id"]
        run = {
            **run,
            "train_sentences": list(train_texts),
            "heldout_sentences": list(heldout_texts),
        }
        HeadFolder(self.root, scrub=self.scrub).write_json("run.json", run)

    def _old_run(self, path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{path} is unreadable ({exc}). Fix: move the folder away or pass another out."
            ) from None
        return data if isinstance(data, dict) else None

    def head(self, layer: int, head: int) -> HeadFolder:
        return HeadFolder(
            self.root / "heads" / f"L{layer:02d}_H{head:02d}",
            scrub=self.scrub,
            op=f"{self.run_id}:L{layer}H{head}",
        )

    def write_summary(self, rows: Sequence[dict[str, Any]]) -> None:
        """summary.csv: one row per head so far (programs left out: they have their files)."""
        summary = pd.DataFrame(list(rows)).drop(columns=["program"], errors="ignore")
        target = self.root / "summary.csv"
        with atomic_path(target, suffix=".csv") as tmp:
            summary.to_csv(tmp, index=False)
        _killpoint.wrote(target)
