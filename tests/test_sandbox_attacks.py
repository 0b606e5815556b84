"""Hostile programs against the sandbox, each checked for *no effect*, as root and unprivileged.

Every attack runs with a secret in a file and in this process's environment, a watched folder, a
real loopback TCP listener and a victim process; after each one the secret must be absent from
every output, the folder unchanged, the listener without a connection, the victim and this
process alive. Language-layer attacks go through `run_program`; OS-layer attacks run *arbitrary*
Python inside the jail (as if the language layer had been broken) and inside a hardened child.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from attn_tools.automate.sandbox import check_program, os_sandbox_problem, run_program
from attn_tools.automate.sandbox import child as sandbox_child
from attn_tools.automate.sandbox.jail import bwrap_command, unjailed_command
from attn_tools.automate.sandbox.runner import TRUNCATED
from attn_tools.patterns.context import (
    PatternContext,
    PlainAlignment,
    PlainWord,
    context_to_plain,
)

REPO = Path(__file__).resolve().parents[1]
JAIL = os_sandbox_problem()
needs_jail = pytest.mark.skipif(JAIL is not None, reason=f"no bubblewrap jail here: {JAIL}")
LIMITS = {"cpu_seconds": 0.5, "memory_mb": 256, "timeout": 20.0}


def make_context(words: list[str], kind: str = "encoder") -> PatternContext:
    """A context built by hand (no model, no spaCy), so unprivileged runs need neither."""
    offsets, pos = [], 0
    for w in words:
        offsets.append((pos, pos + len(w)))
        pos += len(w) + 1
    tags = ["DET", "NOUN", "VERB", "PUNCT"]
    plain = tuple(
        PlainWord(w, s, e, tags[i % 4], "X", "dep", 0, w.lower(), tags[i % 4] == "PUNCT")
        for i, (w, (s, e)) in enumerate(zip(words, offsets))
    )
    idx = tuple((i,) for i in range(len(words)))
    return PatternContext(
        text=" ".join(words),
        tokens=tuple(words),
        token_ids=tuple(range(len(words))),
        offsets=tuple(offsets),
        special_mask=np.zeros(len(words), dtype=bool),
        kind=kind,
        words=plain,
        alignment=PlainAlignment(idx, idx, tuple((t, t) for t in idx)),
    )


CONTEXTS = [
    make_context(["The", "dog", "saw", "."]),
    make_context(["A", "cat", "ran", "home", "."], kind="causal"),
]


class Listener:
    """A real loopback TCP server that counts every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class Arena:
    """Everything an attack might touch, and the check that it touched nothing."""

    def __init__(self, root: Path) -> None:
        self.secret = "attn-secret-" + secrets.token_hex(12)
        self.secret_file = root / "secret.txt"
        self.secret_file.write_text(self.secret)
        self.secret_file.chmod(0o644)  # readable by anyone outside the jail: the jail must hide it
        self.watch = root / "watched"
        self.watch.mkdir()
        (self.watch / "keep.txt").write_text("keep")
        self.watch.chmod(0o777)
        self.listener = Listener()
        self.victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

    def fill(self, source: str) -> str:
        return (
            source.replace("SECRET_PATH", str(self.secret_file))
            .replace("WATCH", str(self.watch))
            .replace("PORT", str(self.listener.port))
            .replace("VICTIM", str(self.victim.pid))
            .replace("PARENT", str(os.getpid()))
        )

    def snapshot(self) -> dict[str, str]:
        return {p.name: p.read_text() for p in sorted(self.watch.iterdir())}

    def assert_no_effect(self, name: str, *outputs: str) -> None:
        for out in outputs:
            assert self.secret not in out, f"{name}: the secret leaked"
        assert self.snapshot() == {"keep.txt": "keep"}, f"{name}: the watched folder changed"
        assert self.secret_file.read_text() == self.secret, f"{name}: the secret file changed"
        assert self.listener.connections == 0, f"{name}: a connection reached the listener"
        assert self.victim.poll() is None, f"{name}: the victim process died"

    def close(self) -> None:
        self.victim.kill()
        self.victim.wait()
        self.listener.close()


@pytest.fixture
def arena(tmp_path, monkeypatch):
    a = Arena(tmp_path)
    # the secret in this process's environment: /proc/<parent>/environ must stay out of reach
    monkeypatch.setenv("ATTN_TEST_API_KEY", a.secret)
    yield a
    a.close()


def body(code: str, head: str = "import numpy as np\n") -> str:
    return head + "\ndef pattern(ctx):\n" + textwrap.indent(textwrap.dedent(code).strip(), "    ")


R, C, T, I, OK = "rejected", "crashed", "timeout", "invalid_output", "ok"  # noqa: E741
EYE = "\nreturn np.eye(ctx.n)"

# the red team's use-after-free chain (it reached the child's module globals: os, sys, ctypes)
REDTEAM_CHAIN = """
a = np.zeros(128, dtype=np.int64)
b = a[:]
a.resize(200000, refcheck=False)
B = np.ones(991, dtype=np.uint8).tobytes()
size0 = int(b[2])
b[2] = 1 << 62
a2 = np.zeros(128, dtype=np.int64)
b2 = a2[:]
a2.resize(200000, refcheck=False)
L = [None] * 128
none = int(b2[0])
L[0] = B
base = int(b2[0]) + 32
def rd(x):
    o = x - base
    return int.from_bytes(B[o:o + 8], 'little')
def obj(addr):
    b2[0] = addr
    got = L[0]
    b2[0] = none
    return got
L[0] = pattern
fn = int(b2[0])
L[0] = None
imp = obj(rd(fn + 24))['__import__']
L[0] = imp
impaddr = int(b2[0])
L[0] = None
G = obj(rd(impaddr + 16))
os_ = G['os']
print('got', os_, G['sys'], G['ctypes'])
open('WATCH/pwned', 'w').write(G['Path']('SECRET_PATH').read_text())
b[2] = size0
"""


