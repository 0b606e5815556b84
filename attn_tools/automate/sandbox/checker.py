"""The static check of an untrusted pattern program (standard library only).

An allow-list over the syntax tree: plain expressions, statements, comprehensions, lambdas and
function definitions; imports of ``numpy``/``math`` only; ``np.<name>`` only for the names the
child's namespace holds; no name or attribute that starts with ``_`` (so no ``__class__``,
``__globals__``, ``__subclasses__``); no attribute that reaches files, processes, pickles, raw
memory, frames, code objects, generators' or coroutines' internals (``gi_frame``, ``f_back``,
``tb_frame``, ``co_code``) or string formatting by attribute path (``.format``,
``.format_map``). Python normalises identifiers (NFKC) while parsing, so full-width spellings
are checked as the names they become.

The check is the first layer only: what it lets through still runs with a plain namespace in a
jailed child (`attn_tools.automate.sandbox.child`, `attn_tools.automate.sandbox.runner`).
"""

from __future__ import annotations

import ast
from dataclasses import fields

from attn_tools.automate.sandbox.child import MATH_NAMES, NUMPY_NAMES, context

__all__ = [
    "ALLOWED_ATTRIBUTES",
    "MAX_AST_NODES",
    "MAX_BUILTIN_DEPTH",
    "MAX_BUILTIN_LITERALS",
    "METHOD_SLOTS",
    "MAX_SOURCE_CHARS",
    "builtin_names",
    "check_source",
]

MAX_SOURCE_CHARS = 20_000
MAX_AST_NODES = 5_000
#: a ``ctx.builtin("...")`` name longer than this is refused (nested ``shuffled(`` bombs)
MAX_BUILTIN_NAME = 200
#: distinct ``ctx.builtin("...")`` strings a program may use (spelling variants count apart;
#: the runner also caps the distinct patterns they resolve to): each one costs the parent a
#: prediction per sentence
MAX_BUILTIN_LITERALS = 32

ALLOWED_MODULES = frozenset({"numpy", "math"})


def _words(text: str) -> list[str]:
    return text.split()


DENIED_NAMES = frozenset(
    _words(
        """
    open exec eval compile __import__ globals locals vars dir getattr setattr delattr hasattr
    input breakpoint help memoryview type object super classmethod staticmethod property
    __builtins__ __loader__ __spec__ exit quit copyright credits license id hash callable
    BaseException SystemExit KeyboardInterrupt GeneratorExit format
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
    setflags base data DataSource modules import_module getfield setfield view
    """
    )
)
_STR_METHODS = {n for n in dir(str) if not n.startswith("_")} - {"format", "format_map"}

#: every attribute name a program may read: an allow-list, because a program can alias any
#: object (``m = np``, ``[a][0]``, parameters), so what an attribute is called is all the check
#: can know. Numpy arrays offer only arithmetic and reshaping here: no resize, view, base,
#: data, ctypes, flags, setflags, tobytes, byteswap, ... (routes to raw memory).
ALLOWED_ATTRIBUTES = frozenset(
    NUMPY_NAMES
    | MATH_NAMES
    | {f.name for f in fields(context.PatternContext)
       if not f.name.startswith("_") and not f.metadata.get("private")}
    | {"word_attr", "words_to_tokens", "builtin", "fallback"}
    | set(context.WORD_FIELDS)
    | {"token_words", "word_tokens", "units", "n_tokens", "n_units"}
    | set(
        _words(
            """
        T all any argmax argmin argsort astype clip copy cumprod cumsum diagonal dot dtype fill
        flatten imag item max mean min ndim nonzero prod ptp ravel real repeat reshape round
        shape size sort squeeze std sum swapaxes take tolist trace transpose var
        outer reduce accumulate
        append extend insert pop remove index count reverse clear keys values items get
        setdefault update popitem add discard union intersection difference
        symmetric_difference issubset issuperset isdisjoint intersection_update
        difference_update symmetric_difference_update
        conjugate bit_length bit_count is_integer numerator denominator as_integer_ratio
        """
        )
    )
    | _STR_METHODS
)  # fmt: skip

