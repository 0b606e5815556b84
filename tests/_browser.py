"""What the browser tests share: the system Chromium, a Voilà server on loopback, gated pages.

Not a test module (no ``test_`` prefix); the browser tests import it by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ATTN_TOOLS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
LOOPBACK = ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")


@pytest.fixture()
def chromium() -> str:
    """The system Chromium (checked before Voilà starts, so a skip costs nothing)."""
    pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        pytest.skip(
            f"no Chromium at {CHROMIUM} or on PATH; install Debian's package "
            "(apt-get install chromium, as .ci/run does) to run the browser tests"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshots() -> Path:
    folder = Path(os.environ.get("ATTN_TOOLS_SCREENSHOTS", ROOT / "outputs" / "browser"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def serve_voila(folder: Path, source: str, name: str) -> Iterator[tuple[str, Path]]:
    """Voilà on a free localhost port serving a one-cell notebook ``name`` holding ``source``.

    Yields ``(url, log path)`` once the server listens (the page itself waits for the kernel);
    Voilà accepts ``?theme=dark`` on the same URL. The server is stopped on exit.
    """
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, folder / name)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MPLBACKEND", None)
    log_path = folder / "voila.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in the teardown below
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", name, "--no-browser", f"--port={port}",
         "--Voila.ip=127.0.0.1", "--show_tracebacks=True"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voila exited early:\n{log_path.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("voila did not start listening within 60 s")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/", log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def gate_to_loopback(page, blocked: list[str]) -> None:
    """Let ``page`` reach only 127.0.0.1 (and inline data); record and abort everything else."""

    def gate(route):
        if route.request.url.startswith(LOOPBACK):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", gate)


def open_gated(browser, url: str, blocked: list[str], errors: list[str], **context):
    """A 1500 × 1100 page on ``url`` gated to loopback, page errors recorded; not yet waited for
    (two pages can start their kernels together)."""
    page = browser.new_page(viewport={"width": 1500, "height": 1100}, **context)
    gate_to_loopback(page, blocked)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, timeout=180_000, wait_until="domcontentloaded")
    return page
