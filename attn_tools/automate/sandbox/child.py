"""The sandbox's child process: runs one untrusted pattern program on plain-data contexts.

Runs inside the jail (see `runner`), started as ``python -I -S child.py``. It imports only the
standard library, numpy and ``attn_tools/patterns/context.py`` — the last loaded *by path*, so the
package ``__init__`` (torch, transformers, spaCy) never runs here and the child starts in about a
tenth of a second. The parent imports this module too, for the allow-lists and `program_namespace`.

Protocol (JSON both ways, never pickle: the parent must not unpickle anything a program touched).
The parent writes one document to stdin::

    {"source": str, "cpu_seconds": float, "memory_mb": int,
     "contexts": [context_to_plain(ctx, prepared), ...]}

and the child answers with one document on stdout::

    {"results": [<matrix> | {"error": str, "kind": "exception" | "memory" | "type"}, ...],
     "printed": str, "printed_truncated": bool}
     or {"setup_error": str, "kind": ...}

The language layer lives here: the program gets `program_namespace` (allow-listed numpy and math
*functions and constants* in plain namespaces, never a module object) and `safe_builtins`.
Before the program is compiled the child hardens itself (`harden`): no new privileges, a seccomp
filter refusing processes, sockets, file opening and namespace calls, a CPU timer to the fraction
of a second, and rlimits on CPU, address space, file size, core dumps and descriptors.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import os
import platform
import resource
import signal
import struct
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np


def _load_context() -> types.ModuleType:
    """`attn_tools.patterns.context`: imported normally in the parent, by path in the child."""
    if __package__:
        from attn_tools.patterns import context

        return context
    name = "attn_tools_sandbox_context"
    path = Path(__file__).resolve().parents[2] / "patterns" / "context.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


context = _load_context()

MAX_PRINTED_CHARS = 4_000
MAX_WEIGHT = context.MAX_WEIGHT


def _words(text: str) -> list[str]:
    return text.split()


# ----------------------------------------------------------------------------- the allow-lists

#: numpy names a program may use (``np.<name>``, ``from numpy import <name>``). An allow-list of
#: functions, classes and constants: no submodule (linalg, random, lib, ma, ctypeslib, testing,
#: ...), nothing that reads or writes files (load, save, fromfile, memmap, DataSource, ...).
NUMPY_NAMES = frozenset(
    _words(
        """
    abs absolute add all allclose amax amin any arange arccos arcsin arctan arctan2 argmax argmin
    argsort argwhere around array array_equal asarray atleast_1d atleast_2d bincount bool_
    broadcast_to ceil clip column_stack concatenate copy cos cosh count_nonzero cumprod cumsum diag
    diagflat diagonal diff divide dot e einsum empty empty_like equal exp expm1 eye flatnonzero flip
    fliplr flipud float32 float64 floor floor_divide fmax fmin full full_like greater greater_equal
    hstack identity inf int32 int64 intp isclose isfinite isin isinf isnan isscalar issubdtype kron
    less less_equal linspace log log1p log2 log10 logaddexp logical_and logical_not logical_or
    logical_xor matmul max maximum mean median min minimum mod multiply nan nan_to_num nanmax nanmin
    nansum ndarray ndim negative newaxis nonzero not_equal ones ones_like outer pi power prod ptp
    ravel reciprocal repeat reshape rint roll round searchsorted shape sign sin sinh size sort sqrt
    square squeeze stack std subtract sum swapaxes take take_along_axis tan tanh tile trace
    transpose tri tril tril_indices triu triu_indices true_divide trunc uint8 unique var vstack where
    zeros zeros_like bool int float
    """
    )
)

#: the math module's public functions and constants (all pure arithmetic).
MATH_NAMES = frozenset(n for n in dir(math) if not n.startswith("_"))

#: builtins a program may call; everything else (open, exec, eval, compile, __import__, getattr,
#: globals, vars, type, object, input, breakpoint, ...) is not there at run time.
SAFE_BUILTINS = tuple(
    _words(
        """
    abs all any bool dict enumerate filter float frozenset int isinstance len list map max min
    range reversed round set slice sorted str sum tuple zip divmod pow print
    ArithmeticError AssertionError Exception IndexError KeyError TypeError ValueError
    ZeroDivisionError StopIteration
    """
    )
)


#: numpy names swapped for a safer equivalent: uninitialised memory could leak old heap data
_NUMPY_SUBSTITUTES = {"empty": "zeros", "empty_like": "zeros_like"}

# Everything the program can call that this module makes (print, __import__, the namespaces'
# missing-name hook, the checked numpy wrappers, the ndarray stand-in) is compiled from this
# source into a fresh globals dict holding only what it needs, with a minimal ``__builtins__``:
# their ``__globals__`` reach neither this module (os, sys, ctypes) nor the real builtins.
_ISOLATED_SOURCE = """
class Namespace(SimpleNamespace):
    def __getattr__(self, name):
        raise AttributeError(
            f"{self._label}.{name} is not available in the sandbox (allowed: array functions "
            "and constants only; no submodules, no file access)"
        )