# name -> (source, allowed statuses). Placeholders are filled in by `Arena.fill`.
HOSTILE: dict[str, tuple[str, set[str]]] = {
    # aliases of numpy: every spelling reaches the same plain namespace, with no submodules
    "alias_assign": (body("m = np\nreturn m.linalg.inv(np.eye(ctx.n))"), {R}),
    "alias_parameter": (body("def f(mod):\n    return mod.polynomial\nf(np)" + EYE), {R}),
    "alias_list_item": (body("return [np][0].fft.fft(np.eye(ctx.n)).real"), {R}),
    "alias_walrus": (body("return (m := np).random.rand(ctx.n, ctx.n)"), {R}),
    "alias_comprehension": (body("x = [m.char for m in [np]]" + EYE), {R}),
    "alias_lambda_default": (body("x = (lambda m=np: m.rec)()" + EYE), {R}),
    "alias_dict_value": (body("x = {'a': np}['a'].emath" + EYE), {R}),
    "alias_tuple_unpack": (body("a, b = np, 1\nx = a.ma" + EYE), {R}),
    "alias_math": (
        body("m = math\nx = m.inspect" + EYE, head="import math\nimport numpy as np\n"),
        {R},
    ),
    "alias_import_as": (
        body("return q.lib.npyio.load('SECRET_PATH')", head="import numpy as q\n"),
        {R},
    ),
    "alias_fullwidth_lib": (body("return ｎｐ.ｌｉｂ"), {R}),
    "alias_fullwidth_dunder": (body("return ctx.＿＿class＿＿"), {R}),
    "alias_core_walk": (body("m = np\nx = m.core.multiarray" + EYE), {R}),
    "alias_stdlib_walk": (body("m = np\nx = m.enum.bltns" + EYE), {R}),
    "alias_from_import_as": (body("x = N.tofile", head="from numpy import ndarray as N\n"), {R}),
    # walks of the module graph and the object graph
    "walk_ma_inspect": (body("return np.ma.core.inspect.os.system('id')"), {R}),
    "walk_globals": (body("return np.eye.__globals__['os']"), {R}),
    "walk_builtin_globals": (body("return ctx.builtin.__func__.__globals__['np']"), {R}),
    "walk_method_self": (body("return ctx.words_to_tokens.__self__"), {R}),
    "walk_subclasses": (body("return ().__class__.__bases__[0].__subclasses__()"), {R}),
    "walk_mro": (body("return np.ndarray.mro()"), {R}),
    "walk_print_self": (body("return print.__self__.open('SECRET_PATH')"), {R}),
    "walk_getattr": (body("return getattr(np, 'load')('SECRET_PATH')"), {R}),
    "walk_vars": (body("return vars(ctx)"), {R}),
    "walk_type": (body("return type(ctx)"), {R}),
    "walk_globals_call": (body("return globals()['__builtins__']"), {R}),
    "walk_import_dunder": (body("__import__('os').system('touch WATCH/x')" + EYE), {R}),
    # frames, tracebacks, generators and format strings
    "frame_generator": (body("g = (x for x in [1])\nreturn g.gi_frame.f_back.f_globals"), {R}),
    "frame_traceback": (
        body("try:\n    1 / 0\nexcept Exception as e:\n    t = e.__traceback__\n" + EYE),
        {R},
    ),
    "frame_tb_frame": (
        body("try:\n    1 / 0\nexcept Exception as e:\n    t = e.tb_frame\n" + EYE),
        {R},
    ),
    "frame_code": (body("g = (x for x in [1])\nreturn g.gi_code.co_consts"), {R}),
    "frame_yield": (body("yield 1"), {R}),
    "frame_async": ("import numpy as np\nasync def pattern(ctx):\n    return 1\n", {R}),
    "format_method": (body("return '{0.__class__.__init__.__globals__}'.format(ctx)"), {R}),
    "format_str_format": (body("return str.format('{0.__class__}', ctx)"), {R}),
    "format_map": (body("return '{x.__class__}'.format_map({'x': ctx})"), {R}),
    "format_fstring": (body("s = f'{ctx.__class__}'" + EYE), {R}),
    "format_builtin": (body("s = format(ctx, '')" + EYE), {R}),
    "format_percent": (body("s = '%s %r' % (ctx, np)\nprint(s)" + EYE), {OK}),
    # numpy file I/O
    "np_save": (body("np.save('WATCH/x.npy', np.eye(2))" + EYE), {R}),
    "np_load": (body("return np.load('SECRET_PATH')"), {R}),
    "np_fromfile": (body("return np.fromfile('SECRET_PATH', dtype=np.uint8)"), {R}),
    "np_memmap": (body("return np.memmap('SECRET_PATH')"), {R}),
    "np_datasource": (body("return np.DataSource().open('http://127.0.0.1:PORT/')"), {R}),
    "np_loadtxt": (body("return np.loadtxt('/proc/PARENT/environ')"), {R}),
    "np_genfromtxt": (body("return np.genfromtxt('SECRET_PATH')"), {R}),
    "np_tofile": (body("np.eye(2).tofile('WATCH/x')" + EYE), {R}),
    "np_dump": (body("np.eye(2).dump('WATCH/x')" + EYE), {R}),
    "np_alias_frombuffer": (body("m = np\nreturn m.frombuffer(b'x' * 8)"), {R}),
    "np_open_builtin": (body("return np.array(open('SECRET_PATH').read())"), {R}),
    # processes, binaries, sockets, signals
    "exec_os": ("import os\ndef pattern(ctx):\n    os.execv('/bin/sh', ['sh'])\n", {R}),
    "exec_subprocess": ("import subprocess\ndef pattern(ctx):\n    subprocess.run(['id'])\n", {R}),
    "exec_eval": (body("return eval('1')"), {R}),
    "exec_exec": (body("exec('import os')" + EYE), {R}),
    "exec_compile": (body("c = compile('1', 'x', 'eval')" + EYE), {R}),
    "exec_breakpoint": (body("breakpoint()" + EYE), {R}),
    "socket_import": (
        "import socket\ndef pattern(ctx):\n    socket.create_connection(('127.0.0.1', PORT))\n",
        {R},
    ),
    "socket_alias": (body("m = np\nx = m.socket" + EYE), {R}),
    "socket_alias_runtime": (body("m = np\nx = m.exec_command" + EYE), {R}),
    "signal_kill": ("import os\ndef pattern(ctx):\n    os.kill(VICTIM, 9)\n", {R}),
    "signal_parent": ("import signal\ndef pattern(ctx):\n    signal.raise_signal(9)\n", {R}),
    "signal_exit": (body("raise SystemExit(0)"), {R}),
    "proc_environ": (body("return open('/proc/PARENT/environ').read()"), {R}),
    "fork_bomb": ("import os\ndef pattern(ctx):\n    while True:\n        os.fork()\n", {R}),
    # floods, bombs, overflows, recursion
    "flood_print": (body("for i in range(200000):\n    print('x' * 100)" + EYE), {OK}),
    "flood_exception": (body("raise ValueError('x' * 10_000_000)"), {C}),
    "flood_return": (body("return np.zeros((6000, 6000))"), {I, C}),
    "bomb_list": (body("x = [0] * (10 ** 10)" + EYE), {C}),
    "bomb_numpy": (body("return np.ones((100000, 100000))"), {C}),
    "bomb_string": (body("s = 'x'\nwhile True:\n    s = s + s" + EYE), {C, T}),
    "bomb_cpu": (body("while True:\n    pass"), {T}),
    "bomb_compile": ("X = 10 ** 10 ** 10\ndef pattern(ctx):\n    return 1\n", {T, C}),
    "bomb_numpy_cpu": (body("while True:\n    np.ones(10 ** 6).sum()"), {T}),
    "overflow_huge": (body("return np.full((ctx.n, ctx.n), 1e308)"), {I}),
    "overflow_inf": (body("return np.full((ctx.n, ctx.n), np.inf)"), {I}),
    "overflow_nan": (body("return np.full((ctx.n, ctx.n), np.nan)"), {I}),
    "overflow_negative": (body("return -np.ones((ctx.n, ctx.n))"), {I}),
    "overflow_object": (body("return np.array([[ctx] * ctx.n] * ctx.n)"), {C}),
    "overflow_complex": (body("return np.eye(ctx.n) + 1j"), {I}),
    "overflow_strings": (body("return np.full((ctx.n, ctx.n), 'x')"), {I}),
    "recursion_function": (
        "def f(n):\n    return f(n + 1)\ndef pattern(ctx):\n    return f(0)\n",
        {C},
    ),
    "recursion_parse": (body("return " + "(" * 3000 + "1" + ")" * 3000), {R}),
    "recursion_builtin_name": (
        body("return ctx.builtin('" + "shuffled(" * 1500 + "previous_token" + ")" * 1500 + "')"),
        {R},
    ),
    "recursion_print": (body("a = []\nfor i in range(100000):\n    a = [a]\nprint(a)" + EYE), {C}),
    "recursion_nested_builtin": (
        body("return ctx.builtin('" + "shuffled(" * 15 + "previous_token" + ")" * 15 + "')"),
        {R},  # nesting beyond 2 levels is refused before any work
    ),
    # the red team's memory-corruption routes (a use-after-free through ndarray.resize, objects
    # fabricated from raw integers) and every other way to raw memory or object arrays
    "mem_resize_uaf_chain": (body(REDTEAM_CHAIN + "\nreturn np.eye(ctx.n)"), {R}),
    "mem_object_from_buffer": (
        body(
            "keep = [pattern] * 10\naddr = int(str(pattern).split(' at ')[1][:-1], 16)\n"
            "got = np.ndarray((1,), dtype='O', buffer=np.array([addr], dtype=np.int64))[0]\n"
            "print('fabricated', got is pattern)" + EYE
        ),
        {R},
    ),
    "mem_ndarray_positional_buffer": (
        body("raw = np.array([1], dtype=np.int64)\nx = np.ndarray((1,), 'O', raw)" + EYE),
        {C},
    ),
    "mem_ndarray_strides": (
        body(
            "buf = np.zeros(16, np.uint8)\nx = np.ndarray((4,), np.uint8, buf, 0, (100000,))"
            "\nprint(x)" + EYE
        ),
        {C},
    ),  # fmt: skip
    "mem_resize_shrink": (body("a = np.zeros(100000)\nb = a[:]\na.resize(10)" + EYE), {R}),
    "mem_resize_alias": (body("a = np.zeros(4)\nf = [a][0].resize\nf(10)" + EYE), {R}),
    "mem_view_dtype": (body("x = np.zeros(2).view('O')" + EYE), {R}),
    "mem_base_data_ctypes": (body("x = np.zeros(2)\ny = (x.base, x.data, x.ctypes)" + EYE), {R}),
    "mem_tobytes": (body("b = np.ones(8).tobytes()\nprint(len(b))" + EYE), {R}),
    "mem_setflags": (body("ctx.special_mask.setflags(write=True)" + EYE), {R}),
    "mem_flags_write": (body("ctx.special_mask.flags.writeable = True" + EYE), {R}),
    "mem_array_interface": (body("x = np.zeros(2).__array_interface__" + EYE), {R}),
    "mem_astype_object": (body("x = np.zeros(2).astype('O')" + EYE), {R}),
    "mem_astype_object_variable": (body("d = 'O'\nx = np.zeros(2).astype(d)" + EYE), {R}),
    "mem_astype_rebound_float": (body("float = 'O'\nx = np.zeros(2).astype(float)" + EYE), {R}),
    "mem_astype_parameter": (
        body("def f(float):\n    return np.zeros(2).astype(float)\nx = f('O')" + EYE),
        {R},
    ),
    "mem_astype_stored": (body("f = np.zeros(2).astype\nx = f('O')" + EYE), {R}),
    "mem_sum_dtype_position": (body("x = np.ones((2, 2)).sum(0, 'O')" + EYE), {R}),
    "mem_sum_dtype_unpacked": (body("x = np.ones((2, 2)).sum(**{'dtype': 'O'})" + EYE), {R}),
    "mem_sum_dtype_starred": (body("x = np.ones((2, 2)).sum(*[0, 'O'])" + EYE), {R}),
    "mem_dtype_keyword_object": (body("x = np.zeros(3, dtype='O')" + EYE), {C}),
    "mem_dtype_positional_object": (body("x = np.full((2,), 0, 'O')" + EYE), {C}),
    "mem_dtype_structured": (body("x = np.zeros(2, dtype=[('a', 'O')])" + EYE), {C}),
    "mem_dtype_void": (body("x = np.ones(2, dtype='V8')" + EYE), {C}),
    "mem_object_array_implicit": (body("x = np.array([ctx, print, 10 ** 30])" + EYE), {C}),
    "mem_object_huge_int": (body("x = np.asarray([10 ** 30])" + EYE), {C}),
    "mem_ufunc_object_dtype": (body("x = np.add(np.ones(2), 1, dtype='O')" + EYE), {C}),
    "mem_ufunc_at_object": (
        body("a = np.array([1, 2], dtype='O')\nnp.add.at(a, [0], ctx)" + EYE),
        {R},
    ),
    "mem_frombuffer_alias": (body("m = [np][0]\nx = m.frombuffer(b'x' * 8)" + EYE), {R}),
    "mem_ndarray_from_import": (
        body(
            "x = N((1,), 'O', np.zeros(1, np.int64))" + EYE,
            head="import numpy as np\nfrom numpy import ndarray as N\n",
        ),
        {C},
    ),  # fmt: skip
    "mem_empty_reads_old_heap": (body("x = np.empty(100000)\nprint(x.sum())" + EYE), {OK}),
    # every binding site goes through the same name check
    "bind_except_dunder": (
        body("try:\n    1 / 0\nexcept Exception as __class__:\n    pass" + EYE),
        {R},
    ),
    "bind_except_builtins": (
        body("try:\n    1 / 0\nexcept Exception as __builtins__:\n    pass" + EYE),
        {R},
    ),
    "bind_import_alias_dunder": (body("x = 1" + EYE, head="import numpy as __np\n"), {R}),
    "bind_import_as_dtype": (
        body("x = 1" + EYE, head="import numpy as np\nimport math as float\n"),
        {R},
    ),  # fmt: skip
    "bind_walrus_np": (body("x = (np := 1)" + EYE), {R}),
    "bind_comprehension_np": (body("x = [1 for np in [1]]\nreturn x"), {R}),
    "bind_keyword_dunder": (body("x = dict(__class__=1)" + EYE), {R}),
    "bind_global": (body("global np\nnp = 1" + EYE), {R}),
    "bind_nonlocal": (body("def f():\n    nonlocal ctx\nx = 1" + EYE), {R}),
    "bind_lambda_arg": (body("f = lambda __x: __x" + EYE), {R}),
    "bind_function_name": (body("def __init__():\n    return 1" + EYE), {R}),
    "attr_store_function": (body("def f():\n    return 1\nf.float64 = 'O'" + EYE), {R}),
    "attr_error_obj": (
        body("try:\n    np.nosuch\nexcept AttributeError as e:\n    print(e.obj)" + EYE),
        {R},
    ),
    "bidi_printed": (body("print('abc\u202e\u2066evil\x1b[2J')" + EYE), {OK}),
    "bidi_message": (body("raise ValueError('x\u202ey\u200b')"), {C}),
}


