"""The one-page ``report.html``: self-contained, honest about patterns no head fits, and readable
in a real browser with every request blocked."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from _browser import screenshots

from attn_tools import classify, report
from attn_tools.html_report import HtmlReport, write_report


class _Tables(HTMLParser):
    """Every <table> of a page as (caption, rows of cell texts), read with the stdlib parser."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._where: str | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "table":
            self.tables.append(("", []))
        elif tag == "tr":
            self.tables[-1][1].append([])
        elif tag in ("td", "th", "caption"):
            self._where = tag
            if tag != "caption":
                self.tables[-1][1][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "caption"):
            self._where = None

    def handle_data(self, data: str) -> None:
        if self._where == "caption":
            cap, rows = self.tables[-1]
            self.tables[-1] = (cap + data, rows)
        elif self._where in ("td", "th"):
            self.tables[-1][1][-1][-1] += data


def _table(page: str, caption: str) -> pd.DataFrame:
    parser = _Tables()
    parser.feed(page)
    (rows,) = [rows for cap, rows in parser.tables if cap == caption]
    return pd.DataFrame(rows[1:], columns=rows[0])


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "data")]


def _external(page: str) -> list[str]:
    """Every src/href attribute that would leave the file (all but data: URIs and #anchors),
    read by an HTML parser (text that merely looks like a URL is not a request)."""
    parser = _Links()
    parser.feed(page)
    return [u for u in parser.urls if not u.startswith(("data:", "#"))]


def test_text_is_escaped_and_anchors_are_unique():
    doc = HtmlReport("<b>title</b>")
    a = doc.section("Model: x")
    b = doc.section("Model: x")
    doc.paragraph('<script>alert("x")</script>')
    doc.table(pd.DataFrame({"label": ["<img src=http://evil/x>"], "n": [1]}))
    page = doc.render()
    assert a != b and f'id="{a}"' in page and f'id="{b}"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<img src=http://evil" not in page and _external(page) == []
    assert "&lt;b&gt;title&lt;/b&gt;" in page


@pytest.fixture(scope="module")
def minilm_report(minilm_records, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    records = minilm_records[:16]
    ranked = report.score_tables(records)[1]
    path = write_report([records], tmp_path_factory.mktemp("rep") / "report.html",
                        known={records[0].model: {"ranked": ranked}})  # fmt: skip
    return path, ranked


def test_report_is_self_contained_and_names_no_fit_patterns(minilm_report, minilm_records):
    path, ranked = minilm_report
    page = path.read_text(encoding="utf-8")
    assert _external(page) == [], _external(page)[:5]
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4  # the grid with and without the sink, head types, syntax bars
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in ("best-fit grid", "besides the first-token sink", "top heads per pattern",
                    "does it hold on other sentences?", "head types",
                    "syntax heads (Clark et al. 2019)"):  # fmt: skip
        assert f"all-MiniLM-L6-v2: {heading}" in page
    # the verdict per pattern is classify.top_heads' own: checked for every pattern
    rows = _table(page, "top heads per pattern")
    assert len(rows) == ranked["pattern"].nunique()
    for name, verdict in zip(rows["pattern"], rows["verdict"]):
        top = classify.top_heads(ranked, name, k=3)
        expected = "no support" if top.empty else "fits" if top["fits"].any() else "no head fits"
        assert verdict == expected, name
    assert "no head fits" in set(rows["verdict"])  # the honest case is exercised here
    # the head-type and syntax tables are the analyses' own numbers
    from attn_tools.stats import head_stats
    from attn_tools.syntax import syntax_table

    records = minilm_records[:16]
    types = _table(page, "heads per type")
    counts = head_stats(records)["head_type"].value_counts()
    assert {r["head type"]: int(r["heads"]) for _, r in types.iterrows()} == counts.to_dict()
    syn = _table(page, "syntax table")
    direct = syntax_table(records)
    assert list(syn["relation"]) == list(direct["relation"])
    assert [f"{a:.3f}" for a in direct["accuracy"]] == list(syn["accuracy"])


@pytest.mark.browser
def test_report_renders_offline_in_chromium(minilm_report, chromium):
    from playwright.sync_api import sync_playwright

    path, _ = minilm_report
    shots = screenshots()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox"])
        try:
            for scheme in ("light", "dark"):
                page = browser.new_page(
                    color_scheme=scheme, viewport={"width": 1200, "height": 900}
                )
                asked: list[str] = []

                def route(r, asked=asked) -> None:
                    if r.request.url.startswith(("file://", "data:")):
                        r.continue_()
                    else:
                        asked.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.goto(path.as_uri())
                page.wait_for_load_state("load")
                sizes = page.evaluate(
                    "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
                )
                assert sizes and all(ok and w > 300 and h > 200 for ok, w, h in sizes), sizes
                background = page.evaluate("getComputedStyle(document.body).backgroundColor")
                assert (background == "rgb(22, 22, 22)") == (scheme == "dark"), background
                page.click("nav a >> nth=1")  # the table of contents links inside the page
                assert page.evaluate("location.hash").startswith("#all-minilm")
                assert asked == []
                page.screenshot(path=str(shots / f"report_{scheme}.png"), full_page=True)
        finally:
            browser.close()


def test_report_command_writes_the_page(tmp_path):
    src = tmp_path / "s.txt"
    src.write_text(
        "The kettle whistled while the toast burned.\n"
        "Four geese crossed the road in single file.\n"
        "Nobody answered the phone at the old mill.\n"
        "A red kite hung above the windy hill.\n"
        "They painted the boat green, then blue, then green again.\n"
        "The library closes early on Fridays in winter.\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "attn_tools.cli", "report", "--model", "minilm", "--sentences",
         str(src), "--out", str(tmp_path / "out"), "--no-consistency", "--quiet"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    page = tmp_path / "out" / "report.html"
    assert f"report: {page.resolve()}" in r.stdout
    text = page.read_text(encoding="utf-8")
    assert "all-MiniLM-L6-v2: best-fit grid" in text and "does it hold" not in text
    assert "all-MiniLM-L6-v2: head types" in text and "syntax heads" in text
    assert "No dependency relation has enough arcs" in text  # six sentences: said, not hidden
    assert _external(text) == []
