"""Steps 4–5 for many heads: propose → sandbox → refine → validate on held-out → grow the library.

`automate_head` runs one head: up to ``rounds`` proposals (a hard bound), each program run in the
sandbox on the example sentences and scored with the chosen metric (a registry metric that ranks
patterns, ``jsd`` by default); the rows it gets most wrong go back to the hypothesizer as
feedback. The best program on the example sentences is then scored on held-out sentences the
hypothesizer never saw, next to the best built-in pattern, the best user-library pattern and the
two fair baselines of `attn_tools.automate.fair` (the best built-in smoothed with uniform, and
`linear_fit`'s mix of built-ins, both fitted on the example sentences). It joins the library only
when it beats all four by ``margin`` (otherwise a "program" such as "89 % first token + 11 %
everything" would count as a discovery merely for being less sharp than ``first_token``); when
its held-out predictions almost equal an entry's (mean JS distance below ``duplicate_tol``), the
two are merged (the better program is kept, the other's provenance recorded).

`automate_heads` does this for many heads of one model in a run folder (`RunFolder`: every file,
atomic, resumable, consistent after ``kill -9``). Scoring lives in `evaluate`, files in `run`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attn_tools.automate.evaluate import (
    HeadScorer,
    LibraryMatch,
    beats_by,
    builtin_patterns,
    ranking_metric,
)
from attn_tools.automate.examples import head_examples
from attn_tools.automate.fair import baseline_row, fair_baselines
from attn_tools.automate.hypothesize.backends import LocalChatModel
from attn_tools.automate.hypothesize.base import HeadTask, Hypothesizer, Proposal
from attn_tools.automate.hypothesize.prompt import Feedback
from attn_tools.automate.library import UserLibrary
from attn_tools.automate.run import HeadFolder, HeadResult, LibraryAction, RunFolder
from attn_tools.automate.sandbox import (
    contexts_of,
    precomputed_pattern,
    require_os_sandbox,
    run_program,
)
from attn_tools.patterns.base import PatternContext

__all__ = ["MAX_ROUNDS", "HeadResult", "automate_head", "automate_heads", "builtin_patterns"]

#: the hard upper bound on proposals per head, whatever ``rounds`` asks for.
MAX_ROUNDS = 10


def _round(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 5)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "model"


@dataclass(frozen=True)
class _Candidate:
    """The best program so far: its score on the example sentences and the round it came from."""

    score: float
    proposal: Proposal
    round: int


# ----------------------------------------------------------------------------- one head


def automate_head(
    layer: int,
    head: int,
    *,
    backend: Hypothesizer,
    train_records: Sequence[Any],
    heldout_records: Sequence[Any],
    train_contexts: Sequence[PatternContext] | None = None,
    heldout_contexts: Sequence[PatternContext] | None = None,
    rounds: int = 2,
    library: UserLibrary | None = None,
    margin: float = 0.01,
    duplicate_tol: float = 0.05,
    out: str | Path | None = None,
    train_table: pd.DataFrame | None = None,
    heldout_table: pd.DataFrame | None = None,
    sandbox_limits: dict[str, Any] | None = None,
    top_fraction: float = 0.10,
    metric: str = "jsd",
    folder: HeadFolder | None = None,
    fair: pd.DataFrame | None = None,
) -> HeadResult:
    """Hypothesize, test, refine and validate a program for one head.

    Args:
        layer, head: the head (0-based).
        backend: a `Hypothesizer`.
        train_records: the example sentences' `SentenceAttention` (all the hypothesizer sees).
        heldout_records: sentences used only to validate the final program.
        train_contexts, heldout_contexts: their `PatternContext` s (built if not given).
        rounds: proposals at most (the first plus refinements); never more than `MAX_ROUNDS`.
        library: a `UserLibrary` to compare with and grow; None leaves every library alone.
        margin: how much better the held-out score must be than the best built-in and library
            pattern for the program to be accepted.
        duplicate_tol: mean JS distance between held-out predictions under which a program and
            a library entry count as near-duplicates (and are merged).
        out: folder for this head's files (None: nothing written); or pass ``folder``.
        train_table, heldout_table: `score_heads` tables of `builtin_patterns` with ``metric``
            (computed here when not given; `automate_heads` computes them once for all heads).
        sandbox_limits: ``cpu_seconds``, ``memory_mb``, ``timeout`` for `run_program`.
        top_fraction: share of pairs in the examples (see `head_examples`).
        metric: a registry metric that ranks patterns (``jsd``, ``sae``, ``mae``).
        folder: a `HeadFolder` (from `RunFolder.head`) instead of ``out``.
        fair: a `fair_baselines` table holding this head (computed here, for this head only,
            when not given; `automate_heads` computes it once for all heads).

    Returns:
        A `HeadResult`.
    """
    if int(rounds) < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}. Fix: pass rounds=1 or more")
    limits = dict(sandbox_limits or {})
    folder = folder if folder is not None else HeadFolder(out, scrub=backend.scrub)
    ct = train_contexts if train_contexts is not None else contexts_of(train_records)
    ch = heldout_contexts if heldout_contexts is not None else contexts_of(heldout_records)
    train = HeadScorer(train_records, ct, layer, head, metric, table=train_table)
    held = HeadScorer(heldout_records, ch, layer, head, metric, table=heldout_table)
    if fair is None:
        fair = fair_baselines(
            train_records, heldout_records, train_contexts=ct, heldout_contexts=ch,
            heads=[(int(layer), int(head))], metric=held.spec.name,
        )  # fmt: skip
    examples = head_examples(train_records, layer, head, top_fraction=top_fraction)
    folder.write_json("examples.json", examples)
    best, rounds_run, statuses = _refine(
        backend, train, examples, min(int(rounds), MAX_ROUNDS), limits, folder
    )
    builtin_name, builtin_score = held.best_builtin()
    base = HeadResult(
        model=train_records[0].model, layer=int(layer), head=int(head), status="no_program",
        backend=backend.name, rounds_run=rounds_run, builtin_name=builtin_name,
        builtin_score=_round(builtin_score), folder=folder.where, metric=held.spec.name,
        rule="fair", **baseline_row(fair, int(layer), int(head)),
    )  # fmt: skip
    if best is None:
        status = "backend_error" if all(s == "backend_error" for s in statuses) else "no_program"
        message = f"round results: {', '.join(statuses)}"
        return folder.commit(_with(base, status=status, message=message), None, library)
    result, action = _validate(
        best, held, base, builtin_score, backend=backend, library=library, margin=margin,
        duplicate_tol=duplicate_tol, limits=limits, folder=folder, n_train=len(train_records),
    )  # fmt: skip
    return folder.commit(result, action, library)


def _with(result: HeadResult, **changes: Any) -> HeadResult:
    return HeadResult(**{**result.to_dict(), **changes})


def _perfect(scorer: HeadScorer, score: float) -> bool:
    """True when ``score`` is within 1e-3 of the metric's best possible value."""
    lo, hi = scorer.spec.range
    target = hi if scorer.spec.higher_is_better else lo
    return target is not None and abs(score - target) <= 1e-3


