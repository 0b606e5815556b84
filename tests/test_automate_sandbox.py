"""The sandbox: static check, child-process limits, output validation, context parity."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from attn_tools.automate.sandbox import check_program, contexts_of, run_program
from attn_tools.automate.sandbox import child as _child
from attn_tools.automate.sandbox.runner import TRUNCATED
from attn_tools.patterns import predict

FAST = {"cpu_seconds": 1.0, "timeout": 8.0, "memory_mb": 256}


@pytest.fixture(scope="module")
def minilm_ctx(minilm_records):
    return contexts_of(minilm_records[:3])


@pytest.fixture(scope="module")
def smollm2_ctx(smollm2_records):
    return contexts_of(smollm2_records[:3])


def _prog(body: str) -> str:
    return "import numpy as np\n\ndef pattern(ctx):\n" + textwrap.indent(
        textwrap.dedent(body).strip("\n"), "    "
    )


# ----------------------------------------------------------------------------- hostile programs


def hostile_programs(marker: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (source, acceptable statuses). ``marker`` is a file no program may create."""
    ok_shape = "return np.eye(ctx.n)"
    rejected = {"rejected"}
    return {
        "import_os": (f"import os\ndef pattern(ctx):\n    os.system('touch {marker}')\n", rejected),
        "from_os": (
            "from os import system\ndef pattern(ctx):\n    return system('id')\n",
            rejected,
        ),
        "open_file": (_prog("return np.array(open('/etc/passwd').read())"), rejected),
        "with_open": (
            _prog(f"with open('{marker}', 'w') as f:\n    f.write('x')\n{ok_shape}"),
            rejected,
        ),
        "dunder_import": (
            _prog(f"__import__('os').system('touch {marker}')\n{ok_shape}"),
            rejected,
        ),
        "subclasses": (_prog("return ().__class__.__bases__[0].__subclasses__()"), rejected),
        "socket": (
            "import socket\ndef pattern(ctx):\n    socket.socket().connect(('1.1.1.1', 80))\n",
            rejected,
        ),
        "subprocess": (
            "import subprocess\ndef pattern(ctx):\n    subprocess.run(['id'])\n",
            rejected,
        ),
        "eval": (_prog("return eval('np.eye(ctx.n)')"), rejected),
        "exec": (_prog(f"exec('import os')\n{ok_shape}"), rejected),
        "getattr_escape": (
            _prog(f"getattr(np, 'save')('{marker}', np.eye(2))\n{ok_shape}"),
            rejected,
        ),
        "numpy_file_io": (_prog(f"np.save('{marker}', np.eye(2))\n{ok_shape}"), rejected),
        "tofile": (_prog(f"np.eye(2).tofile('{marker}')\n{ok_shape}"), rejected),
        "numpy_submodule": ("import numpy.ctypeslib\ndef pattern(ctx):\n    return 1\n", rejected),
        "generator_frame": (_prog("g = (x for x in [1])\nreturn g.gi_frame.f_globals"), rejected),
        "private_ctx": (_prog("return ctx._builtins"), rejected),
        "format_escape": (_prog("return '{0.__class__}'.format(ctx)"), rejected),
        "fstring_dunder": (_prog("s = f'{ctx.__class__}'\nreturn np.eye(ctx.n)"), rejected),
        "type_builtin": (_prog("return type(ctx)"), rejected),
        "class_def": ("class A:\n    pass\ndef pattern(ctx):\n    return A\n", rejected),
        "fork_bomb": (
            "import os\ndef pattern(ctx):\n    while True:\n        os.fork()\n",
            rejected,
        ),
        "globals_escape": (_prog("return globals()['__builtins__']"), rejected),
        "memory_bomb_list": (_prog("x = [0] * (10 ** 10)\nreturn np.eye(ctx.n)"), {"crashed"}),
        "memory_bomb_numpy": (_prog("x = np.ones((100000, 100000))\nreturn x"), {"crashed"}),
        "infinite_loop": (_prog("while True:\n    pass"), {"timeout"}),
        "compile_time_bomb": ("X = 10 ** 10 ** 10\ndef pattern(ctx):\n    return 1\n", {"timeout"}),
        "recursion_bomb": (
            "def f(n):\n    return f(n + 1)\n\ndef pattern(ctx):\n    return f(0)\n",
            {"crashed"},
        ),
        "exit": (_prog("exit(0)"), rejected),
        "raise_system_exit": (_prog("raise SystemExit(0)"), rejected),
    }