def _unsafe(label, what):
    return TypeError(
        f"{label}: {what} is not allowed in the sandbox (no object, void or structured arrays, "
        "no views on raw memory). Fix: use numeric dtypes such as float, int or bool."
    )


def check_kwargs(label, kwargs):
    for key in ("buffer", "like", "signature", "sig", "extobj"):
        if key in kwargs:
            raise _unsafe(label, f"the {key}= argument")
    out = kwargs.get("out")
    for item in out if isinstance(out, tuple) else (out,):
        if item is not None and not (
            isinstance(item, ndarray_type) and item.dtype.kind in "biuf"
        ):
            raise _unsafe(label, "an out= that is not a numeric array")
    if "dtype" in kwargs and kwargs["dtype"] is not None:
        try:
            dt = np_dtype(kwargs["dtype"])
        except Exception:
            return  # numpy refuses it the same way in the call itself
        if dt.hasobject or dt.kind == "V":
            raise _unsafe(label, f"dtype {dt}")


def check_result(label, out):
    items = out if isinstance(out, (tuple, list)) else (out,)
    for item in items:
        if isinstance(item, (ndarray_type, generic_type)) and (
            item.dtype.hasobject or item.dtype.kind == "V"
        ):
            raise _unsafe(label, f"an array of dtype {item.dtype}")
    return out


# Exceptions numpy raises carry real objects (a no-loop TypeError's args hold the real ufunc,
# whose call/outer/reduce run unchecked): the program only ever sees a fresh exception of the
# nearest builtin class, made *outside* the except block so neither __cause__ nor __context__
# points back at numpy's.
PLAIN_ERRORS = (MemoryError, RecursionError, ZeroDivisionError, OverflowError, FloatingPointError,
                ArithmeticError, IndexError, KeyError, LookupError, ValueError, TypeError)


def plain_error(exc):
    for cls in PLAIN_ERRORS:
        if isinstance(exc, cls):
            break
    else:
        cls = Exception
    try:
        text = str(exc)
    except Exception:
        text = ""
    if cls.__name__ != type(exc).__name__:  # keep numpy's class name readable in the message
        text = f"{type(exc).__name__}: {text}"
    return cls(text[:1000])


def run(label, fn, args, kwargs):
    check_kwargs(label, kwargs)
    failure = None
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:
        failure = plain_error(exc)
    if failure is not None:
        raise failure
    return check_result(label, out)


def elements(label, shape):
    # the element count of a shape argument, in Python ints (no wrap-around)
    if shape is None:
        return 1
    if isinstance(shape, (int, integer_type)):
        shape = (shape,)
    total = 1
    for dim in shape:
        if not isinstance(dim, (int, integer_type)):
            return 0  # numpy refuses floats and the like itself
        dim = int(dim)
        if dim < 0:
            return 0  # numpy refuses negative dimensions itself
        total *= dim
    return total


def bound(label, count):
    if count > limits["elements"]:
        raise MemoryError(
            f"{label}: the result would have {count} elements; the sandbox allows at most "
            f"{limits['elements']} (about {limits['bytes'] // 2**20} MiB). Fix: smaller sizes."
        )


