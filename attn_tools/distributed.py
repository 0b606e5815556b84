"""Data-parallel runs on torch.distributed: sharding by rank and an exact reduction.

Under ``torchrun --nproc_per_node N`` (or ``accelerate launch``) every process runs the same
program. `world` reads the launcher's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and
joins the process group; sentence ``i`` of the corpus belongs to rank ``i % world_size``
(`shard_sentences`); each rank streams its own sentences keeping only running sums
(`attn_tools.scoring.HeadScorer`), and `reduce_scorer` gathers those sums and merges them in rank
order, so every rank ends with the table a single process computes on the whole corpus: integer
counts exactly, float64 sums up to the order of the additions (~1e-16 relative), and identical
sums whenever per-sentence rows are kept (they are re-added in sentence order).

Why not accelerate's ``PartialState``: on a machine without GPUs it reports a single process
unless it is created with ``cpu=True``, and then every rank would silently process every sentence.
The launcher's environment is the one source of truth here; accelerate launch sets it too.

The reduction always uses a gloo group (CPU tensors and Python objects): the running sums are a
few kilobytes per model, so NCCL would buy nothing, and gloo works on GPU nodes as well.

Other analyses reduce with the generic helpers at the end of this module: `gather_outcome`
(every rank's result; a failure on one rank raises on all, so none waits forever),
`merge_in_sentence_order` (per-sentence rows back in corpus order: `ablate_heads`,
`syntax_table`), `sum_in_rank_order` (float64 sums: `head_stats`, `head_distances`), and
`rank_info` / `write_provenance` for ``run.json``.

The resumable, checkpointed run that the CLI uses lives in `attn_tools.runs`.

Example (``torchrun --nproc_per_node 2 my_script.py``)::

    records = extract(load_model("minilm"), load_sentences("story"))  # this rank's share
    table = score_heads(records)        # reduced: the whole corpus' table on every rank
    if world().is_main:
        table.to_csv("scores.csv")
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import numpy as np

    from attn_tools.scoring.engine import HeadScorer

T = TypeVar("T")

__all__ = [
    "Shard",
    "ShardedRecords",
    "World",
    "all_gather",
    "barrier",
    "default_device",
    "gather_outcome",
    "merge_in_sentence_order",
    "rank_info",
    "reduce_scorer",
    "shard_sentences",
    "sum_in_rank_order",
    "work_alone",
    "world",
    "write_provenance",
]

Launcher = Literal["single", "torchrun", "accelerate", "env"]

_GROUP: Any = None  # the gloo group of the reduction (None: the default group is gloo)
_ALONE = False  # set by work_alone(): this process shards nothing


@dataclass(frozen=True)
class World:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank, world_size, local_rank: from the launcher (0, 1, 0 for a plain process).
        launcher: ``"torchrun"``, ``"accelerate"``, ``"env"`` (only the variables) or ``"single"``.
        backend: the reduction's backend (``"gloo"``), None for a single process.
    """

    rank: int
    world_size: int
    local_rank: int
    launcher: Launcher
    backend: str | None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the one process that writes outputs (rank 0)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} is not an integer. Fix: start the run with "
            "torchrun or accelerate launch, which set it, or unset it."
        ) from None


def _launcher() -> Launcher:
    if any(k.startswith("ACCELERATE_") for k in os.environ):
        return "accelerate"
    if "TORCHELASTIC_RUN_ID" in os.environ or "TORCHELASTIC_RESTART_COUNT" in os.environ:
        return "torchrun"
    return "env"


def world() -> World:
    """This process' place in the run, read from the launcher's environment.

    With ``WORLD_SIZE > 1`` the torch.distributed process group is joined on first call (gloo,
    rendezvous from ``MASTER_ADDR``/``MASTER_PORT``, which torchrun sets). A plain process gets
    ``World(0, 1, 0, "single", None)`` and never imports torch.distributed.

    Raises:
        ValueError: ``RANK`` or ``WORLD_SIZE`` is malformed or out of range.
    """
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size:
        raise ValueError(
            f"RANK={rank} and WORLD_SIZE={size} do not describe a run (need 0 <= RANK < "
            "WORLD_SIZE). Fix: start the processes with torchrun, which numbers them."
        )
    if size == 1:
        return World(0, 1, 0, "single", None)
    _join_group(rank, size)
    return World(rank, size, local, _launcher(), "gloo")


def _join_group(rank: int, size: int) -> None:
    global _GROUP
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError(
            "WORLD_SIZE > 1 but this torch build has no torch.distributed. Fix: install a torch "
            "wheel with distributed support (the PyPI wheels have it)."
        )
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=rank, world_size=size)
    elif dist.get_world_size() != size or dist.get_rank() != rank:
        raise RuntimeError(
            f"the process group already in place has rank {dist.get_rank()} of "
            f"{dist.get_world_size()}, the environment says {rank} of {size}."
        )
    if _GROUP is None and dist.get_backend() != "gloo":
        # a user script joined with NCCL: our CPU objects need a gloo group beside it
        _GROUP = dist.new_group(backend="gloo")


