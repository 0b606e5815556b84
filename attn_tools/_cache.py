"""Where attn_tools keeps its caches, and atomic writes into them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "cache_dir", "hash_key"]


def cache_dir() -> Path:
    """``$ATTN_TOOLS_CACHE`` if set, else ``~/.cache/attn_tools``; created on first use."""
    root = os.environ.get("ATTN_TOOLS_CACHE") or os.path.join("~", ".cache", "attn_tools")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def hash_key(*parts: Any) -> str:
    """A stable sha256 hex digest of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it into place.

    Readers never see a half-written file: either the old file (or none) or the complete new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
