"""The explorer's PNG tabs under JupyterLab's light and dark themes, in a real browser.

Voilà serves the PNG-only explorer (``interactive=False``: no anywidget CSS on the page, so the
theme rule must come with the PNG tabs themselves) on 127.0.0.1; headless Chromium (the system's)
opens it in Voilà's light theme and with ``?theme=dark``, every non-loopback request blocked. The
checks read pixels of screenshots, not computed styles: the frame and the figure background are
dark in the dark theme, and in the light theme the image on screen is the PNG, pixel for pixel.
Screenshots: ``outputs/browser/png_tabs_light.png`` and ``png_tabs_dark.png``.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from _browser import CHROMIUM_ARGS, open_gated, screenshots, serve_voila

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# sentences not looked at while the CSS was written
SENTENCES = [
    "Lanterns swayed above the harbour while gulls argued over scraps.",
    "Nobody had told the choir that the organ was out of tune.",
]
APP_SOURCE = f"""\
from attn_tools.explorer import explore

app = explore("minilm", {SENTENCES!r}, ["previous_token", "first_token", "self"],
              interactive=False)
app
"""
IMAGES = ("img.attn-view", "img.attn-scores", "img.attn-grid")


@pytest.fixture(scope="module")
def voila_png(tmp_path_factory):
    """Voilà on a free localhost port serving the PNG-only explorer (``?theme=dark`` for dark)."""
    with serve_voila(tmp_path_factory.mktemp("voila_png"), APP_SOURCE, "png_app.ipynb") as served:
        yield served


def _wait_loaded(page, selector: str) -> None:
    page.wait_for_function(
        "(s) => { const i = document.querySelector(s);"
        " return i && i.complete && i.naturalWidth > 50 && i.getBoundingClientRect().width > 0; }",
        arg=selector,
        timeout=180_000,
    )


def _png_of(page, selector: str) -> bytes:
    """The PNG bytes the page shows in ``selector`` (read back from the image's blob URL)."""
    encoded = page.evaluate(
        "async (s) => { const b = await (await fetch(document.querySelector(s).src)).arrayBuffer();"
        " let t = ''; for (const x of new Uint8Array(b)) t += String.fromCharCode(x);"
        " return btoa(t); }",
        selector,
    )
    return base64.b64decode(encoded)


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float) / 255


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


def _panel(page, selector: str) -> dict:
    """The image as the user sees it (a screenshot of its border box: padding and picture) and
    its geometry (padding, content size, the PNG's own size)."""
    image = page.locator(selector)
    shot = _rgb(image.screenshot(animations="disabled"))
    geo = image.evaluate(
        "(i) => { const c = getComputedStyle(i), p = (k) => parseFloat(c[k]);"
        " return {nw: i.naturalWidth, nh: i.naturalHeight, fit: c.objectFit, pl: p('paddingLeft'),"
        " pt: p('paddingTop'), cw: i.clientWidth - p('paddingLeft') - p('paddingRight'),"
        " ch: i.clientHeight - p('paddingTop') - p('paddingBottom')}; }"
    )
    return {"geo": geo, "shot": shot}


def _ring(shot: np.ndarray, x0: int, y0: int, x1: int, y1: int, width: int) -> np.ndarray:
    """Pixels of the band ``width`` px wide just inside the rectangle [x0, x1) × [y0, y1)."""
    parts = [
        shot[y0 : y0 + width, x0:x1],
        shot[y1 - width : y1, x0:x1],
        shot[y0:y1, x0 : x0 + width],
        shot[y0:y1, x1 - width : x1],
    ]
    return np.concatenate([p.reshape(-1, 3) for p in parts])


