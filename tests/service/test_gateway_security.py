"""The gateway against hostile clients: the local token where stillroom holds a key, only the
routes of its table, bodies and heads that are too big or too slow, web pages, websockets,
and secrets in what it says. Real sockets throughout, in front of a recording upstream."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from daemon_harness import DaemonHarness, free_port, run_cli, wait_until
from gateway_client import TOKEN, Served, config_for, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from upstream import Upstream

from stillroom.config import Config, UpstreamConfig
from stillroom.errors import ConfigError
from stillroom.service.gateway import create_app
from stillroom.service.gateway.routes import RouteTable, path_problem
from stillroom.store import Store
from stillroom.urls import public_url

TICKET = [{"role": "user", "content": "I was charged twice for my subscription"}]
CHAT = json.dumps({"model": "gpt-test", "messages": TICKET}).encode()
CLAUDE = json.dumps({"model": "claude-test", "max_tokens": 5, "messages": TICKET}).encode()
JSON = {"content-type": "application/json"}
KEYS = {
    "openai": UpstreamConfig(base_url="", api_key="sk-stored-openai"),
    "anthropic": UpstreamConfig(base_url="", api_key="sk-stored-anthropic"),
}


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream() as upstream:
        yield upstream


def keyed(up: Upstream, *providers: str, **gateway: Any) -> Config:
    """The test config with stored keys for `providers`."""
    urls = {"openai": up.url, "anthropic": up.root}
    stored = {p: KEYS[p].model_copy(update={"base_url": urls[p]}) for p in providers}
    return config_for(up, **stored, **gateway)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        whole, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            whole, rest = whole + rest[:size], rest[size + 2 :]
        body = whole
    return Reply(int(lines[0].split(" ")[1]), headers, body)


def raw(port: int, request: bytes, timeout: float = 10) -> Reply:
    """Send bytes exactly as given (no client normalizes the path) and read to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data, "the gateway closed the connection without an answer"
    return parse(data)


def request(
    port: int,
    method: str,
    target: str | bytes,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Reply:
    target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"host: 127.0.0.1:{port}".encode()]
    lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
    if body:
        lines.append(f"content-length: {len(body)}".encode())
    lines.append(b"connection: close")
    return raw(port, b"\r\n".join(lines) + b"\r\n\r\n" + body)


def leaked(up: Upstream) -> list[tuple[str, str]]:
    """Headers the upstream received that carry the local token."""
    return [(k, v) for r in up.received for k, v in r.headers.items() if TOKEN in v]


# The token where stillroom holds a key --------------------------------------------------


def test_with_a_stored_key_every_call_needs_the_local_token(up: Upstream, store: Store) -> None:
    with serve(keyed(up, "openai", "anthropic"), store) as (url, port):
        gw = Served(url, port, up, store)
        with pytest.raises(openai.AuthenticationError) as caught:
            gw.client(api_key="sk-someone-elses").chat.completions.create(
                model="gpt-test", messages=TICKET
            )
        error = caught.value.response.json()["error"]
        assert error["code"] == "token_required" and "`stillroom token`" in error["message"]
        assert caught.value.response.headers["www-authenticate"] == "Bearer"
        for headers in ({}, {"x-api-key": "sk-ant-mine"}, {"authorization": "Bearer nope"}):
            refused = request(port, "POST", "/v1/messages", {**headers, **JSON}, CLAUDE)
            assert refused.status == 401
            assert refused.json()["type"] == "error"  # Anthropic's shape for Anthropic's route
            assert refused.json()["error"]["type"] == "authentication_error"
        assert request(port, "GET", "/v1/models").status == 401
        assert up.received == []

        reply = gw.client(api_key=TOKEN).chat.completions.create(model="gpt-test", messages=TICKET)
        assert reply.choices[0].message.content == "billing"
        for headers in (
            {"authorization": f"bearer {TOKEN}"},
            {"authorization": f"BEARER  {TOKEN}"},
            {"x-api-key": TOKEN},
            {"api-key": TOKEN},
            {"x-stillroom-token": TOKEN},
        ):
            reply = request(port, "POST", "/v1/chat/completions", {**headers, **JSON}, CHAT)
            assert reply.status == 200, headers
            assert up.received[-1].headers["authorization"] == "Bearer sk-stored-openai"
        claude = request(port, "POST", "/v1/messages", {"x-api-key": TOKEN, **JSON}, CLAUDE)
        assert claude.status == 200 and claude.json()["content"][0]["text"] == "billing"
    assert len(up.received) == 7
    assert up.received[-1].headers["x-api-key"] == "sk-stored-anthropic"
    assert leaked(up) == []


