"""The gateway served for real by uvicorn on a free port, on a thread: with a local answerer
and an openai client pointed at it (`gateway`), or with the test upstream as its provider
(`serve`, `config_for`, `Served`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import openai
from daemon_harness import wait_until
from upstream import Upstream

from stillroom.config import Config, GatewayConfig, Price, ServerConfig, UpstreamConfig
from stillroom.events import Event, LLMCallPayload
from stillroom.service.gateway import Answerer, GatewayThread, bind, create_app
from stillroom.service.local import TaskAnswerer
from stillroom.store import Store

TOKEN = "test-token-" + "y" * 20
PRICES = {"gpt-test": Price(input=1.0, output=2.0), "claude-3-5-haiku": Price(input=0.8, output=4)}


@contextmanager
def gateway(config: Config, store: Store, answerer: TaskAnswerer | None) -> Iterator[openai.OpenAI]:
    """Serve the config's gateway (its port replaced by a free one) until the block ends."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    served = config.model_copy(update={"server": config.server.model_copy(update={"port": port})})
    app = create_app(served, sink=store.add_event, token=TOKEN, answerer=answerer, env={})
    thread = GatewayThread(app, sock)
    thread.start()
    try:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-u", max_retries=0)
    finally:
        thread.stop()


@dataclass
class Served:
    url: str
    port: int
    up: Upstream
    store: Store

    def client(self, api_key: str = "sk-client", **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, **kw)

    def calls(self, count: int = 1) -> list[LLMCallPayload]:
        """The recorded llm.call payloads, oldest first, once there are `count` of them."""
        found: list[Event] = wait_until(
            lambda: (e := self.store.events("llm.call")) and len(e) >= count and e,
            timeout=10,
            what=f"{count} llm.call events",
        )
        return [e.llm_call() for e in reversed(found)]


def config_for(up: Upstream, **gateway: Any) -> Config:
    """Both providers at the test upstream, with test prices; `gateway` sets the rest."""
    settings: dict[str, Any] = {
        "openai": UpstreamConfig(base_url=up.url),
        "anthropic": UpstreamConfig(base_url=up.root),
        "prices": PRICES,
        **gateway,
    }
    return Config(gateway=GatewayConfig(**settings))


@contextmanager
def serve(
    config: Config,
    store: Store,
    answerer: Answerer | None = None,
    host: str = "127.0.0.1",
    env: Callable[[int], dict[str, str]] = lambda port: {},
    **kw: Any,
) -> Iterator[tuple[str, int]]:
    """The gateway app served by uvicorn on a free port, on a thread; `env(port)` stands in
    for the environment."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    config = config.model_copy(update={"server": ServerConfig(host=host, port=port)})
    kw.setdefault("sink", store.add_event)
    app = create_app(config, token=TOKEN, answerer=answerer, store=store, env=env(port), **kw)
    thread = GatewayThread(app, sock)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        thread.stop()