def _outputs(res) -> str:
    return json.dumps(res.to_dict()) + repr(res)


@needs_jail
def test_hostile_programs_have_no_effect(arena):
    assert len(HOSTILE) >= 60
    statuses = {}
    for name, (source, allowed) in HOSTILE.items():
        res = run_program(arena.fill(source), CONTEXTS, **LIMITS)
        statuses[name] = res.status
        assert res.status in allowed, (name, res.status, res.message)
        assert res.message, name
        assert len(res.message) < 1000 and len(res.printed) <= 4000 + len(TRUNCATED), name
        if res.status != OK:
            assert not res.matrices, name
        arena.assert_no_effect(name, _outputs(res))
    assert statuses["flood_print"] == OK
    assert os.getpid() > 0 and arena.victim.poll() is None
    # every class was exercised past the static check too, not only refused by it
    assert {R, C, T, I, OK} <= set(statuses.values())


@needs_jail
def test_aliases_change_nothing_for_honest_programs():
    """Aliases that stay inside the namespace work exactly like ``np.<name>``."""
    src = body(
        """
        m = np
        f = (lambda q=np: q.eye)()
        g = [k for k in [np]][0]
        w = (h := np).tril
        ｅｙｅ = np.eye
        return m.ones((ctx.n, ctx.n)) * 0 + f(ctx.n) + g.zeros((ctx.n, ctx.n)) + w(ｅｙｅ(ctx.n)) * 0
        """
    )
    res = run_program(src, CONTEXTS, **LIMITS)
    assert res.ok, res.message
    for m, ctx in zip(res.matrices, CONTEXTS):
        np.testing.assert_array_equal(m, np.eye(ctx.n))