def repeat_count(label, a, repeats, axis=None):
    arr = np_asarray(a)
    counts = np_asarray(repeats)
    if counts.dtype.kind not in "biu":
        raise TypeError(f"{label}: repeats must be integers, got dtype {counts.dtype}")
    values = [int(c) for c in counts.ravel().tolist()]
    if any(c < 0 for c in values):
        raise ValueError(f"{label}: repeats may not be negative")
    if axis is None:
        size = arr.size
        per = 1
    else:
        if not isinstance(axis, (int, integer_type)) or not -arr.ndim <= int(axis) < arr.ndim:
            return 0  # numpy reports the bad axis itself
        size = arr.shape[int(axis)]
        per = arr.size // size if size else 0
    total = sum(values) if len(values) != 1 else values[0] * size
    return total * per


def size_of(name, label, args, kwargs):
    # the number of elements a constructor would make, from its size arguments
    def arg(i, key, default=None):
        return args[i] if len(args) > i else kwargs.get(key, default)

    if name in ("zeros", "ones", "empty", "full"):
        return elements(label, arg(0, "shape"))
    if name in ("zeros_like", "ones_like", "empty_like", "full_like"):
        shape = kwargs.get("shape", args[3] if name == "full_like" and len(args) > 4 else None)
        return elements(label, shape) if shape is not None else np_asarray(arg(0, "a")).size
    if name in ("eye", "tri"):
        n = elements(label, arg(0, "N"))
        m = arg(1, "M")
        return n * (n if m is None else elements(label, m))
    if name in ("identity",):
        return elements(label, arg(0, "n")) ** 2
    if name in ("tril_indices", "triu_indices"):
        n = elements(label, arg(0, "n"))
        m = arg(2, "m")
        return 2 * n * (n if m is None else elements(label, m))
    if name == "broadcast_to":
        return elements(label, arg(1, "shape"))
    if name == "tile":
        reps = arg(1, "reps")
        return np_asarray(arg(0, "A")).size * elements(label, reps)
    if name == "repeat":
        return repeat_count(label, arg(0, "a"), arg(1, "repeats"), arg(2, "axis"))
    if name in ("kron", "outer"):
        return np_asarray(arg(0, "a")).size * np_asarray(arg(1, "b")).size
    if name in ("diag", "diagflat"):
        v = np_asarray(arg(0, "v"))
        k = arg(1, "k", 0)
        k = abs(int(k)) if isinstance(k, (int, integer_type)) else 0
        return (v.size + k) ** 2 if v.ndim <= 1 or name == "diagflat" else v.size
    if name == "linspace":
        num = arg(2, "num", 50)
        return elements(label, num) if isinstance(num, (int, integer_type)) else 0
    return 0


def checked(label, fn, name):
    sized = name in SIZED

    def call(*args, **kwargs):
        if sized:
            failure = None
            try:
                count = size_of(name, label, args, kwargs)
            except Exception as exc:
                failure = plain_error(exc)
            if failure is not None:
                raise failure
            bound(label, count)
        return run(label, fn, args, kwargs)

    return call


SIZED = frozenset(
    "zeros ones empty full zeros_like ones_like empty_like full_like eye tri identity "
    "tril_indices triu_indices broadcast_to tile repeat kron outer diag diagflat linspace".split()
)


class Ufunc:
    # a numpy ufunc with the same call, reduce, accumulate and outer, each checked
    def __init__(self, label, fn):
        self._label = label
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return run(self._label, self._fn, args, kwargs)

    def reduce(self, *args, **kwargs):
        return run(self._label, self._fn.reduce, args, kwargs)

    def accumulate(self, *args, **kwargs):
        return run(self._label, self._fn.accumulate, args, kwargs)

    def outer(self, *args, **kwargs):
        if len(args) >= 2:
            bound(self._label, np_asarray(args[0]).size * np_asarray(args[1]).size)
        return run(self._label, self._fn.outer, args, kwargs)

    def __repr__(self):
        return f"<ufunc {self._label}>"


class ArrayTypeCheck(type):
    # isinstance(x, np.ndarray) works; np.ndarray(shape, dtype, buffer) does not exist
    def __instancecheck__(cls, obj):
        return isinstance(obj, ndarray_type)

    def __subclasscheck__(cls, other):
        return isinstance(other, type) and issubclass(other, ndarray_type)

    def __call__(cls, *args, **kwargs):
        raise TypeError(
            "np.ndarray(...) cannot be called in the sandbox (it can wrap raw memory). "
            "Fix: use np.array, np.zeros or np.full."
        )


