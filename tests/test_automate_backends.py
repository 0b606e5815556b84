"""Step 3: the hypothesizers, driven for real — a loopback chat-completions server, SmolLM2.

The server is a real `http.server` on 127.0.0.1 (ephemeral port) that plays back scripted
replies and records every request it receives.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from attn_tools.automate import (
    MAX_ROUNDS,
    AuthenticationError,
    HeadTask,
    LocalChatModel,
    OpenAICompatible,
    ProgramSearch,
    RateLimitError,
    ServerError,
    UserLibrary,
    automate_head,
    head_examples,
    make_backend,
)
from attn_tools.automate.sandbox import contexts_of

KEY_ENV = "ATTN_TOOLS_TEST_API_KEY"
SECRET = "sk-test-Zq8XvB3nLp0aTy7Rk2Wd"


# ----------------------------------------------------------------------------- the server


class ChatServer:
    """A chat-completions server on loopback that answers from a script.

    Each script item is ``(status, body, headers)``; ``body`` is the assistant's text for a 200
    and the error JSON otherwise. When the script runs out, it answers 500.
    """

    def __init__(self, script: list[tuple[int, str | dict, dict[str, str]]], delay: float = 0.0):
        self.script = list(script)
        self.requests: list[dict] = []
        self.delay = delay
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                owner.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                if owner.delay:
                    time.sleep(owner.delay)
                status, payload, headers = (
                    owner.script.pop(0) if owner.script else (500, {"error": "script over"}, {})
                )
                if status == 200:
                    payload = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": payload},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                # the client may have timed out on purpose (the slow-reply case) and hung up
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def reply(program: str, hypothesis: str = "each token attends to the previous token") -> str:
    return json.dumps(
        {
            "hypotheses": [hypothesis, "first token", "same part of speech"],
            "chosen": 0,
            "evidence": "sentence 0: 3 -> 2 with weight 0.9",
            "matrix": "...",
            "program": program,
        }
    )


GOOD = "import numpy as np\n\ndef pattern(ctx):\n    return np.eye(ctx.n, k=-1)\n"
# a readable rule for MiniLM L1.H8 that beats the smoothed built-ins and the mix of built-ins
MIX = (
    "import numpy as np\n\ndef pattern(ctx):\n"
    "    out = 0.8 * ctx.builtin('next_token') + 0.2 * ctx.builtin('first_token')\n"
    "    return np.where(ctx.special_mask[:, None], ctx.builtin('first_token'), out)\n"
)
IMPORT_OS = "import os\n\ndef pattern(ctx):\n    return os.listdir('.')\n"
LOOP = "def pattern(ctx):\n    while True:\n        pass\n"
WRONG_SHAPE = "import numpy as np\n\ndef pattern(ctx):\n    return np.ones((2, 2))\n"
MALFORMED = '{"hypotheses": ["a", "b", "c"], "chosen": 0 "program": "def pattern(ctx): pass"}'
LIMITS = {"cpu_seconds": 1.0, "timeout": 10.0, "memory_mb": 256}


@pytest.fixture
def api_key(monkeypatch) -> Iterator[str]:
    monkeypatch.setenv(KEY_ENV, SECRET)
    yield SECRET


@pytest.fixture(scope="module")
def split(minilm_records):
    train, held = minilm_records[:10], minilm_records[10:20]
    return train, held, contexts_of(train), contexts_of(held)


def client(url: str, **kw) -> OpenAICompatible:
    opts = {"api_key_env": KEY_ENV, "model": "test-model", "backoff": 0.01, "timeout": 5.0}
    return OpenAICompatible(url, **{**opts, **kw})


def task_of(records, contexts, layer=0, head=2) -> HeadTask:
    return HeadTask(
        examples=head_examples(records, layer, head),
        contexts=tuple(contexts),
        attention=tuple(r.head(layer, head) for r in records),
    )


def all_text(folder: Path) -> str:
    return "\n".join(
        p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*") if p.is_file()
    )


# ----------------------------------------------------------------------------- end to end


def test_openai_backend_end_to_end_through_every_failure(split, api_key, tmp_path, capsys):
    """import os → infinite loop → wrong shape → malformed JSON → a good program, one per round;
    every round is recorded, the feedback names the previous problem, the program joins the
    library with its provenance, and the key is never written or printed."""
    train, held, ct, ch = split
    script = [(200, reply(p), {}) for p in (IMPORT_OS, LOOP, WRONG_SHAPE)]
    script += [
        (200, MALFORMED, {}),
        (200, reply(MIX, "the next token, special tokens the first"), {}),
    ]
    lib = UserLibrary(tmp_path / "lib")
    with ChatServer(script) as server:
        result = automate_head(
            1,
            8,
            backend=client(server.url),
            train_records=train,
            heldout_records=held,
            train_contexts=ct,
            heldout_contexts=ch,
            rounds=5,
            library=lib,
            out=tmp_path / "head",
            sandbox_limits=LIMITS,
        )
    assert len(server.requests) == 5
    statuses = []
    for r in range(5):
        rdir = tmp_path / "head" / f"round_{r}"
        assert (rdir / "prompt.txt").is_file() and (rdir / "reply.txt").is_file()
        sandbox = rdir / "sandbox.json"
        if sandbox.is_file():
            statuses.append(json.loads(sandbox.read_text())["status"])
        else:
            statuses.append(json.loads((rdir / "proposal.json").read_text())["status"])
    assert statuses == ["rejected", "timeout", "invalid_output", "unparseable", "ok"]
    assert (tmp_path / "head" / "round_4" / "program.py").read_text() == MIX.strip("\n")

    # each refinement request carries the previous reply and what was wrong with it
    feedback = [req["body"]["messages"][-1]["content"] for req in server.requests[1:]]
    assert "import of 'os' is not allowed" in feedback[0]
    assert "CPU time" in feedback[1] or "wall-clock" in feedback[1]
    assert "returned shape (2, 2)" in feedback[2]
    assert "not valid JSON" in feedback[3]
    roles = [m["role"] for m in server.requests[1]["body"]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["body"]["model"] == "test-model"
    assert "attention head 1.8" in first["body"]["messages"][1]["content"]
    assert first["headers"]["Authorization"] == f"Bearer {SECRET}"  # the key was sent ...

    # ... the program beats every built-in pattern on held-out sentences and joins the library
    assert result.status == "accepted" and result.accepted and result.rounds_run == 5
    assert result.builtin_name == "next_token"
    assert result.heldout_score + 0.01 <= result.builtin_score
    assert result.beats_smoothed and result.beats_mix and result.rule == "fair"
    assert result.heldout_score + 0.01 <= min(result.smoothed_score, result.mix_score)
    (entry,) = lib.entries
    assert entry.name == result.library_entry == "auto_all_minilm_l6_v2_L1H8"
    assert entry.hypothesis == "the next token, special tokens the first"
    prov = entry.provenance
    assert prov["backend"] == "openai-compatible" and prov["layer"] == 1 and prov["head"] == 8
    assert prov["heldout_score"] == result.heldout_score
    assert (
        prov["prompt_hash"]
        == json.loads((tmp_path / "head" / "round_4" / "proposal.json").read_text())["prompt_hash"]
    )
    assert lib.source(entry.name) == MIX.strip("\n")

    # ... and never written anywhere or printed
    out = capsys.readouterr()
    for text in (all_text(tmp_path), out.out, out.err, repr(client(server.url))):
        assert SECRET not in text
        assert SECRET[3:15] not in text
    assert KEY_ENV in json.dumps(client(server.url).describe())


def test_program_equal_to_a_builtin_is_validated_not_accepted(split, api_key, tmp_path):
    train, held, ct, ch = split
    with ChatServer([(200, reply(GOOD), {})]) as server:
        res = automate_head(
            0,
            2,
            backend=client(server.url),
            train_records=train,
            heldout_records=held,
            train_contexts=ct,
            heldout_contexts=ch,
            rounds=1,
            library=UserLibrary(tmp_path / "lib"),
            out=tmp_path / "h",
        )
    assert res.status == "validated" and not res.accepted and not res.beats_builtin
    assert res.builtin_name == "previous_token"
    assert res.heldout_score == res.builtin_score  # the same prediction, the same score
    assert UserLibrary(tmp_path / "lib").entries == []
    saved = json.loads((tmp_path / "h" / "validation.json").read_text())
    assert saved["heldout_score"] == res.heldout_score
    assert saved["builtin"] == ["previous_token", res.builtin_score]
    assert json.loads((tmp_path / "h" / "result.json").read_text())["status"] == "validated"


# ----------------------------------------------------------------------------- HTTP behaviour


def test_429_then_success_is_retried(split, api_key):
    train, _, ct, _ = split
    script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})] * 2
    script.append((200, reply(GOOD), {}))
    with ChatServer(script) as server:
        proposal = client(server.url, max_retries=3).propose(task_of(train, ct))
    assert len(server.requests) == 3
    assert proposal.status == "ok" and proposal.program == GOOD.strip("\n")
    assert proposal.raw_reply == reply(GOOD)


def test_429_forever_gives_rate_limit_error(split, api_key):
    train, _, ct, _ = split
    script = [(429, {"error": {"message": "quota"}}, {})] * 5
    with ChatServer(script) as server, pytest.raises(RateLimitError, match="429") as err:
        client(server.url, max_retries=2).complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3
    assert err.value.status == 429
    with ChatServer(script) as server:
        proposal = client(server.url, max_retries=1).propose(task_of(train, ct))
    assert proposal.status == "backend_error" and "rate limited" in proposal.message


def test_401_is_a_clear_error_without_the_key(split, api_key, tmp_path, capsys):
    train, held, ct, ch = split
    # a server that echoes part of the key back, as some providers do
    body = {"error": {"message": f"Incorrect API key provided: {SECRET[:8]}****{SECRET[-4:]}"}}
    with ChatServer([(401, body, {})] * 3) as server, pytest.raises(AuthenticationError) as err:
        automate_head(
            0,
            2,
            backend=client(server.url),
            train_records=train,
            heldout_records=held,
            train_contexts=ct,
            heldout_contexts=ch,
            out=tmp_path / "h",
        )
    assert len(server.requests) == 1  # not retried
    message = str(err.value)
    assert "HTTP 401" in message and KEY_ENV in message and "Fix:" in message
    assert err.value.status == 401
    assert SECRET not in message and SECRET[:8] not in message and SECRET[-4:] not in message
    assert not (tmp_path / "h" / "result.json").exists()  # the head is not finished
    captured = capsys.readouterr()
    assert SECRET not in all_text(tmp_path) + captured.out + captured.err


def test_missing_key_is_named(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with (
        ChatServer([(401, {"error": "no key"}, {})]) as server,
        pytest.raises(AuthenticationError, match=f"\\${KEY_ENV} is not set"),
    ):
        client(server.url).complete([{"role": "user", "content": "hi"}])
    assert "Authorization" not in server.requests[0]["headers"]


def test_5xx_and_timeouts_become_server_errors(split, api_key):
    with (
        ChatServer([(503, {"error": "down"}, {})] * 3) as server,
        pytest.raises(ServerError, match="failed after 3 attempts: HTTP 503"),
    ):
        client(server.url, max_retries=2).complete([{"role": "user", "content": "hi"}])
    with (
        ChatServer([(200, reply(GOOD), {})], delay=1.0) as server,
        pytest.raises(ServerError, match="no answer"),
    ):
        client(server.url, max_retries=0, timeout=0.2).complete([{"role": "user", "content": "x"}])
    with ChatServer([(404, {"error": {"message": "model not found"}}, {})]) as server:
        with pytest.raises(Exception, match="HTTP 404: model not found") as err:
            client(server.url).complete([{"role": "user", "content": "hi"}])
        assert not isinstance(err.value, ServerError | AuthenticationError)
        assert len(server.requests) == 1


def test_refinement_rounds_have_a_hard_bound(split, api_key):
    train, held, ct, ch = split
    programs = [
        f"import numpy as np\n\ndef pattern(ctx):\n    return np.eye(ctx.n, k=-1) + {i / 100} * "
        "np.tril(np.ones((ctx.n, ctx.n)))\n"
        for i in range(1, 40)
    ]
    with ChatServer([(200, reply(p), {}) for p in programs]) as server:
        res = automate_head(
            0,
            2,
            backend=client(server.url),
            train_records=train[:4],
            heldout_records=held[:4],
            train_contexts=ct[:4],
            heldout_contexts=ch[:4],
            rounds=100,
        )
    assert len(server.requests) == MAX_ROUNDS == res.rounds_run
    assert res.status == "validated"


def test_constructor_checks():
    with pytest.raises(ValueError, match="http:// or https://"):
        OpenAICompatible("localhost:8000", "m")
    assert make_backend("gemini").base_url.startswith("https://generativelanguage")
    assert make_backend("gemini").api_key_env == "GEMINI_API_KEY"
    assert make_backend("ollama", model="qwen2.5").describe()["api_key_env"] is None
    assert make_backend("openai", model=None, base_url=None).model == "gpt-4o-mini"
    assert make_backend("local", name=None).model_name == "smollm2"
    assert isinstance(make_backend("search", max_rules=2), ProgramSearch)
    assert isinstance(make_backend("local", max_new_tokens=8), LocalChatModel)
    with pytest.raises(ValueError, match="unknown backend"):
        make_backend("gpt5")


# ----------------------------------------------------------------------------- local model


def test_local_chat_model_failure_is_structured(smollm2, smollm2_records):
    """SmolLM2-135M rarely writes a usable program; whatever it writes is a structured result."""
    recs = smollm2_records[:4]
    task = task_of(recs, contexts_of(recs), layer=3, head=2)
    backend = LocalChatModel(bundle=smollm2, max_new_tokens=16)
    proposal = backend.propose(task)
    assert proposal.status in ("ok", "unparseable")
    assert proposal.raw_reply.startswith('{"hypotheses": ["')
    assert proposal.prompt and len(proposal.prompt_hash) == 64
    assert "For each sentence: its tokens" in proposal.prompt  # the compact prompt
    if proposal.status == "unparseable":  # 16 tokens cannot close the JSON object
        assert proposal.problems and "not valid JSON" in proposal.problems[0]
    # a prompt longer than the context is a backend error, not an exception
    tiny = LocalChatModel(bundle=smollm2, max_new_tokens=10**6)
    failed = tiny.propose(task)
    assert failed.status == "backend_error" and "exceeds" in failed.message


def test_program_search_backend_on_a_task(minilm_records):
    recs = minilm_records[:10]
    proposal = ProgramSearch().propose(task_of(recs, contexts_of(recs), layer=0, head=2))
    assert proposal.status == "ok"
    assert proposal.hypothesis == "Each token attends to the previous token."
    assert 'ctx.builtin("previous_token")' in proposal.program
    assert proposal.details["train_score"] < 0.02
    assert np.isclose(proposal.details["train_score"], proposal.details["single_score"])
