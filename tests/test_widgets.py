"""The explorer driven like a user would (set a control, read what it shows) and the BertViz hand-off."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attn_tools import extract
from attn_tools.explorer import BERTVIZ_TOKEN_LIMITS, Explorer, explore, show_bertviz
from attn_tools.patterns import build_context, predict
from attn_tools.scoring import score_heads, score_pair

ROOT = Path(__file__).resolve().parents[1]

PATTERNS = ["previous_token", "first_token", "self", "punctuation"]


@pytest.fixture(scope="module")
def app(minilm, minilm_records) -> Explorer:
    return explore(minilm, patterns=PATTERNS, records=minilm_records[:6])


def _score_shown(app: Explorer) -> float:
    return float(re.search(r"attn-score-value'>([0-9.]+)<", app.score.value).group(1))


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_head_slider_changes_the_image_and_the_score(app):
    app.sentence.value, app.pattern.value, app.layer.value, app.head.value = 0, "self", 0, 0
    before, score_before = app.image.value, _score_shown(app)
    fig_before = app._fig
    app.head.value = 2
    assert app.status.value == ""
    assert app.image.value != before
    assert app._fig is fig_before  # a slider move reuses the figure
    rec = app.records[0]
    ctx = build_context(rec)
    pred, mass = predict("self", ctx)
    expected = score_pair(rec.head(0, 2), pred, "jsd", has_mass=mass)
    assert _score_shown(app) == pytest.approx(expected, abs=5e-4)
    assert _score_shown(app) != score_before
    # the picture is a function of the controls: going back reproduces the same bytes
    app.head.value = 0
    assert app.image.value == before
    assert np.isfinite(app.last_redraw_ms) and app.last_redraw_ms > 0


def test_the_view_draws_the_selected_head_and_prediction(app):
    app.sentence.value, app.layer.value, app.head.value, app.pattern.value = (
        1,
        3,
        7,
        "previous_token",
    )
    rec = app.records[1]
    np.testing.assert_array_equal(app._im_actual.get_array(), rec.head(3, 7))
    pred, _ = app.state.prediction(1, "previous_token")
    np.testing.assert_allclose(app._im_pred.get_array(), pred)
    assert "layer 3, head 7" in app._title_actual.get_text()
    assert "previous_token" in app._title_pred.get_text()
    labels = [t.get_text() for t in app._fig.axes[0].get_yticklabels()]
    assert labels == rec.labels
    img = _decode(app.image.value)
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 10  # not a blank picture


def test_pattern_and_sentence_dropdowns_redraw_and_cache_predictions(app):
    app.layer.value, app.head.value, app.pattern.value = 0, 2, "self"
    app.sentence.value = 2
    img_sentence = app.image.value
    app.pattern.value = "first_token"
    assert app.image.value != img_sentence
    for name in PATTERNS:
        app.pattern.value = name
    assert {k for k in app.state._predictions if k[0] == 2} == {(2, name) for name in PATTERNS}
    keys_before = set(app.state._predictions)
    app.pattern.value = "self"
    app.pattern.value = "first_token"
    assert set(app.state._predictions) == keys_before  # revisiting draws from the cache


def test_typing_a_sentence_adds_and_selects_it(app):
    n = len(app.records)
    app.new_sentence.value = "The quick brown fox jumps over the lazy dog."
    assert len(app.records) == n + 1
    assert app.sentence.value == n
    assert app.new_sentence.value == ""
    rec = app.records[n]
    assert rec.text == "The quick brown fox jumps over the lazy dog."
    assert app._im_actual.get_array().shape == (rec.n_tokens, rec.n_tokens)
    assert app.status.value == ""
    app.add_sentence("   ")
    assert "type a sentence" in app.status.value and "attn-error" in app.status.value
    app.head.value = (app.head.value + 1) % 12  # a good redraw clears the message
    assert app.status.value == ""


def test_scores_tab_shows_this_heads_scores_and_its_place_in_the_grid(app, minilm_records):
    from attn_tools import classify

    app.sentence.value, app.layer.value, app.head.value = 0, 4, 5
    app.tabs.selected_index = 1
    assert app.status.value == ""
    assert app.scores_image.value and app.grid_image.value
    table = score_heads(minilm_records[:6], [*PATTERNS, "uniform"])
    mine = table[(table["layer"] == 4) & (table["head"] == 5)].set_index("pattern")["mean"]
    widths = {n: b.get_width() for n, b in zip(app._bar_names, app._bars)}
    for name in PATTERNS:
        assert widths[name] == pytest.approx(mine[name], abs=1e-9)
    best = classify.best_fit(table)
    label = best[(best["layer"] == 4) & (best["head"] == 5)]["label"].iloc[0]
    assert f"<b>{label}</b>" in app.scores_note.value
    assert app._grid_marker.get_xy() == (4.5, 3.5)
    grid_before = app.grid_image.value
    app.head.value = 6
    assert app._grid_marker.get_xy() == (5.5, 3.5)
    assert app.grid_image.value != grid_before
    head6 = table[(table["layer"] == 4) & (table["head"] == 6)].set_index("pattern")["mean"]
    closest = head6.idxmin()
    assert f"closest is {closest}" in app._bar_title.get_text()
    app.tabs.selected_index = 0


def test_explorer_on_a_decoder_and_from_a_name(smollm2):
    app = explore(
        smollm2, ["The cat sat on the mat.", "It rained, so we stayed in."], ["next_token", "self"]
    )
    assert app.layer.max == 29 and app.head.max == 8
    app.pattern.value = "next_token"
    assert np.triu(app._im_pred.get_array(), k=1).sum() == 0  # decoders predict nothing ahead
    with pytest.raises(TypeError, match="ModelBundle or a model name"):
        explore(42)  # type: ignore[arg-type]


def test_explorer_needs_no_network_to_render(app):
    """Every picture is inline PNG bytes; no widget state points at a URL."""
    from ipywidgets import Widget

    def walk(w):
        yield w
        for child in getattr(w, "children", ()):
            yield from walk(child)

    states = [w.get_state() for w in walk(app) if isinstance(w, Widget)]
    assert len(states) > 10
    text = json.dumps(
        [{k: v for k, v in st.items() if not isinstance(v, (bytes, memoryview))} for st in states],
        default=str,
    )
    assert "http://" not in text and "https://" not in text
    assert app.image.format == "png" and bytes(app.image.value).startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- BertViz

# BertViz opens its .js template without closing it; that ResourceWarning is BertViz's, not ours.
pytestmark_bertviz = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _bertviz_params(html: str) -> dict:
    start = html.index("const params = ") + len("const params = ")
    return json.JSONDecoder().raw_decode(html[start:])[0]


@pytestmark_bertviz
def test_show_bertviz_head_view_gets_the_exact_attention(minilm_records):
    rec = minilm_records[0]
    out = show_bertviz(rec, "head", html_action="return")
    params = _bertviz_params(out.data)
    data = params["attention"][0]
    got = np.array(data["attn"], dtype=np.float32)
    assert got.shape == rec.attention.shape
    np.testing.assert_allclose(got, rec.attention, atol=1e-7)
    assert data["left_text"] == [t.replace("Ġ", " ") for t in rec.tokens]


@pytestmark_bertviz
def test_show_bertviz_model_view_and_text_input(minilm, smollm2):
    out = show_bertviz("Birds sing at dawn.", "model", bundle=minilm, html_action="return")
    params = _bertviz_params(out.data)
    rec = extract(minilm, ["Birds sing at dawn."], progress=False)[0]
    np.testing.assert_allclose(np.array(params["attention"][0]["attn"]), rec.attention, atol=1e-7)
    out = show_bertviz(
        "Birds sing.", "head", bundle=smollm2, include_layers=[0, 29], html_action="return"
    )
    params = _bertviz_params(out.data)
    rec = extract(smollm2, ["Birds sing."], progress=False)[0]
    np.testing.assert_allclose(
        np.array(params["attention"][0]["attn"]), rec.attention[[0, 29]], atol=1e-7
    )
    assert params["include_layers"] == [0, 29]
    with pytest.raises(ValueError, match="pass bundle="):
        show_bertviz("Birds sing.")
    with pytest.raises(ValueError, match="'head' or 'model'"):
        show_bertviz(rec, "neuron")  # type: ignore[arg-type]


@pytestmark_bertviz
def test_show_bertviz_warns_above_the_usable_token_count(minilm):
    words = " ".join(f"word{i}" for i in range(60))
    rec = extract(minilm, [words], progress=False)[0]
    assert BERTVIZ_TOKEN_LIMITS["model"] < rec.n_tokens < BERTVIZ_TOKEN_LIMITS["head"]
    with pytest.warns(UserWarning, match=r"tokens; BertViz's model view becomes unusable"):
        show_bertviz(rec, "model", html_action="return")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        show_bertviz(rec, "head", html_action="return")  # under the head-view limit: no warning


# ----------------------------------------------------------------------------- the model behind it


def test_explorer_state_answers_without_any_widget(minilm_records, smollm2_records):
    from attn_tools.explorer import ExplorerState
    from attn_tools.patterns import resolve_patterns

    state = ExplorerState(minilm_records[:4], resolve_patterns(PATTERNS))
    rec = minilm_records[2]
    cmp = state.compare(2, 1, 3, "previous_token")
    pred, mass = predict("previous_token", build_context(rec))
    assert cmp.score == pytest.approx(score_pair(rec.head(1, 3), pred, "jsd", has_mass=mass))
    np.testing.assert_array_equal(cmp.actual, rec.head(1, 3))
    assert state.mean_score(1, 3, "previous_token") is None  # nothing scored yet
    table = state.scores()
    assert set(table["pattern"]) == {*PATTERNS, "uniform"} and table["n_sentences"].max() == 4
    mine = state.head_scores(1, 3)
    expected = table[(table["layer"] == 1) & (table["head"] == 3)].set_index("pattern")["mean"]
    assert mine.best_name == expected.idxmin()
    assert state.mean_score(1, 3, "self") == (pytest.approx(expected["self"]), 4)
    with pytest.raises(ValueError, match="SmolLM2-135M-Instruct"):
        state.add_record(smollm2_records[0])
    with pytest.raises(ValueError, match="at least one pattern"):
        ExplorerState(minilm_records[:1], [])


def test_explorer_with_a_raw_metric_scores_the_raw_pattern(minilm_records):
    from attn_tools.explorer import ExplorerState
    from attn_tools.patterns import resolve_patterns

    state = ExplorerState(
        minilm_records[:2], resolve_patterns(["previous_token_head"]), metric="mul"
    )
    rec = minilm_records[0]
    raw, mass = predict("previous_token_head", build_context(rec), normalize=False)
    cmp = state.compare(0, 0, 2, "previous_token_head")
    assert cmp.score == pytest.approx(score_pair(rec.head(0, 2), raw, "mul", has_mass=mass))
    assert np.allclose(cmp.predicted.sum(-1), 1.0)  # the drawn prediction is normalised
    with pytest.raises(ValueError, match="no_such_metric"):
        ExplorerState(minilm_records[:1], resolve_patterns(["self"]), metric="no_such_metric")


def test_old_widgets_module_still_works():
    import importlib
    import sys

    sys.modules.pop("attn_tools.widgets", None)
    with pytest.warns(DeprecationWarning, match="attn_tools.explorer"):
        widgets = importlib.import_module("attn_tools.widgets")
    assert widgets.explore is explore and widgets.show_bertviz is show_bertviz


def test_explorer_scores_without_the_sink(minilm, minilm_records):
    """`explore(..., drop_keys="first")`: the scores tab's table and every live score remove the
    [CLS] key exactly as score_heads(drop_keys=) does."""
    recs = minilm_records[:6]
    app = explore(minilm, records=recs, patterns=["previous_token", "first_token", "self"],
                  drop_keys="first")  # fmt: skip
    state = app.state
    table = state.scores()
    assert set(table["drop_keys"]) == {"first"}
    per = score_heads(recs, ["previous_token"], drop_keys="first", per_sentence=True)
    row = per[(per["layer"] == 0) & (per["head"] == 2)].iloc[0]
    for i in range(len(recs)):
        live = state.compare(i, 0, 2, "previous_token").score
        assert live == pytest.approx(row["per_sentence"][i], abs=1e-12)
    # on a head that parks on [CLS], removing the sink changes the live score
    plain = explore(minilm, records=recs, patterns=["previous_token"]).state
    without, with_sink = (st.compare(0, 3, 0, "previous_token").score for st in (state, plain))
    assert np.isfinite(without) and np.isfinite(with_sink) and abs(without - with_sink) > 0.01


def test_show_bertviz_says_when_it_would_need_the_network(tmp_path):
    """Where the packages with d3/jQuery are missing (here: an mpld3 without its js/ folder first
    on the path), the default warns and names the fix, offline=True refuses, offline=False is
    BertViz's CDN output."""
    import subprocess
    import sys

    (tmp_path / "mpld3").mkdir()
    (tmp_path / "mpld3" / "__init__.py").write_text("")
    code = (
        "import warnings, numpy as np\n"
        "from attn_tools.extract import SentenceAttention\n"
        "from attn_tools.explorer import show_bertviz\n"
        "from attn_tools.explorer.bertviz import offline_scripts\n"
        "assert offline_scripts() is None\n"
        "a = np.full((1, 1, 3, 3), 1 / 3, dtype=np.float32)\n"
        "rec = SentenceAttention(text='a b', tokens=('[CLS]', 'a', 'b'), token_ids=(0, 1, 2),\n"
        "    offsets=((0, 0), (0, 1), (2, 3)), special_mask=np.array([True, False, False]),\n"
        "    attention=a, model='m', kind='encoder', truncated=False)\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    html = show_bertviz(rec, html_action='return').data\n"
        "assert any('pip install mpld3 XStatic-jQuery' in str(w.message) for w in seen), seen\n"
        "assert 'cdnjs' in html\n"
        "try:\n"
        "    show_bertviz(rec, html_action='return', offline=True)\n"
        "except ValueError as e:\n"
        "    assert 'Fix: pip install mpld3 XStatic-jQuery' in str(e)\n"
        "else:\n"
        "    raise SystemExit('offline=True did not refuse')\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
