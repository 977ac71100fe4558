"""A real model provider for tests: an HTTP server on 127.0.0.1 that speaks the OpenAI API
(and Anthropic's /v1/messages) and answers from a deterministic oracle.

The oracle decides by the words of the last user message, never by its length or position,
so a student has to learn the words to agree with it. Tests can queue failures, slow the
stream down, and read back every request it received: any method, any path (unknown ones
get 404 and are recorded all the same), with its headers and body (sent whole or chunked).

    with Upstream() as up:
        client = openai.OpenAI(base_url=up.url, api_key="sk-test")
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Oracle = Callable[[list[dict[str, Any]]], str]

# Ticket routing by keyword: the first group with a word in the message wins.
TICKET_WORDS: list[tuple[str, tuple[str, ...]]] = [
    ("billing", ("refund", "charged", "invoice", "payment", "price", "bill", "subscription")),
    ("shipping", ("parcel", "delivery", "shipped", "courier", "tracking", "package")),
    ("technical", ("crash", "error", "login", "password", "bug", "freezes", "install")),
]
OTHER = "other"
MODEL = "gpt-test"


def user_text(messages: list[dict[str, Any]]) -> str:
    """The last user message's text (content parts joined)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def ticket_oracle(messages: list[dict[str, Any]]) -> str:
    """'billing', 'shipping', 'technical' or 'other', from the words of the user message."""
    words = set(re.findall(r"[a-z]+", user_text(messages).lower()))
    for label, keys in TICKET_WORDS:
        if words & set(keys):
            return label
    return OTHER


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    size: int = 0  # bytes of the body as received


@dataclass
class Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up before its answer (a gateway that timed out) is no error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Upstream:
    """Start with `with Upstream(...) as up:`; `up.url` ends in /v1 as the OpenAI SDK wants."""

    def __init__(
        self,
        oracle: Oracle = ticket_oracle,
        *,
        chunk_delay: float = 0.0,
        answer_delay: float = 0.0,
        models: tuple[str, ...] = (MODEL, "gpt-other"),
    ) -> None:
        self.oracle = oracle
        self.chunk_delay = chunk_delay  # seconds between streamed chunks
        self.answer_delay = answer_delay  # seconds before any answer
        self.models = models
        self.files: dict[str, bytes] = {}  # what GET /v1/files/<id>/content answers
        self.received: list[Received] = []
        self.failures: list[Failure] = []
        self._lock = threading.Lock()
        self._server = QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int, message: str = "upstream says no", **headers: str) -> None:
        """The next request gets this status with an OpenAI-style error body."""
        body = {"error": {"message": message, "type": "upstream_error", "code": status}}
        with self._lock:
            self.failures.append(Failure(status, body, headers))

    def chat_calls(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("/chat/completions")]

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(up: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without this, Nagle's algorithm and
        # the client's delayed ACK hold every keep-alive answer back ~40 ms.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _raw_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _body(self) -> Any:
            raw = self._raw_body()
            self._size = len(raw)
            try:
                return json.loads(raw) if raw else None
            except ValueError:
                return raw.decode("utf-8", "replace")

        def _record(self, body: Any) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            size = getattr(self, "_size", 0)
            with up._lock:
                up.received.append(Received(self.command, self.path, headers, body, size))

        def _not_found(self) -> None:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

        def _other(self) -> None:
            """PUT, PATCH, DELETE, HEAD, OPTIONS: recorded; DELETE of a model is answered."""
            self._record(self._body())
            if self._failure():
                return
            if self.command == "DELETE" and self.path.startswith("/v1/models/"):
                name = self.path.split("?")[0].rsplit("/", 1)[1]
                self._json(200, {"id": name, "object": "model", "deleted": True})
            else:
                self._not_found()

        do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _other

        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _failure(self) -> bool:
            with up._lock:
                failure = up.failures.pop(0) if up.failures else None
            if failure is None:
                return False
            self._json(failure.status, failure.body, failure.headers)
            return True

        def do_GET(self) -> None:
            self._record(self._body())
            if self._failure():
                return
            path = self.path.split("?")[0]
            parts = path.split("/")
            if path.rstrip("/") == "/v1/models":
                data = [
                    {"id": m, "object": "model", "created": 0, "owned_by": "test"}
                    for m in up.models
                ]
                self._json(200, {"object": "list", "data": data})
            elif len(parts) == 5 and parts[:3] == ["", "v1", "files"] and parts[4] == "content":
                self._file(parts[3])
            else:
                self._not_found()

        def _file(self, name: str) -> None:
            data = up.files.get(name)
            if data is None:
                self._not_found()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self._body()
            self._record(body)
            if self._failure():
                return
            if up.answer_delay:
                time.sleep(up.answer_delay)
            path = self.path.split("?")[0].rstrip("/")
            if path == "/v1/chat/completions" and isinstance(body, dict):
                self._chat(body)
            elif path == "/v1/messages" and isinstance(body, dict):
                self._messages(body)
            elif path == "/v1/embeddings" and isinstance(body, dict):
                self._embeddings(body)
            elif path == "/v1/files":
                self._json(200, {"id": f"file-{len(up.received)}", "bytes": self._size})
            else:
                self._not_found()

        def _chat(self, body: dict[str, Any]) -> None:
            messages = body.get("messages") or []
            answer = up.oracle(messages)
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
            completion_id = "chatcmpl-" + hashlib.sha1(json.dumps(body).encode()).hexdigest()[:12]
            model = body.get("model", MODEL)
            if not body.get("stream"):
                self._json(
                    200,
                    {
                        "id": completion_id,
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": len(answer.split()),
                            "total_tokens": prompt_tokens + len(answer.split()),
                        },
                    },
                )
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            pieces = re.findall(r"\S+\s*", answer) or [""]
            for i, piece in enumerate([None, *pieces]):
                delta = (
                    {"role": "assistant", "content": ""} if piece is None else {"content": piece}
                )
                chunk = {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                self._chunk(f"data: {json.dumps(chunk)}\n\n")
                if i and up.chunk_delay:
                    time.sleep(up.chunk_delay)
            last = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            self._chunk(f"data: {json.dumps(last)}\n\n")
            self._chunk("data: [DONE]\n\n")
            self._chunk("")

        def _chunk(self, text: str) -> None:
            data = text.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _messages(self, body: dict[str, Any]) -> None:
            answer = up.oracle(body.get("messages") or [])
            self._json(
                200,
                {
                    "id": "msg_" + hashlib.sha1(json.dumps(body).encode()).hexdigest()[:12],
                    "type": "message",
                    "role": "assistant",
                    "model": body.get("model", "claude-test"),
                    "content": [{"type": "text", "text": answer}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": 10, "output_tokens": len(answer.split())},
                },
            )

        def _embeddings(self, body: dict[str, Any]) -> None:
            texts = body.get("input")
            texts = [texts] if isinstance(texts, str) else list(texts or [])
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": [b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]],
                }
                for i, t in enumerate(texts)
            ]
            self._json(200, {"object": "list", "data": data, "model": body.get("model")})

    return Handler
