"""Figures on real MiniLM / SmolLM2 attention: what is drawn is checked against the data.

Pixel checks render with Agg and read the colour at a cell's position, so a wrong colour, a
missing tie split, a flipped layer axis or a label that is not the best fit fails here.
"""

from __future__ import annotations

import warnings

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from attn_tools import classify, extract, report, viz
from attn_tools.patterns import REGISTRY, build_context, predict
from attn_tools.scoring import score_heads, score_pair

FEW = ["previous_token", "first_token", "self", "punctuation", "uniform"]


@pytest.fixture(scope="module")
def minilm_scores(minilm_records):
    return score_heads(minilm_records[:12], FEW)


@pytest.fixture(scope="module")
def long_record(minilm):
    from attn_tools import load_sentences

    text = " ".join(load_sentences("all"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # truncation to 512 tokens is the point here
        rec = extract(minilm, [text], progress=False, cache=False)[0]
    assert rec.n_tokens == 512
    return rec


def _rgba(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255


def _pixel(fig: Figure, ax, x: float, y: float, img: np.ndarray) -> np.ndarray:
    """Colour at data coordinates (x, y) of ``ax`` in the rendered image."""
    px, py = ax.transData.transform((x, y))
    height = img.shape[0]
    return img[int(round(height - py)), int(round(px))]


def _close(rgb: np.ndarray, color: str, tol: float = 0.02) -> bool:
    return bool(np.abs(rgb - np.array(mcolors.to_rgb(color))).max() <= tol)


# ----------------------------------------------------------------------------- colours


def test_pattern_colours_are_stable_distinct_and_never_white():
    names = list(REGISTRY)
    colours = [viz.pattern_color(n) for n in names]
    assert len(set(colours)) == len(colours), "two built-in patterns share a colour"
    assert viz.NONE_COLOR not in colours
    assert viz.pattern_color("none") == "#ffffff"
    # hash colours: fixed for a name (pinned, so they never drift between releases) and not pale
    assert viz.pattern_color("my_llm_pattern_3") == viz.pattern_color("my_llm_pattern_3")
    assert viz.pattern_color("my_llm_pattern_3") == "#7140af"
    for name in ("offset(5)", "dep(nmod)", "program_17", "shuffled(previous_token)"):
        rgb = np.array(mcolors.to_rgb(viz.pattern_color(name)))
        assert rgb.max() <= 0.91 and rgb.min() < 0.8, name  # visibly not white


# ----------------------------------------------------------------------------- token labels


def test_thin_ticks_keeps_every_label_when_they_fit_and_thins_evenly_otherwise():
    assert viz.thin_ticks(5, 40) == [0, 1, 2, 3, 4]
    idx = viz.thin_ticks(512, 40)
    assert len(idx) <= 40 and idx[0] == 0
    assert len(set(np.diff(idx))) == 1 and np.diff(idx)[0] == 13  # ceil(512 / 40)
    assert viz.thin_ticks(0, 10) == []


def test_plot_head_small_sentence_shows_every_token_and_the_head(minilm_records):
    rec = minilm_records[0]
    fig = viz.plot_head(rec, 2, 5)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), rec.head(2, 5))
    assert [t.get_text() for t in ax.get_yticklabels()] == rec.labels
    assert [t.get_text() for t in ax.get_xticklabels()] == rec.labels
    assert "query" in ax.get_ylabel() and "key" in ax.get_xlabel()
    assert "layer 2, head 5" in ax.get_title()


def test_plot_head_five_tokens_is_readable(minilm):
    rec = extract(minilm, ["Dogs bark loudly."], progress=False)[0]
    assert rec.n_tokens <= 6
    fig = viz.plot_head(rec, 0, 0)
    ax = fig.axes[0]
    fig.canvas.draw()
    fonts = {t.get_fontsize() for t in ax.get_yticklabels()}
    assert min(fonts) >= 8  # a short sentence gets full-size labels
    assert [t.get_text() for t in ax.get_yticklabels()] == rec.labels


def test_plot_head_512_tokens_thins_labels_without_overlap(long_record):
    fig = viz.plot_head(long_record, 3, 4)
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        shown = [t for t in labels if t.get_visible() and t.get_text()]
        assert 10 <= len(shown) <= 64
        boxes = [t.get_window_extent(renderer) for t in shown]
        overlaps = [(a, b) for a, b in zip(boxes, boxes[1:]) if a.overlaps(b)]
        assert not overlaps, f"{len(overlaps)} overlapping tick labels"
    ticks = ax.get_xticks()
    assert ticks[0] == 0 and len(set(np.diff(ticks))) == 1
    assert ax.images[0].get_array().shape == (512, 512)
    assert "√" in fig.axes[1].get_ylabel()  # long inputs default to the square-root scale


def test_tick_labels_name_their_token_index(long_record):
    fig = viz.plot_head(long_record, 0, 0)
    ax = fig.axes[0]
    for tick, label in zip(ax.get_yticks(), ax.get_yticklabels()):
        index, text = label.get_text().split(":", 1)
        assert int(index) == int(tick)
        assert text.replace("\\$", "$") == viz.clean_label(long_record.labels[int(tick)]).replace(
            "\\$", "$"
        )


def test_dollar_signs_and_newlines_in_tokens_do_not_break_rendering(minilm, tmp_path):
    rec = extract(minilm, ["It cost $5 and $6 in 1999."], progress=False)[0]
    fig = viz.plot_head(rec, 0, 0)
    paths = viz.save_figure(fig, tmp_path / "dollars", formats=["png", "svg"])
    assert all(p.stat().st_size > 0 for p in paths)
    assert "$" in rec.labels and r"\$" in [t.get_text() for t in fig.axes[0].get_xticklabels()]


# ----------------------------------------------------------------------------- head vs pattern, layer


def test_head_vs_pattern_draws_both_and_titles_the_exact_score(minilm_records):
    rec = minilm_records[1]
    ctx = build_context(rec)
    fig = viz.plot_head_vs_pattern(report.compare_head(rec, 0, 2, "previous_token", context=ctx))
    left, right = fig.axes[:2]
    predicted, has_mass = predict("previous_token", ctx)
    np.testing.assert_array_equal(left.images[0].get_array(), rec.head(0, 2))
    np.testing.assert_allclose(right.images[0].get_array(), predicted)
    expected = score_pair(rec.head(0, 2), predicted, "jsd", has_mass=has_mass)
    title = fig.get_suptitle()
    assert f"{expected:.3f}" in title and "previous_token" in title and "lower is better" in title
    # the TransformerLens metric scores the raw pattern, and says it is higher-is-better
    cmp = report.compare_head(rec, 0, 2, "previous_token_head", metric="mul", context=ctx)
    fig = viz.plot_head_vs_pattern(cmp)
    raw, mass = predict("previous_token_head", ctx, normalize=False)
    assert f"{score_pair(rec.head(0, 2), raw, 'mul', has_mass=mass):.3f}" in fig.get_suptitle()
    assert "higher is better" in fig.get_suptitle()


def test_head_vs_pattern_on_a_decoder_predicts_nothing_ahead(smollm2_records):
    rec = smollm2_records[0]
    fig = viz.plot_head_vs_pattern(report.compare_head(rec, 3, 1, "next_token"))
    predicted = fig.axes[1].images[0].get_array()
    assert np.triu(predicted, k=1).sum() == 0  # causal mask applied
    assert np.triu(fig.axes[0].images[0].get_array(), k=1).max() < 1e-6


def test_plot_layer_draws_every_head_of_the_layer(smollm2_records):
    rec = smollm2_records[2]
    fig = viz.plot_layer(rec, 7)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == rec.n_heads == 9
    for h, im in enumerate(images):
        np.testing.assert_array_equal(im.get_array(), rec.head(7, h))
    with pytest.raises(IndexError, match="layer 30"):
        viz.plot_layer(rec, 30)


# ----------------------------------------------------------------------------- score figures


def test_pattern_scores_heatmap_holds_the_means_with_layer_zero_at_the_bottom(minilm_scores):
    fig = viz.plot_pattern_scores(minilm_scores, "previous_token")
    ax = fig.axes[0]
    mesh = ax.collections[0]
    sub = minilm_scores[minilm_scores["pattern"] == "previous_token"]
    grid = sub.pivot(index="layer", columns="head", values="mean").to_numpy()
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(grid.shape), grid)
    # layer 0 is drawn below layer 5
    y0 = ax.transData.transform((0, 0.5))[1]
    y5 = ax.transData.transform((0, 5.5))[1]
    assert y0 < y5
    # the outlined cell is the best (lowest JSD) head
    bl, bh = np.unravel_index(np.nanargmin(grid), grid.shape)
    outline = [p for p in ax.patches if not p.get_fill()]
    assert [(int(p.get_x()), int(p.get_y())) for p in outline] == [(bh, bl)]
    assert f"best: layer {bl}, head {bh}" in ax.get_title()