def default_device(w: World | None = None) -> str | None:
    """The device of this rank's model: ``cuda:<local_rank>`` on GPU nodes, else None (the
    loader's default). Without it every rank of a node would load onto ``cuda:0``."""
    w = world() if w is None else w
    if not w.distributed:
        return None
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return f"cuda:{w.local_rank % torch.cuda.device_count()}"
    return "cpu"


def all_gather(obj: Any, w: World | None = None) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    w = world() if w is None else w
    if not w.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.world_size
    dist.all_gather_object(out, obj, group=_GROUP)
    return out


def barrier(w: World | None = None) -> None:
    """Wait for every rank (nothing to do in a single process)."""
    w = world() if w is None else w
    if w.distributed:
        import torch.distributed as dist

        dist.barrier(group=_GROUP)


# ----------------------------------------------------------------------------- sharding


def work_alone() -> None:
    """From now on this process shards nothing and waits for no other rank.

    For work that rank 0 does by itself under torchrun while the other ranks exit (every CLI
    command shards now; a user script may still want it): without it, its ``extract`` calls would
    keep only rank 0's share.
    """
    global _ALONE
    _ALONE = True


@dataclass(frozen=True)
class Shard:
    """The sentences of one rank: corpus numbers ``rank, rank + world_size, ...``.

    ``total`` is the corpus size when it is known (a list), else None (a stream).
    """

    world: World
    total: int | None

    @property
    def indices(self) -> Iterable[int]:
        """Corpus number of each of this rank's sentences, in order."""
        w = self.world
        if self.total is None:
            return itertools.count(w.rank, w.world_size)
        return range(w.rank, self.total, w.world_size)

    def owns(self, index: int) -> bool:
        return index % self.world.world_size == self.world.rank


def shard_sentences(
    sentences: Iterable[str], w: World | None = None
) -> tuple[Iterable[str], Shard | None]:
    """This rank's sentences (``i % world_size == rank``) and their `Shard`; ``(sentences,
    None)`` unchanged in a single process. A stream is read lazily, keeping every
    ``world_size``-th line."""
    w = world() if w is None else w
    if not w.distributed or _ALONE:
        return sentences, None
    if isinstance(sentences, str):
        sentences = [sentences]
    if isinstance(sentences, Sequence):
        return list(sentences[w.rank :: w.world_size]), Shard(w, len(sentences))
    return itertools.islice(sentences, w.rank, None, w.world_size), Shard(w, None)


class ShardedRecords(list):
    """`extract`'s records on one rank of a data-parallel run: a list with its `Shard`.

    `attn_tools.scoring.score_heads` reads ``.shard`` and reduces across ranks; a plain list
    (``list(records)``) is scored locally, as in a single process.
    """

    def __init__(self, records: Iterable[Any], shard: Shard) -> None:
        super().__init__(records)
        self.shard = shard


class ShardedStream(Iterator):
    """`iter_extract`'s stream on one rank: an iterator with its `Shard` (see `ShardedRecords`)."""

    def __init__(self, records: Iterator[Any], shard: Shard) -> None:
        self._records = records
        self.shard = shard

    def __next__(self) -> Any:
        return next(self._records)


# ----------------------------------------------------------------------------- reduction


def check_exactly_once(numbers: Sequence[Sequence[int]], total: int | None) -> None:
    """Raise unless the ranks' sentence numbers cover ``0..total-1`` once each."""
    seen = sorted(itertools.chain.from_iterable(numbers))
    expected = list(range(len(seen) if total is None else total))
    if seen != expected:
        dupes = sorted({i for i, j in zip(seen, seen[1:]) if i == j})[:5]
        raise RuntimeError(
            f"the ranks scored {len(seen)} sentences for a corpus of {len(expected)} "
            f"(repeated: {dupes}); a sentence was lost or counted twice. Fix: start every "
            "process with the same sentences and WORLD_SIZE (torchrun does)."
        )


def reduce_scorer(scorer: HeadScorer, shard: Shard) -> None:
    """Replace ``scorer``'s sums by the sums of every rank, merged in rank order (collective).

    Every rank must call it. Afterwards ``scorer.table()`` is the whole corpus' table on every
    rank; per-sentence rows are ordered by corpus number and, where kept, the float sums are
    recomputed in sentence order, which makes them identical to a single process'.
    """
    from attn_tools.scoring.engine import HeadScorer

    w = shard.world
    if not w.distributed:
        return
    states = all_gather((scorer.state(), scorer.n_records), w)
    counts = [n for _, n in states]
    if shard.total is not None and sum(counts) != shard.total:
        raise RuntimeError(
            f"ranks scored {counts} sentences, {sum(counts)} in all, for a corpus of "
            f"{shard.total}. Fix: score every record a rank extracted, on every rank."
        )
    merged = HeadScorer.__new__(HeadScorer)
    merged.__dict__.update(scorer.__dict__)
    merged.accs, merged.dropped, merged.n_records = {}, 0, 0
    for state, _ in states:
        part = HeadScorer.__new__(HeadScorer)
        part.__dict__.update(scorer.__dict__)
        part.load_state(state)
        merged.merge(part)
    if scorer.per_sentence:
        for acc in merged.accs.values():
            acc.resum()
    scorer.accs, scorer.dropped, scorer.n_records = merged.accs, merged.dropped, merged.n_records