def test_hostile_programs_are_rejected_or_contained(minilm_ctx, tmp_path):
    marker = tmp_path / "escaped"
    programs = hostile_programs(str(marker))
    assert len(programs) >= 15
    outcomes = {}
    for name, (source, allowed) in programs.items():
        res = run_program(source, minilm_ctx[:1], **FAST)
        outcomes[name] = res.status
        assert res.status in allowed, (name, res.status, res.message)
        assert not res.matrices
        assert res.message  # every failure says what happened
    assert not marker.exists()
    assert sum(s == "rejected" for s in outcomes.values()) >= 20
    assert {"crashed", "timeout"} <= set(outcomes.values())


def test_static_check_names_the_problem():
    problems = check_program("import os\ndef pattern(ctx):\n    return os.getcwd()\n")
    assert problems[0] == "line 1: import of 'os' is not allowed (only numpy and math)"
    assert problems[1].startswith("line 3: the attribute .getcwd is not available in the sandbox")
    assert len(problems) == 2
    assert check_program("def pattern(ctx):\n    return ctx.__class__\n") == [
        "line 2: the attribute .__class__ is not allowed"
    ]
    assert check_program("def pattern(ctx)\n    return 1\n")[0].startswith("syntax error at line 1")
    assert check_program("def other(ctx):\n    return 1\n") == [
        "the program defines no top-level function `def pattern(ctx):`"
    ]
    assert "not available in the sandbox" in check_program(_prog("return np.linalg.norm(1)"))[0]
    assert check_program(_prog("return ctx.builtin(name)"))[0].startswith("line 4: ctx.builtin")
    assert check_program(None) == ["program must be a string of Python source, got NoneType"]
    assert check_program("x" * 30_000)[0].endswith("the limit is 20000")
    assert check_program(_prog("return np.eye(ctx.n)")) == []


def test_hardening_blocks_files_sockets_and_processes(tmp_path):
    """Defence in depth: even code that got past the check could not open, connect or fork."""
    target = tmp_path / "written"
    script = textwrap.dedent(
        f"""
        import importlib.util, os, socket, sys
        spec = importlib.util.spec_from_file_location("child", {str(_child.__file__)!r})
        child = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(child)
        child.harden(2.0, 256)
        results = []
        for attempt in (
            lambda: open({str(target)!r}, "w"),
            lambda: open("/etc/hostname"),
            lambda: socket.socket(),
            lambda: os.fork(),
            lambda: os.pipe(),
        ):
            try:
                attempt()
                results.append("allowed")
            except OSError:
                results.append("blocked")
        os.write(1, ",".join(results).encode())
        """
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "blocked,blocked,blocked,blocked,blocked"
    assert not target.exists()


# ----------------------------------------------------------------------------- valid and invalid


def test_good_program_matches_the_same_code_in_process(minilm_ctx):
    res = run_program(
        _prog("return np.eye(ctx.n, k=-1) + 0.5 * ctx.builtin('first_token')"), minilm_ctx
    )
    assert res.status == "ok" and res.problems == ()
    assert len(res.matrices) == len(minilm_ctx)
    for m, ctx in zip(res.matrices, minilm_ctx):
        expected = np.eye(ctx.n, k=-1) + 0.5 * predict("first_token", ctx)[0]
        np.testing.assert_array_equal(m, expected)


def test_builtin_without_fallback_and_numpy_methods(minilm_ctx):
    body = """
    det = ctx.builtin("dep(det)", fallback=False)
    rows = det.sum(axis=1) > 0
    print(f"{det.max():.2f}", det.mean().round(3), np.median(det))
    return np.where(rows[:, None], det, 0.0)
    """
    res = run_program(_prog(body), minilm_ctx)
    assert res.ok, res.message
    for m, ctx in zip(res.matrices, minilm_ctx):
        pred, mass = predict("dep(det)", ctx)
        np.testing.assert_array_equal(m, pred * mass[:, None])
    assert res.printed.startswith("1.00")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ("return np.ones((3, 3))", "invalid_output", "returned shape (3, 3), expected"),
        ("return np.full((ctx.n, ctx.n), np.nan)", "invalid_output", "NaN or infinite"),
        ("return -np.eye(ctx.n)", "invalid_output", "negative values"),
        ("return [[1.0]]", "invalid_output", "returned list, expected a numpy array"),
        # object arrays never exist in the sandbox: np.array refuses to make one
        ("return np.array([ctx, ctx])", "crashed", "array of dtype object is not allowed"),
        ("return 1 / 0", "crashed", "ZeroDivisionError: division by zero"),
        ("return ctx.builtin('next_token') @ np.ones(2)", "crashed", "ValueError"),
    ],
)
def test_invalid_outputs_are_structured(minilm_ctx, body, status, fragment):
    res = run_program(_prog(body), minilm_ctx, **FAST)
    assert res.status == status
    assert fragment in res.message
    assert res.message.startswith("sentence 0 (")
    assert len(res.problems) == len(minilm_ctx)


