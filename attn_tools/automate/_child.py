"""The sandbox's checker and child process. Standard library and numpy only, on purpose.

This file is imported by the parent (for `check_source`) and also run directly as a script in the
child process (``python -I _child.py``): run by path, it never imports ``attn_tools`` (whose
``__init__`` pulls in torch), so the child starts in about a tenth of a second and its memory limit
can be tight.

Protocol: the parent writes one JSON document to the child's stdin::

    {"source": str, "cpu_seconds": float, "memory_mb": int,
     "contexts": [{"text", "tokens", "token_ids", "offsets", "special_mask", "kind",
                   "words": [[text, start, end, pos, tag, dep, head, lemma, is_punct], ...],
                   "token_words", "word_tokens", "units",
                   "builtins": {name: {"matrix": <matrix>, "has_mass": [bool, ...]}}}, ...]}

and the child answers with one JSON document on stdout (never pickle: the parent must not
unpickle anything a program could influence)::

    {"results": [<matrix> | {"error": str, "kind": "exception" | "memory" | "type"}, ...],
     "printed": str}

where ``<matrix>`` is ``{"shape": [...], "data": base64 of float64 bytes}``.
"""

from __future__ import annotations

import ast
import base64
import json
import math
import os
import sys
import unicodedata
from collections import namedtuple
from typing import Any

import numpy as np

MAX_SOURCE_CHARS = 20_000
MAX_AST_NODES = 5_000
MAX_PRINTED_CHARS = 4_000

ALLOWED_MODULES = {"numpy", "math"}


def _words(text: str) -> list[str]:
    return text.split()


# Every numpy name a pattern may use as ``np.<name>``. Submodules (linalg, random, lib, ctypeslib,
# testing, ...) and all file I/O (load, save, fromfile, memmap, ...) are deliberately absent.
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

# Builtins a pattern may call; everything else (open, exec, eval, compile, __import__, getattr,
# globals, vars, type, object, input, breakpoint, ...) is simply not there at run time.
SAFE_BUILTINS = _words(
    """
    abs all any bool dict enumerate filter float frozenset int isinstance len list map max min
    range reversed round set slice sorted str sum tuple zip divmod pow print
    ArithmeticError AssertionError Exception IndexError KeyError TypeError ValueError
    ZeroDivisionError StopIteration
    """
)

DENIED_NAMES = frozenset(
    _words(
        """
    open exec eval compile __import__ globals locals vars dir getattr setattr delattr hasattr
    input breakpoint help memoryview type object super classmethod staticmethod property
    __builtins__ __loader__ __spec__ exit quit copyright credits license id hash callable
    BaseException SystemExit KeyboardInterrupt GeneratorExit
    """
    )
)

# Attribute names that reach files, processes, pickles, raw memory or interpreter internals.
DENIED_ATTRIBUTES = frozenset(
    _words(
        """
    tofile dump dumps load loads save savez savez_compressed savetxt loadtxt genfromtxt fromfile
    fromregex memmap ctypes ctypeslib lib f2py testing distutils os sys subprocess socket shutil
    pathlib io builtins importlib open system popen spawn fork exec execv format format_map mro
    setflags base data DataSource modules import_module
    """
    )
)
# Frame, code, generator and traceback internals (the classic ways out of a restricted namespace).
DENIED_ATTRIBUTE_PREFIXES = ("_", "gi_", "f_", "tb_", "co_", "cr_", "ag_", "im_", "func_")

_ALLOWED_NODES: tuple[type, ...] = tuple(
    getattr(ast, name)
    for name in _words(
        """
    Module FunctionDef arguments arg Return Assign AugAssign AnnAssign For While If Expr Pass Break
    Continue Name Load Store Del Delete Constant BinOp UnaryOp BoolOp Compare Call keyword Attribute
    Subscript Slice Tuple List Dict Set ListComp SetComp DictComp GeneratorExp comprehension IfExp
    Import ImportFrom alias Assert Lambda Starred JoinedStr FormattedValue NamedExpr Raise Try
    ExceptHandler
    Add Sub Mult Div FloorDiv Mod Pow LShift RShift BitOr BitXor BitAnd MatMult
    And Or Not Invert UAdd USub Eq NotEq Lt LtE Gt GtE Is IsNot In NotIn
    """
    )
    if hasattr(ast, name)
)


