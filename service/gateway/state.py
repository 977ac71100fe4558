"""What every route of one gateway shares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from starlette.requests import Request

from stillroom.service.gateway.answerer import Answerer
from stillroom.service.gateway.forward import Provider, Target, Unreachable, open_upstream
from stillroom.service.gateway.recorder import Recorder
from stillroom.service.gateway.routes import ROUTE, Found
from stillroom.store import Store


@dataclass
class Gateway:
    targets: dict[Provider, Target]
    token: str
    client_auth: bool
    recorder: Recorder
    max_response_bytes: int
    answerer: Answerer | None = None
    store: Store | None = None
    client: httpx.AsyncClient | None = field(default=None, repr=False)

    def route(self, request: Request) -> Found:
        """The request's route, as the Guard found it (no request reaches a route without)."""
        found = request.scope.get(ROUTE)
        if not isinstance(found, Found):
            raise RuntimeError("the gateway's routes run behind its Guard")
        return found

    def http(self) -> httpx.AsyncClient:
        """The connection pool, open while the app runs (its lifespan)."""
        if self.client is None:
            raise RuntimeError("the gateway is not running: serve its app with uvicorn")
        return self.client

    async def send(
        self, request: Request, content: bytes | AsyncIterator[bytes]
    ) -> tuple[Target, httpx.Response | Unreachable]:
        """Send the request on along its route; the response is open for streaming."""
        found = self.route(request)
        target = self.targets[found.route.provider]
        upstream = await open_upstream(
            self.http(),
            target,
            request,
            content,
            path=found.path,
            query=found.query,
            token=self.token,
            client_auth=self.client_auth,
        )
        return target, upstream
