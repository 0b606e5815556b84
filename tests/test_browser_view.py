"""The anywidget attention view and clickable best-fit grid in a real browser.

Voilà serves a notebook calling ``explore(...)`` on 127.0.0.1; headless Chromium (the system's,
never downloaded) hovers a cell, clicks a grid cell and renders the page in JupyterLab's light and
dark themes. Every request that does not go to 127.0.0.1 is blocked and recorded. Screenshots go
to ``outputs/browser/`` (or ``$ATTN_TOOLS_SCREENSHOTS``).
"""

from __future__ import annotations

import json
import time

import pytest
from _browser import CHROMIUM_ARGS, open_gated, screenshots, serve_voila

from attn_tools.extract import extract
from attn_tools.text import align, parse, to_word_level

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# sentences not used when the widget was written (nothing was tuned on them)
SENTENCES = [
    "Rivers carve patient canyons through ancient sandstone.",
    "She didn't expect the ferry to leave at dawn, did she?",
    # a long one (over 60 tokens): labels must stay drawn, the canvas scrolls instead
    "When the autumn fair finally returned to the valley, the old clockmaker, who had not left "
    "his workshop in years, packed a basket of walnuts, borrowed his neighbour's bicycle, and "
    "rode down the winding road past the reservoir, the quarry, and the abandoned railway "
    "station, humming a tune nobody remembered.",
]
APP_SOURCE = f"""\
from attn_tools.explorer import explore

app = explore("minilm", {SENTENCES!r}, ["previous_token", "first_token", "self"])
app
"""


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    """Voilà on a free localhost port serving the explorer notebook (one server, both themes:
    Voilà accepts ``?theme=dark``)."""
    with serve_voila(tmp_path_factory.mktemp("voila_view"), APP_SOURCE, "view_app.ipynb") as served:
        yield served


def _open(browser, url: str, blocked: list[str], errors: list[str], **context):
    page = open_gated(browser, url, blocked, errors, **context)
    page.wait_for_function(
        "() => { const c = document.querySelector('.attn-attention-view canvas');"
        " return c && c.width > 50 && document.querySelector('.attn-grid .attn-cell'); }",
        timeout=180_000,
    )
    return page


def _hover_cell(page, q: int, k: int) -> dict:
    canvas = page.locator(".attn-attention-view canvas").first
    canvas.scroll_into_view_if_needed()
    geo = canvas.evaluate("c => ({...c.dataset})")
    # bring the cell into the scroll box's view first (long sentences scroll)
    canvas.evaluate(
        "(c, [x, y]) => { const s = c.parentElement; s.scrollLeft = x; s.scrollTop = y; }",
        [k * float(geo["cell"]) - 40, q * float(geo["cell"]) - 40],
    )
    box = canvas.bounding_box()
    left, top, cell = float(geo["left"]), float(geo["top"]), float(geo["cell"])
    page.mouse.move(box["x"] + left + (k + 0.5) * cell, box["y"] + top + (q + 0.5) * cell)
    readout = page.locator(".attn-attention-view .attn-readout")
    page.wait_for_function(
        "([q, k]) => { const r = document.querySelector('.attn-attention-view .attn-readout');"
        " return r.dataset.q == q && r.dataset.k == k; }",
        arg=[q, k],
        timeout=10_000,
    )
    return {
        "value": readout.get_attribute("data-value"),
        "text": readout.inner_text(),
        "geo": geo,
    }


def _canvas_background(page) -> float:
    """Mean luminance (0–1) of the canvas's top-left corner (label margin, no cells)."""
    return page.evaluate(
        "() => { const c = document.querySelector('.attn-attention-view canvas');"
        " const d = c.getContext('2d').getImageData(2, 2, 1, 1).data;"
        " return (0.2126 * d[0] + 0.7152 * d[1] + 0.0722 * d[2]) / 255; }"
    )