def check_source(source: str) -> list[str]:
    """Problems that make ``source`` unsafe or unusable as a pattern (empty list: it may run).

    The checks are an allow-list: only plain expressions, statements, comprehensions and function
    definitions; imports of ``numpy``/``math`` only; ``np.<name>`` only for the array functions in
    `NUMPY_NAMES`; no names or attributes that start with ``_``; no attribute that reaches files,
    processes, raw memory or interpreter internals; and a top-level ``def pattern(ctx)``.
    """
    if not isinstance(source, str):
        return [f"program must be a string of Python source, got {type(source).__name__}"]
    if not source.strip():
        return ["program is empty"]
    if len(source) > MAX_SOURCE_CHARS:
        return [f"program is {len(source)} characters long; the limit is {MAX_SOURCE_CHARS}"]
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [f"syntax error at line {exc.lineno}, column {exc.offset}: {exc.msg}"]
    except (ValueError, RecursionError, MemoryError) as exc:
        return [f"cannot parse the program: {type(exc).__name__}: {exc}"]

    problems: list[str] = []
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_AST_NODES:
        return [f"program has {len(nodes)} syntax nodes; the limit is {MAX_AST_NODES}"]
    numpy_aliases: set[str] = set()

    def where(node: ast.AST) -> str:
        return f"line {getattr(node, 'lineno', '?')}"

    for node in nodes:
        if not isinstance(node, _ALLOWED_NODES):
            problems.append(f"{where(node)}: {type(node).__name__} is not allowed")
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name not in ALLOWED_MODULES:
                    problems.append(
                        f"{where(node)}: import of {a.name!r} is not allowed (only numpy and math)"
                    )
                elif a.name == "numpy":
                    numpy_aliases.add(a.asname or "numpy")
        elif isinstance(node, ast.ImportFrom):
            if node.module not in ALLOWED_MODULES or node.level:
                problems.append(
                    f"{where(node)}: import from {node.module!r} is not allowed (only numpy, math)"
                )
            for a in node.names:
                if a.name == "*":
                    problems.append(f"{where(node)}: 'from ... import *' is not allowed")
                elif node.module == "numpy" and a.name not in NUMPY_NAMES:
                    problems.append(f"{where(node)}: numpy.{a.name} is not allowed")
                elif a.name.startswith("_"):
                    problems.append(f"{where(node)}: importing {a.name!r} is not allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("__") or node.id in DENIED_NAMES:
                problems.append(f"{where(node)}: the name {node.id!r} is not allowed")
        elif isinstance(node, ast.arg):
            if node.arg.startswith("__"):
                problems.append(f"{where(node)}: the argument name {node.arg!r} is not allowed")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if attr.startswith(DENIED_ATTRIBUTE_PREFIXES) or attr in DENIED_ATTRIBUTES:
                problems.append(f"{where(node)}: the attribute .{attr} is not allowed")
        elif isinstance(node, ast.FunctionDef):
            if node.decorator_list:
                problems.append(f"{where(node)}: decorators are not allowed")
            if node.name.startswith("__"):
                problems.append(f"{where(node)}: the function name {node.name!r} is not allowed")
        elif isinstance(node, ast.Call) and _is_builtin_call(node):
            literal = (
                len(node.args) == 1
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            )
            flags_ok = all(
                k.arg == "fallback"
                and isinstance(k.value, ast.Constant)
                and isinstance(k.value.value, bool)
                for k in node.keywords
            )
            if not (literal and flags_ok):
                problems.append(
                    f"{where(node)}: ctx.builtin(...) takes one pattern name as a string literal "
                    'and optionally fallback=True/False, e.g. ctx.builtin("previous_token")'
                )

    # np.<name> must be an array function from the allow-list (a second pass: aliases are known).
    aliases = numpy_aliases | {"np", "numpy"}
    for node in nodes:
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr not in NUMPY_NAMES
            and not node.attr.startswith("_")
        ):
            problems.append(
                f"{where(node)}: numpy.{node.attr} is not available in the sandbox "
                "(array functions only: no submodules, no file access)"
            )

    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "pattern"]
    if not defs:
        problems.append("the program defines no top-level function `def pattern(ctx):`")
    elif len(defs[0].args.args) != 1 or defs[0].args.vararg or defs[0].args.kwarg:
        problems.append("`pattern` must take exactly one argument, the context: def pattern(ctx)")
    for stmt in tree.body:
        if not isinstance(
            stmt, (ast.FunctionDef, ast.Import, ast.ImportFrom, ast.Assign, ast.Expr)
        ):
            problems.append(
                f"line {stmt.lineno}: only imports, constants and function definitions may appear "
                f"at the top level, not {type(stmt).__name__}"
            )
        elif isinstance(stmt, ast.Expr) and not (
            isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
        ):
            problems.append(f"line {stmt.lineno}: top-level expressions are not allowed")
    seen: set[str] = set()
    return [p for p in problems if not (p in seen or seen.add(p))]


