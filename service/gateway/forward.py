"""Forwarding to the provider: where to, with which key, and the response relayed unchanged."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from stillroom.config import Config
from stillroom.service.gateway.replies import sse_error
from stillroom.teachers import ANTHROPIC_VERSION, ENV_VARS

Provider = Literal["openai", "anthropic"]
VIA = "x-stillroom-via"
# Marks what this process forwards, so a provider URL that points back here is noticed.
HOP = secrets.token_hex(6)

# Hop-by-hop headers, and those the gateway itself sets for the connection it serves.
DROPPED_REQUEST = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer"}
    | {"upgrade", "proxy-authorization", "proxy-connection", "x-stillroom-token", "origin"}
)
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

    def url(self, path: str, query: str = "") -> str:
        """The provider's URL for a gateway path such as /v1/chat/completions."""
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
    """The client's headers for the provider: the configured key replaces the client's own;
    the local token never leaves the machine."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED_REQUEST}
    client_key = headers.pop("authorization", None)
    if client_key is not None and client_key.removeprefix("Bearer ").strip() == token:
        client_key = None
    if target.provider == "anthropic":
        headers.setdefault("anthropic-version", ANTHROPIC_VERSION)
        if target.api_key:
            headers["x-api-key"] = target.api_key
        elif not client_auth:
            headers.pop("x-api-key", None)
        elif client_key and "x-api-key" not in headers:
            headers["authorization"] = client_key
        return headers
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    elif client_auth and client_key:
        headers["authorization"] = client_key
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
    content: bytes,
    *,
    token: str,
    client_auth: bool,
) -> httpx.Response | Unreachable:
    """Send the request on; the response is open for streaming (the caller closes it)."""
    hops = request.headers.get(VIA, "")
    if HOP in hops.split(","):
        return looped(target)
    headers = upstream_headers(request, target, token=token, client_auth=client_auth)
    headers[VIA] = f"{hops},{HOP}" if hops else HOP
    outgoing = client.build_request(
        request.method,
        target.url(request.url.path, request.url.query),
        headers=headers,
        content=content,
        timeout=httpx.Timeout(target.timeout, connect=min(10.0, target.timeout)),
    )
    try:
        return await client.send(outgoing, stream=True)
    except httpx.TransportError as exc:
        return unreachable(exc, target)


def looped(target: Target) -> Unreachable:
    url_var = ENV_VARS[target.provider][0]
    return Unreachable(
        508,
        f"the {target.provider} provider URL {target.base_url} leads back to this gateway;"
        f" set {url_var} or gateway.{target.provider}.base_url to the real provider",
        "forwarding_loop",
    )


def unreachable(exc: httpx.TransportError, target: Target) -> Unreachable:
    if isinstance(exc, httpx.TimeoutException):
        return Unreachable(
            504,
            f"the {target.provider} provider at {target.base_url} did not answer"
            f" within {target.timeout:g} s",
            "upstream_timeout",
        )
    reason = str(exc) or type(exc).__name__
    return Unreachable(
        502,
        f"cannot reach the {target.provider} provider at {target.base_url}: {reason}",
        "upstream_unreachable",
    )


def response_headers(upstream: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in DROPPED_RESPONSE}


async def read_whole(
    upstream: httpx.Response, target: Target
) -> tuple[Response, bytes] | Unreachable:
    """The provider's whole response, status and body unchanged."""
    try:
        body = await upstream.aread()
    except httpx.TransportError as exc:
        return unreachable(exc, target)
    finally:
        await upstream.aclose()
    return Response(body, upstream.status_code, headers=response_headers(upstream)), body


# A stream that ends neither normally nor by a provider error: the client hung up.
CLIENT_GONE = Unreachable(499, "the client closed the connection", "client_closed")
OnDone = Callable[[bytes, Unreachable | None], None]


def relay(
    upstream: httpx.Response, target: Target, on_done: OnDone | None = None
) -> StreamingResponse:
    """The response streamed on chunk by chunk as the provider sends it; `on_done` gets the
    whole body (and the failure, if the provider stopped midway) when the stream ends."""

    async def chunks() -> AsyncIterator[bytes]:
        seen: list[bytes] = []
        failure: Unreachable | None = CLIENT_GONE
        try:
            async for chunk in upstream.aiter_bytes():
                if on_done is not None:
                    seen.append(chunk)
                yield chunk
            failure = None
        except httpx.TransportError as exc:
            failure = unreachable(exc, target)
            if _is_sse(upstream):
                yield sse_error(failure.message, failure.code)
        finally:
            if on_done is not None:
                on_done(b"".join(seen), failure)
            await upstream.aclose()

    return StreamingResponse(chunks(), upstream.status_code, headers=response_headers(upstream))


def _is_sse(upstream: httpx.Response) -> bool:
    return str(upstream.headers.get("content-type", "")).startswith("text/event-stream")