def _refine(
    backend: Hypothesizer,
    scorer: HeadScorer,
    examples: dict[str, Any],
    n_rounds: int,
    limits: dict[str, Any],
    folder: HeadFolder,
) -> tuple[_Candidate | None, int, list[str]]:
    """The proposal rounds: ``(best candidate or None, rounds run, status of each round)``."""
    baseline = scorer.best_builtin()
    best: _Candidate | None = None
    feedback: Feedback | None = None
    statuses: list[str] = []
    previous: str | None = None
    for r in range(n_rounds):
        task = HeadTask(
            examples=examples,
            contexts=tuple(scorer.contexts),
            attention=tuple(scorer.attention),
            round=r,
            feedback=feedback,
        )
        proposal = backend.propose(task)
        folder.write_round(r, proposal)
        about = dict(
            round=r + 1,
            baseline_name=baseline[0],
            baseline_score=baseline[1],
            metric=scorer.spec.name,
            previous_reply=proposal.raw_reply,
        )
        if not proposal.ok:
            statuses.append(proposal.status)
            feedback = Feedback(status=proposal.status, message=proposal.message, **about)
            continue
        about.update(
            previous_reply=proposal.raw_reply or proposal.program,
            previous_program=proposal.program,
        )
        ran = run_program(
            proposal.program, scorer.contexts, trusted=backend.trusted_programs, **limits
        )
        folder.write_json(f"round_{r}/sandbox.json", ran.to_dict())
        statuses.append(ran.status)
        if not ran.ok:
            feedback = Feedback(status=ran.status, message=ran.message, **about)
            continue
        pattern = precomputed_pattern("program", ran.matrices, scorer.contexts)
        score = scorer.score(pattern)
        folder.write_json(
            f"round_{r}/score.json",
            {"train_score": _round(score), "best_builtin_train": list(baseline)},
        )
        if best is None or scorer.better(score, best.score):
            best = _Candidate(score, proposal, r)
        if proposal.program == previous or _perfect(scorer, score) or r == n_rounds - 1:
            return best, r + 1, statuses
        previous = proposal.program
        feedback = Feedback(
            status="ok",
            message="ran on every example sentence",
            score=score,
            disagreements=scorer.disagreements(pattern),
            **about,
        )
    return best, n_rounds, statuses