def _is_builtin_call(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Attribute) and node.func.attr == "builtin"


def builtin_names(source: str) -> list[str]:
    """The registry pattern names a program asks for with ``ctx.builtin("name")``, in order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and _is_builtin_call(node)
            and len(node.args) == 1
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and node.args[0].value not in names
        ):
            names.append(node.args[0].value)
    return names


# ----------------------------------------------------------------------------- matrices on the wire


def encode_matrix(m: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(m, dtype=np.float64)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_matrix(obj: dict[str, Any], *, max_elements: int = 4_000_000) -> np.ndarray:
    """Decode a matrix from the wire; raises ValueError on anything malformed."""
    shape = obj.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"bad shape {shape!r}")
    size = math.prod(shape)
    if size > max_elements:
        raise ValueError(f"matrix of shape {tuple(shape)} is too large")
    raw = base64.b64decode(obj.get("data", ""), validate=True)
    if len(raw) != 8 * size:
        raise ValueError(f"{len(raw)} bytes do not make a float64 array of shape {tuple(shape)}")
    return np.frombuffer(raw, dtype=np.float64).reshape(shape).copy()


# ----------------------------------------------------------------------------- the context


_MARKERS = ("##", "Ġ", "▁", "Ċ", "ċ")

Word = namedtuple("Word", "text start end pos tag dep head lemma is_punct")


class Alignment:
    """Read-only token ↔ word alignment with the same attribute names as `attn_tools.text`."""

    __slots__ = ("token_words", "word_tokens", "units")

    def __init__(self, token_words, word_tokens, units) -> None:
        put = object.__setattr__
        put(self, "token_words", tuple(tuple(int(w) for w in ws) for ws in token_words))
        put(self, "word_tokens", tuple(tuple(int(t) for t in ts) for ts in word_tokens))
        put(self, "units", tuple((tuple(map(int, ts)), tuple(map(int, ws))) for ts, ws in units))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the alignment is read-only")

    @property
    def n_tokens(self) -> int:
        return len(self.token_words)


def _is_punctuation(text: str) -> bool:
    core = text
    for m in _MARKERS:
        if core.startswith(m):
            core = core[len(m) :]
            break
    core = core.strip()
    return bool(core) and all(unicodedata.category(c).startswith("P") for c in core)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class SandboxContext:
    """Plain-data stand-in for `PatternContext` inside the sandbox (same attribute names).

    Extra helpers: ``builtin(name)`` (a registry pattern's normalised prediction, computed by the
    parent), ``token_pos``, ``token_dep``, ``token_is_punct`` (the annotation of each token's word;
    ``""``/False for special tokens).
    """

    __slots__ = (
        "text", "tokens", "token_ids", "offsets", "special_mask", "kind", "words", "alignment",
        "token_word", "token_pos", "token_dep", "token_is_punct", "_builtins",
    )  # fmt: skip

    def __init__(self, d: dict[str, Any]) -> None:
        put = object.__setattr__
        put(self, "text", str(d["text"]))
        put(self, "tokens", tuple(str(t) for t in d["tokens"]))
        put(self, "token_ids", tuple(int(i) for i in d["token_ids"]))
        put(self, "offsets", tuple((int(s), int(e)) for s, e in d["offsets"]))
        put(self, "special_mask", _frozen(np.asarray(d["special_mask"], dtype=bool)))
        put(self, "kind", str(d["kind"]))
        put(self, "words", tuple(Word(*w) for w in d["words"]))
        put(self, "alignment", Alignment(d["token_words"], d["word_tokens"], d["units"]))
        tw = np.array([ws[0] if ws else -1 for ws in self.alignment.token_words], dtype=np.int64)
        put(self, "token_word", _frozen(tw))
        put(self, "token_pos", tuple(self.words[w].pos if w >= 0 else "" for w in tw))
        put(self, "token_dep", tuple(self.words[w].dep if w >= 0 else "" for w in tw))
        put(
            self,
            "token_is_punct",
            _frozen(np.array([w >= 0 and bool(self.words[w].is_punct) for w in tw])),
        )
        built = {}
        for k, v in d.get("builtins", {}).items():
            built[k] = (decode_matrix(v["matrix"]), np.asarray(v["has_mass"], dtype=bool))
        put(self, "_builtins", built)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the context is read-only")

    @property
    def n(self) -> int:
        return len(self.tokens)

    @property
    def causal(self) -> bool:
        return self.kind == "causal"

    @property
    def stripped_tokens(self) -> list[str]:
        out = []
        for t in self.tokens:
            for m in _MARKERS:
                if t.startswith(m):
                    t = t[len(m) :]
                    break
            out.append(t)
        return out

    @property
    def token_texts(self) -> list[str]:
        """The text each token covers (stripped); a special token keeps its name."""
        out = []
        stripped = self.stripped_tokens
        for tok, (s, e), special, bare in zip(
            self.tokens, self.offsets, self.special_mask, stripped
        ):
            piece = "" if special else self.text[s:e].strip()
            out.append(piece or (tok if special else bare))
        return out

    @property
    def punct_mask(self) -> np.ndarray:
        """``[n]`` bool: non-special tokens whose text is all punctuation characters."""
        return np.array(
            [(not sp) and _is_punctuation(t) for t, sp in zip(self.token_texts, self.special_mask)],
            dtype=bool,
        )

    def word_attr(self, name: str) -> np.ndarray:
        """``[w]`` array of one word attribute (``"pos"``, ``"dep"``, ``"head"``, ...)."""
        if name not in Word._fields:
            raise AttributeError(f"words have no attribute {name!r}; they have {Word._fields}")
        return np.array([getattr(w, name) for w in self.words])

    def words_to_tokens(self, word_matrix: np.ndarray) -> np.ndarray:
        """Expand a word-level ``[w, w]`` matrix to tokens ``[n, n]`` (as `PatternContext` does):
        a token's row is the mean of its words' rows; attention to a word is spread over its
        pieces; special tokens get zero rows and columns."""
        w = len(self.words)
        word_matrix = np.asarray(word_matrix, dtype=np.float64)
        if word_matrix.shape != (w, w):
            raise ValueError(f"word matrix has shape {word_matrix.shape}, expected ({w}, {w})")
        rows = np.zeros((self.n, w))
        spread = np.zeros((w, self.n))
        for word, toks in enumerate(self.alignment.word_tokens):
            if toks:
                spread[word, list(toks)] = 1.0 / len(toks)
        for t, ws in enumerate(self.alignment.token_words):
            if ws:
                rows[t, list(ws)] = 1.0 / len(ws)
        return rows @ word_matrix @ spread

    def fallback(self) -> np.ndarray:
        return np.eye(self.n)

    def builtin(self, name: str, fallback: bool = True) -> np.ndarray:
        """The registry pattern ``name``'s normalised ``[n, n]`` prediction on this sentence.

        With ``fallback=False``, rows the pattern does not predict itself are zero instead of
        the framework's attend-to-self fallback.
        """
        if name not in self._builtins:
            raise KeyError(
                f"builtin pattern {name!r} was not prepared; call ctx.builtin with a string "
                "literal naming a registered pattern"
            )
        m, mass = self._builtins[name]
        return m.copy() if fallback else m * mass[:, None]


# ----------------------------------------------------------------------------- the child process


def _harden(cpu_seconds: float, memory_mb: int) -> None:
    """Limit CPU time, memory, file descriptors and processes; drop root if we have it."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    spent = usage.ru_utime + usage.ru_stime
    soft = int(math.ceil(spent + cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    vm_kb = None
    try:  # Linux: the address space already mapped, so the limit is what the program may add
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    vm_kb = int(line.split()[1])
    except OSError:
        pass
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
    # No new file descriptors at all: no files, sockets or pipes. 0, 1 and 2 stay open.
    os.closerange(3, 1 << 16)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, 3))


