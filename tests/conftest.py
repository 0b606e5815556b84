"""Shared fixtures: the two real offline default models and attention on real sentences.

Models load once per test session. The attention cache lives in a per-session temporary folder
(``ATTN_TOOLS_CACHE``) unless the caller already set one, so tests never depend on a user's cache;
the dequantised SmolLM2 is kept in the user cache (it is 0.5 GB and deterministic) via
``ATTN_TOOLS_MODEL_CACHE`` handling in the fixture below.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _browser import chromium  # noqa: F401  (the browser tests' fixture: system Chromium or a skip)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point the cache at a fresh folder, but reuse an already dequantised SmolLM2 if present."""
    if os.environ.get("ATTN_TOOLS_TEST_CACHE"):
        os.environ["ATTN_TOOLS_CACHE"] = os.environ["ATTN_TOOLS_TEST_CACHE"]
        yield Path(os.environ["ATTN_TOOLS_CACHE"])
        return
    user = Path(os.environ.get("ATTN_TOOLS_CACHE") or Path.home() / ".cache" / "attn_tools")
    root = tmp_path_factory.mktemp("attn_cache")
    if (user / "models").is_dir():
        # the dequantised model is read-only input here: link it rather than copy 0.5 GB
        (root / "models").symlink_to(user / "models", target_is_directory=True)
    else:
        (user / "models").mkdir(parents=True, exist_ok=True)
        (root / "models").symlink_to(user / "models", target_is_directory=True)
    old = os.environ.get("ATTN_TOOLS_CACHE")
    os.environ["ATTN_TOOLS_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("ATTN_TOOLS_CACHE", None)
    else:
        os.environ["ATTN_TOOLS_CACHE"] = old
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def minilm():
    from attn_tools import load_model

    return load_model("minilm")


@pytest.fixture(scope="session")
def smollm2():
    from attn_tools import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session", params=["minilm", "smollm2"])
def bundle(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def story_sentences() -> list[str]:
    from attn_tools import load_sentences

    return load_sentences("story")[:24]


@pytest.fixture(scope="session")
def minilm_records(minilm, story_sentences):
    from attn_tools import extract

    return extract(minilm, story_sentences, progress=False)


@pytest.fixture(scope="session")
def smollm2_records(smollm2, story_sentences):
    from attn_tools import extract

    return extract(smollm2, story_sentences, progress=False)