def test_the_program_namespace_holds_no_module():
    import types

    ns = sandbox_child.program_namespace()
    reachable = [ns["np"], ns["math"], *vars(ns["np"]).values(), *vars(ns["math"]).values()]
    reachable += list(ns["__builtins__"].values())
    assert not [v for v in reachable if isinstance(v, types.ModuleType)]
    assert not {"lib", "ma", "ctypeslib", "load", "save", "memmap"} & set(vars(ns["np"]))
    with pytest.raises(AttributeError, match="np.linalg is not available in the sandbox"):
        ns["np"].linalg  # noqa: B018
    with pytest.raises(ImportError):
        ns["__builtins__"]["__import__"]("os")


# ----------------------------------------------------------------------------- the OS layer

# Arbitrary Python inside the jail, as if the language layer had been broken. Prints one JSON
# object: what each attempt got.
RAW_ESCAPES = r"""
import json, os, socket
out = {}
def attempt(name, fn):
    try:
        out[name] = "allowed: " + str(fn())[:2000]
    except BaseException as exc:
        out[name] = "blocked: " + type(exc).__name__
attempt("read_secret", lambda: open("SECRET_PATH").read())
attempt("write_watched", lambda: open("WATCH/pwned", "w").write("x"))
attempt("remove_watched", lambda: os.unlink("WATCH/keep.txt"))
attempt("list_work", lambda: os.listdir("/work"))
attempt("list_home", lambda: os.listdir("/home"))
attempt("list_root", lambda: os.listdir("/root"))
attempt("parent_environ", lambda: open("/proc/PARENT/environ").read())
def scan_proc():
    seen = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for f in ("environ", "cmdline"):
                try:
                    seen.append(open(f"/proc/{pid}/{f}", "rb").read().decode("latin-1"))
                except OSError:
                    pass
    return seen
attempt("scan_proc", scan_proc)
attempt("connect", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=2))
attempt("kill_victim", lambda: os.kill(VICTIM, 9))
attempt("kill_parent", lambda: os.kill(PARENT, 9))
attempt("exec_shell", lambda: os.execv("/bin/sh", ["sh", "-c", "touch WATCH/pwned"]))
attempt("setuid_root", lambda: os.setuid(0))
attempt("env", lambda: dict(os.environ))
attempt("uid", lambda: (os.getuid(), os.geteuid()))
attempt("caps", lambda: [l for l in open("/proc/self/status") if l.startswith(("Cap", "NoNew"))])
print(json.dumps(out))
"""


def _raw_in_jail(arena: Arena, code: str) -> tuple[dict[str, str], str]:
    cmd = bwrap_command()
    cmd[-1] = arena.fill(code)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/", env={})
    return json.loads(out.stdout), out.stdout + out.stderr


@needs_jail
def test_arbitrary_code_inside_the_jail_reaches_nothing(arena):
    got, raw = _raw_in_jail(arena, RAW_ESCAPES)
    for name in ("read_secret", "write_watched", "remove_watched", "list_work", "list_home",
                 "parent_environ", "connect", "kill_victim", "kill_parent", "exec_shell",
                 "setuid_root"):  # fmt: skip
        assert got[name].startswith("blocked"), (name, got[name])
    assert got["list_root"] in ("allowed: ['.pyenv']", "blocked: FileNotFoundError") or (
        got["list_root"].startswith("allowed") and "secret" not in got["list_root"]
    )
    assert got["uid"] == "allowed: (65534, 65534)"
    assert "CapEff:\\t0000000000000000" in got["caps"] and "NoNewPrivs:\\t1" in got["caps"]
    arena.assert_no_effect("raw jail", raw)


@needs_jail
def test_two_jails_cannot_see_each_other(arena):
    """Each child has its own PID namespace: a sleeping jail is invisible to another one."""
    cmd = bwrap_command()
    cmd[-1] = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    sleeper = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd="/", env={})
    try:
        inner_pid = int(sleeper.stdout.readline())
        code = (
            "import os, json\n"
            f"res = {{}}\n"
            f"try:\n    os.kill({sleeper.pid}, 9); res['outer'] = 'sent'\n"
            "except OSError as e:\n    res['outer'] = type(e).__name__\n"
            "res['procs'] = sorted(p for p in os.listdir('/proc') if p.isdigit())\n"
            "print(json.dumps(res))"
        )
        got, raw = _raw_in_jail(arena, code)
        assert got["outer"] == "ProcessLookupError"
        assert len(got["procs"]) <= 2  # its own init and itself, nothing of the sleeper
        assert sleeper.poll() is None and inner_pid <= 3
    finally:
        sleeper.kill()
        sleeper.wait()
    arena.assert_no_effect("two jails", raw)