class ndarray(metaclass=ArrayTypeCheck):
    pass


class Printer:
    # print for the program: keeps the first `limit` characters only
    def __init__(self, limit):
        self.limit = limit
        self.parts = []
        self.size = 0
        self.truncated = False

    def __call__(self, *args, sep=" ", end="\\n", **ignored):
        if self.size >= self.limit:
            self.truncated = True
            return
        text = str(sep).join(str(a)[: self.limit] for a in args) + str(end)
        room = self.limit - self.size
        self.truncated |= len(text) > room
        self.parts.append(text[:room])
        self.size += min(len(text), room)


def make_import(modules, loaded):
    def safe_import(name, globals=None, locals=None, fromlist=(), level=0):
        if not level and name in modules:
            return modules[name]
        # numpy's C code imports its own, already loaded modules through the calling frame's
        # builtins (PyImport_Import: an empty *list* as fromlist) and then reads sys.modules
        # itself, ignoring what this returns (and crashes on an error): say yes without handing
        # out the module. An import statement passes None or a tuple and gets the error below.
        if not level and name in loaded and type(fromlist) is list and not fromlist:
            return None
        raise ImportError(f"import of {name!r} is not allowed in the sandbox")

    return safe_import
"""

_ISOLATED_BUILTINS = (
    "AttributeError Exception ImportError TypeError isinstance issubclass len min str tuple "
    "list type super __build_class__ object int abs any sum frozenset ValueError MemoryError "
    "RecursionError ZeroDivisionError OverflowError FloatingPointError ArithmeticError "
    "IndexError KeyError LookupError"
)

#: the largest array (in bytes) a sized numpy constructor may make when no memory limit is given
DEFAULT_MAX_ARRAY_BYTES = 2**30


def _isolated(max_bytes: int = DEFAULT_MAX_ARRAY_BYTES) -> dict[str, Any]:
    """A fresh module-like dict with the helpers of `_ISOLATED_SOURCE` (made once per call);
    sized constructors (np.repeat, np.tile, np.full, ...) refuse more than ``max_bytes`` of
    float64 before numpy computes a size in C."""
    import builtins

    env: dict[str, Any] = {
        "__builtins__": {n: getattr(builtins, n) for n in _ISOLATED_BUILTINS.split()},
        "__name__": "sandbox_helpers",
        "SimpleNamespace": types.SimpleNamespace,
        "np_dtype": np.dtype,
        "ndarray_type": np.ndarray,
        "generic_type": np.generic,
        "integer_type": np.integer,
        "np_asarray": np.asarray,
        "limits": {"bytes": int(max_bytes), "elements": int(max_bytes) // 8},
    }
    exec(compile(_ISOLATED_SOURCE, "<sandbox helpers>", "exec"), env)  # noqa: S102 - our own code
    # numpy's C code imports through the calling frame's builtins (here: the helpers'); without
    # an __import__ some of its paths crash the process instead of raising
    env["__builtins__"]["__import__"] = env["make_import"]({}, _numpy_loaded())
    return env


def _numpy_loaded() -> frozenset[str]:
    """Names of the numpy modules loaded so far (what numpy's C code may import again)."""
    _warm_numpy()
    return frozenset(k for k in sys.modules if k == "numpy" or k.startswith("numpy."))


def _namespace(env: dict[str, Any], label: str, values: dict[str, Any]) -> Any:
    """A plain namespace of ``values`` whose missing names get a readable error."""
    return env["Namespace"](_label=label, **values)


def _plain_numpy(env: dict[str, Any]) -> dict[str, Any]:
    """The allow-listed numpy names: ufuncs and functions wrapped so that no object, void or
    structured array comes out and no ``buffer=``/``like=`` goes in; ``ndarray`` a type check."""
    out: dict[str, Any] = {}
    for name in sorted(NUMPY_NAMES):
        if name == "newaxis":
            out[name] = None
            continue
        value = getattr(np, _NUMPY_SUBSTITUTES.get(name, name), None)
        if value is None or isinstance(value, types.ModuleType):
            continue
        label = f"np.{name}"
        if name == "ndarray":
            out[name] = env["ndarray"]
        elif isinstance(value, np.ufunc):
            out[name] = env["Ufunc"](label, value)
        elif isinstance(value, float) or (
            isinstance(value, type) and issubclass(value, np.generic)
        ):
            out[name] = value  # constants and scalar types (numeric only: see NUMPY_NAMES)
        else:
            out[name] = env["checked"](label, value, name)
    return out


def _plain_math() -> dict[str, Any]:
    return {n: getattr(math, n) for n in sorted(MATH_NAMES)}


def program_namespace(
    printer: Any = print, max_bytes: int = DEFAULT_MAX_ARRAY_BYTES
) -> dict[str, Any]:
    """The globals a program runs with: ``np``/``numpy`` and ``math`` as plain namespaces of
    allow-listed functions and constants, and `safe_builtins` (with ``print`` = ``printer``).

    A fresh dict: nothing in it, or reachable from the functions it holds through their
    globals, is this module or the real builtins.
    """
    env = _isolated(max_bytes)
    np_ns = _namespace(env, "np", _plain_numpy(env))
    math_ns = _namespace(env, "math", _plain_math())
    modules = {"numpy": np_ns, "math": math_ns}
    builtins_ = safe_builtins(printer, modules, env)
    return {"__builtins__": builtins_, "__name__": "pattern_program", "np": np_ns, "math": math_ns}


def make_printer() -> Any:
    """A fresh `print` stand-in that keeps at most `MAX_PRINTED_CHARS` characters (``.parts``,
    ``.truncated``); its class lives in the isolated helpers, not in this module."""
    return _isolated()["Printer"](MAX_PRINTED_CHARS)


def safe_builtins(
    printer: Any, modules: dict[str, Any], env: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The builtins of `SAFE_BUILTINS`, ``print`` → ``printer`` and an ``__import__`` that
    hands out the plain namespaces in ``modules`` and nothing else."""
    import builtins

    env = env or _isolated()
    safe = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    safe["print"] = printer
    safe["__import__"] = env["make_import"](dict(modules), _numpy_loaded())
    return safe


# ----------------------------------------------------------------------------- hardening

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO_EPERM = 0x00050000 | 1
_RET_KILL_PROCESS = 0x80000000

# Syscalls the program never needs once numpy is warm, by name (one table per architecture,
# numbers from the kernel's syscall tables). Groups: opening or creating files; sockets; new
# processes and programs; signals to any process (kill, tkill, tgkill, sigqueue, pidfds);
# changing files through a path or a descriptor (size, space, mode, owner, times, xattrs,
# links, renames) -- stdin/stdout/stderr are pipes, but fallocate/ftruncate on an inherited
# file would reach the host's disk; mounts and namespaces; other processes' memory, limits and
# scheduling; credentials; kernel keys, BPF, perf, modules, reboot, clocks; io_uring (it would
# run all of the above without these syscalls).
_SYSCALL_GROUPS = _words(
    """
open creat openat openat2 open_by_handle_at name_to_handle_at memfd_create memfd_secret
socket connect accept accept4 sendto recvfrom sendmsg bind listen socketpair
clone clone3 fork vfork execve execveat ptrace
kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo pidfd_open pidfd_send_signal pidfd_getfd
unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir link linkat symlink symlinkat
mknod mknodat truncate ftruncate fallocate chmod fchmod fchmodat fchmodat2 chown fchown lchown
fchownat utime utimes futimesat utimensat setxattr lsetxattr fsetxattr removexattr
lremovexattr fremovexattr copy_file_range sendfile splice tee vmsplice
mount umount2 pivot_root chroot unshare setns fsopen fsconfig fsmount move_mount open_tree
fspick mount_setattr
process_vm_readv process_vm_writev kcmp prlimit64 setpriority sched_setattr
sched_setscheduler sched_setparam ioprio_set move_pages migrate_pages mbind set_mempolicy
setuid setgid setreuid setregid setresuid setresgid setgroups setfsuid setfsgid capset
personality
keyctl add_key request_key bpf perf_event_open userfaultfd init_module finit_module
delete_module kexec_load kexec_file_load reboot swapon swapoff acct sethostname setdomainname
settimeofday clock_settime adjtimex clock_adjtime syslog quotactl fanotify_init vhangup iopl
ioperm io_uring_setup io_uring_enter io_uring_register
"""
)

_SYSCALLS = {
    "x86_64": dict(
        open=2, creat=85, openat=257, openat2=437, open_by_handle_at=304,
        name_to_handle_at=303, memfd_create=319, memfd_secret=447, socket=41, connect=42,
        accept=43, accept4=288, sendto=44, recvfrom=45, sendmsg=46, bind=49, listen=50,
        socketpair=53, clone=56, clone3=435, fork=57, vfork=58, execve=59, execveat=322,
        ptrace=101, kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297,
        pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, unlink=87, unlinkat=263,
        rename=82, renameat=264, renameat2=316, mkdir=83, mkdirat=258, rmdir=84, link=86,
        linkat=265, symlink=88, symlinkat=266, mknod=133, mknodat=259, truncate=76,
        ftruncate=77, fallocate=285, chmod=90, fchmod=91, fchmodat=268, fchmodat2=452,
        chown=92, fchown=93, lchown=94, fchownat=260, utime=132, utimes=235, futimesat=261,
        utimensat=280, setxattr=188, lsetxattr=189, fsetxattr=190, removexattr=197,
        lremovexattr=198, fremovexattr=199, copy_file_range=326, sendfile=40, splice=275,
        tee=276, vmsplice=278, mount=165, umount2=166, pivot_root=155, chroot=161,
        unshare=272, setns=308, fsopen=430, fsconfig=431, fsmount=432, move_mount=429,
        open_tree=428, fspick=433, mount_setattr=442, process_vm_readv=310,
        process_vm_writev=311, kcmp=312, prlimit64=302, setpriority=141, sched_setattr=314,
        sched_setscheduler=144, sched_setparam=142, ioprio_set=251, move_pages=279,
        migrate_pages=256, mbind=237, set_mempolicy=238, setuid=105, setgid=106, setreuid=113,
        setregid=114, setresuid=117, setresgid=119, setgroups=116, setfsuid=122, setfsgid=123,
        capset=126, personality=135, keyctl=250, add_key=248, request_key=249, bpf=321,
        perf_event_open=298, userfaultfd=323, init_module=175, finit_module=313,
        delete_module=176, kexec_load=246, kexec_file_load=320, reboot=169, swapon=167,
        swapoff=168, acct=163, sethostname=170, setdomainname=171, settimeofday=164,
        clock_settime=227, adjtimex=159, clock_adjtime=305, syslog=103, quotactl=179,
        fanotify_init=300, vhangup=153, iopl=172, ioperm=173, io_uring_setup=425,
        io_uring_enter=426, io_uring_register=427,
    ),
    # the generic table (no open, fork, unlink, ...: only their *at forms exist)
    "aarch64": dict(
        openat=56, openat2=437, open_by_handle_at=265, name_to_handle_at=264,
        memfd_create=279, memfd_secret=447, socket=198, connect=203, accept=202, accept4=242,
        sendto=206, recvfrom=207, sendmsg=211, bind=200, listen=201, socketpair=199,
        clone=220, clone3=435, execve=221, execveat=281, ptrace=117, kill=129, tkill=130,
        tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, pidfd_open=434,
        pidfd_send_signal=424, pidfd_getfd=438, unlinkat=35, renameat=38, renameat2=276,
        mkdirat=34, linkat=37, symlinkat=36, mknodat=33, truncate=45, ftruncate=46,
        fallocate=47, fchmod=52, fchmodat=53, fchmodat2=452, fchown=55, fchownat=54,
        utimensat=88, setxattr=5, lsetxattr=6, fsetxattr=7, removexattr=14, lremovexattr=15,
        fremovexattr=16, copy_file_range=285, sendfile=71, splice=76, tee=77, vmsplice=75,
        mount=40, umount2=39, pivot_root=41, chroot=51, unshare=97, setns=268, fsopen=430,
        fsconfig=431, fsmount=432, move_mount=429, open_tree=428, fspick=433,
        mount_setattr=442, process_vm_readv=270, process_vm_writev=271, kcmp=272,
        prlimit64=261, setpriority=140, sched_setattr=274, sched_setscheduler=119,
        sched_setparam=118, ioprio_set=30, move_pages=239, migrate_pages=238, mbind=235,
        set_mempolicy=237, setuid=146, setgid=144, setreuid=145, setregid=143, setresuid=147,
        setresgid=149, setgroups=159, setfsuid=151, setfsgid=152, capset=91, personality=92,
        keyctl=219, add_key=217, request_key=218, bpf=280, perf_event_open=241,
        userfaultfd=282, init_module=105, finit_module=273, delete_module=106, kexec_load=104,
        kexec_file_load=294, reboot=142, swapon=224, swapoff=225, acct=89, sethostname=161,
        setdomainname=162, settimeofday=170, clock_settime=112, adjtimex=171,
        clock_adjtime=266, syslog=116, quotactl=60, fanotify_init=262, vhangup=58,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
    ),
}  # fmt: skip
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_BLOCKED = {
    machine: (
        _AUDIT_ARCH[machine],
        tuple(table[name] for name in _SYSCALL_GROUPS if name in table),
    )
    for machine, table in _SYSCALLS.items()
}


def blocked_syscalls(machine: str | None = None) -> tuple[str, ...]:
    """The names of the syscalls `seccomp_filter` refuses on ``machine`` (this one by default)."""
    table = _SYSCALLS.get(machine or platform.machine(), {})
    return tuple(name for name in _SYSCALL_GROUPS if name in table)


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """The classic-BPF program `harden` installs, or None on an architecture without a table."""
    machine = machine or platform.machine()
    if machine not in _BLOCKED:
        return None
    arch, blocked = _BLOCKED[machine]
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    prog = [_bpf(ld_abs, 4), _bpf(jeq, arch, jt=1), _bpf(ret, _RET_KILL_PROCESS), _bpf(ld_abs, 0)]
    # deny is the last instruction; each jump counts the instructions after the current one
    checks: list[tuple[int, int]] = []
    if machine == "x86_64":
        checks.append((jge, 0x40000000))  # the x32 ABI numbers would bypass the table
    checks += [(jeq, nr) for nr in blocked]
    for i, (op, k) in enumerate(checks):
        prog.append(_bpf(op, k, jt=len(checks) - i))
    prog += [_bpf(ret, _RET_ALLOW), _bpf(ret, _RET_ERRNO_EPERM)]
    return b"".join(prog)


def _prctl() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    return fn


def no_new_privs() -> bool:
    """``PR_SET_NO_NEW_PRIVS``: no exec can gain privileges (setuid binaries, file caps)."""
    try:
        return _prctl()(_PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def install_seccomp() -> bool:
    """Install `seccomp_filter`; False where the kernel or architecture does not allow it."""
    prog = seccomp_filter()
    if prog is None:
        return False

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    try:
        return _prctl()(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _mapped_kb() -> int | None:
    try:  # Linux: the address space already mapped, so the limit is what the program may add
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def harden(cpu_seconds: float, memory_mb: int) -> dict[str, bool]:
    """Limit this process before untrusted code runs; returns which layers took effect.

    CPU: an ``ITIMER_PROF`` timer whose default action ends the process after ``cpu_seconds``
    of CPU time (to the fraction of a second), and ``RLIMIT_CPU`` one second later as a
    backstop. Memory: ``RLIMIT_AS`` = what is mapped now + ``memory_mb``. No file may grow,
    no core is dumped, no descriptor beyond 0-2 exists. Root (only outside bubblewrap, with the
    explicit unsafe opt-in) becomes ``nobody`` so the process limits apply.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    spent = usage.ru_utime + usage.ru_stime
    hard = int(math.ceil(spent + cpu_seconds)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard + 1))
    vm_kb = _mapped_kb()
    if vm_kb is not None:
        limit = (vm_kb + int(memory_mb) * 1024) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.getuid() == 0:  # root ignores RLIMIT_NPROC; become nobody so it applies
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        except OSError:
            pass
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    os.closerange(3, 1 << 16)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, 3))
    layers = {"no_new_privs": no_new_privs(), "seccomp": install_seccomp()}
    # SIGPROF's default action ends the process: a program cannot catch it with try/except
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_PROF, max(float(cpu_seconds), 0.001))
    return layers


