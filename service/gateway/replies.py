"""What the gateway itself answers: errors in the providers' shapes, and local answers in
the shape of a chat completion (whole, or as the chunks of a stream)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from stillroom.pricing import estimate_tokens

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    415: "invalid_request_error",
    421: "permission_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_body(status: int, message: str, code: str) -> dict[str, Any]:
    """OpenAI's error shape: {"error": {"message", "type", "code"}}."""
    kind = ERROR_TYPES.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_response(
    status: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(error_body(status, message, code), status, headers=dict(headers or {}))


def anthropic_error(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Anthropic's error shape: {"type": "error", "error": {"type", "message"}}."""
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    return JSONResponse(body, status, headers=dict(headers or {}))


def provider_error(
    anthropic: bool, status: int, message: str, code: str, headers: Mapping[str, str]
) -> Response:
    """The gateway's own refusal in the shape the client's SDK reads: Anthropic's or OpenAI's."""
    if anthropic:
        return anthropic_error(status, message, headers)
    return error_response(status, message, code, headers)


def sse_error(message: str, code: str) -> bytes:
    """An error event in the middle of a stream (the status line has gone out already)."""
    return _sse(error_body(502, message, code))


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def local_headers(task: str) -> dict[str, str]:
    return {"X-Stillroom-Answered-By": "local", "X-Stillroom-Task": task}


def local_completion(task: str, text: str, prompt_tokens: int) -> dict[str, Any]:
    """A chat.completion whose model is `stillroom/<task>` and whose content is `text`."""
    completion_tokens = estimate_tokens(text)
    return {
        "id": "chatcmpl-stillroom-" + secrets.token_hex(8),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": f"stillroom/{task}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def local_chunks(completion: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """The same completion as a stream: role, content, finish, [usage], [DONE]."""
    head = {k: completion[k] for k in ("id", "created", "model")}
    head["object"] = "chat.completion.chunk"
    text = completion["choices"][0]["message"]["content"]
    deltas: list[tuple[dict[str, Any], str | None]] = [
        ({"role": "assistant", "content": ""}, None),
        ({"content": text}, None),
        ({}, "stop"),
    ]
    for delta, finish in deltas:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        yield _sse({**head, "choices": [choice]})
    if include_usage:
        yield _sse({**head, "choices": [], "usage": completion["usage"]})
    yield b"data: [DONE]\n\n"


def local_stream(completion: dict[str, Any], task: str, include_usage: bool) -> Response:
    return StreamingResponse(
        local_chunks(completion, include_usage),
        media_type="text/event-stream",
        headers=local_headers(task),
    )
