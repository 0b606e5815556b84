"""The operating-system layer of the sandbox: the bubblewrap command that jails the child.

`bwrap_command` builds the command line (every namespace unshared, no capabilities, a new
session, read-only binds of the interpreter, numpy and two files of this package, an empty
``/tmp``, its own ``/proc``; as root, bubblewrap itself runs as `JAIL_UID`); `os_sandbox_problem`
probes once whether it works here; `require_os_sandbox` raises `SandboxUnavailable` with the
install hint when it does not.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attn_tools.automate.sandbox import child as _child

__all__ = [
    "INSTALL_HINT",
    "JAIL_UID",
    "SandboxUnavailable",
    "bwrap_command",
    "child_env",
    "os_sandbox_problem",
    "require_os_sandbox",
    "unjailed_command",
]

_CHILD = Path(_child.__file__).resolve()
_CONTEXT = Path(_child.context.__file__).resolve()
_JAIL_ROOT = "/sandbox"
_JAIL_SITE = f"{_JAIL_ROOT}/site"
_JAIL_CHILD = f"{_JAIL_ROOT}/attn_tools/automate/sandbox/child.py"
_JAIL_CONTEXT = f"{_JAIL_ROOT}/attn_tools/patterns/context.py"
INSTALL_HINT = (
    "Fix: install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install "
    "bubblewrap`) and make sure user namespaces are enabled, or, only for programs you have read "
    "and trust, pass unsafe_no_os_sandbox=True (CLI: --unsafe-no-os-sandbox)."
)


class SandboxUnavailable(RuntimeError):
    """No working operating-system sandbox (bubblewrap) for untrusted programs."""


def _numpy_dirs() -> list[Path]:
    """numpy's package folder and the folders of libraries its wheel bundles (numpy.libs)."""
    pkg = Path(np.__file__).resolve().parent
    return [pkg, *sorted(p for p in pkg.parent.glob("numpy*.libs") if p.is_dir())]


def _interpreter() -> Path:
    """The real interpreter binary (a virtual environment's python is a symlink to it)."""
    return Path(os.path.realpath(sys.executable))


def _bootstrap(site: str, child: str) -> str:
    # -I -S: no user site, no site-packages, no environment; numpy's folder is added by hand
    return f"import sys, runpy; sys.path[:0] = [{site!r}]; runpy.run_path({child!r}, run_name='__main__')"


#: the host uid and gid the jail runs as when this process is root
JAIL_UID = 65534
#: where a root parent's private mount namespace shows the bound paths to the dropped bwrap
_STAGE_CANDIDATES = ("/tmp", "/mnt", "/media", "/srv", "/opt", "/run", "/var/tmp")