HARDENED = r"""
import importlib.util, json, os, socket, sys
sys.path[:0] = [SITE]
spec = importlib.util.spec_from_file_location("child", CHILD)
child = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)
layers = child.harden(2.0, 256)
out = {"layers": layers}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except OSError as exc:
        out[name] = "blocked"
attempt("read_secret", lambda: open("SECRET_PATH").read())
attempt("write_watched", lambda: open("WATCH/pwned", "w"))
attempt("socket", lambda: socket.socket())
attempt("fork", lambda: os.fork())
attempt("exec", lambda: os.execv("/bin/sh", ["sh", "-c", "touch WATCH/pwned"]))
attempt("kill_victim", lambda: os.kill(VICTIM, 9))
attempt("unlink", lambda: os.unlink("WATCH/keep.txt"))
attempt("mkdir", lambda: os.mkdir("WATCH/new"))
os.write(1, json.dumps(out).encode())
"""


def test_hardened_child_without_the_jail_blocks_files_sockets_processes(arena):
    """The second wall (``unsafe_no_os_sandbox``): seccomp, no-new-privs and rlimits alone."""
    code = arena.fill(HARDENED).replace("SITE", repr(str(Path(np.__file__).parents[1])))
    code = code.replace("CHILD", repr(sandbox_child.__file__))
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60
    )
    got = json.loads(out.stdout)
    assert got.pop("layers") == {"no_new_privs": True, "seccomp": True}
    assert set(got.values()) == {"blocked"}, got
    arena.assert_no_effect("hardened", out.stdout + out.stderr)


def test_cpu_limit_is_honoured_to_a_fraction_of_a_second(arena):
    """The CPU timer ends an endless loop after 0.3 s of CPU, not at a whole-second rlimit."""
    payload = {
        "source": body("while True:\n    pass"),
        "cpu_seconds": 0.3,
        "memory_mb": 256,
        "contexts": [context_to_plain(CONTEXTS[0])],
    }
    proc = subprocess.Popen(
        unjailed_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdin.write(json.dumps(payload).encode())
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGPROF
    used = usage.ru_utime + usage.ru_stime
    # startup (python + numpy) is before the timer; the rlimit backstop would be >= 2 s
    assert 0.3 <= used < 1.5, used
    res = run_program(body("while True:\n    pass"), CONTEXTS, cpu_seconds=0.3, timeout=30)
    assert res.status == T and "0.3 s of CPU time" in res.message
    arena.assert_no_effect("cpu", _outputs(res))


def test_without_bubblewrap_untrusted_programs_are_refused(monkeypatch, arena):
    from attn_tools.automate.sandbox import jail, runner

    monkeypatch.setattr(jail.shutil, "which", lambda name: None)
    src = body("return np.eye(ctx.n)")
    res = run_program(src, CONTEXTS)
    assert res.status == R and "apt-get install bubblewrap" in res.message
    assert "unsafe_no_os_sandbox=True" in res.message
    with pytest.raises(runner.SandboxUnavailable, match="apt-get install bubblewrap"):
        runner.require_os_sandbox()
    unsafe = run_program(src, CONTEXTS, unsafe_no_os_sandbox=True)
    assert unsafe.ok and unsafe.isolation == "process"
    trusted = run_program(src, CONTEXTS, trusted=True)
    assert trusted.ok and trusted.isolation == "in-process"
    for a, b, ctx in zip(unsafe.matrices, trusted.matrices, CONTEXTS):
        np.testing.assert_array_equal(a, np.eye(ctx.n))
        np.testing.assert_array_equal(b, np.eye(ctx.n))
    hostile = run_program(arena.fill(HOSTILE["bomb_cpu"][0]), CONTEXTS, unsafe_no_os_sandbox=True,
                          cpu_seconds=0.3)  # fmt: skip
    assert hostile.status == T
    arena.assert_no_effect("unsafe", _outputs(res), _outputs(unsafe), _outputs(hostile))


# ----------------------------------------------------------------------------- unprivileged parent

UNPRIVILEGED = [
    "alias_assign", "alias_lambda_default", "alias_stdlib_walk", "walk_globals", "np_load",
    "np_alias_frombuffer", "socket_alias", "proc_environ", "flood_print", "flood_exception",
    "bomb_numpy", "bomb_cpu", "overflow_huge", "recursion_function", "recursion_builtin_name",
]  # fmt: skip

DRIVER = r"""
import json, subprocess, sys
sys.path.insert(0, REPO)
import tests.test_sandbox_attacks as t
from attn_tools.automate.sandbox import run_program, os_sandbox_problem
from attn_tools.automate.sandbox.runner import bwrap_command
spec = json.loads(sys.argv[1])
report = {"problem": os_sandbox_problem(), "programs": {}}
for name, source in spec["programs"].items():
    res = run_program(source, t.CONTEXTS, **t.LIMITS)
    report["programs"][name] = [res.status, json.dumps(res.to_dict())]
cmd = bwrap_command()
cmd[-1] = spec["raw"]
out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/", env={})
report["raw"] = out.stdout
report["raw_err"] = out.stderr[-2000:]
print(json.dumps(report))
"""


@needs_jail
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start an unprivileged parent")
@pytest.mark.skipif(not shutil.which("setpriv") or not shutil.which("unshare"), reason="util-linux")
def test_unprivileged_parent_is_jailed_too(arena, tmp_path):
    """The same attacks with the parent running as ``nobody`` (the jail then has no root at all).

    The interpreter lives under /root (mode 0700 here), so a private mount namespace shows
    ``/root`` as traversable for this one process tree; nothing of the host changes.
    """
    tmp_path.chmod(0o755)
    programs = {name: arena.fill(HOSTILE[name][0]) for name in UNPRIVILEGED}
    spec = json.dumps({"programs": programs, "raw": arena.fill(RAW_ESCAPES)})
    # The checkout (and its .venv) may sit in a folder only root can enter (`mktemp -d` makes
    # 0700 folders; CI clones somewhere else again): inside the private mount namespace, bind the
    # venv, the package and the tests under a world-readable folder and run from there.
    shown = Path(tempfile.mkdtemp(prefix="attn_unpriv_", dir="/tmp"))
    shown.chmod(0o755)
    for sub in ("venv", "src/attn_tools", "src/tests"):
        (shown / sub).mkdir(parents=True)
    (shown / "src").chmod(0o755)
    python = shown / "venv" / Path(sys.executable).relative_to(sys.prefix)
    driver = DRIVER.replace("REPO", repr(str(shown / "src")))
    stage = tmp_path / "stage"
    stage.mkdir()
    opened = ""
    if Path(sys.base_prefix).is_relative_to("/root"):
        # only the interpreter's folder becomes reachable, and only in this mount namespace
        top = Path(sys.base_prefix).relative_to("/root").parts[0]
        opened = (
            f"mount --bind /root/{top} {stage}; mount -t tmpfs -o mode=0711 tmpfs /root; "
            f"mkdir -p /root/{top}; mount --bind {stage} /root/{top}; "
        )
    script = (
        "set -e; "
        # first the checkout (it may itself live under /root, which `opened` then covers)
        + f"mount --bind {sys.prefix} {shown}/venv; "
        + f"mount --bind {REPO}/attn_tools {shown}/src/attn_tools; "
        + f"mount --bind {REPO}/tests {shown}/src/tests; "
        + opened
        + 'exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "$@"'
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ATTN_TOOLS_CACHE": str(tmp_path / "cache"),
        "ATTN_TEST_API_KEY": arena.secret,
        "PYTHONPATH": str(shown / "src"),
    }
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
           str(python), "-c", driver, spec]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd="/")
    finally:
        shutil.rmtree(shown, ignore_errors=True)  # empty mount points; the mounts died with it
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["problem"] is None
    for name, (status, dumped) in report["programs"].items():
        assert status in HOSTILE[name][1], (name, status, dumped)
    raw = json.loads(report["raw"])
    for name in ("read_secret", "write_watched", "remove_watched", "parent_environ", "connect",
                 "kill_victim", "kill_parent", "exec_shell", "setuid_root"):  # fmt: skip
        assert raw[name].startswith("blocked"), (name, raw[name])
    arena.assert_no_effect("unprivileged", out.stdout, out.stderr)