#: array methods that take a dtype or an ``out`` array: ``(dtype position, out position)`` of
#: their positional arguments (numpy's signatures). Called on anything but the numpy namespace
#: (whose functions are checked at run time) they may only be called directly (not aliased),
#: without ``*``, with a dtype the check can read (`_SAFE_DTYPE_*`: an object dtype is a step
#: towards fabricated references) and without filling the ``out`` slot.
METHOD_SLOTS: dict[str, tuple[int | None, int | None]] = {
    "astype": (0, None), "sum": (1, 2), "prod": (1, 2), "mean": (1, 2), "cumsum": (1, 2),
    "cumprod": (1, 2), "std": (1, 2), "var": (1, 2), "trace": (3, 4), "nansum": (2, 3),
    "all": (None, 1), "any": (None, 1), "argmax": (None, 1), "argmin": (None, 1),
    "max": (None, 1), "min": (None, 1), "clip": (None, 2), "round": (None, 1),
    "dot": (None, 1), "take": (None, 2),
}  # fmt: skip
#: the methods of `METHOD_SLOTS` that take a dtype: the position of that argument
DTYPE_METHODS = {name: pos for name, (pos, _) in METHOD_SLOTS.items() if pos is not None}
#: keywords no call may pass: raw memory (buffer, like), results written into an array the
#: program chose (out), or a ufunc loop picked by signature (object loops)
DENIED_KEYWORDS = frozenset({"buffer", "like", "out", "signature", "sig", "extobj"})
#: attributes allowed only on the numpy namespace (``np.repeat``), never on an array: the
#: array method computes its size in C without an overflow check (numpy 2.x)
NUMPY_ONLY_ATTRIBUTES = frozenset({"repeat"})
#: parentheses a ``ctx.builtin`` name may nest (``shuffled(offset(1))`` is 2): each level of a
#: factory multiplies the parent's work
MAX_BUILTIN_DEPTH = 2
_SAFE_DTYPE_NAMES = frozenset({"float", "int", "bool"})
_SAFE_DTYPE_ATTRS = frozenset({"float64", "float32", "int64", "int32", "intp", "uint8", "bool_",
                               "bool"})  # fmt: skip