def test_a_stored_key_guards_only_its_own_providers_routes(up: Upstream, store: Store) -> None:
    with serve(keyed(up, "anthropic"), store) as (url, port):
        gw = Served(url, port, up, store)
        assert gw.client(api_key="sk-own").models.list().data  # no OpenAI key stored: passes
        assert up.received[-1].headers["authorization"] == "Bearer sk-own"
        claude = {"anthropic-version": "2023-06-01", "x-api-key": "sk-own"}
        assert request(port, "GET", "/v1/models", claude).status == 401  # Anthropic's models
        assert request(port, "GET", "/v1/models", {**claude, "x-api-key": TOKEN}).status == 200
    assert [r.headers.get("x-api-key") for r in up.received] == [None, "sk-stored-anthropic"]


def test_the_token_never_goes_upstream_and_a_clients_own_key_does(
    up: Upstream, store: Store
) -> None:
    with serve(config_for(up), store) as (_url, port):
        for headers in (
            {"authorization": f"bearer {TOKEN}"},
            {"authorization": f"Bearer {TOKEN}", "x-api-key": TOKEN, "api-key": TOKEN},
            {"x-stillroom-token": TOKEN, "x-custom": f"see {TOKEN}"},
        ):
            assert request(port, "GET", "/v1/models", headers).status == 200
            assert request(port, "POST", "/v1/messages", {**headers, **JSON}, CLAUDE).status == 200
        own = {"authorization": "Bearer sk-own", "x-api-key": "sk-ant-own"}
        assert request(port, "POST", "/v1/messages", {**own, **JSON}, CLAUDE).status == 200
    assert len(up.received) == 7 and leaked(up) == []
    assert up.received[-1].headers["authorization"] == "Bearer sk-own"
    assert up.received[-1].headers["x-api-key"] == "sk-ant-own"


