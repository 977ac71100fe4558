"""Forwarding to the provider: where to, with which key, and the response relayed unchanged
(up to gateway.max_response_mb)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from stillroom.config import Config
from stillroom.service.gateway.limits import ResponseTooLarge
from stillroom.service.gateway.replies import sse_error
from stillroom.teachers import ANTHROPIC_VERSION, ENV_VARS
from stillroom.urls import public_url

Provider = Literal["openai", "anthropic"]
VIA = "x-stillroom-via"
# Marks what this process forwards, so a provider URL that points back here is noticed.
HOP = secrets.token_hex(6)

# Hop-by-hop headers, and those the gateway itself sets for the connection it serves.
DROPPED_REQUEST = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer"}
    | {"upgrade", "proxy-authorization", "proxy-connection", "x-stillroom-token", "origin"}
    | {"sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest", "sec-fetch-user", "cookie"}
)
# Where a client's own key rides: passed on only when stillroom holds no key for the target.
CREDENTIALS = ("authorization", "x-api-key", "api-key")
DROPPED_RESPONSE = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}
    | {"date", "server", "trailer", "upgrade"}
)


@dataclass(frozen=True)
class Target:
    """One provider: its base URL (OpenAI's includes /v1, Anthropic's is the root), key."""

    provider: Provider
    base_url: str
    api_key: str | None
    timeout: float

    @property
    def shown(self) -> str:
        """The base URL as messages show it: no user:password@, no query string."""
        return public_url(self.base_url)

    def url(self, path: str, query: str = "") -> str:
        """The provider's URL for a checked gateway path such as /v1/chat/completions."""
        base = self.base_url.rstrip("/")
        if self.provider == "openai":
            path = path.removeprefix("/v1")
        return base + path + (f"?{query}" if query else "")


def targets(config: Config, env: Mapping[str, str] | None = None) -> dict[Provider, Target]:
    """Both providers, the environment overriding the config (the teacher's variables)."""
    env = os.environ if env is None else env
    found: dict[Provider, Target] = {}
    for provider in ("openai", "anthropic"):
        upstream = getattr(config.gateway, provider)
        url_var, key_var = ENV_VARS[provider]
        found[provider] = Target(
            provider=provider,
            base_url=env.get(url_var) or upstream.base_url,
            api_key=env.get(key_var) or upstream.api_key,
            timeout=upstream.timeout_seconds,
        )
    return found


def upstream_headers(
    request: Request, target: Target, *, token: str, client_auth: bool
) -> dict[str, str]:
    """The client's headers for the provider: a stored key replaces the client's own (passed
    on otherwise, with client_auth); the local token never leaves the machine, in any header."""
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in DROPPED_REQUEST and not (token and token in v)
    }
    own = {name: headers.pop(name) for name in CREDENTIALS if name in headers}
    if target.provider == "anthropic":
        headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
    if target.api_key and target.provider == "anthropic":
        headers["x-api-key"] = target.api_key
    elif target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    elif client_auth:
        headers.update(own)
    return headers


@dataclass(frozen=True)
class Unreachable:
    """The provider gave no response: 504 when it timed out, 502 when it could not be reached,
    508 when its URL leads back to this gateway."""

    status: int
    message: str
    code: str


async def open_upstream(
    client: httpx.AsyncClient,
    target: Target,
    request: Request,
    content: bytes | AsyncIterable[bytes],
    *,
    path: str,
    query: str,
    token: str,
    client_auth: bool,
) -> httpx.Response | Unreachable:
    """Send the request to `path` and `query` (the checked route's, never the client's raw
    ones) with `content`, whole or streamed on as it arrives; the response is open for
    streaming (the caller closes it)."""
    hops = request.headers.get(VIA, "")
    if HOP in hops.split(","):
        return looped(target)
    headers = upstream_headers(request, target, token=token, client_auth=client_auth)
    headers[VIA] = f"{hops},{HOP}" if hops else HOP
    length = request.headers.get("content-length")
    if not isinstance(content, bytes) and length is not None:
        headers["content-length"] = length  # else httpx streams it chunked
    try:
        outgoing = client.build_request(
            request.method,
            target.url(path, query),
            headers=headers,
            content=content,
            timeout=httpx.Timeout(target.timeout, connect=min(10.0, target.timeout)),
        )
    except httpx.InvalidURL:
        message = f"the {target.provider} provider URL {target.shown} is not a valid URL"
        return Unreachable(502, message, "upstream_unreachable")
    try:
        return await client.send(outgoing, stream=True)
    except httpx.TransportError as exc:
        return unreachable(exc, target)


