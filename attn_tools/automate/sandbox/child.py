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


def _namespace(label: str, values: dict[str, Any]) -> types.SimpleNamespace:
    """A plain namespace of ``values`` whose missing names get a readable error."""

    def missing(self: Any, name: str) -> Any:
        raise AttributeError(
            f"{label}.{name} is not available in the sandbox (allowed: array functions and "
            "constants only; no submodules, no file access)"
        )

    cls = type(f"{label}_namespace", (types.SimpleNamespace,), {"__getattr__": missing})
    return cls(**values)


def _plain_numpy() -> dict[str, Any]:
    out = {}
    for name in sorted(NUMPY_NAMES):
        value = getattr(np, name, None)
        if value is not None and not isinstance(value, types.ModuleType):
            out[name] = value
    return out


def _plain_math() -> dict[str, Any]:
    return {n: getattr(math, n) for n in sorted(MATH_NAMES)}


def program_namespace(printer: Any = print) -> dict[str, Any]:
    """The globals a program runs with: ``np``/``numpy`` and ``math`` as plain namespaces of
    allow-listed functions and constants, and `safe_builtins` (with ``print`` = ``printer``)."""
    np_ns = _namespace("np", _plain_numpy())
    math_ns = _namespace("math", _plain_math())
    modules = {"numpy": np_ns, "math": math_ns}
    builtins_ = safe_builtins(printer, modules)
    return {"__builtins__": builtins_, "__name__": "pattern_program", "np": np_ns, "math": math_ns}


def safe_builtins(printer: Any, modules: dict[str, Any]) -> dict[str, Any]:
    """The builtins of `SAFE_BUILTINS`, ``print`` → ``printer`` and an ``__import__`` that
    hands out the plain namespaces in ``modules`` and nothing else."""
    import builtins

    def safe_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        # numpy's C code imports its helpers through the *calling frame's* builtins, so numpy
        # submodules already loaded are handed back when C code asks for them (a program cannot
        # name __import__: the static check refuses every dunder name, and no getattr exists)
        if not level and name in modules:
            return modules[name]
        if not level and name.startswith("numpy.") and name in sys.modules and fromlist:
            return sys.modules[name]
        raise ImportError(f"import of {name!r} is not allowed in the sandbox")

    safe = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    safe["print"] = printer
    safe["__import__"] = safe_import
    return safe


# ----------------------------------------------------------------------------- hardening

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO_EPERM = 0x00050000 | 1
_RET_KILL_PROCESS = 0x80000000

# Syscalls the program never needs once numpy is warm: new processes and programs, sockets,
# opening or changing files, namespaces and mounts, tracing, other processes' memory, keys, BPF.
_BLOCKED = {
    "x86_64": (
        0xC000003E,
        # open creat openat openat2 | socket connect accept sendto recvfrom sendmsg bind listen
        # socketpair accept4 | clone fork vfork execve execveat clone3 | kill ptrace
        # unlink unlinkat rename renameat renameat2 mkdir mkdirat rmdir truncate link linkat
        # symlink symlinkat chmod fchmodat chown lchown fchownat mknod mknodat
        # mount umount2 pivot_root chroot unshare setns | keyctl add_key request_key bpf
        # perf_event_open process_vm_readv process_vm_writev userfaultfd memfd_create
        # io_uring_setup io_uring_enter io_uring_register
        (
            2,
            85,
            257,
            437,
            41,
            42,
            43,
            44,
            45,
            46,
            49,
            50,
            53,
            288,
            56,
            57,
            58,
            59,
            322,
            435,
            62,
            101,
            87,
            263,
            82,
            264,
            316,
            83,
            258,
            84,
            76,
            86,
            265,
            88,
            266,
            90,
            268,
            92,
            94,
            260,
            133,
            259,
            165,
            166,
            155,
            161,
            272,
            308,
            250,
            248,
            249,
            321,
            298,
            310,
            311,
            323,
            319,
            425,
            426,
            427,
        ),
    ),  # fmt: skip
    "aarch64": (
        0xC00000B7,
        (
            56,
            437,
            198,
            203,
            202,
            206,
            207,
            211,
            200,
            201,
            199,
            242,
            220,
            221,
            281,
            435,
            129,
            117,
            35,
            38,
            276,
            34,
            45,
            37,
            36,
            53,
            54,
            33,
            40,
            39,
            41,
            51,
            97,
            268,
            219,
            217,
            218,
            280,
            241,
            270,
            271,
            282,
            279,
            425,
            426,
            427,
        ),
    ),  # fmt: skip
}


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


def _warm_numpy() -> None:
    """Trigger numpy's lazy imports now: after hardening no module file can be opened."""
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    for fn in ("sum", "mean", "max", "min", "std", "var", "any", "all", "argmax", "argmin",
               "prod", "cumsum", "round", "clip", "nonzero", "argsort", "sort", "tolist"):  # fmt: skip
        getattr(a.copy(), fn)()
    np.round(a, 2), np.unique(a), np.median(a), np.isin(a, [1.0]), np.einsum("ij->i", a)
    np.tril(a), np.triu(a), np.where(a > 1, a, 0), np.broadcast_to(a[:1], a.shape), np.isclose(a, a)
    np.linspace(0, 1, 3), np.percentile(a, 50), np.nan_to_num(a), np.array2string(a)
    np.equal(np.array(["a", "b"]), "a"), np.array(["a"]) == "a", np.sort(np.array(["b", "a"]))
    str(a), repr(a), format(1.5, ".2f"), f"{np.float64(1.5):.2f}", np.argwhere(a), np.ptp(a)
    try:
        np.ones(3) @ np.ones(2)
    except ValueError as exc:
        str(exc)


# ----------------------------------------------------------------------------- running


class _Printer:
    """``print`` for the program: keeps the first `MAX_PRINTED_CHARS` characters only."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.truncated = False

    def __call__(self, *args: Any, sep: Any = " ", end: Any = "\n", **_: Any) -> None:
        if self.size >= MAX_PRINTED_CHARS:
            self.truncated = True
            return
        text = str(sep).join(str(a)[:MAX_PRINTED_CHARS] for a in args) + str(end)
        room = MAX_PRINTED_CHARS - self.size
        self.truncated |= len(text) > room
        self.parts.append(text[:room])
        self.size += min(len(text), room)


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
    printer = _Printer()
    namespace = program_namespace(printer)
    _warm_numpy()
    if harden_process:
        harden(float(payload["cpu_seconds"]), int(payload["memory_mb"]))
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