def test_stillroom_token_prints_the_token_the_gateway_checks(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = run_cli("token", home=home)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip()
    assert len(token) >= 40 and first.stdout == token + "\n"
    assert (home / "config" / "token").read_text().strip() == token
    assert os.stat(home / "config" / "token").st_mode & 0o777 == 0o600
    assert run_cli("token", home=home).stdout.strip() == token


# Only the routes of the table ------------------------------------------------------------


NO_ROUTES = [  # method, path, status, whether in Anthropic's error shape
    ("GET", "/", 404, False),
    ("GET", "/v2/models", 404, False),
    ("POST", "/v1/admin/keys", 404, False),
    ("POST", "/v1/chat/completion", 404, False),
    ("GET", "/v1/models/", 404, False),
    ("GET", "/v1/realtime", 404, False),
    ("POST", "/v1/messages/other", 404, True),
    ("GET", "/v1/messages", 405, True),
    ("DELETE", "/v1/chat/completions", 405, False),
    ("HEAD", "/v1/models", 405, False),
    ("TRACE", "/v1/models", 405, False),
    ("POST", "/stillroom/health", 405, False),
]


def test_what_is_no_route_is_refused_in_the_providers_shape(up: Upstream, store: Store) -> None:
    with serve(config_for(up), store) as (_url, port):
        for method, path, status, anthropic in NO_ROUTES:
            reply = request(port, method, path, JSON, CHAT if method == "POST" else b"")
            assert reply.status == status, (method, path)
            if method != "HEAD":
                body = reply.json()
                assert (body.get("type") == "error") is anthropic and "message" in body["error"]
            if status == 405:
                assert reply.headers["allow"], path
    assert up.received == []


BAD_PATHS = [
    "/v1/../v1/models",
    "/v1/./models",
    "/v1/models/..",
    "/v1/%2e%2e/v1/models",
    "/v1/%2E%2e/models",
    "/v1/.%2E/models",
    "/v1/models%2fgpt-test",
    "/v1/models%2Fgpt-test",
    "/v1/models%5cgpt-test",
    "/v1/models%5Cgpt",
    "/v1/models\\gpt-test",
    "/v1//models",
    "//v1/models",
    "/v1/%252e%252e/models",
    "/v1/models/%252F",
    "/v1/models/%00",
    "/v1/models/gpt%20test",
    "/v1/models/gpt%0d%0ax",
]


def test_paths_that_could_mean_another_path_are_400(up: Upstream, store: Store) -> None:
    with serve(config_for(up), store) as (_url, port):
        for path in BAD_PATHS:
            reply = request(port, "GET", path)
            assert reply.status == 400, path
            assert reply.json()["error"]["code"] == "invalid_path", path
    assert up.received == []


def test_the_upstream_url_comes_from_the_route_alone(up: Upstream, store: Store) -> None:
    with serve(config_for(up), store) as (_url, port):
        absolute = request(port, "GET", "http://evil.example:81/v1/models?limit=2&q=a%20b")
        model = request(port, "GET", "/v1/models/ft%3Agpt-test%3Aorg")
    assert absolute.status == 200
    assert [r.path for r in up.received] == [
        "/v1/models?limit=2&q=a+b",
        "/v1/models/ft:gpt-test:org",
    ]
    assert model.status == 404  # the upstream's own answer, relayed


def test_extra_routes_come_from_the_config_and_are_checked(up: Upstream, store: Store) -> None:
    extra = {"path": "/v1/vendor/*/run", "methods": ["PUT"], "content_types": ["text/csv"]}
    config = config_for(up, extra_routes=[{**extra, "max_mb": 0.001}])
    with serve(config, store) as (_url, port):
        csv = {"content-type": "text/csv"}
        assert request(port, "PUT", "/v1/vendor/acme/run", csv, b"a,b\n1,2\n").status == 404
        assert request(port, "PUT", "/v1/vendor/acme/run", csv, b"x" * 2000).status == 413
        assert request(port, "PUT", "/v1/vendor/acme/run", JSON, b"{}").status == 415
        assert request(port, "POST", "/v1/vendor/acme/run", csv, b"a").status == 405
        assert request(port, "PUT", "/v1/vendor/a/b/run", csv, b"a").status == 404
    assert [(r.method, r.path, r.body) for r in up.received] == [
        ("PUT", "/v1/vendor/acme/run", "a,b\n1,2\n")
    ]
    for bad in (
        {"path": "/v1/../admin"},
        {"path": "/v2/x"},
        {"path": "/v1/**/x"},
        {"path": "/v1/a b"},
        {"path": "/v1/x", "methods": ["TRACE"]},
        {"path": "/v1/x", "host": "evil.example"},
    ):
        with pytest.raises(ConfigError):
            Config.from_data({"gateway": {"extra_routes": [bad]}})


# Limits: body size, time, concurrency, response size ------------------------------------


def head(port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@contextmanager
def flood(port: int, path: str, headers: dict[str, str], chunk: bytes) -> Iterator[Any]:
    """A client that sends the head, then `chunk` after `chunk` until the gateway stops it;
    yields a function that waits for the gateway's answer (and how much was sent by then)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head(port, path, headers))
    sent = [0]
    stop = threading.Event()

    def push() -> None:
        try:
            while not stop.is_set():
                sock.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass

    pusher = threading.Thread(target=push, name="flood")
    pusher.start()

    def answer() -> tuple[Reply, int]:
        data = b""
        try:
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        except OSError:
            pass
        return parse(data), sent[0]

    try:
        yield answer
    finally:
        stop.set()
        sock.close()
        pusher.join(10)


def chunk_of(size: int) -> bytes:
    return f"{size:x}\r\n".encode() + b"x" * size + b"\r\n"


def test_a_body_over_the_limit_is_413_before_it_is_read(up: Upstream, store: Store) -> None:
    config = config_for(up, max_body_mb=1, request_timeout_seconds=20)
    with serve(config, store) as (_url, port):
        announced = {**JSON, "content-length": str(200 * 1024 * 1024)}
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head(port, "/v1/chat/completions", announced) + b"{")
            started = time.monotonic()
            reply = parse(sock.recv(65536))
        assert reply.status == 413 and time.monotonic() - started < 2
        assert reply.headers["connection"] == "close"
        assert "limit" in reply.json()["error"]["message"]

        chunked = {**JSON, "transfer-encoding": "chunked"}
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/messages"):
            with flood(port, path, chunked, chunk_of(64 * 1024)) as answer:
                reply, sent = answer()
            assert reply.status == 413, path
            assert 1024 * 1024 <= sent < 64 * 1024 * 1024  # read up to the limit, then cut off
        upload = {"content-type": "multipart/form-data; boundary=x", "content-length": str(2**40)}
        assert request(port, "POST", "/v1/files", upload).status == 413
    assert up.received == []


def trickle(sock: socket.socket, data: bytes) -> tuple[bytes, float]:
    """Send `data` one byte a second (nothing, if empty) until the gateway answers or closes
    the connection: what it said (b"" for a close) and after how many seconds."""
    started = time.monotonic()
    sock.settimeout(1.0)
    for byte in data or b"\0" * 10:
        try:
            if data:
                sock.sendall(bytes([byte]))
            got = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            got = b""
        return got, time.monotonic() - started
    return b"(still open)", time.monotonic() - started


def test_a_client_that_trickles_its_request_is_cut_off_at_the_deadline(
    up: Upstream, store: Store
) -> None:
    with serve(config_for(up, request_timeout_seconds=2), store) as (url, port):
        clients = {
            "idle": b"",
            "head": f"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n".encode(),
            "body": b"{" * 100,
        }
        socks = {name: socket.create_connection(("127.0.0.1", port)) for name in clients}
        body_head = head(port, "/v1/chat/completions", {**JSON, "content-length": "100"})
        socks["body"].sendall(body_head)
        ended: dict[str, tuple[bytes, float]] = {}
        threads = [
            threading.Thread(
                target=lambda n=name: ended.__setitem__(n, trickle(socks[n], clients[n]))
            )
            for name in clients
        ]
        for thread in threads:
            thread.start()
        served = []
        for _ in range(4):  # meanwhile, everyone else is served as usual
            served.append(Served(url, port, up, store).client().models.list().data[0].id)
            time.sleep(0.3)
        for thread in threads:
            thread.join(15)
        for sock in socks.values():
            sock.close()
    assert served == ["gpt-test"] * 4
    assert ended["idle"][0] == ended["head"][0] == b""  # closed
    assert ended["body"][0].startswith(b"HTTP/1.1 408 ")
    assert all(1.5 < seconds < 3.5 for _, seconds in ended.values()), ended
    assert [r.path for r in up.received] == ["/v1/models"] * 4


def test_an_upload_may_outlast_the_deadline_while_it_moves_but_not_stall(
    up: Upstream, store: Store
) -> None:
    form = {"content-type": "multipart/form-data; boundary=b", "content-length": "40"}
    with serve(config_for(up, request_timeout_seconds=1.5), store) as (_url, port):
        replies = []
        for pause in (0.6, 2.5):  # four parts 0.6 s apart take 2.4 s: past the deadline
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(head(port, "/v1/files", form))
                for _ in range(4):
                    try:
                        sock.sendall(b"x" * 10)
                    except OSError:  # answered and closed already
                        break
                    time.sleep(pause)
                replies.append(parse(sock.recv(65536)).status)
    assert replies == [200, 408]
    # The stalled upload was broken off upstream too: 10 of its announced 40 bytes.
    assert [r.size for r in up.received] == [40, 10]


def test_past_max_concurrent_requests_the_gateway_says_503_at_once(store: Store) -> None:
    with (
        Upstream(answer_delay=1.5) as up,
        serve(config_for(up, max_concurrent=2), store) as (url, port),
    ):
        client = Served(url, port, up, store).client()
        answers: list[str | None] = []
        slow = [
            threading.Thread(
                target=lambda: answers.append(
                    client.chat.completions.create(model="gpt-test", messages=TICKET)
                    .choices[0]
                    .message.content
                )
            )
            for _ in range(2)
        ]
        for thread in slow:
            thread.start()
        wait_until(lambda: len(up.received) == 2, what="two slow calls upstream")
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-test", messages=TICKET)
        assert time.monotonic() - started < 0.5
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"] == "1"
        for thread in slow:
            thread.join(10)
        assert answers == ["billing", "billing"]
        assert client.models.list().data  # the slots are free again


def test_a_response_over_the_cap_is_cut_off(store: Store) -> None:
    big = " ".join(["x" * 200_000] * 4)  # 800 kB
    with (
        Upstream(lambda messages: big) as up,
        serve(config_for(up, max_response_mb=0.5), store) as (url, port),
    ):
        gw = Served(url, port, up, store)
        stream = gw.client().chat.completions.create(model="gpt-test", messages=TICKET, stream=True)
        with pytest.raises(openai.APIError, match="over the gateway's limit"):
            for _ in stream:
                pass
        with pytest.raises(openai.APIStatusError) as caught:
            gw.client().chat.completions.create(model="gpt-test", messages=TICKET)
        assert caught.value.status_code == 502
        assert caught.value.response.json()["error"]["code"] == "response_too_large"
        assert [c.status for c in gw.calls(2)] == [502, 502]

        up.files = {"small": b"s" * 400_000, "large": b"L" * 700_000}
        small = httpx.get(f"{url}/v1/files/small/content")
        assert small.status_code == 200 and small.content == up.files["small"]
        with pytest.raises(httpx.RemoteProtocolError):  # broken off, never passed off as whole
            httpx.get(f"{url}/v1/files/large/content")


# Web pages and websockets -----------------------------------------------------------------


def test_web_pages_are_refused_even_without_an_origin(up: Upstream, store: Store) -> None:
    allowed = "http://localhost:3000"
    with serve(config_for(up), store, allowed_origins=[allowed]) as (_url, port):
        for site in ("cross-site", "same-site", "Cross-Site"):
            reply = request(port, "GET", "/v1/models", {"sec-fetch-site": site})
            assert reply.status == 403 and reply.json()["error"]["code"] == "site_not_allowed"
        for site in ("none", "same-origin"):
            assert request(port, "GET", "/v1/models", {"sec-fetch-site": site}).status == 200
        page = {"sec-fetch-site": "cross-site", "origin": allowed}
        assert request(port, "GET", "/v1/models", page).status == 200
        # What a page's "simple request" (no preflight) sends is not JSON: refused.
        for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            reply = request(port, "POST", "/v1/chat/completions", {"content-type": media}, CHAT)
            assert reply.status == 415, media
        assert request(port, "POST", "/v1/chat/completions", {}, CHAT).status == 415
        no_body = request(port, "POST", "/v1/messages", {"content-type": "text/plain"})
        assert no_body.status == 415 and no_body.json()["type"] == "error"
    assert [r.path for r in up.received] == ["/v1/models"] * 3


def websocket(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """What the app sends to a websocket client that connects to `path`."""
    scope = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8765"), *headers],
    }
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def test_websockets_are_closed_with_policy_violation(up: Upstream, store: Store) -> None:
    app = create_app(config_for(up), sink=store.add_event, token=TOKEN, env={})
    with_token = [(b"x-stillroom-token", TOKEN.encode())]
    for path, headers in (("/v1/realtime", []), ("/stillroom/calls", with_token)):
        assert websocket(app, path, headers) == [{"type": "websocket.close", "code": 1008}]
    with serve(config_for(up), store) as (_url, port):
        upgrade = {
            "connection": "Upgrade",
            "upgrade": "websocket",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version": "13",
        }
        reply = request(port, "GET", "/v1/models", upgrade)
    assert reply.status != 101 and reply.status >= 400
    assert up.received == []


# No secret in what the gateway says -----------------------------------------------------


def test_public_url_drops_userinfo_and_query() -> None:
    assert public_url("https://user:sk-1@api.example.com/v1?api_key=sk-2#x") == (
        "https://api.example.com/v1"
    )
    assert public_url("http://[::1]:8080/v1") == "http://[::1]:8080/v1"
    assert public_url("http://sk-3@127.0.0.1:9/v1") == "http://127.0.0.1:9/v1"
    assert public_url("not a url") == "(an invalid URL)"
    assert public_url("http://host:99999/") == "(an invalid URL)"


def test_health_and_provider_errors_show_no_secret(store: Store) -> None:
    secrets = ("sk-user-secret", "sk-query-secret", "sk-stored-secret", "alice")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    dead = f"http://alice:sk-user-secret@127.0.0.1:{dead_port}/v1?key=sk-query-secret"
    with Upstream(answer_delay=1.5) as slow:
        slow_url = f"http://alice:sk-user-secret@127.0.0.1:{slow.port}/v1?key=sk-query-secret"
        shown = {}
        for base, status in ((dead, 502), (slow_url, 504)):
            openai_config = UpstreamConfig(
                base_url=base, api_key="sk-stored-secret", timeout_seconds=0.5
            )
            with serve(config_for(slow, openai=openai_config), store) as (url, _port):
                health = httpx.get(f"{url}/stillroom/health").text
                failed = httpx.post(
                    f"{url}/v1/chat/completions", content=CHAT, headers={**JSON, "x-api-key": TOKEN}
                )
            assert failed.status_code == status
            shown[status] = failed.text
            for secret in secrets:
                assert secret not in health and secret not in failed.text
        assert f"http://127.0.0.1:{dead_port}/v1" in shown[502]
        assert f"http://127.0.0.1:{slow.port}/v1" in shown[504]
    stored = [json.dumps(e.llm_call().model_dump()) for e in store.events("llm.call")]
    assert len(stored) == 2 and not any(s in text for s in secrets for text in stored)


# The gateway as `stillroom serve` runs it: memory under huge and endless bodies ---------


@contextmanager
def serve_process(daemon: DaemonHarness, up: Upstream) -> Iterator[tuple[int, int]]:
    """`stillroom serve` in a subprocess, forwarding to `up`: its pid and port."""
    port = free_port()
    daemon.write_config(gateway={"openai": {"base_url": up.url}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillroom", "serve", "--port", str(port)],
        env=daemon.env(STILLROOM_CONFIG=str(daemon.config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: proc.poll() is not None or healthy(port), timeout=60, what="stillroom serve"
        )
        assert proc.poll() is None
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(20)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/stillroom/health", timeout=1).is_success
    except httpx.TransportError:
        return False


class PeakRSS:
    """The highest resident memory of a process, sampled every 20 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, name="rss")

    def sample(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_serve_stays_within_bounds_under_huge_and_endless_bodies(
    daemon: DaemonHarness, up: Upstream
) -> None:
    with serve_process(daemon, up) as (pid, port):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-own")
        assert client.models.list().data
        before = psutil.Process(pid).memory_info().rss
        with PeakRSS(pid) as rss:
            announced = {**JSON, "content-length": str(200 * 1024 * 1024)}
            with flood(port, "/v1/chat/completions", announced, b"x" * 65536) as answer:
                reply, sent = answer()
            assert reply.status == 413 and sent < 64 * 1024 * 1024  # answered before it was read
            chunked = {**JSON, "transfer-encoding": "chunked"}
            for _ in range(2):
                with flood(port, "/v1/chat/completions", chunked, chunk_of(65536)) as answer:
                    assert healthy(port)  # another client is served meanwhile
                    reply, sent = answer()
                assert reply.status == 413 and sent >= 32 * 1024 * 1024
            # An upload streams through: the gateway never holds it whole.
            upload = b"--x\r\n" + b"u" * (96 * 1024 * 1024) + b"\r\n--x--\r\n"
            done = httpx.post(
                f"http://127.0.0.1:{port}/v1/files",
                content=upload,
                headers={"content-type": "multipart/form-data; boundary=x"},
                timeout=60,
            )
            assert done.status_code == 200 and done.json()["bytes"] == len(upload)
        grown = (rss.peak - before) / 2**20
    print(f"serve RSS: {before / 2**20:.0f} MB at rest, peak +{grown:.1f} MB")
    assert grown < 64, f"the gateway grew by {grown:.0f} MB"
    assert [r.path for r in up.received] == ["/v1/models", "/v1/files"]


# Property: whatever a client sends, nothing but the table's routes is forwarded ----------


SEGMENTS = st.sampled_from(
    [
        "v1", "chat", "completions", "models", "gpt-test", "messages", "count_tokens", "files",
        "embeddings", "batches", "responses", "x", "..", ".", "%2e%2e", "%2E", "%2f", "%2F",
        "%5c", "%5C", "%252e", "%25", "\\", "", "a:b", "%41", "%3A", "?q=1", "#f", "stillroom",
        "health", "calls",
    ]
)  # fmt: skip
PATHS = st.lists(st.one_of(SEGMENTS, st.text(string.printable, max_size=6)), max_size=6).map(
    lambda parts: ("/" + "/".join(parts)).encode("utf-8")
)
HEADERS = st.lists(
    st.sampled_from(
        [
            ("authorization", f"Bearer {TOKEN}"),
            ("authorization", f"bearer {TOKEN}"),
            ("authorization", "Bearer sk-own"),
            ("x-api-key", TOKEN),
            ("api-key", TOKEN),
            ("x-stillroom-token", TOKEN),
            ("x-anything", f"token={TOKEN}"),
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
            ("content-type", "multipart/form-data; boundary=b"),
            ("anthropic-version", "2023-06-01"),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("host", "evil.example"),
            ("upgrade", "websocket"),
        ]
    ),
    max_size=5,
    unique_by=lambda h: h[0],
)
METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"])
BODIES = st.one_of(st.just(b""), st.just(CHAT), st.just(CLAUDE), st.binary(max_size=64))


def test_random_requests_never_reach_the_upstream_off_the_table(up: Upstream, store: Store) -> None:
    config = keyed(up, "openai", "anthropic")
    table = RouteTable.from_config(config.gateway)
    with serve(config, store) as (url, port):

        @settings(
            max_examples=200,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(method=METHODS, path=PATHS, headers=HEADERS, body=BODIES)
        def check(method: str, path: bytes, headers: list[tuple[str, str]], body: bytes) -> None:
            given_headers = dict(headers)
            given_headers.setdefault("host", f"127.0.0.1:{port}")
            lines = [method.encode() + b" " + path + b" HTTP/1.1"]
            lines += [f"{k}: {v}".encode() for k, v in given_headers.items()]
            lines += [f"content-length: {len(body)}".encode(), b"connection: close"]
            reply = raw(port, b"\r\n".join(lines) + b"\r\n\r\n" + body)
            assert reply.status < 500, (method, path, reply)

        check()
        healthy_after = httpx.get(f"{url}/stillroom/health").status_code
    assert healthy_after == 200
    assert leaked(up) == []
    for received in up.received:
        path, _, query = received.path.partition("?")
        found = table.find(received.method, path, path.encode(), query.encode(), received.headers)
        assert not hasattr(found, "status"), (received.method, received.path)
        assert received.headers.get("authorization", "Bearer sk-stored-openai") == (
            "Bearer sk-stored-openai"
        )


@settings(max_examples=500, deadline=None, database=None)
@given(raw_path=st.binary(max_size=40), text=st.text(max_size=40))
def test_a_path_that_passes_has_no_traversal_in_any_form(raw_path: bytes, text: str) -> None:
    for path in (raw_path.decode("latin-1"), text, "/v1/" + text):
        if path_problem(raw_path, path) is None and path_problem(path.encode(), path) is None:
            assert path.startswith("/") and "//" not in path and "\\" not in path
            assert not {".", ".."} & set(path.split("/"))
            assert "%" not in path and all(33 <= ord(c) < 127 for c in path)
