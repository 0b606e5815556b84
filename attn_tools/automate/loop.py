"""Steps 4–5 for many heads: propose → sandbox → refine → validate on held-out → grow the library.

`automate_head` runs one head: up to ``rounds`` proposals (a hard bound), each program run in the
sandbox on the example sentences and scored; the largest disagreements go back to the
hypothesizer as feedback. The best program (by its score on the example sentences) is then scored
on held-out sentences the hypothesizer never saw, next to the best built-in pattern and the best
user-library pattern. It joins the library when it beats both by ``margin``; when its held-out
predictions almost equal an entry's (mean JSD distance below ``duplicate_tol``), the two are
merged (the better-scoring program is kept, the other's provenance recorded).

`automate_heads` does this for many heads of one model, writing everything into a run folder as
it goes and resuming after an interruption::

    out/
      run.json                      model, sentences, backend settings (never a key), settings
      summary.csv                   one row per finished head (rewritten after each head)
      heads/L05_H03/
        examples.json               the head_examples document the hypothesizer saw
        round_0/prompt.txt reply.txt proposal.json program.py sandbox.json score.json
        round_1/...
        validation.json             held-out sandbox result and scores
        result.json                 written last: the head is finished (skipped on resume)
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attn_tools._cache import atomic_path
from attn_tools.automate.examples import head_examples
from attn_tools.automate.hypothesize.backends import LocalChatModel
from attn_tools.automate.hypothesize.base import HeadTask, Hypothesizer, Proposal
from attn_tools.automate.hypothesize.prompt import Disagreement, Feedback
from attn_tools.automate.hypothesize.search import EXTRA_ATOMS
from attn_tools.automate.library import UserLibrary, prefetch, sandboxed_pattern
from attn_tools.automate.sandbox import contexts_of, precomputed_pattern, run_program
from attn_tools.patterns.base import Pattern, PatternContext, get_pattern, list_patterns, predict
from attn_tools.scoring import jsd, score_heads, score_pair

__all__ = ["MAX_ROUNDS", "HeadResult", "automate_head", "automate_heads", "builtin_patterns"]

#: the hard upper bound on proposals per head, whatever ``rounds`` asks for.
MAX_ROUNDS = 10
RUN_SCHEMA = "attn_tools.automate_run"
RUN_VERSION = 1


def builtin_patterns() -> list[Pattern]:
    """The built-in patterns a program is compared with: every registered pattern except user
    and baseline ones, plus the extra offsets program search may use (``offset(±3)``)."""
    pats = [p for p in list_patterns() if p.family not in ("user", "baseline")]
    names = {p.name for p in pats}
    return pats + [get_pattern(n) for n in EXTRA_ATOMS if n not in names]


@dataclass(frozen=True)
class HeadResult:
    """The outcome for one head (``to_dict`` is one row of the run's summary).

    ``status``: ``accepted`` (joined or merged into the library), ``validated`` (valid on held-out
    sentences but not better than the library by the margin), ``invalid_on_heldout`` (it failed in
    the sandbox on held-out sentences), ``no_program`` (no round gave a program that ran), or
    ``backend_error`` (no round got an answer).
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- file helpers


def _write_json(path: Path, obj: Any) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(
            json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default), "utf-8"
        )


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _round(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 5)


# ----------------------------------------------------------------------------- scoring helpers


def _scores(
    records: Sequence[Any],
    contexts: Sequence[PatternContext],
    layer: int,
    head: int,
    pattern: Pattern,
) -> np.ndarray:
    """The head's JSD distance to ``pattern`` on each sentence (the scoring engine's numbers)."""
    return np.array(
        [
            score_pair(rec.head(layer, head), predict(pattern, ctx)[0])
            for rec, ctx in zip(records, contexts)
        ]
    )


def _best_in_table(table: pd.DataFrame, layer: int, head: int) -> tuple[str, float]:
    rows = table[(table["layer"] == layer) & (table["head"] == head)]
    best = rows.loc[rows["mean"].idxmin()]
    return str(best["pattern"]), float(best["mean"])