_SAFE_IMPORTS = {"numpy": np, "math": math}


def _safe_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
    """``__import__`` for the program: numpy and math only.

    C code inside numpy imports its helpers lazily through the *calling frame's* builtins, so
    numpy submodules that are already loaded are handed back too (the static check has already
    refused any import statement or name that could ask for them from the program itself).
    """
    if not level and name in _SAFE_IMPORTS:
        return _SAFE_IMPORTS[name]
    if not level and name.startswith("numpy.") and name in sys.modules:
        return sys.modules[name] if fromlist else np
    raise ImportError(f"import of {name!r} is not allowed in the sandbox")


def _warm_numpy() -> None:
    """Trigger numpy's lazy imports now: after hardening no module file can be opened."""
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    for fn in ("sum", "mean", "max", "min", "std", "var", "any", "all", "argmax", "argmin",
               "prod", "cumsum", "round", "clip", "nonzero", "argsort", "sort", "tolist"):  # fmt: skip
        getattr(a.copy(), fn)()
    np.round(a, 2), np.unique(a), np.median(a), np.isin(a, [1.0]), np.einsum("ij->i", a)
    np.tril(a), np.triu(a), np.where(a > 1, a, 0), np.broadcast_to(a[:1], a.shape), np.isclose(a, a)
    np.linspace(0, 1, 3), np.percentile(a, 50), np.nan_to_num(a), np.array2string(a)
    np.equal(np.array(["a", "b"]), "a")
    str(a), repr(a), format(1.5, ".2f"), f"{np.float64(1.5):.2f}"


