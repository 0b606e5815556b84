"""What the anywidget view and grid receive (plain lists), checked against the records themselves.

The browser half (hover, click, theme) is in tests/test_browser_view.py; here the data: token
lists, matrices, word pooling recomputed by hand from the alignment, the grid's colours against
`viz.plot_best_fit_grid`'s, the links `explore` makes, and the package data a wheel needs.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex

from attn_tools.explorer import attention_view, explore, head_grid
from attn_tools.explorer.view import STATIC, AttentionView, grid_data, panel_data
from attn_tools.extract import extract
from attn_tools.report import default_best_fit
from attn_tools.scoring import score_heads
from attn_tools.text import align, parse

tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as in tests/test_environment.py
ROOT = Path(__file__).resolve().parents[1]
# not used while writing the widget: "unbelievably" and "didn't" split differently per model
TEXTS = [
    "Unbelievably, the lighthouse keeper didn't notice the storm.",
    "Quiet orchards ripen slowly in late September.",
]


@pytest.fixture(scope="module")
def records(minilm):
    return extract(minilm, TEXTS, progress=False)


def test_token_panel_is_the_records_head(records):
    rec = records[0]
    data = panel_data(rec, 2, 7)
    assert data["tokens"] == rec.labels and data["level"] == "token"
    assert np.array_equal(np.array(data["matrix"]), rec.attention[2, 7].astype(np.float64))
    assert "layer 2, head 7" in data["title"]


def test_word_panel_pools_pieces_sum_to_mean_from(records):
    """Recomputed by hand from the alignment units: to a word = sum, from a word = mean."""
    rec = records[0]
    units = align(rec, parse(rec.text)[0]).units
    assert len(units) < rec.n_tokens  # some word is several pieces, else the test proves nothing
    data = panel_data(rec, 1, 4, level="word")
    A = rec.attention[1, 4].astype(np.float64)
    expected = np.array(
        [[A[np.ix_(qs, ks)].sum(axis=1).mean() for ks, _ in units] for qs, _ in units]
    )
    got = np.array(data["matrix"])
    assert got.shape == (len(units), len(units))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert "Unbelievably" in data["tokens"] and "[CLS]" in data["tokens"]


def test_view_traits_drive_the_panels(records):
    view = AttentionView(records, layer=1, head=2)
    assert view.n_layers == 6 and view.n_heads == 12 and len(view.sentences) == 2
    view.head = 9
    assert np.array_equal(np.array(view.panels[0]["matrix"]), records[0].attention[1, 9])
    view.sentence = 1
    assert view.panels[0]["tokens"] == records[1].labels
    view.level = "word"
    assert view.panels[0]["level"] == "word" and not view.busy and view.note == ""
    view.sentence = 5  # out of range: a note, the old picture stays
    assert "sentence 5 does not exist" in view.note and view.panels[0]["level"] == "word"


def test_compare_another_head_and_another_model(records, smollm2):
    pair = AttentionView(records, compare=(4, 3))
    assert len(pair.panels) == 2
    assert np.array_equal(np.array(pair.panels[1]["matrix"]), records[0].attention[4, 3])
    pair.head = 5  # the second panel stays on its own head
    assert "layer 4, head 3" in pair.panels[1]["title"]

    two = attention_view(records, compare=smollm2, layer=5, head=8)
    other = extract(smollm2, TEXTS, progress=False)
    assert two.panels[1]["tokens"] == other[0].labels
    assert np.array_equal(np.array(two.panels[1]["matrix"]), other[0].attention[5, 8])
    two.level = "word"  # both tokenizers pool to the same spaCy words (+ their own specials)
    words = [t for t in two.panels[0]["tokens"] if t not in ("[CLS]", "[SEP]")]
    assert [t for t in two.panels[1]["tokens"] if not t.startswith("<|")] == words
    two.head = 11  # SmolLM2 has 9 heads: said, not drawn
    assert len(two.panels) == 1 and "9 heads" in two.note


def test_bad_input_names_the_value_and_the_fix(records, smollm2):
    with pytest.raises(ValueError, match=r"layer 6, head 0 is outside .*Fix"):
        AttentionView(records, layer=6)
    with pytest.raises(ValueError, match=r"level='char'.*Fix"):
        AttentionView(records, level="char")  # type: ignore[arg-type]
    other = extract(smollm2, TEXTS[::-1], progress=False)
    with pytest.raises(ValueError, match=r"texts differ.*Fix"):
        attention_view(records, compare=other)


def test_grid_colours_are_the_static_grids(minilm_records):
    from attn_tools import viz

    scores = score_heads(
        minilm_records[:6], ["previous_token", "first_token", "self", "punctuation", "uniform"]
    )
    best = default_best_fit(scores)
    data = grid_data(best)
    assert (data["n_layers"], data["n_heads"]) == (6, 12) and len(data["cells"]) == 72
    fig = viz.plot_best_fit_grid(best)
    drawn: dict[str, str] = {}
    for patch in fig.axes[0].patches:
        gid = patch.get_gid() or ""
        if gid.startswith("cell-"):
            drawn.setdefault(gid, to_hex(patch.get_facecolor()))
    for cell in data["cells"]:
        assert drawn[f"cell-{cell['layer']}-{cell['head']}"] == to_hex(cell["colors"][0])
        row = best[(best["layer"] == cell["layer"]) & (best["head"] == cell["head"])].iloc[0]
        assert (cell["labels"][0] if cell["labels"] else "none") == row["label"]
    counts = {d["label"]: d["count"] for d in data["legend"]}
    assert counts["no pattern"] == int((best["label"] == "none").sum())
    assert sum(counts.values()) >= 72  # tied heads count once per pattern
    grid = head_grid(best, layer=2, head=3)
    assert (grid.layer, grid.head) == (2, 3) and grid.cells == data["cells"]


def test_explore_links_grid_sliders_view_and_says_how_many_sentences(minilm):
    app = explore(minilm, "story", ["previous_token", "first_token", "self"], max_sentences=3)
    assert re.fullmatch(
        r"explore\('all-MiniLM-L6-v2', 'story'\) uses the first 3 of \d+ sentences "
        r"\(max_sentences=3; pass max_sentences=\.\.\. for more\)",
        app.sentences_note,
    ), app.sentences_note
    assert len(app.records) == 3 and html.escape(app.sentences_note) in app.note.value
    app.grid.layer, app.grid.head = 4, 7  # what a click sends
    assert (app.layer.value, app.head.value) == (4, 7)
    assert (app.view.layer, app.view.head) == (4, 7)
    assert "layer 4, head 7" in app.score.value  # the PNG tab follows too
    mine = app.state.head_scores(4, 7)
    uniform = mine.values[mine.names.index("uniform")]
    assert f"uniform (baseline)</td><td>{uniform:.3f}" in app.top.value
    best = mine.names[mine.best]
    assert re.search(rf"<td>1</td><td>.*?{best}</td>", app.top.value)
    app.sentence.value = 2
    assert app.view.sentence == 2 and app.view.panels[0]["tokens"] == app.records[2].labels
    index = app.add_sentence("Moss softened the old stone wall.")
    assert index == 3 and app.view.sentence == 3 and len(app.view.sentences) == 4
    assert app.view.panels[0]["tokens"] == app.records[3].labels

    static = explore(minilm, records=app.records[:1], interactive=False)
    assert static.view is None and "uses the 1 records given" in static.sentences_note
    with pytest.raises(ValueError, match="max_sentences=0.*Fix"):
        explore(minilm, max_sentences=0)


def test_front_end_ships_in_the_package_and_asks_no_network():
    names = {p.name for p in STATIC.iterdir()}
    assert {"attention_view.js", "head_grid.js", "attention_view.css"} <= names
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["attn_tools"]
    for name in names:
        assert any(Path("explorer/static", name).match(g) for g in globs), (name, globs)
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://|//cdn|\bimport\s*\(|^\s*import\s", text, re.M), path
        assert "fetch(" not in text and "XMLHttpRequest" not in text, path
