"""Figures that do not mislead, on real MiniLM / SmolLM2 attention.

Fallback rows look different from the pattern, the best head is the darkest cell whatever the
metric's direction, score maps can share one colour range, top-head bars carry their baseline and
their verdict, no title leaves the figure at any model-name length, and a pattern that no head fits
is never given a "best head". Checks read the rendered pixels, the artists or the saved SVG text.
"""

from __future__ import annotations

import dataclasses
import re

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from attn_tools import classify, extract, report, viz
from attn_tools.patterns import build_context, predict
from attn_tools.scoring import score_heads
from attn_tools.viz import canvas

FEW = ["previous_token", "first_token", "self", "punctuation", "uniform"]
REPEATED = "The cat sat on the mat, and then the cat sat on the mat again."
LONG_NAME = "organisation-with-a-long-name/" + "very-long-model-identifier-" * 3 + "x" * 9
assert len(LONG_NAME) == 120


@pytest.fixture(scope="module")
def minilm_scores(minilm_records):
    return score_heads(minilm_records[:12], FEW)


def _rgba(fig: Figure) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float) / 255


def _pixel(ax, x: float, y: float, img: np.ndarray) -> np.ndarray:
    px, py = ax.transData.transform((x, y))
    return img[int(round(img.shape[0] - py)), int(round(px))]


def _luminance(rgb: np.ndarray) -> float:
    return float(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])


def _is_grey(rgb: np.ndarray, tol: float = 0.03) -> bool:
    return bool(rgb.max() - rgb.min() <= tol)


# ----------------------------------------------------------------------------- fallback rows


@pytest.fixture(scope="module")
def repeated_record(smollm2):
    return extract(smollm2, [REPEATED], progress=False)[0]


def test_fallback_rows_of_the_prediction_are_drawn_grey_and_hatched(repeated_record):
    rec = repeated_record
    cmp = report.compare_head(rec, 3, 1, "induction_head")
    empty = ~cmp.has_mass
    assert empty.sum() > rec.n_tokens / 2  # most rows have no earlier copy to induct from
    fig = viz.plot_head_vs_pattern(cmp)
    right = fig.axes[1]
    # the image keeps the full prediction; the fallback rows are covered, not rewritten
    np.testing.assert_allclose(right.images[0].get_array(), cmp.predicted)
    covered = set()
    for patch in right.patches:
        if patch.get_gid() == "fallback":
            y0 = patch.get_y() + 0.5
            covered |= set(range(int(round(y0)), int(round(y0 + patch.get_height()))))
            assert patch.get_hatch() and patch.get_width() == rec.n_tokens
    assert covered == set(np.flatnonzero(empty).tolist())
    img = _rgba(fig)
    for q in range(rec.n_tokens):
        self_cell = _pixel(right, q, q, img)
        if empty[q]:
            # the fallback (attend to self) is grey, not the attention colour map's dark blue
            assert _is_grey(self_cell) and 0.35 < self_cell[0] < 0.75, (q, self_cell)
            # the rest of the row is grey too, and darker than the map's near-white zero
            row = np.array([_pixel(right, k, q, img) for k in range(rec.n_tokens) if k != q])
            assert np.median(row.max(axis=1) - row.min(axis=1)) <= 0.03
            assert np.median([_luminance(p) for p in row]) < 0.93
        else:
            k = int(np.argmax(cmp.predicted[q]))
            rgb = _pixel(right, k, q, img)
            assert rgb[2] - rgb[0] > 0.2, (q, k, rgb)  # the pattern's own weight is blue
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert legend == [canvas.FALLBACK_LABEL]
    assert f"{int(empty.sum())} of {rec.n_tokens} rows fall back to self" in right.get_title()


def test_a_prediction_without_fallback_rows_draws_no_fallback(minilm_records):
    rec = minilm_records[1]
    cmp = report.compare_head(rec, 0, 2, "first_token")
    assert cmp.has_mass.all()
    fig = viz.plot_head_vs_pattern(cmp)
    assert not [p for p in fig.axes[1].patches if str(p.get_gid()).startswith("fallback")]
    assert not fig.legends


