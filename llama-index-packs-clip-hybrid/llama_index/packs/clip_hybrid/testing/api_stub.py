"""An OpenAI-compatible HTTP stub on 127.0.0.1 (OpenAI, DashScope's compatible mode) for tests.

The real ``openai`` client (and anything built on it, like LlamaIndex's OpenAI LLM and
embedding) talks to :class:`ApiStub` as it would to the paid API: set
``base_url=stub.openai_base_url``. The stub records every request and can be told to
answer 429 (with Retry-After), 500, 401, malformed JSON, or to stall past a timeout.

Routes: ``POST /v1/chat/completions`` (image parts), ``POST /v1/embeddings``, and both under
``/compatible-mode/v1/`` (DashScope's OpenAI-compatible mode).

Example:
    >>> with ApiStub() as stub:  # doctest: +SKIP
    ...     stub.fail_next(2, status=429, retry_after=0.1)
    ...     client = openai.OpenAI(base_url=stub.openai_base_url, api_key="sk-test")
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stub received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float

    @property
    def image_urls(self) -> list[str]:
        """Image references in an OpenAI-style message body."""
        found: list[str] = []
        messages: list[Any] = self.body.get("messages") or [] if isinstance(self.body, dict) else []
        for message in messages:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for part in content:
                if part.get("type") == "image_url":
                    found.append(part["image_url"]["url"])
        return found


@dataclass
class Fault:
    """A scripted misbehaviour for the next matching request."""

    status: int = 500
    retry_after: float | None = None
    malformed: bool = False
    stall: float = 0.0
    path_prefix: str = ""
    code: str | None = None
    reset: bool = False  # close the connection (TCP RST) instead of answering


def default_caption(request: RecordedRequest) -> str:
    """A deterministic caption derived from the image bytes in the request."""
    digest = hashlib.sha256("".join(request.image_urls).encode()).hexdigest()[:12]
    return f"A test image {digest}."


def caption_table(
    table: dict[str, str], *, default: str = "Unknown.", answer: str = "An answer from the stub."
) -> Callable[[RecordedRequest], str]:
    """A caption function for :class:`ApiStub`: the image's sha256 -> its caption, so a
    test decides what the 'VLM' sees in each image. Several images: their captions joined
    with `` | ``; a text-only chat gets ``answer``."""

    def caption(request: RecordedRequest) -> str:
        if not request.image_urls:
            return answer
        texts = []
        for url in request.image_urls:
            data = base64.b64decode(url.split(",", 1)[1])
            texts.append(table.get(hashlib.sha256(data).hexdigest(), default))
        return " | ".join(texts)

    return caption


def hashed_embedding(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text`` (same text, same vector)."""
    rng = random.Random(hashlib.sha256(text.encode("utf-8")).digest())
    vec = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


@dataclass
class _State:
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    failure_rate: float = 0.0
    failure_status: int = 500
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    latency: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    expected_key: str | None = None
    caption: Callable[[RecordedRequest], str] = default_caption
    embed_dim: int = 1536
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)  # notified on every request