_WARM = []


def _warm_numpy() -> None:
    """Trigger numpy's lazy imports now: after hardening no module file can be opened."""
    if _WARM:
        return
    _WARM.append(True)
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    for fn in ("sum", "mean", "max", "min", "std", "var", "any", "all", "argmax", "argmin",
               "prod", "cumsum", "round", "clip", "nonzero", "argsort", "sort", "tolist"):  # fmt: skip
        getattr(a.copy(), fn)()
    np.round(a, 2), np.unique(a), np.median(a), np.isin(a, [1.0]), np.einsum("ij->i", a)
    np.tril(a), np.triu(a), np.where(a > 1, a, 0), np.broadcast_to(a[:1], a.shape), np.isclose(a, a)
    np.linspace(0, 1, 3), np.percentile(a, 50), np.nan_to_num(a), np.array2string(a)
    np.equal(np.array(["a", "b"]), "a"), np.array(["a"]) == "a", np.sort(np.array(["b", "a"]))
    str(a), repr(a), format(1.5, ".2f"), f"{np.float64(1.5):.2f}", np.argwhere(a), np.ptp(a)
    np.add.outer(a[0], a[0]), np.maximum.accumulate(a[0]), np.add.reduce(a), str(np.dtype(object))
    np.array([1, "a"], dtype=object), np.tril_indices(2), np.triu_indices(2), np.nonzero(a)
    try:
        np.ones(3) @ np.ones(2)
    except ValueError as exc:
        str(exc)