def test_top_heads_bars_follow_classify_top_heads(minilm_scores):
    top = classify.top_heads(minilm_scores, "first_token", k=5)
    fig = viz.plot_top_heads(top)
    ax = fig.axes[0]
    bars = sorted(ax.patches, key=lambda b: -b.get_y())  # top bar first
    np.testing.assert_allclose([b.get_width() for b in bars], top["mean"].to_numpy(float))
    labels = sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    names = [t.get_text() for t in labels]
    assert names == [f"L{r.layer} H{r.head}" for r in top.itertuples()]
    assert all(
        _close(np.array(b.get_facecolor()[:3]), viz.pattern_color("first_token")) for b in bars
    )


def test_score_figures_name_the_missing_pattern_or_model(minilm_scores, smollm2_records):
    with pytest.raises(ValueError, match="'induction_head' is not in the score table"):
        viz.plot_pattern_scores(minilm_scores, "induction_head")
    both = pd.concat([minilm_scores, score_heads(smollm2_records[:3], FEW)])
    with pytest.raises(ValueError, match="several models"):
        viz.plot_pattern_scores(both, "self")
    fig = viz.plot_pattern_scores(both, "self", model="SmolLM2-135M-Instruct")
    assert fig.axes[0].collections[0].get_array().size == 30 * 9