def _validate(
    best: _Candidate,
    held: HeadScorer,
    base: HeadResult,
    builtin: float,
    *,
    backend: Hypothesizer,
    library: UserLibrary | None,
    margin: float,
    duplicate_tol: float,
    limits: dict[str, Any],
    folder: HeadFolder,
    n_train: int,
) -> tuple[HeadResult, LibraryAction | None]:
    """Score the best program on held-out sentences and decide what the library should do."""
    proposal = best.proposal
    program = proposal.program or ""
    found = _with(
        base,
        hypothesis=proposal.hypothesis,
        program=program,
        train_score=_round(best.score),
        message=f"best of round {best.round}",
    )
    ran = run_program(program, held.contexts, trusted=backend.trusted_programs, **limits)
    if not ran.ok:
        folder.write_json("validation.json", {"sandbox": ran.to_dict()})
        return _with(found, status="invalid_on_heldout", message=ran.message), None
    pattern = precomputed_pattern("program", ran.matrices, held.contexts)
    score = held.score(pattern)
    match = LibraryMatch()
    if library is not None and library.entries:
        match = held.compare_library(library, pattern, duplicate_tol=duplicate_tol, limits=limits)
    reference = builtin
    if match.best_score is not None and held.better(match.best_score, builtin):
        reference = match.best_score
    beats_smoothed, beats_mix = _beats_fair(held, score, base, margin)
    accepted = (
        library is not None and held.beats(score, reference, margin) and beats_smoothed
        and beats_mix
    )  # fmt: skip
    folder.write_json(
        "validation.json",
        {
            "sandbox": ran.to_dict(),
            "metric": held.spec.name,
            "heldout_score": _round(score),
            "builtin": [base.builtin_name, base.builtin_score],
            "library": [match.best_name, _round(match.best_score)],
            "smoothed": [base.smoothed_name, base.smoothed_alpha, base.smoothed_score],
            "mix": [base.mix_score, base.mix_weights],
            "beats_smoothed": beats_smoothed,
            "beats_mix": beats_mix,
            "margin": margin,
            "accepted": accepted,
        },
    )
    result = _with(
        found,
        status="accepted" if accepted else "validated",
        heldout_score=_round(score),
        library_name=match.best_name,
        library_score=_round(match.best_score),
        beats_builtin=bool(held.better(score, builtin)),
        beats_smoothed=beats_smoothed,
        beats_mix=beats_mix,
        accepted=bool(accepted),
    )
    if library is None:
        return result, None
    provenance = {
        "model": base.model, "layer": base.layer, "head": base.head, "backend": base.backend,
        "metric": held.spec.name, "heldout_score": result.heldout_score,
    }  # fmt: skip
    action = _library_action(result, match, library, proposal, provenance, backend, n_train, held)
    if action is None:
        return result, None
    verb = "merged with near-duplicate" if accepted else "explained by library entry"
    suffix = f"; {verb} {match.duplicate}" if match.duplicate else ""
    return _with(result, library_entry=action.name, message=result.message + suffix), action