# ----------------------------------------------------------------------------- running


def _forget_ctypes() -> None:
    """After hardening ctypes is not needed: drop this module's and the import system's
    references, so the shortest route from any object to raw memory calls is gone."""
    globals().pop("ctypes", None)
    for name in [n for n in sys.modules if n == "ctypes" or n.startswith("ctypes.")]:
        del sys.modules[name]


def _describe(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:  # a str() that fails is the program's, not ours
        text = type(exc).__name__
    return text[:500]


def _result(out: Any, n: int) -> dict[str, Any]:
    if not isinstance(out, np.ndarray):
        return {"error": f"returned {type(out).__name__}, expected a numpy array", "kind": "type"}
    if out.dtype == object or np.iscomplexobj(out) or out.dtype.kind not in "biuf":
        return {"error": f"returned an array of dtype {out.dtype}", "kind": "type"}
    if out.shape != (n, n):
        # the parent validates too; refusing here keeps a huge array off the wire
        return {"error": f"returned shape {tuple(out.shape)}, expected ({n}, {n})", "kind": "type"}
    return context.encode_matrix(np.asarray(out, dtype=np.float64))


def run_payload(payload: dict[str, Any], *, harden_process: bool = True) -> dict[str, Any]:
    """Run the program of ``payload`` on its contexts; every failure is a result, not a raise."""
    contexts = [context.context_from_plain(c) for c in payload["contexts"]]
    _warm_numpy()  # first: the numpy submodules it loads are the ones C code may ask for
    printer = make_printer()
    memory_mb = int(payload.get("memory_mb") or 0)
    namespace = program_namespace(
        printer, memory_mb * 2**20 if memory_mb > 0 else DEFAULT_MAX_ARRAY_BYTES
    )
    if harden_process:
        harden(float(payload["cpu_seconds"]), int(payload["memory_mb"]))
        _forget_ctypes()
    try:
        # compiled after hardening: constant folding (10 ** 10 ** 10) is a CPU and memory bomb
        code = compile(payload["source"], "<program>", "exec")
        exec(code, namespace)
        fn = namespace["pattern"]
    except MemoryError:
        return {"setup_error": "MemoryError: the memory limit was reached", "kind": "memory"}
    except BaseException as exc:  # the program is untrusted: anything it raises is a result
        return {"setup_error": _describe(exc), "kind": "exception"}
    results: list[dict[str, Any]] = []
    for ctx in contexts:
        try:
            results.append(_result(fn(ctx), ctx.n))
        except MemoryError:
            results.append({"error": "MemoryError: the memory limit was reached", "kind": "memory"})
        except RecursionError:
            results.append({"error": "RecursionError: recursion too deep", "kind": "exception"})
        except BaseException as exc:
            results.append({"error": _describe(exc), "kind": "exception"})
    return {
        "results": results,
        "printed": "".join(printer.parts),
        "printed_truncated": printer.truncated,
    }


def main() -> None:
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    # stdin stays open (at end of file) so fd 0 is taken when the descriptor limit applies
    answer = run_payload(payload)
    data = json.dumps(answer).encode("utf-8")
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


if __name__ == "__main__":
    main()
