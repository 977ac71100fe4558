"""LLM calls as events: what the gateway saw of one call, redacted and priced, as an llm.call.

The gateway collects an Exchange per call (the request, the response body or the bytes of
its stream, the timing); `llm_call_event` turns it into the stored Event. Streams are
reassembled into the body the same call would have returned without streaming.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from stillroom.config import Price
from stillroom.events import Event, LLMCallPayload
from stillroom.pricing import cost_usd, estimate_tokens
from stillroom.redact import redact

Provider = Literal["openai", "anthropic"]
AnsweredBy = Literal["upstream", "local", "audit"]


@dataclass
class Exchange:
    """One call as the gateway saw it, before redaction."""

    provider: Provider
    endpoint: str
    request: dict[str, Any]
    stream: bool = False
    status: int | None = None
    response: dict[str, Any] | None = None
    latency_ms: float | None = None
    answered_by: AnsweredBy = "upstream"
    task: str | None = None
    abstained: bool = False  # forwarded because the student abstained (see LLMCallPayload)
    at: float = field(default_factory=time.time)


def llm_call_event(exchange: Exchange, prices: Mapping[str, Price]) -> Event:
    """The llm.call event of one exchange, secrets redacted."""
    return Event(source="llm", kind="llm.call", at=exchange.at, payload=payload(exchange, prices))


def payload(exchange: Exchange, prices: Mapping[str, Price]) -> LLMCallPayload:
    """Messages, params and response redacted; tokens from the usage, else estimated."""
    request = dict(exchange.request)
    model = str(request.pop("model", "") or "")
    messages = _messages(request.pop("messages", None))
    system = request.pop("system", None) if exchange.provider == "anthropic" else None
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    request.pop("stream", None)
    response = exchange.response
    prompt, completion = _usage(exchange.provider, response)
    text = response_text(exchange.provider, response)
    if prompt is None:
        prompt = sum(estimate_tokens(content_text(m.get("content"))) for m in messages)
    if completion is None and text is not None:
        completion = estimate_tokens(text)
    return LLMCallPayload(
        provider=exchange.provider,
        endpoint=exchange.endpoint,
        model=model,
        messages=redact(messages),
        params=redact(request),
        response=redact(response),
        status=exchange.status,
        stream=exchange.stream,
        latency_ms=exchange.latency_ms,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=_cost(exchange, prices, model, prompt, completion),
        answered_by=exchange.answered_by,
        task=exchange.task,
        abstained=exchange.abstained,
    )


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [m for m in value if isinstance(m, dict)]


def _cost(
    exchange: Exchange,
    prices: Mapping[str, Price],
    model: str,
    prompt: int | None,
    completion: int | None,
) -> float | None:
    if exchange.answered_by == "local":
        return 0.0
    if exchange.status != 200 or prompt is None:
        return None
    priced = (exchange.response or {}).get("model")
    names = [model, *([priced] if isinstance(priced, str) else [])]
    for name in names:
        cost = cost_usd(prices, name, prompt, completion or 0)
        if cost is not None:
            return cost
    return None


def _usage(provider: Provider, response: dict[str, Any] | None) -> tuple[int | None, int | None]:
    usage = (response or {}).get("usage")
    if not isinstance(usage, dict):
        return None, None
    if provider == "openai":
        return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def response_text(provider: Provider, response: dict[str, Any] | None) -> str | None:
    """The assistant's answer in a response body (the first choice), or None."""
    if not isinstance(response, dict):
        return None
    if provider == "anthropic":
        content = response.get("content")
        return content_text(content) if isinstance(content, list) else None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    return content_text(message.get("content")) if isinstance(message, dict) else None


def sse_events(data: bytes) -> Iterator[tuple[str, str]]:
    """(event name, data) of each server-sent event in a stream's bytes."""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    for block in text.split("\n\n"):
        name, lines = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))
        if lines:
            yield name, "\n".join(lines)


def sse_json(data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """The JSON objects of a stream's events; [DONE] and anything unparsable are skipped."""
    for name, text in sse_events(data):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield name, value


def assemble_chat_stream(data: bytes) -> dict[str, Any] | None:
    """A chat.completion body from the chunks of a streamed one (None if there were none)."""
    head: dict[str, Any] | None = None
    choices: dict[int, dict[str, Any]] = {}
    usage: Any = None
    for _, chunk in sse_json(data):
        if "error" in chunk:
            return chunk
        head = head or chunk
        usage = chunk.get("usage") or usage
        for part in chunk.get("choices") or []:
            if isinstance(part, dict):
                _merge_choice(choices, part)
    if head is None:
        return None
    body = {
        "id": head.get("id"),
        "object": "chat.completion",
        "created": head.get("created"),
        "model": head.get("model"),
        "choices": [choices[i] for i in sorted(choices)],
    }
    if head.get("system_fingerprint"):
        body["system_fingerprint"] = head["system_fingerprint"]
    if usage:
        body["usage"] = usage
    return body


def _merge_choice(choices: dict[int, dict[str, Any]], part: dict[str, Any]) -> None:
    index = part.get("index", 0)
    choice = choices.setdefault(
        index,
        {"index": index, "message": {"role": "assistant", "content": None}, "finish_reason": None},
    )
    message = choice["message"]
    delta = part.get("delta") or {}
    if delta.get("role"):
        message["role"] = delta["role"]
    for key in ("content", "refusal"):
        if isinstance(delta.get(key), str):
            message[key] = (message.get(key) or "") + delta[key]
    for call in delta.get("tool_calls") or []:
        _merge_tool_call(message.setdefault("tool_calls", []), call)
    if part.get("finish_reason"):
        choice["finish_reason"] = part["finish_reason"]


def _merge_tool_call(calls: list[dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", len(calls))
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    call = calls[index]
    call["id"] = delta.get("id") or call["id"]
    function = delta.get("function") or {}
    for key in ("name", "arguments"):
        if isinstance(function.get(key), str):
            call["function"][key] += function[key]


def assemble_anthropic_stream(data: bytes) -> dict[str, Any] | None:
    """A messages body from the events of a streamed Anthropic response."""
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    for name, event in sse_json(data):
        if name == "error":
            return event
        if name == "message_start" and isinstance(event.get("message"), dict):
            message = dict(event["message"])
        elif name == "content_block_start":
            blocks[event.get("index", len(blocks))] = dict(event.get("content_block") or {})
        elif name == "content_block_delta":
            _anthropic_delta(blocks.setdefault(event.get("index", 0), {}), event.get("delta"))
        elif name == "message_delta" and message is not None:
            message.update(event.get("delta") or {})
            message["usage"] = {**(message.get("usage") or {}), **(event.get("usage") or {})}
    if message is None:
        return None
    for block in blocks.values():
        partial = block.pop("partial_json", None)
        if partial:
            try:
                block["input"] = json.loads(partial)
            except ValueError:
                block["input"] = partial
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


def _anthropic_delta(block: dict[str, Any], delta: Any) -> None:
    if not isinstance(delta, dict):
        return
    if isinstance(delta.get("text"), str):
        block["text"] = block.get("text", "") + delta["text"]
    if isinstance(delta.get("partial_json"), str):
        block["partial_json"] = block.get("partial_json", "") + delta["partial_json"]
