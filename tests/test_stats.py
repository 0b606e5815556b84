"""Head statistics and head types: every statistic against a plain-loop computation on real
records, hand-made heads whose type is known, held-out agreement, figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from attn_tools import extract, load_sentences
from attn_tools.extract import SentenceAttention
from attn_tools.patterns import build_context
from attn_tools.stats import (
    HEAD_TYPES,
    STAT_COLUMNS,
    HeadTypeThresholds,
    assign_head_types,
    head_stats,
    head_type_agreement,
    type_shares,
)

# ----------------------------------------------------------------------------- the reference


def _reference(records, drop_keys=None) -> pd.DataFrame:
    """The statistics one row, one head, one sentence at a time, with plain Python floats."""
    out = {}
    for rec in records:
        ctx = build_context(rec, with_parse=False)
        n = rec.n_tokens
        if drop_keys == "first":
            dropped = {0}
        elif drop_keys == "special+punct":
            dropped = {k for k in range(n) if rec.special_mask[k] or ctx.punct_mask[k]}
        else:
            dropped = set()
        for layer in range(rec.n_layers):
            for head in range(rec.n_heads):
                rows = []
                for q in range(n):
                    if q in dropped:
                        continue
                    keys = [k for k in range(n) if (rec.kind != "causal" or k <= q)]
                    keys = [k for k in keys if k not in dropped]
                    if len(keys) < 2:
                        continue
                    w = {k: float(rec.attention[layer, head, q, k]) for k in keys}
                    total = sum(w.values())
                    if total <= 0:
                        continue
                    p = {k: v / total for k, v in w.items()}
                    ent = -sum(v * math.log2(v) for v in p.values() if v > 0)
                    rows.append(
                        [
                            ent,
                            ent / math.log2(len(keys)),
                            max(p.values()),
                            p.get(0, 0.0),
                            p.get(q - 1, 0.0) if q > 0 else 0.0,
                            p.get(q, 0.0),
                            sum(v for k, v in p.items() if rec.special_mask[k]),
                            sum(v for k, v in p.items() if ctx.punct_mask[k]),
                            sum(v * abs(q - k) for k, v in p.items()),
                        ]
                    )
                key = (layer, head)
                acc = out.setdefault(key, [[], 0])
                if rows:
                    acc[0].append(np.mean(np.array(rows), axis=0))
                    acc[1] += len(rows)
    table = []
    for (layer, head), (means, n_rows) in sorted(out.items()):
        table.append([layer, head, *np.mean(means, axis=0), len(means), n_rows])
    return pd.DataFrame(table, columns=["layer", "head", *STAT_COLUMNS, "n_sentences", "n_rows"])


@pytest.mark.parametrize("name", ["minilm_records", "smollm2_records"])
@pytest.mark.parametrize("drop", [None, "first", "special+punct"])
def test_every_statistic_matches_a_plain_loop(request, name, drop):
    # the shortest sentences keep the plain loop quick
    records = sorted(request.getfixturevalue(name), key=lambda r: r.n_tokens)[:3]
    got = head_stats(records, drop_keys=drop)
    want = _reference(records, drop)
    assert len(got) == records[0].n_layers * records[0].n_heads
    assert (got["drop_keys"] == (drop or "none")).all()
    for col in STAT_COLUMNS:
        np.testing.assert_allclose(got[col], want[col], atol=1e-9, err_msg=col)
    np.testing.assert_array_equal(got["n_sentences"], want["n_sentences"])
    np.testing.assert_array_equal(got["n_rows"], want["n_rows"])


def test_decoder_row_zero_is_left_out(smollm2_records):
    rec = smollm2_records[0]
    got = head_stats([rec])
    # n - 1 rows per head: row 0 of a decoder has one allowed key (itself), no choice
    assert (got["n_rows"] == rec.n_tokens - 1).all()
    assert got["entropy_norm"].between(0, 1).all()
    got_first = head_stats([rec], drop_keys="first")
    assert (got_first["n_rows"] <= rec.n_tokens - 2).all()  # row 1 now has only itself
    assert (got_first["first_mass"] == 0).all()


def test_streaming_equals_a_list_and_models_stay_apart(minilm_records, smollm2_records):
    recs = minilm_records[:3]
    a = head_stats(recs)
    b = head_stats(r for r in recs)
    pd.testing.assert_frame_equal(a, b)
    both = head_stats([*recs, *smollm2_records[:2]])
    assert set(both["model"]) == {recs[0].model, smollm2_records[0].model}
    assert len(both) == 6 * 12 + 30 * 9


# ----------------------------------------------------------------------------- known types


def _record(att: np.ndarray, kind: str = "encoder") -> SentenceAttention:
    words = ["the", "cat", ",", "sat", "on", "mats", "."]
    text = " ".join(words)
    offsets, pos = [], 0
    for w in words:
        offsets.append((pos, pos + len(w)))
        pos += len(w) + 1
    tokens = ("[CLS]", *words) if kind == "encoder" else ("<s>", *words)
    offsets = [(0, 0), *offsets]
    n = len(tokens)
    assert att.shape[-1] == n
    return SentenceAttention(
        text=text, tokens=tokens, token_ids=tuple(range(n)), offsets=tuple(offsets),
        special_mask=np.array([True] + [False] * (n - 1)), attention=att.astype(np.float32),
        model=f"hand-{kind}", kind=kind,
    )  # fmt: skip


def _known_heads(n: int, causal: bool) -> tuple[np.ndarray, list[str]]:
    eye = np.eye(n)
    prev = np.eye(n, k=-1)
    prev[0, 0] = 1.0
    first = np.zeros((n, n))
    first[:, 0] = 1.0
    # focused on a moving, non-positional key: two back (self for the first two rows)
    two_back = np.eye(n, k=-2)
    two_back[0, 0] = two_back[1, 1] = 1.0
    allowed = np.tril(np.ones((n, n))) if causal else np.ones((n, n))
    broad = allowed / allowed.sum(1, keepdims=True)
    # mixed: split between self and the first token with a little on the previous one: no
    # position reaches half the mass, the rows are sharp enough not to be broad
    mixed = 0.45 * eye + 0.45 * first + 0.1 * np.eye(n, k=-1)
    mixed[0] = allowed[0] / allowed[0].sum()
    heads = [prev, first, eye, two_back, broad, mixed]
    names = ["previous-token", "first-token", "self", "focused", "broad", "mixed"]
    return np.stack(heads)[None], names


@pytest.mark.parametrize("kind", ["encoder", "causal"])
def test_hand_made_heads_get_their_type(kind):
    att, names = _known_heads(8, kind == "causal")
    stats = head_stats([_record(att, kind)])
    assert list(stats["head_type"].astype(str)) == names
    pure_prev = stats.iloc[0]
    # an encoder's [CLS] row has no previous token; a decoder's row 0 is left out
    expected_prev = 7 / 8 if kind == "encoder" else 1.0
    assert pure_prev["prev_mass"] == pytest.approx(expected_prev)
    assert pure_prev["distance"] == pytest.approx(expected_prev)
    assert stats.iloc[1]["first_mass"] == pytest.approx(1.0)
    assert stats.iloc[1]["special_mass"] == pytest.approx(1.0)
    assert stats.iloc[2]["self_mass"] == pytest.approx(1.0)
    assert stats.iloc[2]["entropy_bits"] == pytest.approx(0.0)
    assert stats.iloc[4]["entropy_norm"] == pytest.approx(1.0)
    # punctuation: "," and "." are 2 of the 8 keys of a uniform encoder row
    if kind == "encoder":
        assert stats.iloc[4]["punct_mass"] == pytest.approx(2 / 8)


def test_thresholds_are_overridable_and_checked():
    att, _ = _known_heads(8, False)
    stats = head_stats([_record(att)])
    strict = assign_head_types(stats, HeadTypeThresholds(positional=1.0, focused=1.0, broad=1.0))
    # with every cut at 1 only exact heads keep a positional type: the previous-token head has no
    # previous token in its [CLS] row (mass 7/8 < 1), but every row is one-hot (focus 1): focused
    assert strict["head_type"].astype(str).tolist() == [
        "focused", "first-token", "self", "focused", "broad", "mixed"
    ]  # fmt: skip
    assert strict["type_rule"].iloc[0].startswith("previous-token/first-token/self: mean mass >= 1")
    with pytest.raises(ValueError, match="outside \\[0, 1\\].*Fix:"):
        HeadTypeThresholds(broad=1.5)
    with pytest.raises(TypeError, match="not a number"):
        HeadTypeThresholds(focused="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lacks the column"):
        assign_head_types(stats.drop(columns=["focus"]))


def test_bad_inputs_are_named():
    att, _ = _known_heads(8, False)
    rec = _record(att)
    with pytest.raises(ValueError, match="drop_keys.*Fix:"):
        head_stats([rec], drop_keys="sink")
    with pytest.raises(TypeError, match="record 1 is str"):
        head_stats([rec, "a sentence"])
    with pytest.raises(ValueError, match="no record"):
        head_stats(r for r in [])
    bad = _record(np.full_like(att, np.nan))
    with pytest.raises(ValueError, match="NaN or infinite"):
        head_stats([bad])
    custom = head_stats([rec], drop_keys=lambda ctx: ctx.punct_mask.copy())
    assert (custom["punct_mass"] == 0).all()
    assert custom["drop_keys"].iloc[0] == "custom:<lambda>"


# ----------------------------------------------------------------------------- agreement


def test_kappa_matches_a_textbook_example():
    # 50 heads, two labelings: 20 both A, 15 both B, 5 A/B, 10 B/A -> kappa = 0.4
    pairs = [("focused", "focused")] * 20 + [("broad", "broad")] * 15
    pairs += [("focused", "broad")] * 5 + [("broad", "focused")] * 10
    base = {"model": "m", "layer": 0}
    a = pd.DataFrame([{**base, "head": i, "head_type": x} for i, (x, _) in enumerate(pairs)])
    b = pd.DataFrame([{**base, "head": i, "head_type": y} for i, (_, y) in enumerate(pairs)])
    agree = head_type_agreement(a, b)
    row = agree.summary.iloc[0]
    assert row["n_heads"] == 50 and row["n_same"] == 35
    assert row["agreement"] == pytest.approx(0.7)
    assert row["kappa"] == pytest.approx(0.4)
    m = agree.matrix()
    assert m.loc["focused", "broad"] == 5 and m.loc["broad", "focused"] == 10
    assert int(m.to_numpy().sum()) == 50 and list(m.index) == list(HEAD_TYPES)
    with pytest.raises(ValueError, match="only one table"):
        head_type_agreement(a, b[b["head"] > 0])


def test_types_hold_on_disjoint_real_sentences(minilm, minilm_records):
    held = load_sentences("heldout")[:16]
    assert not set(held) & {r.text for r in minilm_records}
    a = head_stats(minilm_records)
    b = head_stats(extract(minilm, held, progress=False))
    agree = head_type_agreement(a, b)
    row = agree.summary.iloc[0]
    # measured on these sets: ~0.9 agreement, kappa ~0.8; chance agreement is ~0.35
    assert row["agreement"] > 0.75
    assert row["kappa"] > 0.6
    same = head_type_agreement(a, a).summary.iloc[0]
    assert same["agreement"] == 1.0 and same["kappa"] == pytest.approx(1.0)


def test_type_shares_sum_to_one_per_layer(smollm2_records):
    shares = type_shares(head_stats(smollm2_records[:3]))
    assert list(shares.columns) == ["model", "layer", *HEAD_TYPES]
    np.testing.assert_allclose(shares[list(HEAD_TYPES)].sum(axis=1), 1.0)
    assert len(shares) == 30


# ----------------------------------------------------------------------------- figures


def test_head_type_grid_and_layer_progression(minilm_records):
    from attn_tools import viz

    stats = head_stats(minilm_records[:4])
    fig = viz.plot_head_type_grid(stats)
    ax = fig.axes[0]
    cells = {p.get_gid() for p in ax.patches if (p.get_gid() or "").startswith("cell-")}
    assert len(cells) == 72
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    counts = stats["head_type"].astype(str).value_counts()
    for t in HEAD_TYPES:
        assert f"{t} ({int(counts.get(t, 0))})" in legend
    prog = viz.plot_layer_progression(stats)
    bars = prog.axes[0].patches
    assert len(bars) == 6 * len(HEAD_TYPES)  # one bar per (layer, type), stacked
    with pytest.raises(ValueError, match="head_stats table"):
        viz.plot_head_type_grid(stats.drop(columns=["head_type"]))


@pytest.mark.parametrize("kind", ["encoder", "causal"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_heads_with_exact_zeros_match_the_plain_loop(kind, seed):
    # random rows (some cells exactly 0, as after a causal mask or a saturated softmax) on a
    # sentence with punctuation; every drop setting; nothing here was tuned on
    rng = np.random.default_rng(seed)
    n = 8
    att = rng.dirichlet(np.full(n, 0.3), size=(2, 5, n))
    att[rng.random(att.shape) < 0.2] = 0.0
    if kind == "causal":
        att *= np.tril(np.ones((n, n)))
    att += 1e-3 * np.eye(n)  # no row entirely empty; a row may still be empty once keys drop
    att /= att.sum(-1, keepdims=True)
    rec = _record(att, kind)
    for drop in (None, "first", "special+punct"):
        got = head_stats([rec], drop_keys=drop)
        want = _reference([rec], drop)
        for col in STAT_COLUMNS:
            np.testing.assert_allclose(got[col], want[col], atol=1e-6, err_msg=f"{col} {drop}")
        np.testing.assert_array_equal(got["n_rows"], want["n_rows"])


def test_head_chunks_give_the_same_table(monkeypatch, minilm_records):
    import attn_tools.stats as stats_module

    whole = head_stats(minilm_records[:3])
    # a few heads per block (long sentences are split this way to bound memory)
    monkeypatch.setattr(stats_module, "_CHUNK_CELLS", 5 * minilm_records[0].n_tokens ** 2)
    chunked = head_stats(minilm_records[:3])
    pd.testing.assert_frame_equal(whole, chunked)


def test_contexts_carry_the_parse_to_a_drop_keys_callable(minilm_records):
    from attn_tools.patterns import build_contexts

    recs = minilm_records[:3]
    contexts = build_contexts(recs)  # real spaCy parses

    def no_determiners(ctx):
        return np.array([pos == "DET" for pos in ctx.token_pos], dtype=bool)

    masks = {c.text: no_determiners(c) for c in contexts}
    assert any(m.any() for m in masks.values())  # the story sentences have determiners
    with_parse = head_stats(recs, drop_keys=no_determiners, contexts=contexts)
    by_text = head_stats(recs, drop_keys=lambda ctx: masks[ctx.text])
    cols = list(STAT_COLUMNS)
    np.testing.assert_allclose(with_parse[cols], by_text[cols], rtol=1e-12)
    assert not np.allclose(with_parse[cols], head_stats(recs)[cols])  # the parse mattered
    with pytest.raises(ValueError, match="contexts ran out at record 2"):
        head_stats(recs, drop_keys=no_determiners, contexts=contexts[:2])
