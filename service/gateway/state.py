"""What every route of one gateway shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from starlette.requests import Request

from stillroom.service.gateway.answerer import Answerer
from stillroom.service.gateway.forward import Provider, Target
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