def _beats_fair(
    scorer: HeadScorer, score: float | None, result: HeadResult, margin: float
) -> tuple[bool | None, bool | None]:
    """Does ``score`` beat the smoothed built-in and the mix by ``margin``? (None: no score;
    a baseline that could not be computed is no obstacle, as a missing library entry is not)."""
    if score is None or not np.isfinite(score):
        return None, None
    return (
        bool(scorer.beats(score, result.smoothed_score, margin)),
        bool(scorer.beats(score, result.mix_score, margin)),
    )


def _library_action(
    result: HeadResult,
    match: LibraryMatch,
    library: UserLibrary,
    proposal: Proposal,
    provenance: dict[str, Any],
    backend: Hypothesizer,
    n_train: int,
    held: HeadScorer,
) -> LibraryAction | None:
    """Accepted: a new entry, or the near-duplicate's entry replaced by this better program.
    Not accepted but a near-duplicate: this head merged into that entry. Otherwise nothing.
    (The op id is filled in by the head folder when the action is journalled.)"""
    if not result.accepted:
        if match.duplicate is None or _explains(library.get(match.duplicate), provenance):
            return None  # nothing to record, or the entry already stands for this very head
        return LibraryAction("merge", match.duplicate, "", provenance)
    full = {
        **provenance,
        "backend_settings": backend.describe(),
        "prompt_hash": proposal.prompt_hash,
        "program_sha256": hashlib.sha256(result.program.encode()).hexdigest(),
        "train_score": result.train_score,
        "builtin_name": result.builtin_name,
        "builtin_score": result.builtin_score,
        "library_score": result.library_score,
        "smoothed_name": result.smoothed_name,
        "smoothed_alpha": result.smoothed_alpha,
        "smoothed_score": result.smoothed_score,
        "mix_score": result.mix_score,
        "n_train": n_train,
        "n_heldout": len(held.records),
    }
    merged: tuple[dict[str, Any], ...] = ()
    name = f"auto_{_slug(result.model)}_L{result.layer}H{result.head}"
    if match.duplicate is not None:
        old = library.get(match.duplicate)
        others = [p for p in (old.provenance, *old.merged) if not _same_head(p, provenance)]
        name, merged = match.duplicate, tuple(others)
    return LibraryAction(
        "add", name, "", full, program=result.program, hypothesis=result.hypothesis, merged=merged
    )


def _same_head(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("model", "layer", "head"))


def _explains(entry: Any, provenance: dict[str, Any]) -> bool:
    """True when library ``entry`` already lists the head of ``provenance`` (own or merged)."""
    return any(_same_head(h, provenance) for h in entry.heads)


# ----------------------------------------------------------------------------- many heads