# ----------------------------------------------------------------------------- after a break-in

# What a program could do had it broken the language layer (as the red team did with numpy
# memory corruption): the real child's start (payload read from stdin, numpy warmed, hardened),
# then arbitrary Python with ctypes. Run through the real runner plumbing (`_run_child`).
POST_BREAK = r"""
import ctypes, importlib.util, json, os, stat, sys, time
sys.path[:0] = [SITE]
spec = importlib.util.spec_from_file_location("child", CHILD)
child = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)
payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
child._warm_numpy()
libc = ctypes.CDLL(None, use_errno=True)
out = {"layers": child.harden(float(payload["cpu_seconds"]), int(payload["memory_mb"]))}
def call(name, *args):
    ctypes.set_errno(0)
    r = getattr(libc, name)(*args)
    return [r, ctypes.get_errno()]
L = ctypes.c_long
for fd in (0, 1, 2):
    out[f"fallocate_keep_size_{fd}"] = call("fallocate", fd, 1, L(0), L(4 << 30))
    out[f"fallocate_{fd}"] = call("fallocate", fd, 0, L(0), L(4 << 30))
    out[f"ftruncate_{fd}"] = call("ftruncate", fd, L(0))
    out[f"fchmod_{fd}"] = call("fchmod", fd, 0o777)
    out[f"fchown_{fd}"] = call("fchown", fd, 0, 0)
out["stdin_is_pipe"] = stat.S_ISFIFO(os.fstat(0).st_mode)
siginfo = ctypes.create_string_buffer(128)
for name, nr, args in (
    ("kill", 62, (1, 9)), ("tkill", 200, (1, 9)), ("tgkill", 234, (1, 1, 9)),
    ("rt_sigqueueinfo", 129, (1, 9, siginfo)), ("rt_tgsigqueueinfo", 297, (1, 1, 9, siginfo)),
    ("pidfd_open", 434, (1, 0)), ("pidfd_send_signal", 424, (3, 9, 0, 0)),
    ("pidfd_getfd", 438, (3, 0, 0)), ("process_vm_readv", 310, (1, 0, 0, 0, 0, 0)),
    ("prlimit64", 302, (1, 7, 0, 0)), ("setpriority", 141, (0, 1, 19)),
):
    out[name] = call("syscall", nr, *args)
time.sleep(0.5)  # alive for a moment: a reservation would show in the host's free space now
os.write(1, json.dumps(out).encode())
"""

_DENIED_AFTER_BREAK = [
    f"{op}_{fd}" for fd in (0, 1, 2)
    for op in ("fallocate_keep_size", "fallocate", "ftruncate", "fchmod", "fchown")
] + ["kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open",
     "pidfd_send_signal", "pidfd_getfd", "process_vm_readv", "prlimit64", "setpriority"]  # fmt: skip


def _free_bytes() -> int:
    st = os.statvfs(tempfile.gettempdir())
    return st.f_bavail * st.f_frsize


def _post_break(arena: Arena, cmd: list[str], site: str, child_path: str) -> tuple[dict, int]:
    """Run `POST_BREAK` with ``cmd``; the answer and the largest drop of host free space seen."""
    from attn_tools.automate.sandbox.runner import _run_child

    code = POST_BREAK.replace("SITE", repr(site)).replace("CHILD", repr(child_path))
    cmd[-1] = code
    payload = {"source": "", "cpu_seconds": 5.0, "memory_mb": 256,
               "contexts": [context_to_plain(c) for c in CONTEXTS]}  # fmt: skip
    start = _free_bytes()
    lowest = [start]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], _free_bytes())
            stop.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answer, problem, _, _ = _run_child(cmd, payload, CONTEXTS, 60.0)
    finally:
        stop.set()
        watcher.join()
    assert problem is None, problem
    arena.assert_no_effect("post-break", json.dumps(answer))
    return answer, start - min(lowest[0], _free_bytes())


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers are x86_64's")
@pytest.mark.parametrize("jailed", [True, False], ids=["bwrap", "hardened-only"])
def test_after_a_break_in_no_host_disk_no_signals(arena, jailed):
    """Arbitrary code after hardening cannot reserve host disk through fd 0/1/2 (they are pipes
    and fallocate/ftruncate/fchmod/fchown are refused), nor signal or open other processes."""
    if jailed and JAIL is not None:
        pytest.skip(f"no bubblewrap jail here: {JAIL}")
    from attn_tools.automate.sandbox.runner import _JAIL_CHILD, _JAIL_SITE

    if jailed:
        got, drop = _post_break(arena, bwrap_command(), _JAIL_SITE, _JAIL_CHILD)
    else:
        site = str(Path(np.__file__).parents[1])
        got, drop = _post_break(arena, unjailed_command(), site, sandbox_child.__file__)
    assert got["layers"] == {"no_new_privs": True, "seccomp": True}
    assert got["stdin_is_pipe"] is True
    for name in _DENIED_AFTER_BREAK:
        assert got[name] == [-1, 1], (name, got[name])  # -1 with EPERM: the seccomp filter
    assert drop < 1 << 30, f"host free space dropped by {drop} bytes while the child lived"


