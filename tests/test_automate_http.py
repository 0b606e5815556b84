"""The HTTP chat backend against hostile and broken servers, all real and on loopback.

Two kinds of server: `http.server` (redirects, Retry-After, key echo) and raw TCP sockets for what
http.server cannot send (bytes that are not HTTP, a trickle, a reset, a truncated body).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from attn_tools.automate import (
    BackendError,
    OpenAICompatible,
    ServerError,
    UserLibrary,
    automate_head,
)
from attn_tools.automate.hypothesize.http_chat import retry_after_seconds, scrub_secret
from attn_tools.automate.sandbox import contexts_of

KEY_ENV = "ATTN_TOOLS_TEST_HTTP_KEY"
SECRET = "sk-live-Hq3VbN8mKx1PzR5tWy0J"
PROGRAM = "import numpy as np\n\ndef pattern(ctx):\n    return np.eye(ctx.n, k=-1)\n"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


def client(url: str, **kw) -> OpenAICompatible:
    opts = {"api_key_env": KEY_ENV, "model": "m", "backoff": 0.01, "timeout": 5.0}
    return OpenAICompatible(url, **{**opts, **kw})


def completion(content: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def reply_json(program: str = PROGRAM, hypothesis: str = "the previous token") -> str:
    return json.dumps(
        {"hypotheses": [hypothesis], "chosen": 0, "evidence": "e", "program": program}
    )


# ----------------------------------------------------------------------------- servers


class Scripted:
    """A threaded `http.server` on 127.0.0.1 that answers POSTs from a script of
    ``(status, json_body, headers)`` (``json_body`` may be a callable of the server's own URL)
    and records each request's path and headers."""

    def __init__(self, script: list[tuple[int, object, dict[str, str]]]):
        self.script = list(script)
        self.requests: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.requests.append({"path": self.path, "headers": dict(self.headers)})
                status, body, headers = (
                    owner.script.pop(0) if owner.script else (500, {"error": "over"}, {})
                )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v(owner) if callable(v) else v)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = self.root + "/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Raw:
    """A raw TCP server on 127.0.0.1: each connection is handed to ``handle(conn, log)``
    after the request has been read; ``log`` collects what the handler reports."""

    def __init__(self, handle: Callable[[socket.socket, list], None]):
        self.handle = handle
        self.log: list = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                # read the body too: closing with unread bytes makes the kernel send a reset,
                # which would turn a plain hang-up into a "connection reset" at random
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                while length and len(body) < int(length.group(1)):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
            with contextlib.suppress(OSError):
                self.handle(conn, self.log)

    def __enter__(self) -> Raw:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


# ----------------------------------------------------------------------------- redirects


def test_cross_origin_redirect_is_refused_and_the_key_never_leaves(api_key):
    """A 302 to another origin (another loopback port) is not followed: the other server gets
    no request at all, so neither the Authorization header nor the prompt reaches it."""
    with Scripted([(200, completion(reply_json()), {})]) as elsewhere:
        target = elsewhere.url + "/chat/completions"
        for status in (301, 302, 303, 307, 308):
            with Scripted([(status, {}, {"Location": target})]) as server:
                with pytest.raises(BackendError, match="redirected .* to another origin") as err:
                    client(server.url).complete(HI)
                assert err.value.status == status
                assert len(server.requests) == 1  # refused, not retried
                assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
                assert SECRET not in str(err.value)
        assert elsewhere.requests == []


def test_same_origin_redirect_is_followed_with_the_key(api_key):
    script = [
        (307, {}, {"Location": "/v2/chat/completions"}),
        (200, completion("hello"), {}),
    ]
    with Scripted(script) as server:
        assert client(server.url).complete(HI) == "hello"
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions", "/v2/chat/completions"]
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in server.requests)
    loop = [(308, {}, {"Location": "/v1/chat/completions"})] * 10
    with Scripted(loop) as server, pytest.raises(BackendError, match="redirected more than 3"):
        client(server.url).complete(HI)
    assert len(server.requests) == 4


# ----------------------------------------------------------------------------- Retry-After


def test_retry_after_values_are_validated():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 0.5 ") == 0.5
    for bad in ("nan", "NaN", "inf", "-inf", "-5", "1e999", "", "soon", "Wed, 99 Foo", None):
        assert retry_after_seconds(bad, now=now) is None, bad
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=now) == 30.0
    earlier = format_datetime(now - timedelta(hours=1), usegmt=True)
    assert retry_after_seconds(earlier, now=now) == 0.0
    # a huge delay is the caller's to clamp: the client never waits more than max_backoff
    backend = client("http://127.0.0.1:9/v1", max_backoff=0.25)
    assert backend._delay(0, "99999999999") == 0.25
    assert (
        backend._delay(0, format_datetime(datetime.now(timezone.utc) + timedelta(days=9))) == 0.25
    )
    assert 0.0 < backend._delay(0, "nan") <= 0.01  # ignored: the client's own backoff


@pytest.mark.parametrize("value", ["nan", "-3", "1e999", "Thu, 01 Jan 1970 00:00:00 GMT", "999999"])
def test_hostile_retry_after_does_not_crash_or_stall(api_key, value):
    script = [(503, {"error": "busy"}, {"Retry-After": value}), (200, completion("fine"), {})]
    with Scripted(script) as server:
        start = time.monotonic()
        assert client(server.url, max_backoff=0.2).complete(HI) == "fine"
        waited = time.monotonic() - start
    assert len(server.requests) == 2
    assert waited < 4.0  # 999999 s was clamped to max_backoff (0.2 s)


# ----------------------------------------------------------------------------- broken servers


def _not_http(conn: socket.socket, log: list) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n")


def _hang_up(conn: socket.socket, log: list) -> None:
    pass  # closes without a byte