class ApiStub:
    """A threaded HTTP server on 127.0.0.1 speaking the OpenAI and DashScope protocols."""

    def __init__(
        self,
        *,
        embed_dim: int = 1536,
        latency: float = 0.0,
        expected_key: str | None = None,
        caption: Callable[[RecordedRequest], str] = default_caption,
        seed: int = 0,
    ) -> None:
        self.state = _State(
            embed_dim=embed_dim,
            latency=latency,
            expected_key=expected_key,
            caption=caption,
            rng=random.Random(seed),
        )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> ApiStub:
        handler = type("_Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ApiStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "call start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def dashscope_compatible_base_url(self) -> str:
        return f"{self.url}/compatible-mode/v1"

    # -- control -----------------------------------------------------------------------

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        retry_after: float | None = None,
        malformed: bool = False,
        stall: float = 0.0,
        path_prefix: str = "",
        code: str | None = None,
        reset: bool = False,
    ) -> None:
        """Make the next ``count`` requests (under ``path_prefix``) misbehave; ``code`` is
        the error code in the body (e.g. ``insufficient_quota`` with a 429); ``reset``
        drops the connection with a TCP reset and no answer."""
        with self.state.lock:
            for _ in range(count):
                self.state.faults.append(
                    Fault(status, retry_after, malformed, stall, path_prefix, code, reset)
                )

    def set_failure_rate(self, rate: float, *, status: int = 500) -> None:
        """Fail a seeded random fraction of requests with ``status``."""
        with self.state.lock:
            self.state.failure_rate = rate
            self.state.failure_status = status

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    def wait_for_requests(
        self, count: int, *, timeout: float = 120.0, unless: Callable[[], bool] | None = None
    ) -> bool:
        """Block until ``count`` requests have arrived in all, or ``unless()`` is true (checked
        on every request and on :meth:`wake`). False on timeout."""
        stop = unless or (lambda: False)
        with self.state.arrived:
            return self.state.arrived.wait_for(
                lambda: len(self.state.requests) >= count or stop(), timeout
            )

    def wake(self) -> None:
        """Make :meth:`wait_for_requests` look at its ``unless`` again."""
        with self.state.arrived:
            self.state.arrived.notify_all()

    @property
    def max_in_flight(self) -> int:
        """The most requests that were being served at the same moment."""
        return self.state.max_in_flight

    def reset(self) -> None:
        with self.state.lock:
            self.state.requests.clear()
            self.state.faults.clear()
            self.state.failure_rate = 0.0
            self.state.max_in_flight = 0


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
    # and the client's delayed ACK add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        request = RecordedRequest(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.time(),
        )
        state = self.state
        with state.lock:
            state.requests.append(request)
            state.arrived.notify_all()
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            fault = self._take_fault(request.path)
        try:
            self._serve(request, fault)
        finally:
            with state.lock:
                state.in_flight -= 1

    def _take_fault(self, path: str) -> Fault | None:
        state = self.state
        for i, fault in enumerate(state.faults):
            if path.startswith(fault.path_prefix):
                del state.faults[i]
                return fault
        if state.failure_rate and state.rng.random() < state.failure_rate:
            return Fault(status=state.failure_status)
        return None

    def _serve(self, request: RecordedRequest, fault: Fault | None) -> None:
        state = self.state
        if state.latency:
            time.sleep(state.latency)
        if fault is not None and fault.stall:
            time.sleep(fault.stall)
        if state.expected_key is not None:
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {state.expected_key}":
                shown = auth.removeprefix("Bearer ")  # echoed, as some proxies do
                return self._error(401, "invalid_api_key", f"Incorrect API key provided: {shown}")
        if fault is not None and fault.reset:
            # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer"
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return None
        if fault is not None and fault.malformed:
            return self._send(200, b'{"id": "broken", "choices": [', {})
        if fault is not None and fault.status >= 400:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            code = fault.code or ("rate_limit_exceeded" if fault.status == 429 else "server_error")
            return self._error(fault.status, code, f"Injected {fault.status}.", headers)
        if request.path.endswith("/chat/completions"):
            return self._chat(request)
        if request.path.endswith("/embeddings"):
            return self._embeddings(request)
        return self._error(404, "not_found", f"No route {request.path}.")

    # -- responses ---------------------------------------------------------------------

    def _chat(self, request: RecordedRequest) -> None:
        text = self.state.caption(request)
        body = request.body if isinstance(request.body, dict) else {}
        prompt_tokens = 85 * max(1, len(request.image_urls)) + 20
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "gpt-4o"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": max(1, len(text.split())),
                "total_tokens": prompt_tokens + max(1, len(text.split())),
            },
        }
        self._json(200, payload)

    def _embeddings(self, request: RecordedRequest) -> None:
        body = request.body if isinstance(request.body, dict) else {}
        inputs = body.get("input", [])
        if isinstance(inputs, str):
            inputs = [inputs]
        dim = int(body.get("dimensions") or self.state.embed_dim)
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(inputs):
            vec = hashed_embedding(str(text), dim)
            emb: Any = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode() if as_b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(str(t).split()) for t in inputs)
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "text-embedding-3-small"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        payload = {"error": {"message": message, "type": code, "param": None, "code": code}}
        self._json(status, payload, headers or {})

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers or {})

    def _send(self, status: int, raw: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(raw)  # the client may have given up (timeout tests)