def looped(target: Target) -> Unreachable:
    url_var = ENV_VARS[target.provider][0]
    return Unreachable(
        508,
        f"the {target.provider} provider URL {target.shown} leads back to this gateway;"
        f" set {url_var} or gateway.{target.provider}.base_url to the real provider",
        "forwarding_loop",
    )


def unreachable(exc: httpx.TransportError, target: Target) -> Unreachable:
    if isinstance(exc, httpx.TimeoutException):
        return Unreachable(
            504,
            f"the {target.provider} provider at {target.shown} did not answer"
            f" within {target.timeout:g} s",
            "upstream_timeout",
        )
    return Unreachable(
        502,
        f"cannot reach the {target.provider} provider at {target.shown}: {reason(exc, target)}",
        "upstream_unreachable",
    )


def reason(exc: Exception, target: Target) -> str:
    """The exception's words, with the provider's URL shown safely and its key left out."""
    text = (str(exc) or type(exc).__name__).replace(target.base_url, target.shown)
    if target.api_key:
        text = text.replace(target.api_key, "[key]")
    return text[:300]


def response_headers(upstream: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in DROPPED_RESPONSE}


def too_large(target: Target, max_bytes: int) -> Unreachable:
    return Unreachable(
        502,
        f"the {target.provider} provider's response is over the gateway's limit of"
        f" {max_bytes} bytes (gateway.max_response_mb)",
        "response_too_large",
    )


async def read_whole(
    upstream: httpx.Response, target: Target, max_bytes: int
) -> tuple[Response, bytes] | Unreachable:
    """The provider's whole response, status and body unchanged, up to `max_bytes`."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in upstream.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                return too_large(target, max_bytes)
            chunks.append(chunk)
    except httpx.TransportError as exc:
        return unreachable(exc, target)
    finally:
        await upstream.aclose()
    body = b"".join(chunks)
    return Response(body, upstream.status_code, headers=response_headers(upstream)), body


# A stream that ends neither normally nor by a provider error: the client hung up.
CLIENT_GONE = Unreachable(499, "the client closed the connection", "client_closed")
OnDone = Callable[[bytes, Unreachable | None], None]


def relay(
    upstream: httpx.Response, target: Target, max_bytes: int, on_done: OnDone | None = None
) -> StreamingResponse:
    """The response streamed on as the provider sends it (an SSE stream event by event),
    cut off past `max_bytes`: an SSE stream ends with an error event, any other breaks off
    unfinished. `on_done` gets the whole body (and the failure, if it stopped midway)."""
    sse = _is_sse(upstream)

    async def chunks() -> AsyncIterator[bytes]:
        seen: list[bytes] = []
        failure: Unreachable | None = CLIENT_GONE
        size = 0
        # Whole events only go out, so that an error event can always follow cleanly.
        pending = bytearray()
        try:
            async for chunk in upstream.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    failure = too_large(target, max_bytes)
                    if not sse:
                        raise ResponseTooLarge(max_bytes)
                    yield sse_error(failure.message, failure.code)
                    return
                if on_done is not None:
                    seen.append(chunk)
                if not sse:
                    yield chunk
                    continue
                pending += chunk
                if cut := _events_end(pending):
                    yield bytes(pending[:cut])
                    del pending[:cut]
            if pending:
                yield bytes(pending)
            failure = None
        except httpx.TransportError as exc:
            failure = unreachable(exc, target)
            if sse:
                yield sse_error(failure.message, failure.code)
        finally:
            if on_done is not None:
                on_done(b"".join(seen), failure)
            await upstream.aclose()

    return StreamingResponse(chunks(), upstream.status_code, headers=response_headers(upstream))


EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")  # the blank line after an SSE event


def _events_end(data: bytearray) -> int:
    """Where the last whole SSE event in `data` ends (0: none is whole yet)."""
    return max((data.rfind(end) + len(end) for end in EVENT_ENDS if end in data), default=0)


def _is_sse(upstream: httpx.Response) -> bool:
    return str(upstream.headers.get("content-type", "")).startswith("text/event-stream")