def _as_shown(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The PNG resampled to the size it is shown at (the explorer stretches it to the tab)."""
    from PIL import Image

    image = Image.fromarray(np.uint8(np.round(rgb * 255)))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=float) / 255


def _frame_and_content(panel: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ring of the element's visible background: the padding in dark, the figure's own margin
    in light; ring of the figure's outer 6 px; the picture's pixels).

    The picture fills the content box, or with ``object-fit: contain`` (the best-fit grid,
    whose box is taller than the figure) sits centred in it with the page showing around it.
    """
    g, shot = panel["geo"], panel["shot"]
    y1, x1 = shot.shape[:2]
    cx0, cy0 = round(g["pl"]), round(g["pt"])
    cx1, cy1 = cx0 + round(g["cw"]), cy0 + round(g["ch"])
    assert abs(cx1 + cx0 - x1) <= 1 and abs(cy1 + cy0 - y1) <= 1, (g, shot.shape)
    x0 = y0 = 0
    if g["fit"] in ("contain", "scale-down"):
        scale = min(g["cw"] / g["nw"], g["ch"] / g["nh"])
        if g["fit"] == "scale-down":
            scale = min(scale, 1.0)
        w, h = round(g["nw"] * scale), round(g["nh"] * scale)
        cx0, cy0 = cx0 + (round(g["cw"]) - w) // 2, cy0 + (round(g["ch"]) - h) // 2
        cx1, cy1 = cx0 + w, cy0 + h
    frame = _ring(shot, x0, y0, x1, y1, max(round(g["pl"]), 4))
    margin = _ring(shot, cx0, cy0, cx1, cy1, 6)
    return frame, margin, shot[cy0:cy1, cx0:cx1]


def test_png_tabs_follow_the_theme_without_changing_the_png(chromium, voila_png, record_property):
    from playwright import sync_api
    from scipy.stats import spearmanr

    url, log_path = voila_png
    blocked: list[str] = []
    errors: list[str] = []
    shots = screenshots()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            # JupyterLab light theme on an OS that prefers dark: JupyterLab's flag wins
            light = open_gated(browser, url, blocked, errors, color_scheme="dark")
            # JupyterLab dark theme (Voilà ?theme=dark); both kernels start together
            dark = open_gated(browser, url + "?theme=dark", blocked, errors, color_scheme="dark")
            _wait_loaded(light, "img.attn-view")
            assert light.evaluate("document.body.dataset.jpThemeLight") == "true"
            png = _png_of(light, "img.attn-view")
            drawn = _rgb(png)
            panel = _panel(light, "img.attn-view")
            g = panel["geo"]
            assert (g["nw"], g["nh"]) == drawn.shape[1::-1]
            frame, margin, content = _frame_and_content(panel)
            # as drawn: no padding, no filter; the screen shows the PNG's own pixels (resampled
            # by the browser to the tab's width, hence a small tolerance)
            assert g["pl"] == 0 and g["pt"] == 0
            light_diff = np.abs(content - _as_shown(drawn, content.shape[1::-1]))
            record_property("light_mean_pixel_diff", round(float(light_diff.mean()), 4))
            print(f"light: mean |screen - PNG| = {light_diff.mean():.4f}")
            assert light_diff.mean() < 0.02, light_diff.mean()
            assert _luminance(margin).mean() > 0.95
            light.screenshot(path=str(shots / "png_tabs_light.png"), full_page=True)

            _wait_loaded(dark, "img.attn-view")
            assert dark.evaluate("document.body.dataset.jpThemeLight") == "false"
            assert _png_of(dark, "img.attn-view") == png  # the bytes are the same: only display
            panel = _panel(dark, "img.attn-view")
            g = panel["geo"]
            frame, margin, content = _frame_and_content(panel)
            frame_lum, margin_lum = _luminance(frame), _luminance(margin)
            print(
                f"dark: frame luminance {frame_lum.mean():.3f} (max {frame_lum.max():.3f}), "
                f"figure margin {margin_lum.mean():.3f}; light figure margin "
                f"{_luminance(_frame_and_content(_panel(light, 'img.attn-view'))[1]).mean():.3f}"
            )
            record_property("dark_frame_luminance", round(float(frame_lum.mean()), 3))
            assert frame_lum.max() < 0.2  # every pixel of the frame is dark: no white edge
            assert margin_lum.mean() < 0.2
            # the heatmaps stay readable and keyed by their own colour bar: the filter is one
            # monotone map of luminance (reversed), the same for cells and colour bar
            drawn_here = _as_shown(drawn, content.shape[1::-1])
            lum_light, lum_dark = _luminance(drawn_here).ravel(), _luminance(content).ravel()
            rank = float(spearmanr(lum_light, lum_dark).statistic)  # ties get average ranks
            record_property("dark_vs_light_luminance_rank_corr", round(rank, 4))
            print(f"dark vs light luminance, rank correlation {rank:.4f}")
            assert rank < -0.97, rank
            # the darkest blue of the light scale (weight 1) shows as a light blue, not orange
            blues = drawn_here[..., 2] - drawn_here[..., 0] > 0.3
            assert blues.any()
            shown = content[blues]
            assert (shown[:, 2] > shown[:, 0]).mean() > 0.95
            dark.screenshot(path=str(shots / "png_tabs_dark.png"), full_page=True)

            # the second tab: the bar chart and the static grid are dark cards too, their
            # white turned near-black
            dark.locator(".widget-tab .lm-TabBar-tab").nth(1).click()
            for selector in IMAGES[1:]:
                _wait_loaded(dark, selector)
                frame, _, content = _frame_and_content(_panel(dark, selector))
                own = _as_shown(_rgb(_png_of(dark, selector)), content.shape[1::-1])
                assert _luminance(frame).max() < 0.2, selector
                assert _luminance(content).mean() < 0.35 < _luminance(own).mean(), selector
                # the background (most of a chart) is what turns dark; line art and saturated
                # pattern colours (which clip inside hue-rotate) are keyed by the legend in the
                # same image, so only the heatmap above is held to a strict luminance order
                white = _luminance(own) > 0.97
                assert _luminance(content[white]).mean() < 0.15, selector
            dark.screenshot(path=str(shots / "png_tabs_dark_scores.png"), full_page=True)

            # a page without a JupyterLab theme (an exported HTML file) follows the browser
            dark.evaluate("delete document.body.dataset.jpThemeLight")
            frame, _, _ = _frame_and_content(_panel(dark, "img.attn-grid"))
            assert _luminance(frame).max() < 0.2
            dark.emulate_media(color_scheme="light")
            panel = _panel(dark, "img.attn-grid")
            assert panel["geo"]["pl"] == 0
            _, _, content = _frame_and_content(panel)
            own = _as_shown(_rgb(_png_of(dark, "img.attn-grid")), content.shape[1::-1])
            assert np.abs(content - own).mean() < 0.02  # shown as drawn again
        finally:
            browser.close()

    ours = [u for u in blocked if not u.split("?")[0].endswith((".woff", ".woff2", ".ttf", ".css"))]
    assert not ours, blocked
    assert not errors, errors
    assert "Traceback" not in log_path.read_text()