def test_causal_models_must_not_look_ahead(smollm2_ctx, minilm_ctx):
    res = run_program(_prog("return np.eye(ctx.n, k=1) + np.eye(ctx.n)"), smollm2_ctx)
    assert res.status == "invalid_output"
    assert "row 0 puts weight 1 on the later token 1" in res.message
    assert run_program(_prog("return np.tril(np.ones((ctx.n, ctx.n)))"), smollm2_ctx).ok
    # an encoder may attend ahead
    assert run_program(_prog("return np.eye(ctx.n, k=1) + np.eye(ctx.n)"), minilm_ctx).ok


def test_unknown_builtin_is_rejected_before_running(minilm_ctx):
    res = run_program(_prog("return ctx.builtin('no_such_pattern')"), minilm_ctx)
    assert res.status == "rejected"
    assert "no_such_pattern" in res.message


def test_printing_is_captured_and_truncated(minilm_ctx):
    res = run_program(
        _prog("for i in range(20000):\n    print('x' * 50)\nreturn np.eye(ctx.n)"), minilm_ctx[:1]
    )
    assert res.ok
    assert res.printed.endswith(TRUNCATED)
    assert len(res.printed) == _child.MAX_PRINTED_CHARS + len(TRUNCATED)
    assert res.printed.startswith("x" * 50 + "\n")


def test_to_dict_is_json_ready(minilm_ctx):
    import json

    res = run_program(_prog("return np.eye(ctx.n)"), minilm_ctx)
    data = json.loads(json.dumps(res.to_dict()))
    assert data["status"] == "ok"
    assert data["shapes"] == [[c.n, c.n] for c in minilm_ctx]


# ----------------------------------------------------------------------------- context parity


def test_sandbox_context_matches_pattern_context(minilm_records, smollm2_records):
    """The child's plain-data context gives the same answers as PatternContext."""
    body = """
    n = ctx.n
    w = len(ctx.words)
    heads = ctx.word_attr("head").astype(float)
    rows = [
        ctx.token_word + 1.0,
        ctx.punct_mask * 1.0,
        ctx.special_mask * 1.0,
        np.array([len(t) for t in ctx.token_texts], dtype=float),
        np.array([len(t) for t in ctx.stripped_tokens], dtype=float),
        np.array([float(len(ctx.alignment.token_words[t])) for t in range(n)]),
        np.array([float(ctx.causal)] * n),
    ]
    out = np.zeros((n, n))
    for i, r in enumerate(rows):
        out[i] = r
    m = np.arange(w * w, dtype=float).reshape(w, w) + heads[None, :]
    probe = np.vstack([out[: len(rows)], ctx.words_to_tokens(m)])[:n]
    return np.tril(probe) if ctx.causal else probe
    """
    for records in (minilm_records[:6], smollm2_records[:6]):
        ctxs = contexts_of(records)
        res = run_program(_prog(body), ctxs)
        assert res.ok, res.message
        for m, ctx in zip(res.matrices, ctxs):
            n = ctx.n
            w = len(ctx.words)
            expected_rows = [
                ctx.token_word + 1.0,
                ctx.punct_mask * 1.0,
                ctx.special_mask * 1.0,
                [len(t) for t in ctx.token_texts],
                [len(t) for t in ctx.stripped_tokens],
                [len(ctx.alignment.token_words[t]) for t in range(n)],
                [float(ctx.causal)] * n,
            ]
            heads = ctx.word_attr("head").astype(float)
            wm = ctx.words_to_tokens(np.arange(w * w, dtype=float).reshape(w, w) + heads[None, :])
            expected = np.vstack([np.array(expected_rows, dtype=float), wm])[:n]
            if ctx.causal:  # a causal model's output must not look ahead
                expected = np.tril(expected)
            np.testing.assert_allclose(m, expected)


def test_sandbox_context_units_and_pos(minilm_ctx):
    body = """
    out = np.zeros((ctx.n, ctx.n))
    for u, (toks, words) in enumerate(ctx.alignment.units):
        for t in toks:
            out[t, 0] = u + 1
    for t, p in enumerate(ctx.token_pos):
        out[t, 1] = float(p == "NOUN")
    return out
    """
    res = run_program(_prog(body), minilm_ctx)
    assert res.ok, res.message
    for m, ctx in zip(res.matrices, minilm_ctx):
        units = np.zeros(ctx.n)
        for u, (toks, _) in enumerate(ctx.alignment.units):
            units[list(toks)] = u + 1
        np.testing.assert_array_equal(m[:, 0], units)
        nouns = [w >= 0 and ctx.words[w].pos == "NOUN" for w in ctx.token_word]
        np.testing.assert_array_equal(m[:, 1], np.array(nouns, dtype=float))