# ----------------------------------------------------------------------------- best-fit grid


def _hand_table() -> pd.DataFrame:
    """A 3 × 4 best-fit table with a tie, a three-way tie and unlabelled heads."""
    rows = []
    labels = {
        (0, 0): ("previous_token", ()),
        (0, 1): ("first_token", ("first_token", "special_tokens")),
        (0, 2): ("none", ()),
        (0, 3): ("self", ("self",)),
        (1, 0): ("punctuation", ("punctuation", "uniform", "last_token")),
        (1, 1): ("none", ()),
        (1, 2): ("first_token", ()),
        (1, 3): ("my_program_pattern", ()),
        (2, 0): ("uniform", ()),
        (2, 1): ("none", ()),
        (2, 2): ("previous_token", ()),
        (2, 3): ("none", ()),
    }
    for (layer, head), (label, tied) in labels.items():
        rows.append(
            {
                "model": "toy",
                "layer": layer,
                "head": head,
                "best_pattern": label if label != "none" else "uniform",
                "best_score": 0.3,
                "label": label,
                "tied": tied,
                "baseline_score": 0.8,
                "threshold": 0.5,
                "rule": "JSD ≤ 0.5 and below the shuffled baseline",
            }
        )
    df = pd.DataFrame(rows)
    df.attrs["rule"] = "label = best pattern when mean JSD ≤ 0.5 and below the shuffled baseline"
    return df


def test_best_fit_grid_colours_ties_none_and_layout():
    table = _hand_table()
    fig = viz.plot_best_fit_grid(table, annotate=False)
    ax = fig.axes[0]
    img = _rgba(fig)
    for row in table.itertuples():
        x, y = row.head, row.layer
        corner = _pixel(fig, ax, x - 0.3, y + 0.3, img)  # top-left corner region
        if row.label == "none":
            assert _close(_pixel(fig, ax, x + 0.3, y - 0.3, img), "#ffffff"), (y, x)
        elif len(row.tied) == 2:
            first, second = row.tied
            assert _close(_pixel(fig, ax, x + 0.3, y + 0.3, img), viz.pattern_color(first))
            assert _close(_pixel(fig, ax, x - 0.3, y - 0.3, img), viz.pattern_color(second))
            assert not _close(_pixel(fig, ax, x + 0.3, y + 0.3, img), viz.pattern_color(second))
        elif len(row.tied) == 3:
            seen = {
                c
                for c in (viz.pattern_color(t) for t in row.tied)
                for dx, dy in ((0.35, 0.1), (-0.35, 0.1), (0.0, -0.35))
                if _close(_pixel(fig, ax, x + dx, y + dy, img), c)
            }
            assert len(seen) == 3, "a three-way tie shows three colours"
        else:
            assert _close(corner, viz.pattern_color(row.label)), (y, x, row.label)
    # layer 0 at the bottom of the grid
    assert ax.transData.transform((0, 0))[1] < ax.transData.transform((0, 2))[1]
    assert fig.get_suptitle() == "What is toy doing? — best-fit patterns across attention heads"
    texts = " ".join(" ".join(t.get_text() for t in fig.texts).split())  # caption lines joined
    assert "mean JSD ≤ 0.5" in texts and "shuffled baseline" in texts
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "previous_token (2)" in legend and "no pattern (4)" in legend
    assert "my_program_pattern (1)" in legend
    handles = {
        t.get_text(): h for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles)
    }
    assert _close(
        np.array(handles["first_token (2)"].get_facecolor()[:3]), viz.pattern_color("first_token")
    )


