"""Resumable, data-parallel score runs: a run folder with per-shard progress and ``run.json``.

`score_run` is what ``attn-tools score`` runs, in one process or under ``torchrun``. Each rank
takes its sentences (``i % world_size == rank``, `attn_tools.distributed`), extracts and scores
them ``checkpoint_every`` at a time, and after each group writes its checkpoint atomically: the
running sums of both score tables and the corpus numbers of the sentences done. A run that is
killed (``kill -9``, a lost node) and started again with the same command loads the
checkpoints and goes on with the sentences not done yet, so nothing is counted twice, and it
ends with the same table as an uninterrupted run (the restored float64 sums are bit-exact and
the remaining sentences are added in the same order).

Run folder (``--out``)::

    run.json                                 how the tables were made (see `write_score_run`)
    scores_<model>_<metric>.csv / .parquet   the tables the CLI always wrote (unchanged)
    scores_<model>_<metric>_own_rows.csv / .parquet
    parquet/scores_<model>_<metric>/layer=K/part-0.parquet           partitioned copies
    parquet/scores_<model>_<metric>_own_rows/layer=K/part-0.parquet
    parquet/per_sentence_<model>_<metric>/layer=K/part-0.parquet     with per_sentence=True
    progress/<model>_<metric>/config.json    what the checkpoints belong to
    progress/<model>_<metric>/shard-00000-of-00002.npz   one checkpoint per rank
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attn_tools.distributed import (
    Shard,
    World,
    all_gather,
    barrier,
    check_exactly_once,
    reduce_scorer,
    world,
)

__all__ = ["RUN_FORMAT", "ScoreRun", "read_run", "score_run", "write_score_run"]

#: version of the progress files; a run folder of another version is not resumed
RUN_FORMAT = 1
_TABLES = ("all", "scored")


@dataclass
class ScoreRun:
    """What `score_run` returns on every rank (tables reduced over all ranks).

    Attributes:
        all_rows, own_rows: the two tables of `attn_tools.report.score_tables`.
        stem: file stem of the tables (``<model>_<metric>[_drop-...]``).
        world: this process' place in the run.
        ranks: one dict per rank: ``sentences`` (its whole shard), ``resumed`` (done before this
            start), ``scored_now``, ``seconds``, ``host``.
        provenance: the settings and fingerprints written to ``run.json``.
    """

    all_rows: pd.DataFrame
    own_rows: pd.DataFrame
    stem: str
    world: World
    ranks: list[dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)


def _corpus_hash(texts: Iterable[str]) -> tuple[str, int]:
    digest, n = hashlib.sha256(), 0
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little") + data)
        n += 1
    return digest.hexdigest()[:16], n


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _save_checkpoint(path: Path, scorers: dict[str, Any], done: list[int]) -> None:
    arrays: dict[str, np.ndarray] = {"done": np.asarray(done, dtype=np.int64)}
    for name, scorer in scorers.items():
        for key, value in scorer.state().items():
            arrays[f"{name}/{key}"] = value
    _atomic_write(path, lambda handle: np.savez(handle, **arrays))


def _load_checkpoint(path: Path, scorers: dict[str, Any]) -> list[int]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        for name, scorer in scorers.items():
            prefix = f"{name}/"
            scorer.load_state(
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            )
        return [int(i) for i in arrays["done"]]
    except Exception as exc:  # a damaged checkpoint must not be trusted
        raise ValueError(
            f"the checkpoint {path} cannot be read ({type(exc).__name__}: {exc}). Fix: start "
            "the run again with --fresh (or delete the progress folder)."
        ) from exc


def score_run(
    bundle: Any,
    sentences: Iterable[str],
    out: str | Path,
    *,
    metric: str = "jsd",
    drop_keys: Any = None,
    patterns: Sequence[str] | None = None,
    batch_size: int = 16,
    checkpoint_every: int = 32,
    per_sentence: bool = False,
    fresh: bool = False,
    progress: bool = False,
) -> ScoreRun:
    """Score a corpus in a resumable run folder; data-parallel under ``torchrun``.

    Every rank calls it with the same arguments. Returns the two reduced tables on every rank;
    only rank 0 should write them (`write_score_run`).

    Args:
        bundle: the model (`load_model`; under torchrun each rank loads its own copy).
        sentences: the corpus, the same on every rank (a list, or a stream read once).
        out: the run folder; its ``progress/`` keeps one checkpoint per rank.
        metric, drop_keys, patterns: as in `attn_tools.scoring.score_heads`.
        batch_size: sentences per forward pass.
        checkpoint_every: sentences between two checkpoints of a rank.
        per_sentence: keep every sentence's score (per-sentence Parquet rows; sums identical to
            a single process'); memory and checkpoints grow with the corpus.
        fresh: discard the progress of an earlier run instead of resuming it.
        progress: a progress bar on rank 0.

    Raises:
        ValueError: the folder holds progress of another run (other model, corpus, settings or
            world size), a damaged checkpoint, or a bad argument; each names the fix.
    """
    from attn_tools.extract import extract
    from attn_tools.patterns.base import build_contexts
    from attn_tools.report import file_slug
    from attn_tools.scoring.engine import HeadScorer, drop_keys_label

    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    w = world()
    scorers = {
        rows: HeadScorer(
            patterns, metric=metric, rows=rows, drop_keys=drop_keys, per_sentence=per_sentence
        )
        for rows in _TABLES
    }
    drop = drop_keys_label(drop_keys)
    stem = f"{file_slug(bundle.name)}_{metric}" + (
        "" if drop == "none" else "_drop-" + drop.replace("+", "-")
    )
    # read the corpus once: hash all of it (a resumed run must see the same one), keep our share
    mine: list[tuple[int, str]] = []

    def numbered() -> Iterable[str]:
        for i, text in enumerate(sentences):
            if i % w.world_size == w.rank:
                mine.append((i, text))
            yield text

    corpus, total = _corpus_hash(numbered())
    if total == 0:
        raise ValueError("the corpus has no sentences. Fix: pass a non-empty sentence set.")
    config = {
        "format": RUN_FORMAT,
        "model": bundle.name,
        "fingerprint": bundle.fingerprint,
        "corpus_sha256": corpus,
        "n_sentences": total,
        "metric": metric,
        "drop_keys": drop,
        "patterns": [p.name for p in scorers["all"].patterns],
        "per_sentence": per_sentence,
        "world_size": w.world_size,
    }
    folder = Path(out) / "progress" / stem
    ckpt = folder / f"shard-{w.rank:05d}-of-{w.world_size:05d}.npz"
    if fresh:
        barrier(w)
        if w.is_main:
            shutil.rmtree(folder, ignore_errors=True)
        barrier(w)
    known = folder / "config.json"
    if known.is_file():  # every rank reads it before rank 0 may write it: one verdict for all
        before = json.loads(known.read_text())
        if before != config:
            diff = sorted(k for k in config if before.get(k) != config[k])
            raise ValueError(
                f"{folder} holds the progress of another run (differs in {diff}: was "
                f"{ {k: before.get(k) for k in diff} }). Fix: resume with the same model, "
                "sentences, settings and number of processes, or pass --fresh to start over."
            )
    done = _load_checkpoint(ckpt, scorers) if ckpt.is_file() else []
    barrier(w)
    if w.is_main and not known.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(known, lambda h: h.write(json.dumps(config, indent=2).encode()))
    barrier(w)
    folder.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    finished = set(done)
    todo = [(i, t) for i, t in mine if i not in finished]
    resumed = len(done)
    bar = None
    if progress and w.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), initial=resumed, desc=f"scoring · {bundle.name}", unit="sent")
    need_parse = scorers["all"].need_parse
    try:
        for start in range(0, len(todo), checkpoint_every):
            group = todo[start : start + checkpoint_every]
            numbers = [i for i, _ in group]
            records = extract(
                bundle, [t for _, t in group], batch_size=batch_size, progress=False, shard=False
            )
            contexts = build_contexts(records, with_parse=need_parse)
            for scorer in scorers.values():
                scorer.update(records, contexts, indices=numbers)
            done.extend(numbers)
            _save_checkpoint(ckpt, scorers, done)
            if bar is not None:
                bar.update(len(group))
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    check_exactly_once(all_gather(done, w), total)
    shard = Shard(w, total)
    for scorer in scorers.values():
        reduce_scorer(scorer, shard)
    ranks = all_gather(
        {
            "rank": w.rank,
            "sentences": len(mine),
            "resumed": resumed,
            "scored_now": len(todo),
            "seconds": round(seconds, 3),
            "host": socket.gethostname(),
        },
        w,
    )
    return ScoreRun(
        all_rows=scorers["all"].table(),
        own_rows=scorers["scored"].table(),
        stem=stem,
        world=w,
        ranks=ranks,
        provenance={**config, "checkpoint_every": checkpoint_every, "batch_size": batch_size},
    )


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("attn_tools", "torch", "transformers", "accelerate", "numpy", "pandas", "pyarrow"):
        try:
            out[name] = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:
            module = sys.modules.get(name)
            out[name] = getattr(module, "__version__", "not installed")
    return out


def write_score_run(
    run: ScoreRun, out: str | Path, *, command: Sequence[str] | None = None
) -> list[Path]:
    """Write the run's tables (CSV + Parquet as before, plus partitioned Parquet) and its entry
    in ``run.json``; the paths written. Call it on rank 0 only.

    ``run.json`` holds ``world_size``, ``backend``, ``launcher``, ``command``, ``versions`` and
    per table stem (``runs[stem]``): the model name and fingerprint, the corpus size and hash,
    the settings, ``sentences_per_rank`` (sums to ``n_sentences``), ``resumed_per_rank`` (done
    before the last start), ``seconds_per_rank``, the hosts and the files written.
    """
    from attn_tools.partitioned import write_partitioned
    from attn_tools.report import write_table

    out = Path(out)
    paths = write_table(run.all_rows, out, f"scores_{run.stem}")
    paths += write_table(run.own_rows, out, f"scores_{run.stem}_own_rows")
    paths.append(
        write_partitioned(
            run.all_rows.drop(columns=["per_sentence"], errors="ignore"),
            out / "parquet" / f"scores_{run.stem}",
        )
    )
    paths.append(
        write_partitioned(
            run.own_rows.drop(columns=["per_sentence"], errors="ignore"),
            out / "parquet" / f"scores_{run.stem}_own_rows",
        )
    )
    if "per_sentence" in run.all_rows.columns:
        paths.append(
            write_partitioned(
                per_sentence_rows(run.all_rows), out / "parquet" / f"per_sentence_{run.stem}"
            )
        )
    w = run.world
    sentences = [r["sentences"] for r in run.ranks]
    entry = {
        **run.provenance,
        "sentences_per_rank": sentences,
        "resumed_per_rank": [r["resumed"] for r in run.ranks],
        "scored_now_per_rank": [r["scored_now"] for r in run.ranks],
        "seconds_per_rank": [r["seconds"] for r in run.ranks],
        "hosts": sorted({r["host"] for r in run.ranks}),
        "exactly_once": sum(sentences) == run.provenance["n_sentences"],
        "files": [str(p.relative_to(out)) for p in paths],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return [record_run(out, run.stem, entry, w, command), *paths]


def record_run(out: Path, key: str, entry: dict[str, Any], w: Any, command: Any = None) -> Path:
    """Add ``entry`` under ``runs[key]`` of ``out/run.json`` with the launch's provenance (world
    size, backend, launcher, command, versions) at the top; written atomically. A damaged
    ``run.json`` is replaced, not trusted."""
    path = out / "run.json"
    try:
        info = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        info = {}
    info.update(
        {
            "world_size": w.world_size,
            "backend": w.backend or "none",
            "launcher": w.launcher,
            "command": list(sys.argv if command is None else command),
            "versions": _versions(),
        }
    )
    info.setdefault("runs", {})[key] = entry
    _atomic_write(path, lambda h: h.write(json.dumps(info, indent=2).encode()))
    return path


def per_sentence_rows(table: pd.DataFrame) -> pd.DataFrame:
    """A score table's ``per_sentence`` column as long rows: ``model, layer, head, pattern,
    sentence, score`` (one row per head, pattern and sentence)."""
    if "per_sentence" not in table.columns:
        raise ValueError("the table has no per_sentence column. Fix: score with per_sentence=True.")
    values = np.stack(table["per_sentence"].to_numpy())  # [rows, sentences]
    n = values.shape[1]
    keys = table[["model", "layer", "head", "pattern"]]
    long = keys.loc[keys.index.repeat(n)].reset_index(drop=True)
    long["sentence"] = np.tile(np.arange(n), len(table))
    long["score"] = values.ravel()
    return long


def read_run(out: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder."""
    path = Path(out) / "run.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Fix: pass the --out folder of a score run."
        )
    return json.loads(path.read_text())
