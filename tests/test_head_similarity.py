"""Head distances (Clark et al. 2019, Section 6), classical MDS and clustering.

The reference distance is `scipy.spatial.distance.jensenshannon` (base 2) on one pair of rows at
a time, averaged over rows and then sentences in plain Python; it shares no code with
`attn_tools.syntax`.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from attn_tools.syntax import HeadDistances, cluster_heads, embed_heads, head_distances
from attn_tools.text import parse


def _reference(records, pairs, *, drop_first: bool = False) -> list[float]:
    """Distance of each (i, j) pair of flat head indices, one scipy call per row."""
    out = []
    for i, j in pairs:
        per_sentence = []
        for rec in records:
            L, H, n, _ = rec.attention.shape
            a = np.asarray(rec.attention[i // H, i % H], dtype=np.float64)
            b = np.asarray(rec.attention[j // H, j % H], dtype=np.float64)
            start = 1 if drop_first else 0
            rows = []
            for q in range(start, n):
                x, y = a[q, start:], b[q, start:]
                if x.sum() > 0 and y.sum() > 0:
                    rows.append(jensenshannon(x, y, base=2))
            per_sentence.append(sum(rows) / len(rows))
        out.append(sum(per_sentence) / len(per_sentence))
    return out


def _pairs(m: int, k: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in rng.choice(m, size=2, replace=False)) for _ in range(k)]


def test_token_level_matches_scipy_pairwise(minilm_records):
    records = minilm_records[:3]
    hd = head_distances(records)
    m = hd.matrix.shape[0]
    assert m == records[0].n_layers * records[0].n_heads
    assert np.array_equal(hd.matrix, hd.matrix.T) and (np.diag(hd.matrix) == 0).all()
    assert hd.matrix.min() >= 0 and hd.matrix.max() <= 1
    pairs = _pairs(m, 60)
    got = [hd.matrix[i, j] for i, j in pairs]
    np.testing.assert_allclose(got, _reference(records, pairs), atol=1e-6)
    # real heads differ: the matrix is not degenerate
    off = hd.matrix[~np.eye(m, dtype=bool)]
    assert off.min() > 0.01 and off.max() > 0.5
    assert (hd.layers[13], hd.heads[13]) == (13 // records[0].n_heads, 13 % records[0].n_heads)


def test_drop_first_on_causal_model_matches_scipy(smollm2_records):
    """SmolLM2 (causal): without key 0 the first row has no mass and is left out; the rest are
    renormalised over the kept keys, as scipy does."""
    records = smollm2_records[:2]
    hd = head_distances(records, drop_keys="first")
    assert hd.drop_keys == "first"
    pairs = _pairs(hd.matrix.shape[0], 30, seed=1)
    got = [hd.matrix[i, j] for i, j in pairs]
    np.testing.assert_allclose(got, _reference(records, pairs, drop_first=True), atol=1e-6)
    # the sink dominates: with it dropped, heads look less alike on average
    full = head_distances(records)
    assert hd.matrix.mean() > full.matrix.mean()


def test_word_level_matches_pooled_scipy(minilm_records):
    records = minilm_records[:2]
    parses = parse([r.text for r in records])
    hd = head_distances(records, level="word", parses=parses)
    pairs = _pairs(len(hd.matrix), 25, seed=2)
    needed = sorted({h for pair in pairs for h in pair})
    # reference pooling written here: each word's tokens from character offsets
    pooled = []
    for rec, p in zip(records, parses):
        groups = [[t] for t, sp in enumerate(rec.special_mask) if sp]
        for w in p.words:
            groups.append(
                [
                    t
                    for t, ((s, e), sp) in enumerate(zip(rec.offsets, rec.special_mask))
                    if not sp and any(w.start <= c < w.end for c in range(s, e))
                ]
            )
        groups.sort(key=lambda g: g[0])
        A = rec.attention.reshape(-1, rec.n_tokens, rec.n_tokens).astype(np.float64)
        pooled.append(
            {
                h: np.array(
                    [[A[h][np.ix_(gi, gj)].sum(1).mean() for gj in groups] for gi in groups]
                )
                for h in needed
            }
        )
    for i, j in pairs:
        ref = np.mean([np.mean([jensenshannon(W[i][q], W[j][q], base=2) for q in range(len(W[i]))])
                       for W in pooled])  # fmt: skip
        assert hd.matrix[i, j] == pytest.approx(ref, abs=1e-6)


def test_mds_recovers_a_planar_configuration():
    rng = np.random.default_rng(3)
    points = rng.normal(size=(12, 2))
    D = np.linalg.norm(points[:, None] - points[None], axis=-1)
    emb = embed_heads(D, dim=2)
    assert list(emb.columns) == ["index", "mds1", "mds2", "explained"]
    xy = emb[["mds1", "mds2"]].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(xy[:, None] - xy[None], axis=-1), D, atol=1e-9)
    assert emb.explained.iloc[0] == pytest.approx(1.0)
    # deterministic orientation: the largest coordinate of each axis is positive
    assert (xy[np.abs(xy).argmax(axis=0), [0, 1]] > 0).all()


def test_mds_and_clusters_on_real_heads(minilm_records):
    hd = head_distances(minilm_records[:3])
    emb = embed_heads(hd)
    assert list(emb.columns) == [
        "model",
        "layer",
        "head",
        "level",
        "drop_keys",
        "mds1",
        "mds2",
        "explained",
    ]
    assert 0 < emb.explained.iloc[0] < 1
    xy = emb[["mds1", "mds2"]].to_numpy()
    planar = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    iu = np.triu_indices(len(xy), 1)
    # a 2-D map keeps the broad structure of the distances
    assert np.corrcoef(planar[iu], hd.matrix[iu])[0, 1] > 0.6
    clusters = cluster_heads(hd, 4)
    assert clusters.cluster.nunique() == 4 and clusters.cluster.iloc[0] == 1
    assert list(clusters.columns) == ["model", "layer", "head", "level", "drop_keys", "cluster"]


def test_clusters_separate_two_obvious_groups():
    D = np.full((6, 6), 0.9)
    D[:3, :3] = D[3:, 3:] = 0.1
    np.fill_diagonal(D, 0.0)
    got = cluster_heads(D, 2).cluster.tolist()
    assert got == [1, 1, 1, 2, 2, 2]


def test_bad_inputs(minilm_records):
    with pytest.raises(ValueError, match="square matrix"):
        embed_heads(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="symmetric"):
        cluster_heads(np.array([[0.0, 1.0], [2.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="dim must be"):
        embed_heads(np.zeros((3, 3)), dim=3)
    with pytest.raises(ValueError, match="level must be"):
        head_distances(minilm_records[:1], level="char")
    with pytest.raises(ValueError, match="drop_keys must be"):
        head_distances(minilm_records[:1], drop_keys="everything")
    one = head_distances(minilm_records[:1])
    assert isinstance(one, HeadDistances)
    assert repr(one).startswith("HeadDistances(model='all-MiniLM-L6-v2', heads=72, level='token'")
    assert np.asarray(one).shape == (72, 72)


def test_plot_head_embedding_layers_and_labels(minilm_records, tmp_path):
    from attn_tools.viz import plot_head_embedding

    hd = head_distances(minilm_records[:2])
    emb = embed_heads(hd)
    clusters = cluster_heads(hd, 3)
    # a label table may cover only some heads: the rest are drawn as unlabelled
    some = clusters[clusters.layer < 3]
    fig = plot_head_embedding(emb, some, label_column="cluster", save=tmp_path / "heads.png")
    assert (tmp_path / "heads.png").stat().st_size > 5000
    by_layer, by_label = fig.axes[0], fig.axes[1]
    np.testing.assert_allclose(
        by_layer.collections[0].get_offsets(), emb[["mds1", "mds2"]].to_numpy()
    )
    legend = [t.get_text() for t in by_label.get_legend().get_texts()]
    assert f"unlabelled ({int((emb.layer >= 3).sum())})" in legend
    drawn = sum(len(c.get_offsets()) for c in by_label.collections)
    assert drawn == len(emb)
    single = plot_head_embedding(emb)
    assert len([a for a in single.axes if a.get_label() != "<colorbar>"]) == 1
    with pytest.raises(ValueError, match="lacks the columns"):
        plot_head_embedding(emb, clusters, label_column="head_type")


def test_drop_keys_names_and_callables_agree(minilm_records):
    records = minilm_records[:2]
    named = head_distances(records, drop_keys="special+punct")
    custom = head_distances(records, drop_keys=lambda ctx: ctx.special_mask | ctx.punct_mask)
    np.testing.assert_array_equal(named.matrix, custom.matrix)
    assert named.drop_keys == "special+punct" and custom.drop_keys.startswith("custom:")
    # removing the sink keys changes the answer (the comparison is not vacuous)
    assert np.abs(named.matrix - head_distances(records).matrix).max() > 0.05
