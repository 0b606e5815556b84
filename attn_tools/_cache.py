"""Where attn_tools keeps its caches, atomic writes into them, and how a bad slot is bypassed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "CacheWarning",
    "atomic_path",
    "cache_dir",
    "file_sha256",
    "hash_key",
    "slot_is_usable",
    "write_or_warn",
]


class CacheWarning(UserWarning):
    """A cache entry was rejected (corrupt, stale, wrong type of file) or could not be written.

    The result is recomputed (and rewritten where possible), so nothing is lost; filter this
    category to silence the reports.
    """


def cache_dir() -> Path:
    """``$ATTN_TOOLS_CACHE`` if set, else ``~/.cache/attn_tools``; created on first use."""
    root = os.environ.get("ATTN_TOOLS_CACHE") or os.path.join("~", ".cache", "attn_tools")
    path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"the attn_tools cache folder {path} is a file, not a folder. Fix: remove it, or "
            "set ATTN_TOOLS_CACHE to a folder (or pass cache=False)."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def hash_key(*parts: Any) -> str:
    """A stable sha256 hex digest of JSON-serialisable parts."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file's bytes (streams; about 0.7 s per GB here)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        # hashlib.file_digest would do this, but only from Python 3.11
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def slot_is_usable(path: Path, what: str, *, stacklevel: int = 3) -> bool:
    """False (with a `CacheWarning`) when something other than a regular file sits at ``path``.

    A folder (or a socket, a fifo, ...) where a cache file belongs is never read, written over or
    deleted: it may be the user's. The caller computes the result and skips caching it.
    """
    if not path.exists() or path.is_file():
        return True
    kind = "a folder" if path.is_dir() else "not a regular file"
    warnings.warn(
        f"{what} cache path {path} is {kind}; computing without the cache. "
        "Fix: move that entry away so the result can be cached.",
        CacheWarning,
        stacklevel=stacklevel,
    )
    return False


def write_or_warn(path: Path, write: Callable[[Path], None], what: str, suffix: str = "") -> bool:
    """Write a cache entry atomically with ``write(tmp_path)``; warn instead of failing.

    A cache that cannot be written (read-only folder, full disk, a folder in the way) must not
    throw away the result that was just computed, so an `OSError` becomes a `CacheWarning`.
    Returns True when the entry is in place.
    """
    try:
        with atomic_path(path, suffix=suffix) as tmp:
            write(tmp)
    except OSError as exc:
        warnings.warn(
            f"could not write the {what} cache file {path} ({exc}); the result is used but not "
            "cached. Fix: make the cache folder writable or set ATTN_TOOLS_CACHE.",
            CacheWarning,
            stacklevel=3,
        )
        return False
    return True


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
