"""The gateway's FastAPI app: OpenAI- and Anthropic-compatible routes, forwarded and recorded,
and the token-protected /stillroom/ routes, behind the admission limit and the Guard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from stillroom import __version__
from stillroom.config import Config
from stillroom.events import Event
from stillroom.service.gateway import calls
from stillroom.service.gateway.answerer import Answerer
from stillroom.service.gateway.forward import Unreachable, relay, targets
from stillroom.service.gateway.limits import Admission
from stillroom.service.gateway.recorder import Recorder, Sink
from stillroom.service.gateway.replies import error_response, provider_error
from stillroom.service.gateway.routes import MB, RouteTable, error_provider
from stillroom.service.gateway.safety import Guard, has_body
from stillroom.service.gateway.state import Gateway
from stillroom.store import Store

# The Guard lets through only what the route table allows; these are the methods it has.
PASSTHROUGH_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_CALLS = 500


def create_app(
    config: Config,
    *,
    sink: Sink,
    token: str,
    answerer: Answerer | None = None,
    store: Store | None = None,
    allowed_origins: Collection[str] = (),
    env: Mapping[str, str] | None = None,
) -> FastAPI:
    """The gateway for `config` (providers, prices, host and port it is served on).

    `sink` receives one llm.call Event per recorded call, from a worker thread; `store` serves
    /stillroom/calls; `env` overrides os.environ for the provider variables."""
    settings = config.gateway
    gateway = Gateway(
        targets=targets(config, env),
        token=token,
        client_auth=settings.client_auth,
        recorder=Recorder(sink, settings.prices, answerer),
        max_response_bytes=int(settings.max_response_mb * MB),
        answerer=answerer,
        store=store,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(follow_redirects=False) as client:
            gateway.client = client
            yield
            gateway.client = None

    app = FastAPI(
        title="stillroom gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gateway
    app.state.request_timeout = settings.request_timeout_seconds  # for the server's protocol
    app.add_middleware(
        Guard,
        host=config.server.host,
        port=config.server.port,
        token=token,
        routes=RouteTable.from_config(settings),
        keyed=[name for name, target in gateway.targets.items() if target.api_key],
        request_timeout=settings.request_timeout_seconds,
        allowed_origins=allowed_origins,
    )
    app.add_middleware(Admission, max_concurrent=settings.max_concurrent, refuse=busy)
    app.add_api_route("/v1/chat/completions", calls.chat_completions, methods=["POST"])
    app.add_api_route("/v1/messages", calls.messages, methods=["POST"])
    app.add_api_route("/v1/{path:path}", passthrough, methods=PASSTHROUGH_METHODS)
    app.add_api_route("/stillroom/health", health, methods=["GET"])
    app.add_api_route("/stillroom/calls", recent_calls, methods=["GET"])
    return app


def busy(scope: Scope, status: int, message: str, code: str, headers: dict[str, str]) -> Response:
    """The Admission limit's 503, in the shape of the provider the path belongs to."""
    request = Request(scope)
    anthropic = error_provider(request.url.path, request.headers) == "anthropic"
    return provider_error(anthropic, status, message, code, headers)


async def passthrough(request: Request) -> Response:
    """Any other route of the table (models, embeddings, files, ...): forwarded unrecorded.
    A body within max_body_mb is read whole first (nothing goes on unless all of it is
    allowed); an upload's is streamed on as it arrives, never held whole in memory."""
    gateway: Gateway = request.app.state.gateway
    found = gateway.route(request)
    content: bytes | AsyncIterator[bytes] = b""
    if found.route.streamed and has_body(request.headers):
        content = request.stream()
    elif has_body(request.headers):
        content = await request.body()
    target, upstream = await gateway.send(request, content)
    if isinstance(upstream, Unreachable):
        anthropic = found.route.provider == "anthropic"
        return provider_error(anthropic, upstream.status, upstream.message, upstream.code, {})
    return relay(upstream, target, gateway.max_response_bytes)


async def health(request: Request) -> dict[str, Any]:
    """Whether the gateway runs, and whether a local answerer is plugged in."""
    gateway: Gateway = request.app.state.gateway
    return {
        "status": "ok",
        "version": __version__,
        "local_answers": gateway.answerer is not None,
        "providers": {name: target.shown for name, target in gateway.targets.items()},
    }


async def recent_calls(request: Request, limit: int = 20) -> Response:
    """A summary of the most recent recorded calls, newest first (no message contents)."""
    gateway: Gateway = request.app.state.gateway
    if gateway.store is None:
        return error_response(404, "this gateway keeps no store", "no_store")
    found = await run_in_threadpool(gateway.store.events, "llm.call", max(1, min(limit, MAX_CALLS)))
    return JSONResponse({"calls": [call_summary(event) for event in found]})


def call_summary(event: Event) -> dict[str, Any]:
    call = event.llm_call()
    return {
        "id": event.id,
        "at": event.at,
        "provider": call.provider,
        "endpoint": call.endpoint,
        "model": call.model,
        "status": call.status,
        "stream": call.stream,
        "answered_by": call.answered_by,
        "task": call.task,
        "latency_ms": call.latency_ms,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "cost_usd": call.cost_usd,
    }
