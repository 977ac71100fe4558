"""The recorded routes: chat completions (which a student may answer) and Anthropic messages.

Each is checked, then answered locally or forwarded, and recorded once it is done.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stillroom.monitors.llm import (
    Exchange,
    assemble_anthropic_stream,
    assemble_chat_stream,
    content_text,
)
from stillroom.pricing import estimate_tokens
from stillroom.service.gateway.answerer import FORWARD, Answerer, Decision, LocalReply
from stillroom.service.gateway.forward import Unreachable, read_whole, relay
from stillroom.service.gateway.replies import (
    anthropic_error,
    error_response,
    local_completion,
    local_headers,
    local_stream,
)
from stillroom.service.gateway.state import Gateway

log = logging.getLogger("stillroom.gateway")

Assemble = Callable[[bytes], dict[str, Any] | None]
ErrorReply = Callable[[int, str, str], Response]


def parse_request(raw: bytes) -> dict[str, Any] | str:
    """The JSON object of a request body, or what is wrong with it."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return f"the request body is not valid JSON ({exc})"
    if not isinstance(body, dict):
        return f"the request body must be a JSON object, not {type(body).__name__}"
    return body


def request_problem(body: dict[str, Any]) -> str | None:
    """What makes a chat request unanswerable (OpenAI's and Anthropic's shapes alike)."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required and must be a string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' is required and must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{i}] must be an object with a string 'role'"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "'stream' must be true or false"
    if "stream_options" in body and not isinstance(body["stream_options"], dict | None):
        return "'stream_options' must be an object"
    return None


def checked(raw: bytes) -> dict[str, Any] | str:
    """The request's JSON object, or what is wrong with it."""
    body = parse_request(raw)
    if isinstance(body, str):
        return body
    return request_problem(body) or body


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions: answered locally when the answerer says so, else forwarded."""
    gateway: Gateway = request.app.state.gateway
    raw = await request.body()
    body = checked(raw)
    if isinstance(body, str):
        return error_response(400, body, "invalid_request")
    started = time.monotonic()
    exchange = Exchange("openai", "/v1/chat/completions", body, stream=body.get("stream") is True)
    decision = await decide(gateway.answerer, body)
    if decision.reply is not None:
        return answer_locally(gateway, exchange, decision.reply, started)
    exchange.answered_by = "audit" if decision.reason == "audit" else "upstream"
    exchange.task, exchange.abstained = decision.task, decision.abstained
    settle = decision if gateway.answerer is not None else None
    return await forward(gateway, request, raw, exchange, started, settle)


async def messages(request: Request) -> Response:
    """POST /v1/messages: Anthropic's API, forwarded to the configured Anthropic endpoint."""
    gateway: Gateway = request.app.state.gateway
    raw = await request.body()
    body = checked(raw)
    if isinstance(body, str):
        return anthropic_error(400, body)
    exchange = Exchange("anthropic", "/v1/messages", body, stream=body.get("stream") is True)
    return await forward(gateway, request, raw, exchange, time.monotonic(), None)


async def decide(answerer: Answerer | None, body: dict[str, Any]) -> Decision:
    """The answerer's decision, in a worker thread; a failing answerer means forward."""
    if answerer is None:
        return FORWARD
    try:
        return await run_in_threadpool(answerer.decide, body)
    except Exception:  # a broken student must not cost the user their answer: forward
        log.exception("the answerer failed; forwarding the call")
        return Decision(reason="answerer failed")


def answer_locally(
    gateway: Gateway, exchange: Exchange, reply: LocalReply, started: float
) -> Response:
    """A chat.completion (or its stream) from `stillroom/<task>` with the reply's text."""
    messages = exchange.request["messages"]
    prompt = sum(estimate_tokens(content_text(m.get("content"))) for m in messages)
    completion = local_completion(reply.task, reply.text, prompt)
    exchange.answered_by, exchange.task = "local", reply.task
    exchange.status, exchange.response = 200, completion
    exchange.latency_ms = (time.monotonic() - started) * 1000
    gateway.recorder.submit(exchange)
    if exchange.stream:
        options = exchange.request.get("stream_options") or {}
        return local_stream(completion, reply.task, options.get("include_usage") is True)
    return JSONResponse(completion, headers=local_headers(reply.task))


async def forward(
    gateway: Gateway,
    request: Request,
    raw: bytes,
    exchange: Exchange,
    started: float,
    decision: Decision | None,
) -> Response:
    """Send the call on, relay the provider's answer unchanged, then record it."""
    anthropic = exchange.provider == "anthropic"
    assemble: Assemble = assemble_anthropic_stream if anthropic else assemble_chat_stream
    failed: ErrorReply = (lambda s, m, c: anthropic_error(s, m)) if anthropic else error_response
    target, upstream = await gateway.send(request, raw)

    def done(status: int, response: dict[str, Any] | None) -> None:
        exchange.status, exchange.response = status, response
        exchange.latency_ms = (time.monotonic() - started) * 1000
        gateway.recorder.submit(exchange, decision)

    if not isinstance(upstream, Unreachable) and exchange.stream and upstream.status_code == 200:

        def streamed(data: bytes, failure: Unreachable | None) -> None:
            done(200 if failure is None else failure.status, assemble(data))

        return relay(upstream, target, gateway.max_response_bytes, streamed)
    whole = (
        upstream
        if isinstance(upstream, Unreachable)
        else await read_whole(upstream, target, gateway.max_response_bytes)
    )
    if isinstance(whole, Unreachable):
        reply = failed(whole.status, whole.message, whole.code)
        done(whole.status, _json_object(bytes(reply.body)))
        return reply
    response, body = whole
    done(response.status_code, _json_object(body))
    return response


def _json_object(body: bytes) -> dict[str, Any] | None:
    if not body:
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
