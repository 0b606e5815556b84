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

from attn_tools.automate.sandbox.child import NUMPY_NAMES

__all__ = ["MAX_AST_NODES", "MAX_SOURCE_CHARS", "builtin_names", "check_source"]

MAX_SOURCE_CHARS = 20_000
MAX_AST_NODES = 5_000
#: a ``ctx.builtin("...")`` name longer than this is refused (nested ``shuffled(`` bombs)
MAX_BUILTIN_NAME = 200

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
        elif isinstance(node, ast.alias):
            if node.asname and node.asname.startswith("_"):
                problems.append(f"{where(node)}: the name {node.asname!r} is not allowed")
        elif isinstance(node, ast.Name):
            if node.id.startswith("__") or node.id in DENIED_NAMES:
                problems.append(f"{where(node)}: the name {node.id!r} is not allowed")
        elif isinstance(node, ast.arg):
            if node.arg.startswith("__"):
                problems.append(f"{where(node)}: the argument name {node.arg!r} is not allowed")
        elif isinstance(node, ast.keyword):
            if node.arg is not None and node.arg.startswith("__"):
                problems.append(f"{where(node)}: the keyword {node.arg!r} is not allowed")
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