def _parse_heads(heads: Any, n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    if heads is None or heads == "all":
        return [(la, h) for la in range(n_layers) for h in range(n_heads)]
    if isinstance(heads, str):
        heads = [h for h in re.split(r"[,\s]+", heads.strip()) if h]
    out: list[tuple[int, int]] = []
    for item in heads:
        if isinstance(item, str):
            m = re.fullmatch(r"\s*[Ll]?(\d+)\s*[.:/Hh]\s*(\d+)\s*", item)
            if not m:
                raise ValueError(f"cannot read head {item!r}. Fix: write LAYER.HEAD, e.g. '5.3'")
            item = (int(m.group(1)), int(m.group(2)))
        layer, head = (int(x) for x in item)
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(
                f"head ({layer}, {head}) is outside the model's {n_layers} layers × {n_heads} "
                "heads (0-based)"
            )
        if (layer, head) not in out:
            out.append((layer, head))
    if not out:
        raise ValueError("no heads to automate. Fix: pass heads=[(layer, head), ...]")
    return out


def _sentences(value: Any, default: str, fallback_every: int | None = None) -> list[str]:
    from attn_tools.data import load_sentences

    if value is None:
        sents = load_sentences(default)
        return sents[::fallback_every] if fallback_every else sents
    if isinstance(value, str):
        return load_sentences(value)
    out = [str(s) for s in value]
    if not out:
        raise ValueError("an empty list of sentences was given. Fix: pass some sentences or None")
    return out


def _digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]


def _library(library: UserLibrary | str | Path | bool | None) -> UserLibrary | None:
    if library is None or library is True:
        return UserLibrary()
    if library is False:
        return None
    return library if isinstance(library, UserLibrary) else UserLibrary(library)