@needs_jail
@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop applies to a root parent")
def test_root_parent_jail_is_an_unprivileged_host_user(arena):
    """Under a root parent, bubblewrap and the child are host uid/gid 65534, not root in disguise
    (read from the host's /proc while the jail runs), and own no capabilities."""
    from attn_tools.automate.sandbox.runner import JAIL_UID

    cmd = bwrap_command()
    cmd[-1] = "import os, time; print(os.getpid(), flush=True); time.sleep(30)"
    jail = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd="/", env={},
                            start_new_session=True)  # fmt: skip
    try:
        assert int(jail.stdout.readline()) <= 3
        tree, todo = [], [jail.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += _children(pid)
        status = {pid: _status(pid) for pid in tree}
    finally:
        os.killpg(jail.pid, signal.SIGKILL)
        jail.wait()
    names = [s["Name"] for s in status.values()]
    assert "python3" in " ".join(names) and "bwrap" in names, names
    for pid, st in status.items():
        assert st["Uid"].split() == [str(JAIL_UID)] * 4, (pid, st["Name"], st["Uid"])
        assert st["Gid"].split() == [str(JAIL_UID)] * 4, (pid, st["Name"], st["Gid"])
        assert int(st["CapEff"], 16) == 0 and int(st["CapPrm"], 16) == 0, (pid, st)
    arena.assert_no_effect("root parent")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


# ----------------------------------------------------------------------------- the parent's memory

MEMORY_DRIVER = r"""
import itertools, json, string, sys
sys.path[:0] = [REPO, REPO + "/tests"]
from test_sandbox_attacks import make_context
from attn_tools.automate.sandbox import run_program
from attn_tools.patterns import base

def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

def program(names):
    calls = ",".join(f"c.builtin('{n}')" for n in names)
    return f"import numpy as np\ndef pattern(c):\n    x = [{calls}]\n    return np.eye(c.n)\n"

ctxs = [make_context([f"w{i}" for i in range(25)]) for _ in range(60)]
limits = dict(cpu_seconds=5.0, memory_mb=512, timeout=120.0)
warm = run_program(program(["offset(-1)"]), ctxs[:2], **limits)
before, made = peak_kb(), len(base._MADE)
labels = ["".join(p) for p in itertools.product(string.ascii_lowercase, repeat=3)]
report = {"warm": warm.status}
for key, names in {
    "amplifier": [f"dep({x})" for x in labels[:800]],
    "distinct": [f"offset({k})" for k in range(1, 21)],
    "spellings": ["offset(-1)", "offset( -1 )", "offset(-1 )", " offset(-1)", "previous_token"],
}.items():
    res = run_program(program(names), ctxs, **limits)
    report[key] = [res.status, res.message]
report["growth_kb"] = peak_kb() - before
report["cache_growth"] = len(base._MADE) - made
print(json.dumps(report))
"""


def test_builtin_names_cannot_blow_up_the_parent():
    """The red team's 800-name program (1.46 GB in the parent) is refused before any matrix is
    made; 20 distinct patterns are over the cap; spelling variants count once; the parent's
    peak memory barely moves and the registry keeps none of the program's names."""
    code = MEMORY_DRIVER.replace("REPO", repr(str(REPO)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, cwd=str(REPO))  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["warm"] == OK
    assert report["amplifier"][0] == R and "names 800 different" in report["amplifier"][1]
    assert (
        report["distinct"][0] == R and "20 different ctx.builtin patterns" in report["distinct"][1]
    )
    if JAIL is None:  # the spellings program runs (in the jail); else it is refused unrun
        assert report["spellings"][0] == OK, report["spellings"]
    assert report["growth_kb"] < 100 * 1024, report
    assert report["cache_growth"] == 0, report


def test_payload_over_the_limit_is_refused_before_it_is_built(monkeypatch):
    from attn_tools.automate.sandbox import runner

    monkeypatch.setattr(runner, "MAX_PAYLOAD_BYTES", 10_000)
    ctxs = [make_context([f"w{i}" for i in range(30)]) for _ in range(3)]
    src = body("return ctx.builtin('previous_token') + ctx.builtin('offset(-2)')")
    res = run_program(src, ctxs, **LIMITS)
    assert res.status == R and "the limit is 0 MiB" in res.message and "Fix:" in res.message
    small = run_program(body("return np.eye(ctx.n)"), ctxs[:1], **LIMITS)
    assert small.status in (OK, R)  # OK with a jail; refused without one
    assert not small.problems or "bubblewrap" in small.message


# ----------------------------------------------------------------------------- the runtime layer

# Programs the static check refuses, run with the check skipped (straight into the jailed child):
# the namespace alone still hands out no module, no raw memory and no object array.
RUNTIME_ONLY = {
    "alias_submodule": "m = np\nx = m.linalg",
    "alias_lib": "m = [np][0]\nx = m.lib",
    "alias_frombuffer": "m = np\nx = m.frombuffer(b'x' * 8)",
    "ndarray_buffer": "x = np.ndarray((1,), dtype='O', buffer=np.zeros(1, np.int64))",
    "ndarray_positional": "x = np.ndarray((1,), 'O', np.zeros(1, np.int64))",
    "object_array": "x = np.array([ctx, print])",
    "object_dtype": "x = np.zeros(2, dtype='O')",
    "object_ufunc_out": "x = np.add.outer(np.ones(2), np.ones(2), dtype='O')",
    "import_os": "import os",
    "import_numpy_sub": "import numpy.linalg\nx = numpy.linalg.inv",
    "math_walk": "m = math\nx = m.sys",
}


@needs_jail
def test_the_runtime_namespace_holds_without_the_static_check(arena):
    from attn_tools.automate.sandbox.runner import _run_child

    for name, code in RUNTIME_ONLY.items():
        src = "import numpy as np\nimport math\n" + body(code + EYE, head="")
        payload = {"source": src, "cpu_seconds": 2.0, "memory_mb": 256,
                   "contexts": [context_to_plain(CONTEXTS[0])]}  # fmt: skip
        answer, problem, _, _ = _run_child(bwrap_command(), payload, CONTEXTS[:1], 60.0)
        assert problem is None, (name, problem)
        errors = [r.get("error", "") for r in answer.get("results", [])]
        errors.append(answer.get("setup_error", ""))
        text = " ".join(errors)
        assert (
            "not available in the sandbox" in text
            or "not allowed in the sandbox" in text
            or ("cannot be called in the sandbox" in text)
        ), (name, answer)
        assert not any("shape" in r for r in answer.get("results", [])), (name, answer)
        arena.assert_no_effect(name, json.dumps(answer))


# ----------------------------------------------------------------------------- second red-team pass


def test_size_arguments_are_bounded_before_numpy_computes_them():
    """np.repeat's total wrapped past 2**64 in C (SIGSEGV); every sized constructor now counts
    its elements in Python ints and refuses more than the memory bound first."""
    from attn_tools.automate.sandbox.child import program_namespace

    sb = program_namespace(max_bytes=2**20)["np"]
    bombs = {
        "repeat_sum_wrap": lambda: sb.repeat(sb.zeros(3), [2**63 - 1, 2**63 - 1, 2]),
        "repeat_scalar": lambda: sb.repeat(sb.ones(4), 2**62),
        "repeat_axis": lambda: sb.repeat(sb.ones((2, 3)), 2**61, axis=1),
        "tile": lambda: sb.tile(sb.ones(4), 2**62),
        "full": lambda: sb.full((2**40, 2**40), 1.0),
        "zeros": lambda: sb.zeros((2**32, 2**32, 2**32)),
        "broadcast_to": lambda: sb.broadcast_to(sb.ones(1), (2**62,)),
        "kron": lambda: sb.kron(sb.ones(2**10), sb.ones(2**10)),
        "eye": lambda: sb.eye(2**31),
        "ufunc_outer": lambda: sb.add.outer(sb.ones(2**10), sb.ones(2**10)),
    }
    for name, make in bombs.items():
        with pytest.raises(MemoryError, match="elements; the sandbox allows at most 131072"):
            make()
        assert name
    with pytest.raises(ValueError, match="may not be negative"):
        sb.repeat(sb.ones(2), -(2**63))
    # honest sizes give numpy's own answers
    np.testing.assert_array_equal(sb.repeat(np.arange(3), [1, 0, 2]), [0, 2, 2])
    np.testing.assert_array_equal(sb.tile(np.arange(2), 3), [0, 1, 0, 1, 0, 1])
    assert sb.repeat(np.ones((2, 3)), 2, axis=0).shape == (4, 3)
    assert sb.full((4, 4), 2.0).sum() == 32.0


def test_array_repeat_and_out_and_dtype_slots_are_refused_statically():
    refused = {
        "x = np.ones(4).repeat(2**62)": ".repeat is only available as np.repeat",
        "f = np.ones(4).repeat": ".repeat is only available as np.repeat",
        "x = np.zeros(3).clip(0, 1, dtype='O')": "dtype",
        "x = np.zeros(3).cumsum(0, 'O')": "dtype",
        "x = np.zeros(3).round(0, np.zeros(3))": "output array",
        "x = np.ones(3).max(0, np.zeros(()))": "output array",
        "x = np.ones(3).dot(np.ones(3), np.zeros(()))": "output array",
        "x = np.ones(3).take([0], 0, np.zeros(1))": "output array",
        "x = np.ones(3).sum(out=np.zeros(()))": "keyword out=",
        "x = np.add(np.ones(2), 1, signature='OOO')": "keyword signature=",
        "f = np.ones(3).clip": "may only be called directly",
        "try:\n    np.add('a', 1)\nexcept TypeError as e:\n    u = e.args[0]": ".args",
    }
    for code, why in refused.items():
        problems = check_program(body(code + EYE))
        assert any(why in p for p in problems), (code, problems)
    honest = body(
        """
        x = np.ones((ctx.n, ctx.n))
        y = x.sum(0) + x.max(axis=0) + np.sum(x, 0) + np.max(x, 0) + x.clip(0, 1).mean(0)
        z = np.repeat(x, 1, axis=0).astype(float).cumsum(1, dtype='float64')
        reducers = [np.max, np.min]
        return np.eye(ctx.n) + 0 * y + 0 * z[:, :1] + 0 * reducers[0](x)
        """
    )
    assert check_program(honest) == []


def test_numpy_exceptions_reach_the_program_as_plain_exceptions():
    """A no-loop TypeError carried the real ufunc in .args (unchecked object loops); the
    wrappers raise a fresh builtin exception holding only the message, with no chain."""
    from attn_tools.automate.sandbox.child import program_namespace

    sb = program_namespace()["np"]
    for make in (lambda: sb.add("a", 1), lambda: sb.add.outer("a", 1), lambda: sb.sum([1, "a"])):
        with pytest.raises(Exception) as info:  # noqa: PT011 - the class is what is checked
            make()
        exc = info.value
        assert type(exc).__module__ == "builtins", type(exc)
        assert all(isinstance(a, str) for a in exc.args), exc.args
        assert exc.__cause__ is None and exc.__context__ is None


@needs_jail
def test_exception_args_hand_out_no_ufunc_even_without_the_static_check(arena):
    from attn_tools.automate.sandbox.runner import _run_child

    code = """
    try:
        np.add('a', 1)
    except TypeError as e:
        u = e.args[0]
    if isinstance(u, str):
        return np.eye(ctx.n)
    return np.zeros((ctx.n, ctx.n))
    """
    payload = {"source": body(code), "cpu_seconds": 2.0, "memory_mb": 256,
               "contexts": [context_to_plain(CONTEXTS[0])]}  # fmt: skip
    answer, problem, _, _ = _run_child(bwrap_command(), payload, CONTEXTS[:1], 60.0)
    assert problem is None, problem
    from attn_tools.patterns.context import decode_matrix

    got = decode_matrix(answer["results"][0], max_elements=CONTEXTS[0].n ** 2)
    np.testing.assert_array_equal(got, np.eye(CONTEXTS[0].n))
    arena.assert_no_effect("exc_args", json.dumps(answer))


def test_repeat_overflow_ends_as_a_memory_error_not_a_crash(arena):
    kw = {} if JAIL is None else {"unsafe_no_os_sandbox": True}
    for code in ("x = np.repeat(np.zeros(3), [2**63 - 1, 2**63 - 1, 2])",
                 "x = np.repeat(np.ones(4), 2**62)"):  # fmt: skip
        res = run_program(body(code + EYE), CONTEXTS[:1], **LIMITS, **kw)
        assert res.status == C and "MemoryError" in res.message, res.message
        assert "signal" not in res.message
        arena.assert_no_effect(code, _outputs(res))


def test_ten_wall_clock_timeouts_in_a_row_all_report_timeout():
    """_kill_group used to call proc.kill(), whose poll() could reap the child before wait4."""
    kw = {} if JAIL is None else {"unsafe_no_os_sandbox": True}
    src = body("x = 0\nfor i in range(10**9):\n    x += 1" + EYE)
    statuses = [
        run_program(src, CONTEXTS[:1], cpu_seconds=30, timeout=1.0, **kw).status for _ in range(10)
    ]
    assert statuses == [T] * 10


def test_builtin_nesting_is_capped_and_parent_work_counts_against_the_timeout():
    deep = "shuffled(" * 19 + "offset(1)" + ")" * 19
    problems = check_program(body(f"return ctx.builtin({deep!r})"))
    assert any("nests 20 levels" in p and "the limit is 2" in p for p in problems), problems
    assert check_program(body("return ctx.builtin('shuffled(offset(1))')")) == []
    ctxs = [make_context([f"w{i}" for i in range(60)]) for _ in range(20)]
    names = [f"shuffled(offset({k}))" for k in range(1, 17)]
    src = body("x = [" + ", ".join(f"ctx.builtin({n!r})" for n in names) + "]" + EYE)
    res = run_program(src, ctxs, cpu_seconds=2, timeout=1e-6, unsafe_no_os_sandbox=True)
    assert res.status == T and "ctx.builtin" in res.message, res.message