_SAFE_DTYPE_STRINGS = frozenset(
    _words("float float64 float32 f8 f4 double int int64 int32 i8 i4 intp uint8 u1 bool b1 ?")
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


def _is_builtin_call(node: ast.Call) -> bool:
    return isinstance(node.func, ast.Attribute) and node.func.attr == "builtin"


def _literal_builtin(node: ast.Call) -> str | None:
    if (
        len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def _nesting(name: str) -> int:
    """The deepest parenthesis level in ``name``."""
    depth = deepest = 0
    for ch in name:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def check_source(source: object) -> list[str]:
    """Problems that make ``source`` unsafe or unusable as a pattern (empty list: it may run).

    Example:
        >>> check_source("import os\\ndef pattern(ctx):\\n    return os.listdir('.')")
        ["line 1: import of 'os' is not allowed (only numpy and math)"]
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
        return [f"cannot parse the program: {type(exc).__name__}: {str(exc)[:200]}"]

    problems: list[str] = []
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_AST_NODES:
        return [f"program has {len(nodes)} syntax nodes; the limit is {MAX_AST_NODES}"]
    numpy_aliases: set[str] = {
        a.asname or a.name
        for n in nodes
        if isinstance(n, ast.Import)
        for a in n.names
        if a.name == "numpy"
    }
    # names that may not be bound again: the numpy/math namespaces and the dtypes a call may
    # name (float = "O" would turn .astype(float) into an object cast)
    protected = numpy_aliases | {"np", "numpy", "math"} | _SAFE_DTYPE_NAMES
    called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    import_names = {id(a) for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom))
                    for a in n.names}  # fmt: skip

    def on_numpy(node: ast.Attribute) -> bool:
        # np.<name>(...): the namespace's functions are wrapped and checked when they run
        return isinstance(node.value, ast.Name) and node.value.id in numpy_aliases | {"np", "numpy"}

    def where(node: ast.AST) -> str:
        return f"line {getattr(node, 'lineno', '?')}"

    def bind(node: ast.AST, name: str | None, what: str) -> None:
        # one rule for every binding site: assignment and loop targets, parameters, except-as,
        # import aliases, walrus, comprehension variables, function names, keyword arguments
        if name is None:
            return
        if name.startswith("__") or name in DENIED_NAMES:
            problems.append(f"{where(node)}: the {what} {name!r} is not allowed")
        elif name in protected:
            problems.append(
                f"{where(node)}: the {what} {name!r} may not be rebound (it names numpy, math or "
                "a dtype). Fix: pick another name."
            )

    def safe_dtype(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return node.value is None or node.value in _SAFE_DTYPE_STRINGS
        if isinstance(node, ast.Name):
            return node.id in _SAFE_DTYPE_NAMES
        return (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in (numpy_aliases | {"np", "numpy"})
            and node.attr in _SAFE_DTYPE_ATTRS
        )

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
        elif isinstance(node, ast.alias):
            bound = node.asname or node.name.split(".")[0]
            if bound.startswith("_"):
                problems.append(f"{where(node)}: the name {bound!r} is not allowed")
            elif id(node) in import_names and node.name not in ("numpy", "math"):
                bind(node, bound, "name")  # `from numpy import e as float` rebinds a dtype
            elif bound in _SAFE_DTYPE_NAMES or bound in DENIED_NAMES:
                problems.append(f"{where(node)}: the name {bound!r} may not be rebound")
        elif isinstance(node, ast.Name):
            if node.id.startswith("__") or node.id in DENIED_NAMES:
                problems.append(f"{where(node)}: the name {node.id!r} is not allowed")
            elif isinstance(node.ctx, (ast.Store, ast.Del)):
                bind(node, node.id, "name")
        elif isinstance(node, ast.arg):
            bind(node, node.arg, "argument name")
        elif isinstance(node, ast.keyword):
            if node.arg is None:
                problems.append(
                    f"{where(node)}: **-unpacking in a call is not allowed. Fix: name each "
                    "keyword argument."
                )
            elif node.arg in DENIED_KEYWORDS:
                problems.append(
                    f"{where(node)}: the keyword {node.arg}= is not allowed in the sandbox. "
                    "Fix: use the returned array instead."
                )
            else:
                bind(node, node.arg, "keyword")
        elif isinstance(node, ast.ExceptHandler):
            bind(node, node.name, "exception name")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                bind(node, name, "name")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            if attr.startswith(DENIED_ATTRIBUTE_PREFIXES) or attr in DENIED_ATTRIBUTES:
                problems.append(f"{where(node)}: the attribute .{attr} is not allowed")
            elif attr not in ALLOWED_ATTRIBUTES:
                problems.append(
                    f"{where(node)}: the attribute .{attr} is not available in the sandbox "
                    "(allowed: ctx's fields and methods, word and alignment fields, array "
                    "arithmetic and reshaping, str/list/dict/set methods, np.<function>)"
                )
            elif isinstance(node.ctx, (ast.Store, ast.Del)):
                problems.append(
                    f"{where(node)}: assigning or deleting an attribute (.{attr}) is not allowed"
                )
            elif attr in NUMPY_ONLY_ATTRIBUTES and not on_numpy(node):
                problems.append(
                    f"{where(node)}: .{attr} is only available as np.{attr}(...), not as an "
                    f"array method. Fix: write np.{attr}(x, ...)."
                )
            elif attr in METHOD_SLOTS and id(node) not in called and not on_numpy(node):
                problems.append(
                    f"{where(node)}: .{attr} may only be called directly, e.g. x.{attr}(...), "
                    "not stored or passed on"
                )
        elif isinstance(node, ast.FunctionDef):
            if node.decorator_list:
                problems.append(f"{where(node)}: decorators are not allowed")
            bind(node, node.name, "function name")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in METHOD_SLOTS
            and not on_numpy(node.func)
        ):
            attr = node.func.attr
            dtype_pos, out_pos = METHOD_SLOTS[attr]
            dtypes = [k.value for k in node.keywords if k.arg == "dtype"]
            if any(isinstance(a, ast.Starred) for a in node.args):
                problems.append(f"{where(node)}: .{attr}(*...) is not allowed")
            else:
                if dtype_pos is not None and len(node.args) > dtype_pos:
                    dtypes.append(node.args[dtype_pos])
                if out_pos is not None and len(node.args) > out_pos:
                    problems.append(
                        f"{where(node)}: .{attr}(...) with an output array (argument "
                        f"{out_pos + 1}) is not allowed. Fix: use the returned array."
                    )
            if not all(safe_dtype(d) for d in dtypes):
                problems.append(
                    f"{where(node)}: .{attr}(...) needs a plain numeric dtype written "
                    "out: float, int, bool, np.float64, np.int64, ... or a string such as "
                    "'float64' (no object or structured dtypes)"
                )
        elif (
            isinstance(node, ast.Call)
            and not (isinstance(node.func, ast.Attribute) and on_numpy(node.func))
            and not all(safe_dtype(k.value) for k in node.keywords if k.arg == "dtype")
        ):
            # a method that takes dtype through **kwargs (ndarray.clip) or any other callee the
            # run time does not check: the dtype must be a plain numeric one written out
            problems.append(
                f"{where(node)}: dtype= needs a plain numeric dtype written out here (float, "
                "int, bool, np.float64, 'float64', ...)"
            )
        elif isinstance(node, ast.Call) and _is_builtin_call(node):
            name = _literal_builtin(node)
            flags_ok = all(
                k.arg == "fallback"
                and isinstance(k.value, ast.Constant)
                and isinstance(k.value.value, bool)
                for k in node.keywords
            )
            if name is None or not flags_ok:
                problems.append(
                    f"{where(node)}: ctx.builtin(...) takes one pattern name as a string literal "
                    'and optionally fallback=True/False, e.g. ctx.builtin("previous_token")'
                )
            elif len(name) > MAX_BUILTIN_NAME:
                problems.append(
                    f"{where(node)}: ctx.builtin name is {len(name)} characters long; the limit "
                    f"is {MAX_BUILTIN_NAME}"
                )
            elif _nesting(name) > MAX_BUILTIN_DEPTH:
                problems.append(
                    f"{where(node)}: ctx.builtin name {name[:60]!r} nests {_nesting(name)} levels "
                    f"of parentheses; the limit is {MAX_BUILTIN_DEPTH}, e.g. "
                    '"shuffled(offset(1))". Fix: combine patterns in the program instead.'
                )

    literals = builtin_names(source)
    if len(literals) > MAX_BUILTIN_LITERALS:
        problems.append(
            f"the program names {len(literals)} different ctx.builtin patterns; the limit is "
            f"{MAX_BUILTIN_LITERALS}. Fix: use a few library patterns and combine them."
        )
    # np.<name> must be in the namespace (a second pass: aliases are known). An alias the check
    # cannot follow (m = np) still reaches only the plain namespace at run time.
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


def builtin_names(source: str) -> list[str]:
    """The registry pattern names a program asks for with ``ctx.builtin("name")``, in order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError, TypeError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_builtin_call(node):
            name = _literal_builtin(node)
            if name is not None and name not in names:
                names.append(name)
    return names