def _top3(row: np.ndarray, labels: Sequence[str]) -> tuple[tuple[int, str, float], ...]:
    keys = [k for k in np.argsort(-row)[:3] if row[k] > 0.05]
    return tuple((int(k), labels[k], round(float(row[k]), 3)) for k in keys)


def _disagreements(
    records: Sequence[Any],
    contexts: Sequence[PatternContext],
    layer: int,
    head: int,
    pattern: Pattern,
    *,
    top: int = 5,
) -> tuple[Disagreement, ...]:
    """The query rows where the program's prediction is furthest from the head."""
    found: list[tuple[float, Disagreement]] = []
    for s, (rec, ctx) in enumerate(zip(records, contexts)):
        att = rec.head(layer, head).astype(np.float64)
        pred = predict(pattern, ctx)[0]
        dist = jsd(att, pred, axis=-1)
        labels = ctx.token_texts
        for q in np.argsort(-dist)[:top]:
            found.append(
                (
                    float(dist[q]),
                    Disagreement(
                        sentence=s,
                        text=ctx.text,
                        query=int(q),
                        query_token=labels[q],
                        head_top=_top3(att[q], labels),
                        program_top=_top3(pred[q], labels),
                        jsd=round(float(dist[q]), 3),
                    ),
                )
            )
    found.sort(key=lambda t: -t[0])
    return tuple(d for _, d in found[:top])


