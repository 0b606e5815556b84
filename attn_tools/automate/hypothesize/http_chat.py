"""`OpenAICompatible`: chat completions over HTTP, hardened against the servers it talks to.

Works with OpenAI, Gemini's OpenAI-compatible endpoint, Ollama, vLLM and llama.cpp servers. What
a hostile or broken server cannot do:

- **Take the key elsewhere.** Redirects are followed only within the same origin (scheme, host
  and port), where the key was going anyway; a redirect to another origin is refused with a
  `BackendError` (nothing is sent there: neither the key nor the prompt). Decision: refusing is
  safer than following without the header, because the prompt itself (the head's examples) would
  also go to a place the user never named.
- **Hold the call forever.** Every attempt has one wall-clock deadline (``timeout``) that covers
  connecting, sending, the headers and the body: a watchdog shuts the socket down when it
  passes, so a server trickling a byte a second ends the attempt on time. ``deadline`` bounds the
  whole `complete` call, retries and waits included.
- **Crash the run.** Every `http.client` and socket failure (reset, disconnect, a truncated body,
  bytes that are not HTTP, TLS errors, timeouts) becomes a `BackendError`; a ``Retry-After`` is
  read as seconds or an HTTP date, and anything else (``nan``, negative, huge) is ignored or
  clamped to ``max_backoff``; bodies over 8 MiB are refused.
- **Make us write the key.** `OpenAICompatible.scrub` removes the key case-insensitively, and any
  token holding its first six or last four characters, from errors, replies and everything the
  run writes (the reply is scrubbed before it is parsed).
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import math
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from attn_tools.automate.hypothesize.base import (
    AuthenticationError,
    BackendError,
    ChatHypothesizer,
    RateLimitError,
    ServerError,
)
from attn_tools.patterns.base import Pattern

__all__ = ["MAX_BODY_BYTES", "OpenAICompatible", "retry_after_seconds", "scrub_secret"]

#: the largest response body read; a chat completion is far smaller.
MAX_BODY_BYTES = 8 * 1024 * 1024
_MAX_REDIRECTS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
_KEYISH = re.compile(r"[A-Za-z0-9_\-\.\*]{8,}")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")


# ----------------------------------------------------------------------------- pure helpers


def scrub_secret(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` removed, case-insensitively, and with every key-like token
    (8+ characters of ``[A-Za-z0-9_-.*]``) that holds its first six or last four characters
    masked too (servers echo keys partly, e.g. ``sk-test-****k2Wd``); ``Bearer <token>`` is
    always masked."""
    text = _BEARER.sub(r"\1***", text)
    if not secret:
        return text
    text = re.sub(re.escape(secret), "***", text, flags=re.IGNORECASE)
    if len(secret) < 8:
        return text
    head, tail = secret[:6].lower(), secret[-4:].lower()

    def mask(m: re.Match[str]) -> str:
        token = m.group(0).lower()
        return "***" if head in token or tail in token else m.group(0)

    return _KEYISH.sub(mask, text)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delta-seconds or an HTTP date.

    None for anything unusable (missing, ``nan``, ``inf``, negative, words, an unparseable
    date); a date in the past gives 0. The caller clamps the result to its own maximum.
    """
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes


class _NoAnswer(Exception):
    """One attempt got no complete HTTP answer (retried)."""


def _abort(conn: http.client.HTTPConnection, fired: threading.Event) -> None:
    # shutting the socket down wakes a recv blocked in http.client, wherever it is
    fired.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _post_once(url: str, body: bytes, headers: dict[str, str], deadline: float) -> _Response:
    """One POST with a hard wall-clock ``deadline`` (a `time.monotonic` value)."""
    parts = urllib.parse.urlsplit(url)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _NoAnswer("no time left before the deadline")
    host, port = parts.hostname or "", parts.port
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=remaining, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, port, timeout=remaining)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    fired = threading.Event()
    watchdog = threading.Timer(remaining, _abort, args=(conn, fired))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        chunks, size = [], 0
        while True:
            chunk = resp.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise BackendError(
                    f"{url} sent more than {MAX_BODY_BYTES} bytes; a chat completion is far "
                    "smaller. Fix: check base_url points at a chat-completions API."
                )
            chunks.append(chunk)
        # a shut-down socket reads as a clean end of headers or body, so ask the watchdog
        if fired.is_set():
            raise TimeoutError("cut at the deadline")
        if resp.length:  # fewer bytes than Content-Length said, then the end of the stream
            raise http.client.IncompleteRead(b"".join(chunks), resp.length)
        return _Response(
            resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"".join(chunks)
        )
    except BackendError:
        raise
    except (http.client.HTTPException, OSError, ValueError) as exc:
        if fired.is_set():
            raise _NoAnswer("no complete answer before the deadline") from None
        raise _NoAnswer(f"{type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
        conn.close()


def _error_detail(body: bytes, reason: str) -> str:
    raw = body[:4096].decode("utf-8", "replace")
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return raw.strip()[:300] or reason
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err)[:300]


# ----------------------------------------------------------------------------- the backend


class OpenAICompatible(ChatHypothesizer):
    """Chat completions over HTTP (``POST {base_url}/chat/completions``).

    Works with OpenAI (``https://api.openai.com/v1``), Gemini's OpenAI-compatible endpoint
    (``https://generativelanguage.googleapis.com/v1beta/openai``), Ollama
    (``http://localhost:11434/v1``), vLLM and llama.cpp servers.

    Args:
        base_url: the API root, up to and excluding ``/chat/completions``.
        model: the model name the server expects.
        api_key_env: the environment variable that holds the key (read at each call, never
            stored); None for servers without keys. A missing variable sends no key.
        timeout: wall-clock seconds per HTTP attempt, everything included (connect, send,
            headers, body).
        deadline: wall-clock seconds for one `complete` call, retries and waits included (None:
            bounded by ``timeout``, ``max_retries`` and ``max_backoff`` alone).
        max_retries: retries after a 408, 429, a 5xx, a timeout or a failed connection.
        backoff: first retry delay in seconds, doubled each retry (with jitter), at most
            ``max_backoff``; a valid ``Retry-After`` is honoured up to ``max_backoff``.
        temperature, max_tokens: sampling settings sent with each request.
        library, max_sentences, max_pairs: prompt settings (see `build_prompt`).

    Example:
        >>> backend = OpenAICompatible("https://api.openai.com/v1", "gpt-4o-mini")
        >>> # export OPENAI_API_KEY=... in the shell that starts Jupyter
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        model: str = "gpt-4o-mini",
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        deadline: float | None = None,
        max_retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        library: Sequence[str | Pattern] | None = None,
        max_sentences: int | None = 12,
        max_pairs: int | None = None,
    ) -> None:
        super().__init__(library=library, max_sentences=max_sentences, max_pairs=max_pairs)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must start with http:// or https://, got {base_url!r}. "
                "Fix: e.g. https://api.openai.com/v1 or http://localhost:11434/v1"
            )
        numbers = {"timeout": timeout, "backoff": backoff, "max_backoff": max_backoff}
        if deadline is not None:
            numbers["deadline"] = deadline
        for label, value in numbers.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
        if timeout <= 0 or (deadline is not None and deadline <= 0) or int(max_retries) < 0:
            raise ValueError(
                f"timeout and deadline must be > 0 and max_retries >= 0 (got timeout={timeout}, "
                f"deadline={deadline}, max_retries={max_retries})"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.deadline = None if deadline is None else float(deadline)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.temperature = temperature
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return (
            f"OpenAICompatible(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "timeout": self.timeout,
            "deadline": self.deadline,
            "max_retries": self.max_retries,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    # -- secrets

    def _key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        return key.strip() if key and key.strip() else None

    def scrub(self, text: str) -> str:
        """``text`` without the key (see `scrub_secret`)."""
        return scrub_secret(text, self._key())

    # -- HTTP

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        asked = retry_after_seconds(retry_after)
        if asked is not None:
            return min(asked, self.max_backoff)
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * (0.5 + random.random() / 2)

    def complete(self, messages: list[dict[str, str]]) -> str:
        try:
            return self._complete(messages)
        except BackendError as exc:
            # one place for every message: whatever a server put in it, the key does not leave
            exc.args = (self.scrub(str(exc)),)
            raise

    def _post(self, url: str, body: bytes, headers: dict[str, str], end: float) -> _Response:
        """POST, following same-origin redirects only (a limited number of them)."""
        start = _origin(url)
        for _ in range(_MAX_REDIRECTS + 1):
            resp = _post_once(url, body, headers, min(end, time.monotonic() + self.timeout))
            if resp.status not in _REDIRECTS:
                return resp
            target = urllib.parse.urljoin(url, resp.headers.get("location", ""))
            if _origin(target) != start:
                scheme, host, port = _origin(target)
                raise BackendError(
                    f"{url} redirected (HTTP {resp.status}) to another origin, "
                    f"{scheme}://{host}:{port}; not followed, so neither the key nor the prompt "
                    "went there. Fix: set base_url to the address the provider documents.",
                    status=resp.status,
                )
            url = target
        raise BackendError(f"{url} redirected more than {_MAX_REDIRECTS} times; not followed.")

    def _complete(self, messages: list[dict[str, str]]) -> str:
        url = f"{self.base_url}/chat/completions"
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        budget = self.deadline if self.deadline is not None else math.inf
        end = time.monotonic() + budget
        last, last_status, retry_after = "", None, None
        attempts = 0
        for attempt in range(self.max_retries + 1):
            if attempt:
                wait = self._delay(attempt - 1, retry_after)
                if time.monotonic() + wait >= end:
                    last += f"; the deadline of {self.deadline} s left no time for another try"
                    break
                time.sleep(wait)
            attempts += 1
            retry_after = None
            try:
                resp = self._post(url, body, headers, end)
            except _NoAnswer as exc:
                last, last_status = f"no answer ({exc})", None
                continue
            status = resp.status
            if 200 <= status < 300:
                return self._content(resp.body, url)
            detail = _error_detail(resp.body, http.client.responses.get(status, ""))
            retry_after = resp.headers.get("retry-after")
            if status in (401, 403):
                raise AuthenticationError(
                    f"{url} refused the request with HTTP {status} ({detail}); "
                    f"{self._key_situation(key)}. Fix: export "
                    f"{self.api_key_env or 'YOUR_KEY_VARIABLE'}=<a valid key for this endpoint> "
                    "before starting Python, or pass api_key_env=.",
                    status=status,
                )
            if status in (408, 429) or status >= 500:
                last, last_status = f"HTTP {status}: {detail}", status
                continue
            raise BackendError(
                f"{url} answered HTTP {status}: {detail}. Fix: check the model name "
                f"({self.model!r}) and base_url.",
                status=status,
            )
        if last_status == 429:
            raise RateLimitError(
                f"{url} kept answering 429 (rate limited) after {attempts} attempts: {last}. "
                "Fix: wait, lower the request rate, or raise max_retries/backoff.",
                status=429,
            )
        raise ServerError(
            f"{url} failed after {attempts} attempts: {last}. Fix: check that the server is up "
            "and reachable, or raise timeout/max_retries.",
            status=last_status,
        )

    def _key_situation(self, key: str | None) -> str:
        if not self.api_key_env:
            return "no key was sent (api_key_env=None)"
        if key is None:
            return f"${self.api_key_env} is not set"
        return f"the key in ${self.api_key_env}"

    def _content(self, payload: bytes, url: str) -> str:
        try:
            data = json.loads(payload.decode("utf-8"))
            content = data["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError):
            snippet = payload[:200].decode("utf-8", "replace")
            raise BackendError(
                f"{url} returned something that is not a chat completion: {snippet!r}"
            ) from None
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise BackendError(f"{url} returned a message without text content")
        return content