def _run(payload: dict[str, Any]) -> dict[str, Any]:
    import builtins

    printed: list[str] = []
    size = [0]

    def capture_print(*args: Any, **kwargs: Any) -> None:
        text = " ".join(str(a) for a in args) + "\n"
        if size[0] < MAX_PRINTED_CHARS:
            printed.append(text[: MAX_PRINTED_CHARS - size[0]])
            size[0] += len(text)

    safe = {name: getattr(builtins, name) for name in SAFE_BUILTINS}
    safe["print"] = capture_print
    safe["__import__"] = _safe_import
    contexts = [SandboxContext(c) for c in payload["contexts"]]
    _warm_numpy()
    namespace: dict[str, Any] = {
        "__builtins__": safe,
        "__name__": "pattern_program",
        "np": np,
        "math": math,
    }
    _harden(float(payload["cpu_seconds"]), int(payload["memory_mb"]))
    try:
        code = compile(payload["source"], "<program>", "exec")
        exec(code, namespace)
        fn = namespace["pattern"]
    except MemoryError:
        return {"setup_error": "MemoryError: the memory limit was reached", "kind": "memory"}
    except BaseException as exc:  # the program is untrusted: anything it raises is a result
        return {"setup_error": f"{type(exc).__name__}: {exc}"[:500], "kind": "exception"}
    results: list[dict[str, Any]] = []
    for ctx in contexts:
        try:
            out = fn(ctx)
            if not isinstance(out, np.ndarray):
                results.append(
                    {
                        "error": f"returned {type(out).__name__}, expected a numpy array",
                        "kind": "type",
                    }
                )
                continue
            if out.dtype == object or np.iscomplexobj(out):
                results.append({"error": f"returned an array of dtype {out.dtype}", "kind": "type"})
                continue
            results.append(encode_matrix(np.asarray(out, dtype=np.float64)))
        except MemoryError:
            results.append({"error": "MemoryError: the memory limit was reached", "kind": "memory"})
        except RecursionError:
            results.append({"error": "RecursionError: recursion too deep", "kind": "exception"})
        except BaseException as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}"[:500], "kind": "exception"})
    return {"results": results, "printed": "".join(printed)}


def main() -> None:
    # stdin stays open (at end of file) so fd 0 is taken when the descriptor limit applies
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    answer = _run(payload)
    data = json.dumps(answer).encode("utf-8")
    fd = sys.stdout.fileno()
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


if __name__ == "__main__":
    main()
