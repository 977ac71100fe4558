"""The gateway's FastAPI app: OpenAI- and Anthropic-compatible routes, forwarded and recorded,
and the token-protected /stillroom/ routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stillroom import __version__
from stillroom.config import Config
from stillroom.events import Event
from stillroom.service.gateway import calls
from stillroom.service.gateway.answerer import Answerer
from stillroom.service.gateway.forward import Unreachable, open_upstream, relay, targets
from stillroom.service.gateway.recorder import Recorder, Sink
from stillroom.service.gateway.replies import error_response
from stillroom.service.gateway.safety import Guard
from stillroom.service.gateway.state import Gateway
from stillroom.store import Store

PASSTHROUGH_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
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
    gateway = Gateway(
        targets=targets(config, env),
        token=token,
        client_auth=config.gateway.client_auth,
        recorder=Recorder(sink, config.gateway.prices, answerer),
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
    app.add_middleware(
        Guard,
        host=config.server.host,
        port=config.server.port,
        token=token,
        allowed_origins=allowed_origins,
    )
    app.add_api_route("/v1/chat/completions", calls.chat_completions, methods=["POST"])
    app.add_api_route("/v1/messages", calls.messages, methods=["POST"])
    app.add_api_route("/v1/{path:path}", passthrough, methods=PASSTHROUGH_METHODS)
    app.add_api_route("/stillroom/health", health, methods=["GET"])
    app.add_api_route("/stillroom/calls", recent_calls, methods=["GET"])
    return app


async def passthrough(request: Request) -> Response:
    """Any other /v1/ route (models, embeddings, responses, ...): forwarded as it is."""
    gateway: Gateway = request.app.state.gateway
    target = gateway.targets["openai"]
    upstream = await open_upstream(
        gateway.http(),
        target,
        request,
        await request.body(),
        token=gateway.token,
        client_auth=gateway.client_auth,
    )
    if isinstance(upstream, Unreachable):
        return error_response(upstream.status, upstream.message, upstream.code)
    return relay(upstream, target)


async def health(request: Request) -> dict[str, Any]:
    """Whether the gateway runs, and whether a local answerer is plugged in."""
    gateway: Gateway = request.app.state.gateway
    return {
        "status": "ok",
        "version": __version__,
        "local_answers": gateway.answerer is not None,
        "providers": {name: target.base_url for name, target in gateway.targets.items()},
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