def _jail_binds() -> list[tuple[str, str]]:
    """``(host path, path inside the jail)`` of every read-only bind, in mount order."""
    binds: list[tuple[str, str]] = []

    def ro(path: Path | str, dest: str | None = None) -> None:
        src = os.path.realpath(str(path))
        dest = dest or str(path)
        if dest not in {d for _, d in binds} and os.path.exists(src):
            binds.append((src, dest))

    for top in ("/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.isdir(top) and not os.path.islink(top):
            ro(top)
    for d in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/usr/local/lib"):
        ro(d)
    ro("/etc/ld.so.cache")
    for prefix in {sys.base_prefix, sys.base_exec_prefix}:
        if prefix not in ("/usr", "/usr/local", "/"):
            ro(os.path.realpath(prefix))
    ro(_interpreter())
    for d in _numpy_dirs():
        ro(d, f"{_JAIL_SITE}/{d.name}")
    ro(_CONTEXT, _JAIL_CONTEXT)
    ro(_CHILD, _JAIL_CHILD)
    return binds


def _stage_point(sources: Sequence[str]) -> str | None:
    """A folder to hide under a private tmpfs: none of the sources is in or above it."""
    for cand in _STAGE_CANDIDATES:
        if os.path.isdir(cand) and not os.path.islink(cand):
            clash = any(
                src == cand or src.startswith(cand + "/") or cand.startswith(src.rstrip("/") + "/")
                for src in sources
            )
            if not clash:
                return cand
    return None


def bwrap_command(bwrap: str | None = None) -> list[str]:
    """The command line that runs the child in the jail (the program comes on stdin).

    Read-only: the interpreter's prefix (and the interpreter binary), the system library folders,
    numpy's folders (bound under ``/sandbox/site``) and the two files of this package the child
    needs. Nothing else of the host exists inside: no ``/home``, ``/root`` (but the prefix),
    ``/work``, ``/etc`` (but the loader cache), cache folders or host ``/proc``.

    As root, bubblewrap itself runs as the unprivileged host uid `JAIL_UID` (``setpriv``), so a
    process that escaped the language layer and the seccomp filter would still be ``nobody`` on
    the host, never root. Paths that uid cannot reach (``/root`` is 0700 here) are first bound
    onto a tmpfs in a private mount namespace (``unshare --mount``; the host sees no change) and
    bubblewrap binds them from there.
    """
    bwrap = bwrap or shutil.which("bwrap") or "bwrap"
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(JAIL_UID),
           "--gid", str(JAIL_UID), "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--hostname", "sandbox"]  # fmt: skip
    for top in ("/lib", "/lib64", "/lib32", "/libx32", "/bin"):
        if os.path.islink(top):
            cmd.extend(["--symlink", os.readlink(top), top])
    binds = _jail_binds()
    drop = os.geteuid() == 0
    stage = _stage_point([src for src, _ in binds]) if drop else None
    script = ["set -e"]
    if stage:
        script.append(f"mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev attn-sandbox {stage}")
    for i, (src, dest) in enumerate(binds):
        if stage:
            staged = f"{stage}/{i}"
            make = "mkdir" if os.path.isdir(src) else ": >"
            script.append(f"{make} {staged}; mount --rbind {shlex.quote(src)} {staged}")
            src = staged
        cmd.extend(["--ro-bind", src, dest])
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/tmp"]
    cmd += [str(_interpreter()), "-I", "-S", "-c", _bootstrap(_JAIL_SITE, _JAIL_CHILD)]
    if not drop:
        return cmd
    script.append(
        f"exec setpriv --reuid={JAIL_UID} --regid={JAIL_UID} --clear-groups --inh-caps=-all "
        '--bounding-set=-all --no-new-privs -- "$@"'
    )
    unshare = shutil.which("unshare") or "unshare"
    return [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", "\n".join(script),
            "sh", *cmd]  # fmt: skip


def unjailed_command() -> list[str]:
    site = str(_numpy_dirs()[0].parent)
    return [str(_interpreter()), "-I", "-S", "-c", _bootstrap(site, str(_CHILD))]


def child_env() -> dict[str, str]:
    # one thread each: a memory limit and thread pools do not mix, and the parent has the cores
    return {
        "LANG": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PATH": "/usr/bin:/bin",
    }


@functools.lru_cache(maxsize=4)
def _probe(bwrap: str | None) -> str | None:
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    cmd = bwrap_command(bwrap)
    cmd[-1] = (
        f"import sys; sys.path[:0] = [{_JAIL_SITE!r}]; import numpy; sys.stdout.write('jail-ok')"
    )
    try:
        out = subprocess.run(
            cmd,
            capture_output=True,
            timeout=60,
            env=child_env(),
            cwd="/",
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not start: {exc}"
    if out.stdout[:7] != b"jail-ok":
        tail = out.stderr.decode("utf-8", "replace").strip()[-300:]
        return f"bubblewrap does not work here (exit {out.returncode}: {tail})"
    return None


def os_sandbox_problem() -> str | None:
    """Why untrusted programs cannot be jailed here, or None when bubblewrap works (cached)."""
    return _probe(shutil.which("bwrap"))


def require_os_sandbox() -> None:
    """Raise `SandboxUnavailable` (with the install hint) unless bubblewrap works here.

    Entry points that will run LLM-written programs call this once, before any work.
    """
    problem = os_sandbox_problem()
    if problem:
        raise SandboxUnavailable(f"cannot run untrusted programs safely: {problem}. {INSTALL_HINT}")