# ----------------------------------------------------------------------------- generic helpers
# (for analyses other than scoring: `attn_tools.stats.head_stats`, `ablate_heads`)

#: exception types re-raised under their own name on the ranks that did not fail
_KNOWN_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "TypeError": TypeError,
    "FileNotFoundError": FileNotFoundError,
}


def gather_outcome(work: Callable[[], T], w: World | None = None) -> list[T]:
    """Run ``work()`` on this rank and return every rank's result, in rank order (collective).

    If ``work`` raises on any rank, every rank raises: the failing rank its own exception, the
    others the same type (ValueError, TypeError, FileNotFoundError; else RuntimeError) with the
    failing rank's message. Without this, a rank that fails before a collective call leaves the
    others waiting in it forever.
    """
    w = world() if w is None else w
    if not w.distributed:
        return [work()]
    failure: Exception | None = None
    result: Any = None
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
        failure = exc
    told = None if failure is None else (type(failure).__name__, str(failure))
    outcomes = all_gather((result, told), w)
    if failure is not None:
        raise failure
    for rank, (_, err) in enumerate(outcomes):
        if err is not None:
            name, message = err
            raise _KNOWN_ERRORS.get(name, RuntimeError)(f"rank {rank} failed: {message}")
    return [r for r, _ in outcomes]


def merge_in_sentence_order(parts: Sequence[Sequence[T]]) -> list[T]:
    """Per-sentence items of every rank (rank order) put back in corpus order.

    Item ``k`` of rank ``r`` is sentence ``r + k * world_size`` (the sharding of
    `shard_sentences`), so the result is what one process would have produced.

    Raises:
        RuntimeError: the parts' lengths cannot come from that sharding (a rank lost or
            repeated a sentence).
    """
    sizes = [len(p) for p in parts]
    if sizes and (any(a < b for a, b in zip(sizes, sizes[1:])) or sizes[0] - sizes[-1] > 1):
        raise RuntimeError(
            f"the ranks returned {sizes} per-sentence rows, which no i % world_size sharding "
            "gives (they differ by one at most, lower ranks first). Fix: return one row per "
            "sentence of the rank's shard, on every rank."
        )
    out: list[T] = []
    for k in range(sizes[0] if sizes else 0):
        out.extend(p[k] for p in parts if k < len(p))
    return out


def sum_in_rank_order(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Add the ranks' arrays key by key, in rank order (float64 for floats; a key that a rank
    lacks adds nothing). The keys keep the order in which they are first seen."""
    import numpy as np

    out: dict[str, np.ndarray] = {}
    for rank, part in enumerate(parts):
        for key, value in part.items():
            value = np.asarray(value)
            if key not in out:
                out[key] = value.astype(np.float64) if value.dtype.kind == "f" else value.copy()
            elif out[key].shape != value.shape:
                raise RuntimeError(
                    f"rank {rank} holds {key!r} with shape {value.shape}, the ranks before it "
                    f"{out[key].shape}. Fix: run the same model and settings on every rank."
                )
            else:
                out[key] = out[key] + value
    return out


def rank_info(sentences: int, seconds: float, w: World | None = None) -> list[dict[str, Any]]:
    """Every rank's ``{"rank", "sentences", "seconds", "host"}`` in rank order (collective)."""
    w = world() if w is None else w
    mine = {
        "rank": w.rank,
        "sentences": int(sentences),
        "seconds": round(float(seconds), 3),
        "host": socket.gethostname(),
    }
    return all_gather(mine, w)


def write_provenance(
    out: str | Path,
    key: str,
    entry: Mapping[str, Any],
    *,
    ranks: Sequence[Mapping[str, Any]],
    n_sentences: int,
    w: World | None = None,
    command: Sequence[str] | None = None,
) -> Path:
    """Add one analysis to ``<out>/run.json`` (the file `attn_tools.runs.write_score_run`
    writes): the top-level ``world_size``, ``backend``, ``launcher``, ``command`` and
    ``versions``, and under ``runs[key]`` the ``entry`` plus ``n_sentences``,
    ``sentences_per_rank`` (from ``ranks``, see `rank_info`), ``seconds_per_rank``, ``hosts``,
    ``exactly_once`` (the ranks' sentences sum to the corpus) and ``finished``. Call it on
    rank 0 only. Returns the path."""
    from attn_tools.runs import record_run

    w = world() if w is None else w
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sentences = [int(r["sentences"]) for r in ranks]
    record = {
        **entry,
        "n_sentences": int(n_sentences),
        "sentences_per_rank": sentences,
        "seconds_per_rank": [r["seconds"] for r in ranks],
        "hosts": sorted({r["host"] for r in ranks}),
        "exactly_once": sum(sentences) == int(n_sentences),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return record_run(out, key, record, w, command)