def test_best_fit_grid_from_real_scores_shows_each_heads_best_pattern(minilm_scores):
    best = classify.best_fit(minilm_scores)
    fig = viz.plot_best_fit_grid(best, annotate=False)
    ax = fig.axes[0]
    img = _rgba(fig)
    assert fig.get_suptitle().startswith("What is all-MiniLM-L6-v2 doing?")
    labelled = 0
    for row in best.itertuples():
        rgb = _pixel(fig, ax, row.head + 0.3, row.layer + 0.3, img)
        if row.label == "none":
            assert _close(_pixel(fig, ax, row.head + 0.3, row.layer - 0.3, img), "#ffffff")
            continue
        labelled += 1
        assert row.label == row.best_pattern  # the grid shows the best fit, not the first passing
        assert _close(rgb, viz.pattern_color(row.best_pattern)), (row.layer, row.head)
    assert labelled > 0
    rule = best.attrs.get("rule") or best["rule"].iloc[0]
    # the caption wraps to the figure's width: compare its words
    assert " ".join(rule.split()) in " ".join(" ".join(t.get_text() for t in fig.texts).split())


def test_best_fit_grid_highlight_and_model_choice(minilm_scores):
    best = classify.best_fit(minilm_scores)
    fig = viz.plot_best_fit_grid(best, highlight=(4, 7))
    marker = [p for p in fig.axes[0].patches if p.get_gid() == "highlight"]
    assert len(marker) == 1 and marker[0].get_xy() == (6.5, 3.5)
    # a figure never classifies: a score table is refused with the call that fixes it
    with pytest.raises(ValueError, match=r"classify.best_fit table .*Fix: viz.plot_best_fit_grid"):
        viz.plot_best_fit_grid(minilm_scores)


# ----------------------------------------------------------------------------- saving


def test_every_figure_saves_png_svg_and_pdf(minilm_records, minilm_scores, tmp_path):
    figs = {
        "head": viz.plot_head(minilm_records[0], 0, 0),
        "grid": viz.plot_best_fit_grid(_hand_table()),
        "scores": viz.plot_pattern_scores(minilm_scores, "self"),
    }
    magic = {".png": b"\x89PNG", ".svg": b"<?xml", ".pdf": b"%PDF"}
    for name, fig in figs.items():
        paths = viz.save_figure(fig, tmp_path / name)
        assert sorted(p.suffix for p in paths) == [".pdf", ".png", ".svg"]
        for p in paths:
            assert p.read_bytes().startswith(magic[p.suffix]), p
    single = viz.plot_head(minilm_records[0], 1, 1, save=tmp_path / "one.svg")
    assert isinstance(single, Figure) and (tmp_path / "one.svg").is_file()
    assert not (tmp_path / "one.png").exists()
    with pytest.raises(ValueError, match="unknown figure format"):
        viz.save_figure(single, tmp_path / "x", formats=["gif"])


def test_write_figures_writes_every_figure_and_the_tables(minilm_records, minilm_scores, tmp_path):
    import matplotlib

    pats = ["previous_token", "first_token"]
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep SVG text searchable
        written = report.write_figures(
            minilm_records[:12], minilm_scores, tmp_path / "out", patterns=pats,
            formats=("png", "svg"),
        )  # fmt: skip
    names = sorted(p.name for p in written)
    expected = {"best_fit_grid"} | {
        f"{kind}-{p}" for kind in ("scores", "top_heads", "example") for p in pats
    }
    assert names == sorted(
        [f"{e}.{f}" for e in expected for f in ("png", "svg")] + ["scores.csv", "best_fit.csv"]
    )
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    table = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert len(table) == len(minilm_scores)
    best = pd.read_csv(tmp_path / "out" / "best_fit.csv")
    assert len(best) == 6 * 12 and {"label", "tied", "best_pattern"} <= set(best.columns)
    # each example panel draws that pattern's best head
    for name in pats:
        top = minilm_scores[minilm_scores["pattern"] == name].sort_values("mean").iloc[0]
        svg = (tmp_path / "out" / f"example-{name}.svg").read_text()
        assert f"L{int(top['layer'])} H{int(top['head'])} vs {name}" in svg