def test_pattern_panels_mark_the_rows_each_pattern_leaves_empty(repeated_record):
    rec = repeated_record
    names = ["previous_token", "induction_head", "punctuation", "first_token"]
    fig = viz.plot_patterns(rec, names)
    ctx = build_context(rec)
    panels = [ax for ax in fig.axes if ax.images]
    for ax, name in zip(panels, names):
        _, has_mass = predict(name, ctx)
        cells = [p for p in ax.patches if p.get_gid() == "fallback-self"]
        assert sorted(int(round(p.get_y() + 0.5)) for p in cells) == list(
            np.flatnonzero(~has_mass)
        ), name
    assert [t.get_text() for lg in fig.legends for t in lg.get_texts()] == [canvas.FALLBACK_LABEL]


# ----------------------------------------------------------------------------- colour direction


def _cell_luminance(fig: Figure, n_layers: int, n_heads: int) -> np.ndarray:
    ax = fig.axes[0]
    img = _rgba(fig)
    # seaborn's cell (layer l, head h) spans [h, h + 1] × [l, l + 1]; read it off-centre so that
    # the outline of the best cell is not what is read
    return np.array(
        [
            [_luminance(_pixel(ax, h + 0.5, layer + 0.5, img)) for h in range(n_heads)]
            for layer in range(n_layers)
        ]
    )


@pytest.mark.parametrize("metric", ["jsd", "mul"])
def test_the_best_head_is_the_darkest_cell_whatever_the_metric_direction(minilm_records, metric):
    scores = score_heads(minilm_records[:8], ["previous_token"], metric=metric)
    fig = viz.plot_pattern_scores(scores, "previous_token", annotate=False)
    grid = scores.pivot(index="layer", columns="head", values="mean").to_numpy()
    best = np.nanargmin(grid) if metric == "jsd" else np.nanargmax(grid)
    worst = np.nanargmax(grid) if metric == "jsd" else np.nanargmin(grid)
    lum = _cell_luminance(fig, *grid.shape)
    assert np.argmin(lum) == best
    assert np.argmax(lum) == worst
    # darkness follows the fit: rank correlation between "better" and "darker" is near 1
    better = -grid if metric == "jsd" else grid
    rho = pd.Series(better.ravel()).corr(pd.Series(-lum.ravel()), method="spearman")
    assert rho > 0.97
    cbar = fig.axes[1]
    assert "darker = better" in cbar.get_ylabel()
    assert ("lower is better" if metric == "jsd" else "higher is better") in cbar.get_ylabel()
    img = _rgba(fig)
    top = img[int(img.shape[0] - cbar.transAxes.transform((0.5, 0.97))[1]),
              int(cbar.transAxes.transform((0.5, 0.97))[0])]  # fmt: skip
    bottom = img[int(img.shape[0] - cbar.transAxes.transform((0.5, 0.03))[1]),
                 int(cbar.transAxes.transform((0.5, 0.03))[0])]  # fmt: skip
    assert _luminance(top) < _luminance(bottom)  # "better" (dark) at the top of the bar
    assert cbar.title.get_text() == "better"


# ----------------------------------------------------------------------------- shared range


def test_score_maps_take_a_colour_range(minilm_scores):
    fig = viz.plot_pattern_scores(minilm_scores, "self", vmin=0.0, vmax=1.0)
    assert fig.axes[0].collections[0].get_clim() == (0.0, 1.0)
    own = viz.plot_pattern_scores(minilm_scores, "self").axes[0].collections[0].get_clim()
    sub = minilm_scores[minilm_scores["pattern"] == "self"]["mean"]
    assert own == pytest.approx((sub.min(), sub.max()))


@pytest.mark.parametrize("shared", [True, False])
def test_write_figures_shares_one_colour_range_when_asked(
    minilm_records, minilm_scores, tmp_path, monkeypatch, shared
):
    drawn: dict[str, tuple[float, float]] = {}
    real = viz.plot_pattern_scores

    def recording(scores, pattern, **kwargs):  # the real figure, with its colour range noted
        fig = real(scores, pattern, **kwargs)
        drawn[pattern] = fig.axes[0].collections[0].get_clim()
        return fig

    monkeypatch.setattr(viz, "plot_pattern_scores", recording)
    pats = ["previous_token", "first_token", "self"]
    report.write_figures(minilm_records[:12], minilm_scores, tmp_path, patterns=pats,
                         shared_range=shared)  # fmt: skip
    assert sorted(drawn) == sorted(pats)
    means = minilm_scores[minilm_scores["pattern"].isin(pats)]["mean"]
    if shared:
        assert set(drawn.values()) == {(means.min(), means.max())}
    else:
        assert len(set(drawn.values())) == 3
        for name, clim in drawn.items():
            own = minilm_scores[minilm_scores["pattern"] == name]["mean"]
            assert clim == pytest.approx((own.min(), own.max()))


