"""A test hook for crash consistency: die by SIGKILL right after the k-th file an automate run
writes in this process, so tests can prove that a resume after ``kill -9`` at any point leaves
the run folder and the library consistent.

Inert unless ``ATTN_TOOLS_KILL_AFTER_WRITE`` is set. ``ATTN_TOOLS_WRITE_LOG`` names a file that
gets one line per write (``index<TAB>path``), so a test can pick the steps to kill after.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

KILL_ENV = "ATTN_TOOLS_KILL_AFTER_WRITE"
LOG_ENV = "ATTN_TOOLS_WRITE_LOG"

_count = 0


def wrote(path: Path) -> None:
    """Count one completed (renamed into place) write; kill this process if it is the k-th."""
    global _count
    _count += 1
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{_count}\t{path}\n")
    kill_after = os.environ.get(KILL_ENV)
    if kill_after and _count == int(kill_after):
        os.kill(os.getpid(), signal.SIGKILL)