# ----------------------------------------------------------------------------- notebook figures


def test_plot_alignment_links_each_token_to_its_words(minilm):
    from attn_tools import align, parse

    rec = extract(minilm, ["The unbelievable bakers don't stop kneading."], progress=False)[0]
    parsed = parse(rec.text)[0]
    al = align(rec, parsed)
    fig = viz.plot_alignment(rec, parsed)
    ax = fig.axes[0]
    assert len(ax.lines) == sum(len(ws) for ws in al.token_words)
    texts = [t.get_text() for t in ax.texts]
    assert all(viz.clean_label(tok) in texts for tok in rec.tokens)
    split = sum(1 for toks in al.word_tokens if len(toks) > 1)
    assert split >= 2 and f"{split} word(s) split" in fig.get_suptitle()


def test_plot_patterns_draws_each_prediction(smollm2_records):
    rec = smollm2_records[0]
    names = ["previous_token", "next_token", "first_token"]
    fig = viz.plot_patterns(rec, names)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3
    ctx = build_context(rec)
    for ax, name in zip(panels, names):
        np.testing.assert_allclose(ax.images[0].get_array(), predict(name, ctx)[0])
        assert ax.get_title().startswith(name)
    # a decoder's next_token has no row of its own
    assert f"0/{rec.n_tokens} rows" in panels[1].get_title()


def test_plot_head_accepts_word_level_attention(minilm_records):
    from attn_tools import align, parse, to_word_level

    rec = minilm_records[3]
    words = to_word_level(rec, align(rec, parse(rec.text)[0]))
    fig = viz.plot_head(words, 1, 4)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), words.attention[1, 4])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(words.labels)
    assert "word level" in ax.get_title()


def test_consistency_and_linear_fit_figures(minilm_records):
    from attn_tools.classify import consistency, linear_fit

    pats = ["previous_token", "first_token", "punctuation_sink"]
    held = consistency(minilm_records[:12], pats)
    fig = viz.plot_consistency(held)
    ax = fig.axes[0]
    drawn = sum(len(c.get_offsets()) for c in ax.collections)
    assert drawn == 72  # every head once, filled or hollow
    assert f"{held['agree'].mean():.0%}" in ax.get_title()
    mixes = linear_fit(minilm_records[:8], minilm_records[8:14], pats)
    fig = viz.plot_linear_fit(mixes)
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 72
    with pytest.raises(ValueError, match="classify.consistency table"):
        viz.plot_consistency(mixes)


def test_pattern_table_lists_the_registry_with_colours():
    table = viz.pattern_table()
    assert list(table["name"]) == list(REGISTRY)
    assert (table["color"] == [viz.pattern_color(n) for n in REGISTRY]).all()
    assert set(table["family"]) >= {"positional", "lexical", "linguistic", "special", "character"}


def test_write_figures_skips_a_pattern_that_predicts_no_row(smollm2_records, tmp_path):
    """On a decoder `next_token` predicts nothing; scored on own rows it has no score at all."""
    from attn_tools.classify import best_fit

    recs = smollm2_records[:6]  # at least the support rule's 5 sentences
    pats = ["next_token", "previous_token", "first_token", "uniform"]
    ranked = score_heads(recs, pats, rows="scored")
    assert ranked.loc[ranked["pattern"] == "next_token", "mean"].isna().all()
    fit = best_fit(score_heads(recs, pats))
    with pytest.warns(UserWarning, match="no per-pattern figures for next_token"):
        written = report.write_figures(recs, ranked, tmp_path, best=fit)
    names = {p.name for p in written}
    assert "scores-previous_token.png" in names and "best_fit_grid.png" in names
    assert not any("next_token" in n for n in names)


# ----------------------------------------------------------------------------- structure


