"""The explorer in a real browser: Voilà serves it on localhost, headless Chromium drives it.

Every request that does not go to the local Voilà server is blocked and recorded, so the test also
shows that rendering needs no CDN. Chromium comes from the system (Debian's ``chromium`` package,
``.ci/run`` installs it); the test never downloads a browser and skips, saying why, when there is
none. Screenshots go to ``outputs/browser/`` (git-ignored) or ``$ATTN_TOOLS_SCREENSHOTS``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from _browser import CHROMIUM_ARGS, gate_to_loopback, screenshots, serve_voila

from attn_tools.extract import extract

pytestmark = [pytest.mark.browser, pytest.mark.slow]

APP_SOURCE = """\
from attn_tools.explorer import explore

app = explore(
    "minilm",
    ["The cat sat on the mat because it was warm.", "Dogs bark, birds sing, and we listen."],
    ["previous_token", "first_token", "self"],
)
app
"""


@pytest.fixture()
def voila_url(chromium: str, tmp_path: Path):
    """Start Voilà on a free localhost port for the explorer notebook; stop it afterwards."""
    with serve_voila(tmp_path, APP_SOURCE, "explorer_app.ipynb") as served:
        yield served


def test_explorer_in_voila_redraws_when_the_head_slider_moves(
    chromium: str, voila_url, record_property
):
    from playwright import sync_api

    url, log_path = voila_url
    blocked: list[str] = []
    console_errors: list[str] = []
    shots = screenshots()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            gate_to_loopback(page, blocked)
            page.on(
                "console",
                lambda msg: console_errors.append(msg.text) if msg.type == "error" else None,
            )
            page.goto(url, timeout=180_000, wait_until="domcontentloaded")
            image = page.locator("img.attn-view")
            image.wait_for(state="visible", timeout=180_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('img.attn-view');"
                " return i && i.complete && i.naturalWidth > 100; }",
                timeout=60_000,
            )
            page.screenshot(path=str(shots / "explorer_before.png"), full_page=True)
            before_src = image.get_attribute("src")
            before_pixels = image.screenshot()
            head_readout = page.locator(".attn-head-slider .widget-readout")
            assert head_readout.inner_text().strip() == "0"

            handle = page.locator(".attn-head-slider .noUi-handle")
            handle.focus()
            start = time.perf_counter()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "(old) => { const i = document.querySelector('img.attn-view');"
                " return i && i.src !== old && i.complete && i.naturalWidth > 100; }",
                arg=before_src,
                timeout=30_000,
            )
            round_trip_ms = (time.perf_counter() - start) * 1000
            record_property("browser_round_trip_ms", round(round_trip_ms, 1))
            print(f"slider key press → new heatmap in the browser: {round_trip_ms:.0f} ms")
            page.wait_for_timeout(300)  # let the score text settle as well
            assert head_readout.inner_text().strip() == "1"
            after_pixels = image.screenshot()
            assert after_pixels != before_pixels, "the heatmap did not change"
            score = page.locator(".attn-score").inner_text()
            assert "layer 0, head 1" in score and "JS distance" in score
            page.screenshot(path=str(shots / "explorer_after.png"), full_page=True)

            # the second tab: this head's scores and its cell in the best-fit grid
            page.get_by_text("scores & best-fit grid").click()
            page.wait_for_function(
                "() => ['img.attn-scores', 'img.attn-grid'].every(s => {"
                " const i = document.querySelector(s);"
                " return i && i.complete && i.naturalWidth > 100; })",
                timeout=120_000,
            )
            note = page.locator(".attn-scores-note").inner_text()
            assert "Layer 0, head 1 is labelled" in note, note
            page.screenshot(path=str(shots / "explorer_scores_tab.png"), full_page=True)

            errors = page.locator(".attn-error")
            assert errors.count() == 0, errors.first.inner_text()
            body = page.inner_text("body")
            assert "Traceback" not in body and "Error" not in body, body[:2000]
        finally:
            browser.close()

    report = {"blocked_requests": blocked, "console_errors": console_errors}
    (shots / "explorer_network.json").write_text(json.dumps(report, indent=2))
    # only icon fonts/styles (ipywidgets' Font Awesome) are fetched from a CDN, and the app rendered
    # with them blocked
    assert not [u for u in blocked if u.split("?")[0].endswith(".js")], blocked
    assert not [e for e in console_errors if "attn" in e.lower()], console_errors
    assert "Traceback" not in log_path.read_text()


# ----------------------------------------------------------------------------- BertViz offline

# a page that already has its own jQuery and an AMD loader (as the classic notebook does): the
# inlined libraries must neither replace them nor register with them
PAGE_GUARD = (
    '<script>window.$ = window.jQuery = "page-jquery"; window.defined = [];'
    "window.define = function (a, b, c) { window.defined.push(String(a)); };"
    "window.define.amd = {};</script>\n"
)


def _open_blocked(browser, path: Path) -> tuple[Any, list[str], list[str]]:
    page = browser.new_page()
    asked: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    def route(r) -> None:  # only the file itself may load: every other request is refused
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            asked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri())
    return page, asked, errors


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_bertviz_views_draw_with_the_network_blocked(chromium, minilm, tmp_path):
    from playwright.sync_api import sync_playwright

    from attn_tools.explorer import show_bertviz

    text = "Snow fell on the quiet harbour."
    n = extract(minilm, [text], progress=False)[0].n_tokens
    files = {}
    for view in ("head", "model"):
        html = show_bertviz(text, view, bundle=minilm, html_action="return").data
        files[view] = tmp_path / f"{view}.html"
        files[view].write_text(PAGE_GUARD + html, encoding="utf-8")
    cdn = show_bertviz(text, "head", bundle=minilm, html_action="return", offline=False).data
    files["cdn"] = tmp_path / "cdn.html"
    files["cdn"].write_text(cdn, encoding="utf-8")
    shots = screenshots()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page, asked, errors = _open_blocked(browser, files["head"])
            page.wait_for_function("document.querySelectorAll('svg text').length > 0")
            assert page.locator("svg text").count() == 2 * n  # every token, left and right
            assert page.locator("select#layer option").count() == 6  # one per MiniLM layer
            page.select_option("select#layer", "5")  # the layer menu redraws (jQuery's on())
            page.wait_for_timeout(300)
            assert page.locator("svg text").count() == 2 * n
            # the page's own $ and AMD loader are untouched
            assert page.evaluate("window.$") == "page-jquery"
            assert page.evaluate("window.defined") == []
            assert not asked and not errors, (asked, errors)
            page.screenshot(path=str(shots / "bertviz_head_offline.png"))

            page, asked, errors = _open_blocked(browser, files["model"])
            page.wait_for_function("document.querySelectorAll('svg line').length > 0")
            # one thumbnail per head of the 6 × 12 (two boxes each), all drawn with attention lines
            assert page.locator("svg rect").count() == 2 * 6 * 12
            assert not asked and not errors, (asked, errors)

            # what BertViz does on its own offline: asks a CDN, draws nothing
            page, asked, errors = _open_blocked(browser, files["cdn"])
            page.wait_for_timeout(1000)
            assert any("cdnjs" in url for url in asked)
            assert page.locator("svg text").count() == 0
            assert any("require is not defined" in e for e in errors)
        finally:
            browser.close()
