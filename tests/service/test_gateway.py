"""The gateway served for real by uvicorn on 127.0.0.1, called with the official openai
client (httpx where the SDK cannot send what a test needs), in front of a real upstream."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from daemon_harness import wait_until
from gateway_client import TOKEN, Served, config_for, serve
from upstream import Upstream, user_text

from stillroom.config import UpstreamConfig
from stillroom.events import Event
from stillroom.monitors.llm import assemble_anthropic_stream, assemble_chat_stream, response_text
from stillroom.service.gateway import Decision, LocalReply
from stillroom.store import Store


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream() as upstream:
        yield upstream


@pytest.fixture
def gw(up: Upstream, store: Store) -> Iterator[Served]:
    with serve(config_for(up), store) as (url, port):
        yield Served(url, port, up, store)


TICKET = [
    {"role": "system", "content": "Route the support ticket to one team."},
    {"role": "user", "content": "I was charged twice for my subscription"},
]


def test_forwards_a_chat_completion_and_records_it(gw: Served) -> None:
    reply = gw.client().chat.completions.create(model="gpt-test", messages=TICKET, temperature=0)
    assert reply.choices[0].message.content == "billing"
    assert gw.up.chat_calls()[0].headers["authorization"] == "Bearer sk-client"

    (call,) = gw.calls()
    assert call.messages == TICKET
    assert call.params == {"temperature": 0}
    assert call.model == "gpt-test" and call.status == 200 and not call.stream
    assert isinstance(call.response, dict)
    assert call.response["choices"][0]["message"]["content"] == "billing"
    assert (call.prompt_tokens, call.completion_tokens) == (14, 1)  # the provider's usage
    assert call.cost_usd == pytest.approx((14 * 1.0 + 1 * 2.0) / 1e6)
    assert call.answered_by == "upstream" and call.latency_ms is not None and call.latency_ms > 0


def test_a_stream_is_relayed_chunk_by_chunk_and_recorded_whole(store: Store) -> None:
    words = "alpha beta gamma delta epsilon"
    with (
        Upstream(lambda messages: words, chunk_delay=0.4) as up,
        serve(config_for(up), store) as (url, port),
    ):
        gw = Served(url, port, up, store)
        started = time.monotonic()
        stream = gw.client().chat.completions.create(model="gpt-test", messages=TICKET, stream=True)
        pieces, first = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.monotonic() - started
                pieces.append(chunk.choices[0].delta.content)
        total = time.monotonic() - started
        # The provider sleeps 0.4 s after each of 5 words: whole, the answer takes 2 s.
        assert "".join(pieces) == words
        assert first is not None and first < 0.8 and total > 1.8
        (call,) = gw.calls()
    assert call.stream and call.status == 200
    assert isinstance(call.response, dict)
    assert call.response["object"] == "chat.completion"
    assert call.response["choices"][0]["message"] == {"role": "assistant", "content": words}
    assert call.response["choices"][0]["finish_reason"] == "stop"
    assert call.completion_tokens == 8  # estimated: no usage in the stream
    assert call.cost_usd is not None


def test_models_and_embeddings_pass_through_unrecorded(gw: Served) -> None:
    client = gw.client()
    assert [m.id for m in client.models.list()] == ["gpt-test", "gpt-other"]
    vectors = client.embeddings.create(model="emb", input=["a", "b"])
    assert [len(v.embedding) for v in vectors.data] == [8, 8]
    assert [(r.method, r.path) for r in gw.up.received] == [
        ("GET", "/v1/models"),
        ("POST", "/v1/embeddings"),
    ]
    time.sleep(0.2)
    assert gw.store.events("llm.call") == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
def test_provider_errors_reach_the_client_unchanged(
    gw: Served, status: int, error: type[openai.APIStatusError]
) -> None:
    gw.up.fail_next(status, "upstream says no", **{"retry-after": "7"})
    with pytest.raises(error) as caught:
        gw.client().chat.completions.create(model="gpt-test", messages=TICKET)
    assert caught.value.status_code == status
    assert caught.value.response.headers["retry-after"] == "7"
    expected = {"error": {"message": "upstream says no", "type": "upstream_error", "code": status}}
    assert caught.value.response.json() == expected
    (call,) = gw.calls()
    assert call.status == status and call.response == expected and call.cost_usd is None


def test_provider_down_is_502_and_a_timeout_504(store: Store) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    with Upstream(answer_delay=1.5) as slow:
        config = config_for(slow, openai=UpstreamConfig(base_url=slow.url, timeout_seconds=0.5))
        down = config.model_copy(
            update={
                "gateway": config.gateway.model_copy(
                    update={"openai": UpstreamConfig(base_url=dead)}
                )
            }
        )
        for cfg, status, code in [
            (down, 502, "upstream_unreachable"),
            (config, 504, "upstream_timeout"),
        ]:
            with serve(cfg, store) as (url, port):
                client = Served(url, port, slow, store).client()
                with pytest.raises(openai.APIStatusError) as caught:
                    client.chat.completions.create(model="gpt-test", messages=TICKET)
            assert caught.value.status_code == status
            body = caught.value.response.json()["error"]
            assert body["code"] == code and body["type"] and "provider" in body["message"]
    stored = wait_until(lambda: len(e := store.events("llm.call")) == 2 and e, what="2 calls")
    # Recorded with the status the client got: the provider never answered.
    assert [e.llm_call().status for e in reversed(stored)] == [502, 504]
    assert all(e.llm_call().cost_usd is None for e in stored)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (json.dumps({"model": "gpt-test"}).encode(), "'messages' is required"),
        (json.dumps({"model": "gpt-test", "messages": "hi"}).encode(), "'messages' is required"),
        (json.dumps({"model": "gpt-test", "messages": ["hi"]}).encode(), "messages[0]"),
        (json.dumps({"messages": TICKET}).encode(), "'model' is required"),
        (json.dumps({"model": "m", "messages": TICKET, "stream": "yes"}).encode(), "'stream'"),
    ],
)
def test_malformed_requests_get_400_and_are_not_forwarded(
    gw: Served, body: bytes, says: str
) -> None:
    reply = httpx.post(
        f"{gw.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert says in error["message"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert gw.up.received == []


def test_secrets_are_redacted_before_they_are_stored(gw: Served, store: Store) -> None:
    key = "sk-proj-" + "Q7x" * 16
    bearer = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXNlY3JldA"
    password = "hunter2-Very-Secret"
    content = (
        f"My key is {key}, the header was 'Authorization: Bearer {bearer}', and the"
        f" database is postgres://admin:{password}@db.example.com/prod - why does login fail?"
    )
    messages = [{"role": "user", "content": content}]
    gw.client().chat.completions.create(model="gpt-test", messages=messages, user=key)
    assert gw.up.chat_calls()[0].body["messages"] == messages  # forwarded untouched
    (call,) = gw.calls()
    stored = json.dumps(call.model_dump())
    assert "why does login fail" in stored
    store.close()
    files = [store.path, Path(f"{store.path}-wal")]
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    for secret in (key, bearer, password):
        assert secret not in stored
        assert secret.encode() not in raw


def test_foreign_hosts_and_web_pages_are_refused(up: Upstream, store: Store) -> None:
    with serve(config_for(up), store, allowed_origins=["http://localhost:3000"]) as (url, port):
        for host in (f"localhost:{port}", f"[::1]:{port}", f"127.0.0.1:{port}"):
            assert httpx.get(f"{url}/v1/models", headers={"host": host}).status_code == 200
        rebound = httpx.get(f"{url}/v1/models", headers={"host": f"evil.example:{port}"})
        assert rebound.status_code == 421 and rebound.json()["error"]["code"] == "host_not_allowed"
        page = httpx.get(f"{url}/v1/models", headers={"origin": "https://evil.example"})
        assert page.status_code == 403 and page.json()["error"]["code"] == "origin_not_allowed"
        preflight = httpx.options(
            f"{url}/v1/chat/completions", headers={"origin": "https://evil.example"}
        )
        assert preflight.status_code == 403
        allowed = httpx.get(f"{url}/v1/models", headers={"origin": "http://localhost:3000"})
        assert allowed.status_code == 200
    assert len(up.received) == 4


def test_private_routes_need_the_local_token(gw: Served) -> None:
    gw.client().chat.completions.create(model="gpt-test", messages=TICKET)
    gw.calls()
    assert httpx.get(f"{gw.url}/stillroom/health").json()["status"] == "ok"
    assert httpx.get(f"{gw.url}/stillroom/calls").status_code == 401
    wrong = httpx.get(f"{gw.url}/stillroom/calls", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    for headers in ({"authorization": f"Bearer {TOKEN}"}, {"x-stillroom-token": TOKEN}):
        listed = httpx.get(f"{gw.url}/stillroom/calls", headers=headers)
        assert listed.status_code == 200
        (summary,) = listed.json()["calls"]
        assert summary["model"] == "gpt-test" and summary["answered_by"] == "upstream"
        assert "messages" not in summary


def test_off_loopback_every_route_needs_the_token_which_never_goes_upstream(
    up: Upstream, store: Store
) -> None:
    config = config_for(up, openai=UpstreamConfig(base_url=up.url, api_key="sk-config"))
    with serve(config, store, host="0.0.0.0") as (url, port):
        gw = Served(url, port, up, store)
        assert httpx.get(f"{url}/stillroom/health").status_code == 401
        with pytest.raises(openai.AuthenticationError):
            gw.client(api_key="sk-anything").models.list()
        assert up.received == []
        reply = gw.client(api_key=TOKEN).chat.completions.create(model="gpt-test", messages=TICKET)
        assert reply.choices[0].message.content == "billing"
    assert up.chat_calls()[0].headers["authorization"] == "Bearer sk-config"


def test_environment_overrides_the_configured_provider(up: Upstream, store: Store) -> None:
    config = config_for(up, openai=UpstreamConfig(base_url="http://127.0.0.1:9/v1"))
    env = {"STILLROOM_UPSTREAM_BASE_URL": up.url, "STILLROOM_UPSTREAM_API_KEY": "sk-env"}
    with serve(config, store, env=lambda port: env) as (url, port):
        # stillroom holds a key now: the client shows the local token, not a key of its own
        client = Served(url, port, up, store).client(api_key=TOKEN)
        assert client.chat.completions.create(model="gpt-test", messages=TICKET).choices
    assert up.chat_calls()[0].headers["authorization"] == "Bearer sk-env"


def test_a_provider_url_that_leads_back_here_is_refused(up: Upstream, store: Store) -> None:
    def itself(port: int) -> dict[str, str]:
        return {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"}

    body = {"model": "claude-test", "max_tokens": 5, "messages": TICKET[1:]}
    with serve(config_for(up), store, env=itself) as (url, _):
        looped = httpx.post(f"{url}/v1/messages", json=body, timeout=10)
    assert looped.status_code == 508
    assert "ANTHROPIC_BASE_URL" in looped.json()["error"]["message"]
    assert up.received == []


def test_anthropic_messages_are_forwarded_and_recorded(gw: Served) -> None:
    body = {
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 20,
        "system": "Route the support ticket to one team.",
        "messages": [{"role": "user", "content": "My parcel never arrived"}],
    }
    reply = httpx.post(f"{gw.url}/v1/messages", json=body, headers={"x-api-key": "sk-ant-client"})
    assert reply.status_code == 200
    assert reply.json()["content"] == [{"type": "text", "text": "shipping"}]
    (received,) = gw.up.received
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == "sk-ant-client"
    assert received.headers["anthropic-version"] == "2023-06-01"
    (call,) = gw.calls()
    assert call.provider == "anthropic" and call.endpoint == "/v1/messages"
    assert call.messages[0] == {"role": "system", "content": body["system"]}
    assert call.messages[1:] == body["messages"]
    assert call.params == {"max_tokens": 20}
    assert (call.prompt_tokens, call.completion_tokens) == (10, 1)
    assert call.cost_usd == pytest.approx((10 * 0.8 + 1 * 4) / 1e6)

    bad = httpx.post(
        f"{gw.url}/v1/messages",
        content=b"{",
        headers={"x-api-key": "k", "content-type": "application/json"},
    )
    assert bad.status_code == 400
    assert bad.json()["type"] == "error" and "not valid JSON" in bad.json()["error"]["message"]


@dataclass
class KeywordAnswerer:
    """A real, tiny answerer: "refund" is billing (answered here), "invoice" is billing too
    but audited, anything else is forwarded."""

    settled: list[tuple[Decision, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def decide(self, body: dict[str, Any]) -> Decision:
        text = user_text(body["messages"]).lower()
        reply = LocalReply(task="tickets", version=3, text="billing", confidence=0.97)
        if "refund" in text:
            return Decision(reply=reply, task="tickets", reason="confident")
        if "invoice" in text:
            return Decision(audit=reply, task="tickets", reason="audit")
        return Decision(reason="no task")

    def settle(self, decision: Decision, upstream_text: str | None, latency_ms: float) -> None:
        with self.lock:
            self.settled.append((decision, upstream_text))


def ask(text: str) -> list[dict[str, str]]:
    return [TICKET[0], {"role": "user", "content": text}]


def test_the_answerer_answers_locally_audits_or_forwards(up: Upstream, store: Store) -> None:
    answerer = KeywordAnswerer()
    with serve(config_for(up), store, answerer) as (url, port):
        gw = Served(url, port, up, store)
        client = gw.client()
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=ask("I want a refund")
        )
        assert raw.headers["x-stillroom-answered-by"] == "local"
        assert raw.headers["x-stillroom-task"] == "tickets"
        local = raw.parse()
        assert local.model == "stillroom/tickets"
        assert local.choices[0].message.content == "billing"
        stream = client.chat.completions.create(
            model="gpt-test", messages=ask("refund please"), stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert streamed == "billing"
        assert up.chat_calls() == []

        audited = client.chat.completions.create(model="gpt-test", messages=ask("invoice wrong"))
        forwarded = client.chat.completions.create(model="gpt-test", messages=ask("parcel late"))
        assert audited.model == forwarded.model == "gpt-test"
        assert len(up.chat_calls()) == 2
        calls = gw.calls(4)
        wait_until(lambda: len(answerer.settled) == 2, what="two settled forwards")
    assert [(c.answered_by, c.task) for c in calls] == [
        ("local", "tickets"),
        ("local", "tickets"),
        ("audit", "tickets"),
        ("upstream", None),
    ]
    assert calls[0].cost_usd == 0.0 and calls[1].stream
    assert isinstance(calls[1].response, dict)
    assert calls[1].response["choices"][0]["message"]["content"] == "billing"
    settled = sorted(answerer.settled, key=lambda s: s[0].reason)
    assert [(d.reason, d.audit is not None, text) for d, text in settled] == [
        ("audit", True, "billing"),
        ("no task", False, "shipping"),
    ]


def test_a_failing_recorder_or_answerer_never_costs_the_answer(up: Upstream, store: Store) -> None:
    class Broken:
        def decide(self, body: dict[str, Any]) -> Decision:
            raise RuntimeError("student crashed")

        def settle(self, decision: Decision, text: str | None, latency_ms: float) -> None:
            raise RuntimeError("cannot settle")

    def sink(event: Event) -> None:
        raise OSError("disk full")

    with serve(config_for(up), store, Broken(), sink=sink) as (url, port):
        client = Served(url, port, up, store).client()
        for stream in (False, True):
            reply = client.chat.completions.create(model="gpt-test", messages=TICKET, stream=stream)
            if stream:
                assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
            else:
                assert reply.choices[0].message.content == "billing"


def test_token_file_is_private(tmp_path: Path) -> None:
    from stillroom.service.gateway import load_token

    path = tmp_path / "config" / "token"
    token = load_token(path)
    assert len(token) >= 40 and load_token(path) == token
    assert os.stat(path).st_mode & 0o777 == 0o600


def sse(*events: tuple[str | None, Any]) -> bytes:
    lines = [
        (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
        for name, data in events
    ]
    return "".join(lines).encode() + b"data: [DONE]\n\n"


def test_streamed_tool_calls_and_anthropic_streams_are_reassembled() -> None:
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test"}
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "route"}}
    args = [{"index": 0, "function": {"arguments": part}} for part in ('{"team": ', '"billing"}')]
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}}]},
        *({**head, "choices": [{"index": 0, "delta": {"tool_calls": [a]}}]} for a in args),
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
    ]
    body = assemble_chat_stream(sse(*((None, c) for c in chunks)))
    assert body is not None and body["usage"] == {"prompt_tokens": 9, "completion_tokens": 4}
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "route", "arguments": '{"team": "billing"}'},
        }
    ]

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test"}
    events = [
        ("message_start", {"message": {**message, "content": [], "usage": {"input_tokens": 7}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "ship"}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "ping"}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
        ("message_stop", {}),
    ]
    whole = assemble_anthropic_stream(sse(*events))
    assert whole is not None
    assert whole["content"] == [{"type": "text", "text": "shipping"}]
    assert whole["usage"] == {"input_tokens": 7, "output_tokens": 2}
    assert whole["stop_reason"] == "end_turn"
    assert response_text("anthropic", whole) == "shipping"