def test_figures_display_themselves_without_a_global_formatter():
    """A returned figure shows as PNG through its own ``_repr_png_``; importing viz registers
    nothing with IPython (run in a fresh interpreter with a real IPython shell)."""
    import subprocess
    import sys

    code = """
import json
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
png = shell.display_formatter.formatters["image/png"]
before = dict(png.type_printers)
from attn_tools import viz
from matplotlib.figure import Figure
registered = [t.__name__ for t in png.type_printers if t not in before]
fig = viz.new_figure(figsize=(2, 2))
fig.add_subplot().plot([0, 1], [1, 0])
data, _ = shell.display_formatter.format(fig)
raw = data.get("image/png", b"")
png_ok = raw.startswith(b"\\x89PNG") if isinstance(raw, bytes) else raw.startswith("iVBORw0KGgo")
print(json.dumps({"registered": registered, "png": png_ok, "is_figure": isinstance(fig, Figure)}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["registered"] == [] and got["is_figure"] is True
    assert got["png"] is True  # the PNG signature (raw bytes, or base64 in a kernel)


def test_viz_never_scores_or_classifies():
    """Figures take computed results: no module of the package imports classify, and from
    scoring only the metric registry (for display names, directions and ranges)."""
    import ast
    from pathlib import Path

    folder = Path(viz.__file__).parent
    imported: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.setdefault(node.module, set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    imported.setdefault(alias.name, set())
    assert not [m for m in imported if m.startswith("attn_tools.classify")]
    assert "classify" not in imported.get("attn_tools", set())
    assert imported.get("attn_tools.scoring", set()) <= {"get_metric", "MetricSpec"}
    for path in folder.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 800, path.name


@pytest.fixture()
def closeness_metric():
    """A registered higher-is-better metric with its own display name and range."""
    from attn_tools.scoring import MetricSpec, register_metric, unregister_metric

    spec = register_metric(
        MetricSpec(
            name="closeness",
            higher_is_better=True,
            display="closeness (1 − JSD)",
            range=(0.0, 1.0),
            rows=lambda att, pat, options: np.zeros(att.shape[:1] + pat.shape[:2]),
        )
    )
    yield spec
    unregister_metric("closeness")


def test_metric_names_directions_and_ranges_come_from_the_registry(minilm_scores, closeness_metric):
    table = minilm_scores.copy()
    table["mean"] = 1.0 - table["mean"]
    table["metric"] = "closeness"
    fig = viz.plot_pattern_scores(table, "previous_token")
    ax = fig.axes[0]
    grid = table[table["pattern"] == "previous_token"].pivot(
        index="layer", columns="head", values="mean"
    )
    bl, bh = np.unravel_index(np.nanargmax(grid.to_numpy()), grid.shape)  # higher is better
    outline = [p for p in ax.patches if not p.get_fill()]
    assert [(int(p.get_x()), int(p.get_y())) for p in outline] == [(bh, bl)]
    assert fig.axes[1].get_ylabel() == "closeness (1 − JSD) (higher is better); darker = better"
    top = table[table["pattern"] == "first_token"].sort_values("mean", ascending=False).head(4)
    top = top.assign(rank=range(1, 5))
    fig = viz.plot_top_heads(top)
    ax = fig.axes[0]
    assert "mean closeness (1 − JSD) (higher is better)" in ax.get_xlabel()
    assert ax.get_xlim()[0] == 0.0 and ax.get_xlim()[1] >= 1.0  # the metric's own range
    with pytest.raises(ValueError, match="classify.top_heads table"):
        viz.plot_top_heads(table)


def test_pattern_colour_prefers_the_colour_a_pattern_carries(monkeypatch):
    from types import SimpleNamespace

    from attn_tools.patterns import base

    own = SimpleNamespace(name="coloured_pattern", color="#123456")
    assert viz.pattern_color(own) == "#123456"
    monkeypatch.setitem(base.REGISTRY, "coloured_pattern", own)
    assert viz.pattern_color("coloured_pattern") == "#123456"
    plain = SimpleNamespace(name="previous_token", color=None)
    assert viz.pattern_color(plain) == viz.pattern_color("previous_token") == "#1f77b4"


def test_old_head_vs_pattern_call_warns_and_draws_the_same(minilm_records):
    rec = minilm_records[1]
    ctx = build_context(rec)
    with pytest.warns(DeprecationWarning, match="report.compare_head"):
        old = viz.plot_head_vs_pattern(rec, 0, 2, "self", context=ctx)
    new = viz.plot_head_vs_pattern(report.compare_head(rec, 0, 2, "self", context=ctx))
    assert old.get_suptitle() == new.get_suptitle()
