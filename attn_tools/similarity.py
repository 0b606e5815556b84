"""Head similarity, as Clark et al. (2019) Section 6 measures it: how alike two heads attend.

`head_distances` gives the Jensen–Shannon distance between every pair of heads of one model,
averaged over rows and sentences; `embed_heads` maps the heads with classical MDS and
`cluster_heads` groups them by hierarchical clustering. Re-exported by `attn_tools.syntax`
(its historical home), which also holds the candidate and pooling rules these share.

Under ``torchrun`` `head_distances` reduces over ranks (`attn_tools.distributed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from attn_tools.text import Parse, align, pooling_matrices

__all__ = ["HeadDistances", "Level", "cluster_heads", "embed_heads", "head_distances"]


@dataclass(frozen=True, eq=False)
class HeadDistances:
    """Distances between every pair of heads of one model.

    Attributes:
        matrix: ``[L·H, L·H]`` float64, symmetric, zero diagonal; head ``i`` is layer
            ``i // H``, head ``i % H`` (row-major, as ``attention.reshape(L·H, n, n)``).
        layers, heads: ``[L·H]`` the layer and head of each row.
        model, level, drop_keys: what was compared (``drop_keys`` as written in score tables).
        n_sentences: how many sentences were averaged.
    """

    matrix: np.ndarray
    layers: np.ndarray
    heads: np.ndarray
    model: str
    level: str
    drop_keys: str
    n_sentences: int

    def __repr__(self) -> str:
        m = len(self.layers)
        off = self.matrix[~np.eye(m, dtype=bool)] if m > 1 else np.zeros(1)
        return (
            f"HeadDistances(model={self.model!r}, heads={m}, level={self.level!r}, "
            f"drop_keys={self.drop_keys!r}, n_sentences={self.n_sentences}, "
            f"distance {off.min():.3f}..{off.max():.3f})"
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.matrix if dtype is None else self.matrix.astype(dtype)

    def to_frame(self) -> pd.DataFrame:
        """Long form: one row per ordered pair (``layer_a, head_a, layer_b, head_b, distance``)."""
        i, j = np.meshgrid(np.arange(len(self.layers)), np.arange(len(self.layers)), indexing="ij")
        return pd.DataFrame(
            {
                "model": self.model,
                "layer_a": self.layers[i.ravel()],
                "head_a": self.heads[i.ravel()],
                "layer_b": self.layers[j.ravel()],
                "head_b": self.heads[j.ravel()],
                "distance": self.matrix.ravel(),
                "level": self.level,
                "drop_keys": self.drop_keys,
            }
        )


#: elements of one pairwise block (heads × heads × rows × keys); bounds the temporaries to tens
#: of megabytes whatever the model or sentence length.
_PAIR_BLOCK_ELEMENTS = 2_000_000

Level = Literal["token", "word"]


def _sentence_head_distances(A: np.ndarray) -> np.ndarray:
    """``[M, M]`` mean over rows of the JS distance between the rows of every pair of heads.

    ``A [M, n, k]``; rows with no mass in either head (NaN distance) are left out of the mean.
    """
    from attn_tools.scoring.metrics import jsd

    M, n, k = A.shape
    out = np.empty((M, M))
    block = max(1, _PAIR_BLOCK_ELEMENTS // max(M * n * k, 1))
    for start in range(0, M, block):
        stop = min(M, start + block)
        rows = jsd(A[start:stop, None], A[None], base=2.0)  # [b, M, n]
        ok = np.isfinite(rows)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = np.where(ok, rows, 0.0).sum(-1) / ok.sum(-1)
    return out


def head_distances(
    records: Any,
    *,
    level: Level = "token",
    drop_keys: Any = None,
    parses: Sequence[Parse] | None = None,
) -> HeadDistances:
    """Jensen–Shannon distance between every pair of heads, averaged over rows and sentences.

    Clark et al. (2019), Section 6: for heads ``a`` and ``b`` on one sentence, the JS distance
    between ``a``'s and ``b``'s attention rows, averaged over the rows, then averaged over
    sentences (each sentence weighs the same). The distance is the project's convention
    (`attn_tools.scoring.metrics.jsd`: ``sqrt(JSD)``, log base 2, in [0, 1]); the paper used the
    divergence itself, so its numbers are not the same scale.

    Args:
        records: `SentenceAttention` records of one model.
        level: ``"token"`` (model tokens, specials included) or ``"word"`` (pooled as in Clark
            et al.: sum over the pieces attended to, mean over the pieces attending).
        drop_keys: remove sink keys first, as `attn_tools.scoring.score_heads` does
            (``"first"``, ``"special"``, ``"special+punct"`` or a callable ctx → bool[n]); their
            rows are left out too, and the remaining rows are renormalised. A row that keeps no
            mass in either head of a pair is left out of that pair's mean.
        parses: one parse per record for ``level="word"`` (None parses the texts, cached).

    Returns:
        A `HeadDistances` (``.matrix [L·H, L·H]``).
    """
    from attn_tools.scoring.engine import drop_keys_label

    if level not in get_args(Level):
        raise ValueError(f"level must be 'token' or 'word', got {level!r}. Fix: level='word'.")
    shard = getattr(records, "shard", None)
    if shard is None or not shard.world.distributed:
        total, L, H, model, n_sentences = _distance_sums(records, level, drop_keys, parses)
    else:
        # a data-parallel run: each rank sums its sentences, the sums are added in rank order
        from attn_tools.distributed import gather_outcome, sum_in_rank_order

        empty = isinstance(records, list) and not records  # a rank may get no sentence
        parts = [
            p
            for p in gather_outcome(
                lambda: None if empty else _distance_sums(records, level, drop_keys, parses),
                shard.world,
            )
            if p is not None
        ]
        if not parts:
            raise ValueError(
                "records is empty. Fix: pass extract(bundle, sentences) with sentences."
            )
        if len({p[1:4] for p in parts}) > 1:
            raise ValueError(
                f"the ranks hold different models or shapes ({sorted({p[1:4] for p in parts})}). "
                "Fix: load the same model on every rank."
            )
        total = sum_in_rank_order([{"total": p[0]} for p in parts])["total"]
        _, L, H, model, _ = parts[0]
        n_sentences = sum(p[4] for p in parts)
    matrix = total / n_sentences
    matrix = (matrix + matrix.T) / 2  # exact symmetry; jsd is symmetric up to rounding
    np.fill_diagonal(matrix, 0.0)
    layers, heads = np.divmod(np.arange(L * H), H)
    return HeadDistances(
        matrix=matrix,
        layers=layers,
        heads=heads,
        model=model,
        level=level,
        drop_keys=drop_keys_label(drop_keys),
        n_sentences=n_sentences,
    )


def _distance_sums(
    records: Any, level: Level, drop_keys: Any, parses: Sequence[Parse] | None
) -> tuple[np.ndarray, int, int, str, int]:
    """Sum over ``records`` of the per-sentence head distances ``[M, M]``, with L, H, the model
    and the number of sentences."""
    from attn_tools.patterns.base import build_context
    from attn_tools.scoring.engine import dropped_keys
    from attn_tools.syntax import _check_records, _parses  # shared record and parse checks

    recs = _check_records(records)
    parsed: list[Parse | None]
    # punctuation keys come from the token texts; only word level (or a callable that may read
    # the words) needs spaCy
    if level == "word" or callable(drop_keys):
        parsed = list(_parses(recs, parses))
    else:
        parsed = [None] * len(recs)
    L, H = np.shape(recs[0].attention)[:2]
    total = np.zeros((L * H, L * H))
    for rec, p in zip(recs, parsed):
        att = np.asarray(rec.attention)
        n = att.shape[-1]
        A = att.reshape(L * H, n, n).astype(np.float64)
        drop = None
        if drop_keys is not None and drop_keys != "none":
            drop = dropped_keys(build_context(rec, p, with_parse=p is not None), drop_keys)
        keep = np.ones(n, dtype=bool) if drop is None else ~drop
        if level == "word":
            sum_to, mean_from = pooling_matrices(align(rec, p))
            A = mean_from @ A @ sum_to.T
            keep = (sum_to @ keep.astype(np.float64)) > 0  # a unit goes when all its tokens do
        if keep.sum() < 1:
            raise ValueError(
                f"drop_keys={drop_keys!r} removes every key of {rec.text[:50]!r}. "
                "Fix: drop fewer keys (e.g. 'first') or leave that sentence out."
            )
        total += _sentence_head_distances(A[:, keep][:, :, keep])
    return total, int(L), int(H), str(recs[0].model), len(recs)


def _square(distances: HeadDistances | np.ndarray) -> np.ndarray:
    D = np.asarray(distances.matrix if isinstance(distances, HeadDistances) else distances)
    if D.ndim != 2 or D.shape[0] != D.shape[1] or D.shape[0] < 2:
        raise ValueError(
            f"distances must be a square matrix of at least 2 × 2, got shape {D.shape}. "
            "Fix: pass head_distances(records) or its .matrix."
        )
    D = D.astype(np.float64)
    if not np.isfinite(D).all() or (D < 0).any() or not np.allclose(D, D.T, atol=1e-12):
        raise ValueError(
            "distances must be finite, non-negative and symmetric. "
            "Fix: pass head_distances(records) or (D + D.T) / 2 of your own matrix."
        )
    return D


def _head_frame(distances: HeadDistances | np.ndarray, m: int) -> pd.DataFrame:
    if isinstance(distances, HeadDistances):
        return pd.DataFrame(
            {
                "model": distances.model,
                "layer": distances.layers,
                "head": distances.heads,
                "level": distances.level,
                "drop_keys": distances.drop_keys,
            }
        )
    return pd.DataFrame({"index": np.arange(m)})


def embed_heads(distances: HeadDistances | np.ndarray, dim: int = 2) -> pd.DataFrame:
    """Classical (Torgerson) multidimensional scaling of a head-distance matrix.

    Double-centres the squared distances, ``B = −½ J D² J``, and keeps the ``dim`` largest
    eigenpairs (coordinates ``v·sqrt(λ)``; a negative eigenvalue, which a non-Euclidean distance
    can give, contributes zeros). Each axis's sign is fixed so its largest coordinate is
    positive, so the map is the same on every run.

    Returns:
        One row per head: ``model, layer, head, level, drop_keys`` (``index`` for a plain
        matrix), ``mds1`` ..
        ``mds{dim}``, and ``explained``: the share of the positive eigenvalues' sum the
        ``dim`` axes hold (1.0 = the distances are exactly a ``dim``-D map).
    """
    D = _square(distances)
    m = len(D)
    if not isinstance(dim, int) or not 1 <= dim <= m - 1:
        raise ValueError(f"dim must be an integer in 1..{m - 1}, got {dim!r}. Fix: dim=2.")
    J = np.eye(m) - 1.0 / m
    B = -0.5 * J @ (D**2) @ J
    values, vectors = np.linalg.eigh((B + B.T) / 2)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order]
    top = np.clip(values[:dim], 0.0, None)
    coords = vectors[:, :dim] * np.sqrt(top)
    flip = np.sign(coords[np.abs(coords).argmax(axis=0), np.arange(dim)])
    coords = coords * np.where(flip == 0, 1.0, flip)
    positive = values[values > 0].sum()
    out = _head_frame(distances, m)
    for i in range(dim):
        out[f"mds{i + 1}"] = coords[:, i]
    out["explained"] = float(top.sum() / positive) if positive > 0 else float("nan")
    return out


Linkage = Literal["average", "complete", "single", "weighted", "ward"]


def cluster_heads(
    distances: HeadDistances | np.ndarray, n_clusters: int, *, method: Linkage = "average"
) -> pd.DataFrame:
    """Hierarchical clustering of the heads (`scipy.cluster.hierarchy`), cut into clusters.

    ``method="average"`` (UPGMA) by default: it needs only a distance, which the JS distance is;
    ``"ward"`` assumes Euclidean distances and is offered for comparison only.

    Returns:
        One row per head: ``model, layer, head, level, drop_keys`` (``index`` for a plain
        matrix) and ``cluster``
        (1..``n_clusters``, numbered in order of each cluster's first head).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    D = _square(distances)
    m = len(D)
    if not isinstance(n_clusters, int) or not 1 <= n_clusters <= m:
        raise ValueError(f"n_clusters must be an integer in 1..{m}, got {n_clusters!r}")
    if method not in get_args(Linkage):
        raise ValueError(f"method must be one of {list(get_args(Linkage))}, got {method!r}")
    Z = linkage(squareform(D, checks=False), method=method)
    raw = fcluster(Z, t=n_clusters, criterion="maxclust")
    # renumber by first appearance so cluster 1 holds head 0: stable labels across runs
    first = {c: i + 1 for i, c in enumerate(dict.fromkeys(raw.tolist()))}
    out = _head_frame(distances, m)
    out["cluster"] = np.array([first[c] for c in raw.tolist()], dtype=np.int64)
    return out