def _reset(conn: socket.socket, log: list) -> None:
    # SO_LINGER with a zero timeout makes close() send a RST instead of a FIN
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _truncated(conn: socket.socket, log: list) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
    conn.sendall(b"Content-Length: 5000\r\n\r\n" + b'{"choices": [')


def _bad_header(conn: socket.socket, log: list) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100_000 + b"\r\n\r\n")


@pytest.mark.parametrize(
    "handler, name",
    [
        (_not_http, "BadStatusLine"),
        (_hang_up, "RemoteDisconnected"),
        (_reset, "Connection"),
        (_truncated, "IncompleteRead"),
        (_bad_header, "LineTooLong"),
    ],
)
def test_broken_servers_become_backend_errors(api_key, handler, name):
    with Raw(handler) as server, pytest.raises(ServerError, match="failed after 2 attempts") as err:
        client(server.url, max_retries=1).complete(HI)
    assert name in str(err.value)
    assert server.connections == 2  # retried once, then a clear error
    assert isinstance(err.value, BackendError)


def test_refused_connection_is_a_backend_error(api_key):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerError, match="ConnectionRefusedError"):
        client(f"http://127.0.0.1:{port}/v1", max_retries=0).complete(HI)


def _trickle(where: str) -> Callable[[socket.socket, list], None]:
    def handle(conn: socket.socket, log: list) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
        data = head + b" " * 400
        if where == "body":
            conn.sendall(head)
            data = data[len(head) :]
        sent = 0
        try:
            for b in data:  # one byte every 50 ms: 20 s for the whole answer
                conn.sendall(bytes([b]))
                sent += 1
                time.sleep(0.05)
        except OSError:
            pass
        log.append(sent)

    return handle


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_trickling_server_is_cut_at_the_deadline(api_key, where):
    """Each byte arrives well within any per-read timeout, but the attempt's wall-clock
    deadline (1 s) ends it: the server sees the client hang up after a few dozen bytes."""
    with Raw(_trickle(where)) as server:
        with pytest.raises(ServerError, match="before the deadline"):
            client(server.url, timeout=1.0, max_retries=0).complete(HI)
        for _ in range(200):  # the handler notices the hang-up on its next send
            if server.log:
                break
            time.sleep(0.05)
    (sent,) = server.log
    assert sent < 100  # of 400+ bytes: the client stopped reading long before the end


def test_deadline_bounds_retries_too(api_key):
    with Raw(_trickle("headers")) as server:
        backend = client(server.url, timeout=0.6, deadline=1.0, max_retries=50, backoff=0.3)
        with pytest.raises(ServerError, match="deadline"):
            backend.complete(HI)
    assert server.connections <= 2  # 50 retries allowed, the deadline stopped them


def test_constructor_refuses_bad_numbers():
    for kw in ({"timeout": 0}, {"timeout": float("nan")}, {"deadline": -1}, {"max_retries": -1}):
        with pytest.raises(ValueError, match="timeout|deadline|max_retries"):
            OpenAICompatible("http://127.0.0.1:9/v1", "m", **kw)


# ----------------------------------------------------------------------------- key echo


def test_scrub_is_case_insensitive_and_catches_fragments():
    text = (
        f"key {SECRET.upper()} and {SECRET.lower()}, partly {SECRET[:8]}****{SECRET[-4:]}, "
        f"as a header Authorization: Bearer abc.def and {SECRET[-4:].lower()}XXXXXXXX; "
        "previous_token stays"
    )
    out = scrub_secret(text, SECRET)
    low = out.lower()
    for piece in (SECRET, SECRET[:6], SECRET[-4:], "abc.def"):
        assert piece.lower() not in low, piece
    assert "previous_token stays" in out
    assert scrub_secret("nothing to hide", None) == "nothing to hide"


def all_text(folder: Path) -> str:
    return "\n".join(p.read_text("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


def test_an_echoed_key_is_written_nowhere(api_key, minilm_records, tmp_path):
    """The server puts the key (in other cases, and in fragments) into the hypothesis, the
    program and an error body; nothing written to disk or returned holds any of it."""
    train, held = minilm_records[:6], minilm_records[6:12]
    ct, ch = contexts_of(train), contexts_of(held)
    sneaky = PROGRAM.replace(
        "return", f"key = '{SECRET.upper()}'  # {SECRET[:8]}...{SECRET[-4:]}\n    return"
    )
    script = [
        (400, {"error": {"message": f"bad key {SECRET.lower()}"}}, {}),
        (200, completion(reply_json(sneaky, f"the previous token ({SECRET})")), {}),
    ]
    lib = UserLibrary(tmp_path / "lib")
    with Scripted(script) as server:
        backend = client(server.url)
        first = backend.propose(_task(train, ct))
        result = automate_head(
            0,
            2,
            backend=backend,
            train_records=train,
            heldout_records=held,
            train_contexts=ct,
            heldout_contexts=ch,
            rounds=1,
            library=lib,
            out=tmp_path / "head",
        )
    assert first.status == "backend_error" and "HTTP 400" in first.message
    assert result.status in ("validated", "accepted")  # the program still ran
    texts = [all_text(tmp_path), first.message, json.dumps(result.to_dict())]
    for text in texts:
        low = text.lower()
        assert SECRET.lower() not in low
        assert SECRET[:6].lower() not in low and SECRET[-4:].lower() not in low
    assert "***" in (tmp_path / "head" / "round_0" / "reply.txt").read_text()


def _task(records, contexts):
    from attn_tools.automate import HeadTask, head_examples

    return HeadTask(
        examples=head_examples(records, 0, 2),
        contexts=tuple(contexts),
        attention=tuple(r.head(0, 2) for r in records),
    )