def test_view_hover_grid_click_and_themes_offline(chromium, voila, minilm, record_property):
    from playwright import sync_api

    url, log_path = voila
    records = extract(minilm, SENTENCES, progress=False)
    blocked: list[str] = []
    errors: list[str] = []
    shots = screenshots()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = _open(browser, url, blocked, errors)
            # the canvas is drawn at the device's resolution
            dpr = page.evaluate("window.devicePixelRatio")
            canvas = page.locator(".attn-attention-view canvas").first
            css_w = canvas.evaluate("c => c.getBoundingClientRect().width")
            assert canvas.evaluate("c => c.width") == round(css_w * dpr)
            # every token of sentence 0 is drawn as a label (n tokens → n × n cells)
            assert int(canvas.get_attribute("data-n")) == records[0].n_tokens

            # hover: the read-out is the record's weight at (layer 0, head 0, q, k)
            q, k = 4, 2
            start = time.perf_counter()
            shown = _hover_cell(page, q, k)
            hover_ms = (time.perf_counter() - start) * 1000
            assert shown["value"] == f"{records[0].attention[0, 0, q, k]:.3f}", shown
            page.screenshot(path=str(shots / "view_light.png"), full_page=True)
            assert _canvas_background(page) > 0.8  # Voilà's default light theme

            # a click in the best-fit grid moves the sliders, the view and the grid outline
            start = time.perf_counter()
            page.locator('.attn-grid .attn-cell[data-layer="3"][data-head="5"]').click()
            page.wait_for_function(
                "() => document.querySelector('.attn-head-slider .widget-readout')"
                ".innerText.trim() === '5' && document.querySelector("
                "'.attn-layer-slider .widget-readout').innerText.trim() === '3'",
                timeout=30_000,
            )
            page.wait_for_function(
                "() => document.querySelector('.attn-attention-view .attn-panel-title')"
                ".textContent.includes('layer 3, head 5')",
                timeout=30_000,
            )
            click_ms = (time.perf_counter() - start) * 1000
            record_property("grid_click_to_view_ms", round(click_ms, 1))
            record_property("hover_to_readout_ms", round(hover_ms, 1))
            print(
                f"hover → read-out {hover_ms:.0f} ms; grid click → sliders and view {click_ms:.0f} ms"
            )
            assert page.locator(".attn-attention-view input.attn-head").input_value() == "5"
            selected = page.locator(".attn-grid .attn-cell.attn-selected")
            assert selected.get_attribute("data-layer") == "3"
            assert selected.get_attribute("data-head") == "5"
            page.wait_for_function(
                "() => document.querySelector('.attn-top-patterns')"
                ".innerText.includes('layer 3, head 5')",
                timeout=30_000,
            )
            top = page.locator(".attn-top-patterns").inner_text()
            assert "layer 3, head 5" in top and "uniform (baseline)" in top, top
            shown = _hover_cell(page, 1, 0)
            assert shown["value"] == f"{records[0].attention[3, 5, 1, 0]:.3f}", shown

            # the word toggle: the second sentence's "didn't" is two spaCy words, one unit
            page.select_option(".attn-sentence-select", "1")
            page.locator(".attn-level-word").click()
            page.wait_for_function(
                "(n) => { const c = document.querySelector('.attn-attention-view canvas');"
                " return c && Number(c.dataset.n) < n; }",
                arg=records[1].n_tokens,
                timeout=60_000,
            )
            # the word-level hover shows the pooled weight (to = sum, from = mean)
            words = to_word_level(records[1], align(records[1], parse(records[1].text)[0]))
            shown = _hover_cell(page, 2, 1)
            assert shown["value"] == f"{words.attention[3, 5, 2, 1]:.3f}", shown
            page.screenshot(path=str(shots / "view_light_words.png"), full_page=True)

            # a long sentence: one label per token, every cell reachable, the box scrolls
            long = records[2]
            assert long.n_tokens > 60
            page.locator(".attn-level-token").click()
            page.select_option(".attn-sentence-select", "2")
            page.wait_for_function(
                "(n) => Number(document.querySelector('.attn-attention-view canvas').dataset.n)"
                " === n",
                arg=long.n_tokens,
                timeout=30_000,
            )
            cell = float(
                page.locator(".attn-attention-view canvas").first.get_attribute("data-cell")
            )
            assert cell >= 14  # a cell is at least a 12 px label tall: nothing overlaps
            last = long.n_tokens - 1
            shown = _hover_cell(page, last, last - 3)
            assert shown["value"] == f"{long.attention[3, 5, last, last - 3]:.3f}", shown
            scrolls = page.evaluate(
                "() => { const s = document.querySelector('.attn-attention-view .attn-scroll');"
                " return s.scrollHeight > s.clientHeight || s.scrollWidth > s.clientWidth; }"
            )
            assert scrolls
            page.screenshot(path=str(shots / "view_light_long.png"), full_page=True)

            # JupyterLab switching theme at run time (new variables): the canvas follows
            page.add_style_tag(
                content=":root, body { --jp-layout-color0: #111111 !important;"
                " --jp-ui-font-color1: #eeeeee !important; }"
            )
            page.wait_for_function(
                "() => { const c = document.querySelector('.attn-attention-view canvas');"
                " const d = c.getContext('2d').getImageData(2, 2, 1, 1).data;"
                " return d[0] + d[1] + d[2] < 120; }",
                timeout=10_000,
            )

            # JupyterLab's dark theme (Voilà ?theme=dark) and a dark OS preference: all dark
            dark = _open(
                browser, url + "?theme=dark", blocked, errors, color_scheme="dark",
                device_scale_factor=2,
            )  # fmt: skip
            assert _canvas_background(dark) < 0.3
            # a HiDPI screen gets a canvas with twice the pixels, not a stretched one
            canvas = dark.locator(".attn-attention-view canvas").first
            css_w = canvas.evaluate("c => c.getBoundingClientRect().width")
            assert canvas.evaluate("c => c.width") == round(css_w * 2)
            bg = dark.evaluate(
                "() => getComputedStyle(document.querySelector('.attn-attention-view'))"
                ".backgroundColor"
            )
            rgb = [int(x) for x in bg[bg.index("(") + 1 : bg.index(")")].split(",")[:3]]
            assert sum(rgb) / 3 < 80, bg
            shown = _hover_cell(dark, 2, 2)
            assert shown["value"] == f"{records[0].attention[0, 0, 2, 2]:.3f}", shown
            dark.screenshot(path=str(shots / "view_dark.png"), full_page=True)
        finally:
            browser.close()

    (shots / "view_network.json").write_text(json.dumps({"blocked": blocked, "errors": errors}))
    # nothing of the view or the grid is fetched from elsewhere: the only requests leaving
    # 127.0.0.1 are ipywidgets' own icon font / stylesheets, and the page works with them blocked
    ours = [u for u in blocked if not u.split("?")[0].endswith((".woff", ".woff2", ".ttf", ".css"))]
    assert not ours, blocked
    assert not errors, errors
    assert "Traceback" not in log_path.read_text()