# ----------------------------------------------------------------------------- top-head bars


def test_top_head_bars_carry_each_heads_uniform_baseline_and_their_verdict(minilm_scores):
    top = classify.top_heads(minilm_scores, "previous_token", k=8)
    fits = top["fits"].to_numpy(bool)
    assert fits.any() and not fits.all()  # both kinds of bar are drawn here
    fig = viz.plot_top_heads(top, baseline=minilm_scores)
    ax = fig.axes[0]
    bars = sorted([p for p in ax.patches if p.get_width() > 0], key=lambda b: -b.get_y())
    uniform = minilm_scores[minilm_scores["pattern"] == "uniform"].set_index(["layer", "head"])
    lines = sorted([ln for ln in ax.lines if ln.get_gid() == "baseline"],
                   key=lambda ln: -ln.get_ydata()[0])  # fmt: skip
    assert len(lines) == len(top)
    colour = np.array(mcolors.to_rgb(viz.pattern_color("previous_token")))
    for row, bar, line in zip(top.itertuples(), bars, lines):
        expected = uniform.loc[(row.layer, row.head), "mean"]
        assert line.get_xdata()[0] == pytest.approx(expected)
        assert bar.get_y() <= np.mean(line.get_ydata()) <= bar.get_y() + bar.get_height()
        face = np.array(bar.get_facecolor()[:3])
        if row.fits:
            assert np.allclose(face, colour, atol=0.01) and not bar.get_hatch()
        else:
            assert bar.get_hatch() and face.mean() > colour.mean() + 0.1  # paler, hatched
    legend = [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    assert "this head's uniform-pattern score (baseline)" in legend
    assert "does not beat its uniform baseline" in legend
    assert ax.get_xlim()[1] >= max(ln.get_xdata()[0] for ln in lines)
    # the baseline may also come as a column of the table itself
    with_column = top.assign(baseline_score=0.5)
    fig = viz.plot_top_heads(with_column)
    assert {ln.get_xdata()[0] for ln in fig.axes[0].lines if ln.get_gid() == "baseline"} == {0.5}
    with pytest.raises(ValueError, match="no 'uniform' rows"):
        viz.plot_top_heads(top, baseline=minilm_scores[minilm_scores["pattern"] != "uniform"])


# ----------------------------------------------------------------------------- no head fits


def test_a_pattern_no_head_fits_is_never_given_a_best_head(minilm_records, minilm_scores, tmp_path):
    import matplotlib

    top = classify.top_heads(minilm_scores, "self", k=10)
    assert not top["fits"].any()  # on MiniLM no head attends to itself beyond chance
    fig = viz.plot_top_heads(top, baseline=minilm_scores)
    assert "no head fits 'self'" in fig.axes[0].get_title()
    fig = viz.plot_pattern_scores(minilm_scores, "self", fits=False)
    title = fig.axes[0].get_title()
    assert "no head fits" in title and "best:" not in title
    assert [p.get_linestyle() for p in fig.axes[0].patches if not p.get_fill()] == ["--"]
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep SVG text searchable
        report.write_figures(minilm_records[:12], minilm_scores, tmp_path,
                             patterns=["self", "first_token"], formats=("svg",))  # fmt: skip
    for kind in ("scores", "top_heads", "example"):
        svg = (tmp_path / f"{kind}-self.svg").read_text()
        assert "no head fits" in svg, kind
        assert "best:" not in svg
        fitting = (tmp_path / f"{kind}-first_token.svg").read_text()
        assert "no head fits" not in fitting, kind
    # the example of a pattern that fits draws the best-ranked head that fits
    first = classify.top_heads(minilm_scores, "first_token", k=10)
    pick = first[first["fits"].astype(bool)].iloc[0]
    svg = (tmp_path / "example-first_token.svg").read_text()
    assert f"L{pick['layer']} H{pick['head']} vs first_token" in svg


# ----------------------------------------------------------------------------- long model names


def _titles_inside(fig: Figure) -> list[str]:
    """Every title of ``fig`` (suptitle, axes titles), checked to lie inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [fig._suptitle] if fig._suptitle is not None else []
    texts += [ax.title for ax in fig.axes if ax.title.get_text()]
    for t in texts:
        ext = t.get_window_extent(renderer)
        assert ext.x0 >= box.x0 - 0.5 and ext.x1 <= box.x1 + 0.5, (t.get_text(), ext, box)
        assert ext.y0 >= box.y0 - 0.5 and ext.y1 <= box.y1 + 0.5, (t.get_text(), ext, box)
    return [t.get_text() for t in texts]


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_no_title_is_clipped_with_a_120_character_model_name(minilm_records, minilm_scores):
    scores = minilm_scores.assign(model=LONG_NAME)
    cmp = report.compare_head(minilm_records[1], 0, 2, "previous_token")
    figures = {
        "grid": viz.plot_best_fit_grid(classify.best_fit(scores)),
        "score map": viz.plot_pattern_scores(scores, "previous_token"),
        "top heads": viz.plot_top_heads(
            classify.top_heads(scores, "previous_token", k=5), baseline=scores
        ),
        "head vs pattern": viz.plot_head_vs_pattern(dataclasses.replace(cmp, model=LONG_NAME)),
    }
    for what, fig in figures.items():
        titles = _titles_inside(fig)
        # the whole name is still there, wrapped over lines
        assert any(_squash(LONG_NAME) in _squash(t) for t in titles), what
        assert fig.get_size_inches()[0] <= 20, what


# ----------------------------------------------------------------------------- calibrated grid


def test_grid_caption_shows_the_calibrated_rule_and_intervals(minilm_records, tmp_path):
    fit = classify.label_heads(minilm_records[:12], ["previous_token", "first_token"], n_boot=200)
    labelled = fit[fit["label"] != "none"]
    assert len(labelled) > 0
    caption = " ".join(" ".join(t.get_text() for t in viz.plot_best_fit_grid(fit).texts).split())
    assert " ".join(fit.attrs["rule"].split()) in caption
    assert "95% interval" in caption
    assert f"median {labelled['effect'].median():.3f}" in caption
    assert f"[{labelled['ci_low'].median():.3f}, {labelled['ci_high'].median():.3f}]" in caption
    weakest = labelled.loc[labelled["ci_low"].idxmin()]
    assert f"weakest L{weakest['layer']} H{weakest['head']}" in caption
    # after a CSV round trip (no attrs) the intervals are still shown, without a level
    report.write_table(fit, tmp_path, "fit")
    back = pd.read_csv(tmp_path / "fit.csv")
    caption = " ".join(" ".join(t.get_text() for t in viz.plot_best_fit_grid(back).texts).split())
    assert f"median {labelled['effect'].median():.3f}" in caption and "median interval" in caption
    # the fast rule has no intervals to show
    fast = classify.best_fit(score_heads(minilm_records[:12], FEW))
    texts = " ".join(t.get_text() for t in viz.plot_best_fit_grid(fast).texts)
    assert "interval" not in texts


@pytest.mark.parametrize("dpi", [100, 150, 300])
def test_grid_caption_and_legend_stay_inside_at_every_dpi(minilm_records, dpi):
    """The rule under the grid is wrapped by measuring text at the figure's dpi; saved at another
    dpi, hinted glyphs are wider. Drawn at 100, 150 and 300 dpi, nothing may leave the figure."""
    from attn_tools.classify import label_heads

    fit = label_heads(minilm_records[:8], ["previous_token", "first_token", "self"], n_boot=50,
                      drop_keys="first")  # fmt: skip
    fig = viz.plot_best_fit_grid(fit, title="What is it doing besides the sink? (keys dropped)")
    fig.set_dpi(dpi)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    right = fig.bbox.x1
    caption = fig._supxlabel.get_window_extent(renderer)  # noqa: SLF001
    assert caption.x1 <= right and caption.x0 >= 0
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert legend.x1 <= right + 1