def automate_heads(
    bundle: Any,
    heads: Sequence[tuple[int, int] | str] | str | None,
    *,
    backend: Hypothesizer,
    out: str | Path,
    sentences: Sequence[str] | str | None = None,
    heldout: Sequence[str] | str | None = None,
    rounds: int = 2,
    library: UserLibrary | str | Path | bool | None = None,
    margin: float = 0.01,
    duplicate_tol: float = 0.05,
    sandbox_limits: dict[str, Any] | None = None,
    progress: bool = True,
    metric: str = "jsd",
) -> pd.DataFrame:
    """Run the automation loop over many heads of one model, resumably.

    Args:
        bundle: the `ModelBundle` whose heads are explained.
        heads: ``[(layer, head), ...]``, strings like ``"5.3"``, one string ``"5.3,7.1"``, or
            None / ``"all"`` for every head.
        backend: a `Hypothesizer` (see `make_backend`).
        out: the run folder (created; an existing one is resumed: finished heads are skipped,
            a head killed while committing is completed from its journal).
        sentences: example sentences for the hypothesizer: a list, a sentence-set name, or None
            for every 8th sentence of the ``all`` set (28 sentences of every style).
        heldout: validation sentences, never shown to the hypothesizer: a list, a set name, or
            None for the ``heldout`` set.
        rounds: proposals per head at most (hard bound, also capped at `MAX_ROUNDS`).
        library: a `UserLibrary`, a folder for one, None for the default library in the cache,
            or False to compare with built-ins only and store nothing.
        margin, duplicate_tol: acceptance margin and near-duplicate threshold (`automate_head`).
        sandbox_limits: ``cpu_seconds``, ``memory_mb``, ``timeout`` for the sandbox, and
            ``unsafe_no_os_sandbox=True`` to run LLM-written programs without bubblewrap
            (dangerous: only the language layer then stands between the program and your
            files). Without bubblewrap and without that opt-in, a chat backend is refused
            before any work (`SandboxUnavailable`, with the install command).
        progress: a progress bar over heads.
        metric: a registry metric that ranks patterns (``jsd``, ``sae``, ``mae``).

    Returns:
        One row per head (the `HeadResult` fields), also written to ``out/summary.csv``.

    Example:
        >>> df = automate_heads(load_model("smollm2"), [(5, 3), (7, 1)],
        ...                     backend=make_backend("search"), out="runs/smollm2")
        >>> df[["layer", "head", "heldout_score", "builtin_name", "builtin_score", "accepted"]]
    """
    from attn_tools.extract import extract
    from attn_tools.scoring import score_heads

    spec = ranking_metric(metric)
    head_list = _parse_heads(heads, bundle.n_layers, bundle.n_heads)
    train_texts = _sentences(sentences, "all", fallback_every=8)
    held_texts = _sentences(heldout, "heldout")
    overlap = set(train_texts) & set(held_texts)
    if overlap:
        raise ValueError(
            f"{len(overlap)} held-out sentences are also example sentences (e.g. "
            f"{next(iter(overlap))[:50]!r}); validation must use unseen sentences."
        )
    lib = _library(library)
    unsafe = bool((sandbox_limits or {}).get("unsafe_no_os_sandbox", False))
    if not backend.trusted_programs and not unsafe:
        require_os_sandbox()  # LLM-written programs: refuse before any work, with the fix
    if isinstance(backend, LocalChatModel):
        backend.reuse(bundle)  # the analysed model doubles as the chat model: load once
    run = RunFolder(out, scrub=backend.scrub)
    settings = {
        "model": bundle.name, "fingerprint": bundle.fingerprint, "metric": spec.name,
        "train_sha": _digest(train_texts), "heldout_sha": _digest(held_texts),
        "backend": backend.describe(), "rounds": int(rounds), "margin": margin,
        "library": None if lib is None else str(lib.path),
    }  # fmt: skip
    run.open(settings, head_list, train_texts, held_texts)

    train = extract(bundle, train_texts, progress=False)
    held = extract(bundle, held_texts, progress=False)
    ct, ch = contexts_of(train), contexts_of(held)
    train_table = score_heads(train, builtin_patterns(), contexts=ct, metric=spec.name)
    held_table = score_heads(held, builtin_patterns(), contexts=ch, metric=spec.name)
    fair = fair_baselines(
        train, held, train_contexts=ct, heldout_contexts=ch, heads=head_list, metric=spec.name
    )
    common = dict(
        backend=backend, train_records=train, heldout_records=held, train_contexts=ct,
        heldout_contexts=ch, rounds=rounds, library=lib, margin=margin,
        duplicate_tol=duplicate_tol, train_table=train_table, heldout_table=held_table,
        sandbox_limits=sandbox_limits, metric=spec.name, fair=fair,
    )  # fmt: skip
    rows: list[dict[str, Any]] = []
    bar = _progress_bar(progress, len(head_list), bundle.name)
    try:
        for layer, head in head_list:
            folder = run.head(layer, head)
            result = folder.finished() or folder.replay(lib)
            if result is None:
                result = automate_head(layer, head, folder=folder, **common).to_dict()
            elif "rule" not in result:
                result = _legacy(result, fair, margin, spec.name)
            rows.append(result)
            run.write_summary(rows)
            if bar is not None:
                bar.set_postfix_str(f"L{layer}H{head} {result['status']}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows)


def _legacy(
    result: dict[str, Any], fair: pd.DataFrame, margin: float, metric: str
) -> dict[str, Any]:
    """A head finished before runs had fair baselines: the same decision, the fair columns
    recomputed (same sentences and metric, as `RunFolder.open` checked), ``rule="legacy"``.

    Its ``accepted`` stays as decided then (its library action has happened); ``beats_smoothed``
    and ``beats_mix`` show whether it would pass today's rule.
    """
    full = {**HeadResult(**result).to_dict(), **baseline_row(fair, result["layer"], result["head"])}
    score = full.get("heldout_score")
    if score is not None:
        spec = ranking_metric(metric)
        full["beats_smoothed"] = beats_by(spec, score, full["smoothed_score"], margin)
        full["beats_mix"] = beats_by(spec, score, full["mix_score"], margin)
    return {**full, "rule": "legacy"}


def _progress_bar(progress: bool, total: int, name: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"automate · {name}", unit="head")