# ----------------------------------------------------------------------------- one head


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "model"


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
        margin: how much lower (better) the held-out JSD must be than the best built-in and
            library pattern for the program to be accepted.
        duplicate_tol: mean JSD distance between held-out predictions under which a program and
            a library entry count as near-duplicates (and are merged).
        out: folder for this head's files (None: nothing written).
        train_table, heldout_table: `score_heads` tables of the built-in patterns (computed here
            when not given; `automate_heads` computes them once for all heads).
        sandbox_limits: ``cpu_seconds``, ``memory_mb``, ``timeout`` for `run_program`.
        top_fraction: share of pairs in the examples (see `head_examples`).

    Returns:
        A `HeadResult`.
    """
    if int(rounds) < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    n_rounds = min(int(rounds), MAX_ROUNDS)
    limits = dict(sandbox_limits or {})
    folder = Path(out) if out is not None else None
    ct = list(train_contexts) if train_contexts is not None else contexts_of(train_records)
    ch = list(heldout_contexts) if heldout_contexts is not None else contexts_of(heldout_records)
    model = train_records[0].model
    builtins = builtin_patterns()
    if train_table is None:
        train_table = score_heads(train_records, builtins, contexts=ct)
    if heldout_table is None:
        heldout_table = score_heads(heldout_records, builtins, contexts=ch)
    train_best = _best_in_table(train_table, layer, head)
    builtin_name, builtin_score = _best_in_table(heldout_table, layer, head)

    examples = head_examples(train_records, layer, head, top_fraction=top_fraction)
    if folder is not None:
        _write_json(folder / "examples.json", examples)
    base = {"model": model, "layer": int(layer), "head": int(head), "backend": backend.name}

    best: tuple[float, Proposal, int] | None = None
    feedback: Feedback | None = None
    statuses: list[str] = []
    rounds_run = 0
    previous_program: str | None = None
    for r in range(n_rounds):
        rounds_run = r + 1
        task = HeadTask(
            examples=examples,
            contexts=tuple(ct),
            attention=tuple(rec.head(layer, head) for rec in train_records),
            round=r,
            feedback=feedback,
        )
        proposal = backend.propose(task)
        rdir = folder / f"round_{r}" if folder is not None else None
        if rdir is not None:
            if proposal.prompt is not None:
                _write_text(rdir / "prompt.txt", proposal.prompt)
            if proposal.raw_reply is not None:
                _write_text(rdir / "reply.txt", proposal.raw_reply)
            _write_json(rdir / "proposal.json", proposal.to_dict())
            if proposal.program:
                _write_text(rdir / "program.py", proposal.program)
        if not proposal.ok:
            statuses.append(proposal.status)
            feedback = Feedback(
                round=r + 1,
                status=proposal.status,
                message=proposal.message,
                baseline_name=train_best[0],
                baseline_score=train_best[1],
                previous_reply=proposal.raw_reply,
            )
            continue
        result = run_program(proposal.program, ct, **limits)
        if rdir is not None:
            _write_json(rdir / "sandbox.json", result.to_dict())
        statuses.append(result.status)
        if not result.ok:
            feedback = Feedback(
                round=r + 1,
                status=result.status,
                message=result.message,
                baseline_name=train_best[0],
                baseline_score=train_best[1],
                previous_reply=proposal.raw_reply or proposal.program,
                previous_program=proposal.program,
            )
            continue
        pat = precomputed_pattern("program", result.matrices, ct)
        train_score = float(np.mean(_scores(train_records, ct, layer, head, pat)))
        if rdir is not None:
            _write_json(
                rdir / "score.json",
                {"train_score": _round(train_score), "best_builtin_train": list(train_best)},
            )
        if best is None or train_score < best[0] - 1e-12:
            best = (train_score, proposal, r)
        same = proposal.program == previous_program
        previous_program = proposal.program
        if same or train_score <= 1e-3 or r == n_rounds - 1:
            break
        feedback = Feedback(
            round=r + 1,
            status="ok",
            message="ran on every example sentence",
            score=train_score,
            baseline_name=train_best[0],
            baseline_score=train_best[1],
            disagreements=_disagreements(train_records, ct, layer, head, pat),
            previous_reply=proposal.raw_reply or proposal.program,
            previous_program=proposal.program,
        )

    def finish(**kw: Any) -> HeadResult:
        res = HeadResult(
            **base,
            rounds_run=rounds_run,
            builtin_name=builtin_name,
            builtin_score=_round(builtin_score),
            folder=None if folder is None else str(folder),
            **kw,
        )
        if folder is not None:
            _write_json(folder / "result.json", res.to_dict())
        return res

    if best is None:
        status = "backend_error" if all(s == "backend_error" for s in statuses) else "no_program"
        return finish(status=status, message=f"round results: {', '.join(statuses)}")

    train_score, proposal, best_round = best
    program = proposal.program or ""
    held = run_program(program, ch, **limits)
    if not held.ok:
        if folder is not None:
            _write_json(folder / "validation.json", {"sandbox": held.to_dict()})
        return finish(
            status="invalid_on_heldout",
            hypothesis=proposal.hypothesis,
            program=program,
            train_score=_round(train_score),
            message=held.message,
        )
    pat = precomputed_pattern("program", held.matrices, ch)
    heldout_score = float(np.mean(_scores(heldout_records, ch, layer, head, pat)))

    lib_name, lib_score, duplicate = None, None, None
    if library is not None and library.entries:
        lib_name, lib_score, duplicate = _compare_library(
            library, heldout_records, ch, layer, head, pat, limits, duplicate_tol
        )
    reference = min(builtin_score, lib_score if lib_score is not None else np.inf)
    beats = heldout_score < builtin_score
    accepted = library is not None and heldout_score + margin <= reference
    entry_name = None
    message = f"best of round {best_round}"
    if accepted:
        provenance = {
            **base,
            "backend_settings": backend.describe(),
            "prompt_hash": proposal.prompt_hash,
            "program_sha256": hashlib.sha256(program.encode()).hexdigest(),
            "train_score": _round(train_score),
            "heldout_score": _round(heldout_score),
            "builtin_name": builtin_name,
            "builtin_score": _round(builtin_score),
            "library_score": _round(lib_score),
            "n_train": len(train_records),
            "n_heldout": len(heldout_records),
        }
        if duplicate is not None:
            # near-duplicates: keep the better program on this head, record the other's origin
            old = library.get(duplicate)
            library.add(
                duplicate,
                program,
                proposal.hypothesis,
                provenance,
                merged=[old.provenance, *old.merged],
            )
            entry_name = duplicate
            message += f"; merged with near-duplicate {duplicate}"
        else:
            entry_name = f"auto_{_slug(model)}_L{layer}H{head}"
            library.add(entry_name, program, proposal.hypothesis, provenance)
    elif duplicate is not None:
        library.merge(duplicate, {**base, "heldout_score": _round(heldout_score)})
        entry_name = duplicate
        message += f"; explained by library entry {duplicate}"
    if folder is not None:
        _write_json(
            folder / "validation.json",
            {
                "sandbox": held.to_dict(),
                "heldout_score": _round(heldout_score),
                "builtin": [builtin_name, _round(builtin_score)],
                "library": [lib_name, _round(lib_score)],
                "margin": margin,
                "accepted": accepted,
            },
        )
    return finish(
        status="accepted" if accepted else "validated",
        hypothesis=proposal.hypothesis,
        program=program,
        train_score=_round(train_score),
        heldout_score=_round(heldout_score),
        library_name=lib_name,
        library_score=_round(lib_score),
        beats_builtin=bool(beats),
        accepted=bool(accepted),
        library_entry=entry_name,
        message=message,
    )


def _compare_library(
    library: UserLibrary,
    records: Sequence[Any],
    contexts: Sequence[PatternContext],
    layer: int,
    head: int,
    program: Pattern,
    limits: dict[str, Any],
    duplicate_tol: float,
) -> tuple[str | None, float | None, str | None]:
    """Best library entry on this head (name, held-out score) and a near-duplicate, if any."""
    best_name, best_score, duplicate, closest = None, None, None, np.inf
    ours = [predict(program, ctx)[0] for ctx in contexts]
    for entry in library.entries:
        try:
            source = library.source(entry.name)
        except (OSError, ValueError):
            continue
        status, _ = prefetch(source, contexts, **limits)
        if status != "ok":
            continue
        pat = sandboxed_pattern(entry.name, source, entry.hypothesis, **limits)
        score = float(np.mean(_scores(records, contexts, layer, head, pat)))
        if best_score is None or score < best_score:
            best_name, best_score = entry.name, score
        theirs = [predict(pat, ctx)[0] for ctx in contexts]
        dist = float(np.mean([jsd(a, b, axis=-1).mean() for a, b in zip(ours, theirs)]))
        if dist < duplicate_tol and dist < closest:
            duplicate, closest = entry.name, dist
    return best_name, best_score, duplicate


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
        raise ValueError("an empty list of sentences was given")
    return out


def _digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]


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
) -> pd.DataFrame:
    """Run the automation loop over many heads of one model, resumably.

    Args:
        bundle: the `ModelBundle` whose heads are explained.
        heads: ``[(layer, head), ...]``, strings like ``"5.3"``, one string ``"5.3,7.1"``, or
            None / ``"all"`` for every head.
        backend: a `Hypothesizer` (see `make_backend`).
        out: the run folder (created; an existing one is resumed: finished heads are skipped).
        sentences: example sentences for the hypothesizer: a list, a sentence-set name, or None
            for every 8th sentence of the ``all`` set (28 sentences of every style).
        heldout: validation sentences, never shown to the hypothesizer: a list, a set name, or
            None for the ``heldout`` set.
        rounds: proposals per head at most (hard bound, also capped at `MAX_ROUNDS`).
        library: a `UserLibrary`, a folder for one, None for the default library in the cache,
            or False to compare with built-ins only and store nothing.
        margin, duplicate_tol: acceptance margin and near-duplicate threshold (`automate_head`).
        sandbox_limits: ``cpu_seconds``, ``memory_mb``, ``timeout`` for the sandbox.
        progress: a progress bar over heads.

    Returns:
        One row per head (the `HeadResult` fields), also written to ``out/summary.csv``.

    Example:
        >>> df = automate_heads(load_model("smollm2"), [(5, 3), (7, 1)],
        ...                     backend=make_backend("search"), out="runs/smollm2")
        >>> df[["layer", "head", "heldout_score", "builtin_name", "builtin_score", "accepted"]]
    """
    from attn_tools.extract import extract

    out = Path(out).expanduser()
    head_list = _parse_heads(heads, bundle.n_layers, bundle.n_heads)
    train_texts = _sentences(sentences, "all", fallback_every=8)
    held_texts = _sentences(heldout, "heldout")
    overlap = set(train_texts) & set(held_texts)
    if overlap:
        raise ValueError(
            f"{len(overlap)} held-out sentences are also example sentences (e.g. "
            f"{next(iter(overlap))[:50]!r}); validation must use unseen sentences."
        )
    if library is None or library is True:
        lib: UserLibrary | None = UserLibrary()
    elif library is False:
        lib = None
    elif isinstance(library, UserLibrary):
        lib = library
    else:
        lib = UserLibrary(library)
    if isinstance(backend, LocalChatModel):
        backend.reuse(bundle)  # the analysed model doubles as the chat model: load once

    run = {
        "schema": RUN_SCHEMA,
        "version": RUN_VERSION,
        "model": bundle.name,
        "fingerprint": bundle.fingerprint,
        "train_sha": _digest(train_texts),
        "heldout_sha": _digest(held_texts),
        "backend": backend.describe(),
        "rounds": int(rounds),
        "margin": margin,
        "library": None if lib is None else str(lib.path),
    }
    run_file = out / "run.json"
    if run_file.is_file():
        old = json.loads(run_file.read_text(encoding="utf-8"))
        for key in ("model", "fingerprint", "train_sha", "heldout_sha"):
            if old.get(key) != run[key]:
                raise ValueError(
                    f"{out} holds a run with another {key} ({old.get(key)!r} vs {run[key]!r}). "
                    "Fix: pass a new out folder, or the same model and sentences to resume."
                )
        run["heads"] = sorted({*map(tuple, old.get("heads", [])), *head_list})
    else:
        run["heads"] = head_list
        run["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_json(run_file, {**run, "train_sentences": train_texts, "heldout_sentences": held_texts})

    train = extract(bundle, train_texts, progress=False)
    held = extract(bundle, held_texts, progress=False)
    ct, ch = contexts_of(train), contexts_of(held)
    builtins = builtin_patterns()
    train_table = score_heads(train, builtins, contexts=ct)
    held_table = score_heads(held, builtins, contexts=ch)

    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(head_list), desc=f"automate · {bundle.name}", unit="head")
    try:
        for layer, head in head_list:
            folder = out / "heads" / f"L{layer:02d}_H{head:02d}"
            done = folder / "result.json"
            result: dict[str, Any] | None = None
            if done.is_file():
                try:
                    result = json.loads(done.read_text(encoding="utf-8"))
                except json.JSONDecodeError:
                    result = None
                if result is not None and result.get("status") == "backend_error":
                    result = None  # transient failures are retried on resume
            if result is None:
                res = automate_head(
                    layer,
                    head,
                    backend=backend,
                    train_records=train,
                    heldout_records=held,
                    train_contexts=ct,
                    heldout_contexts=ch,
                    rounds=rounds,
                    library=lib,
                    margin=margin,
                    duplicate_tol=duplicate_tol,
                    out=folder,
                    train_table=train_table,
                    heldout_table=held_table,
                    sandbox_limits=sandbox_limits,
                )
                result = res.to_dict()
            rows.append(result)
            summary = pd.DataFrame(rows).drop(columns=["program"], errors="ignore")
            with atomic_path(out / "summary.csv", suffix=".csv") as tmp:
                summary.to_csv(tmp, index=False)
            if bar is not None:
                bar.set_postfix_str(f"L{layer}H{head} {result['status']}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return pd.DataFrame(rows)
