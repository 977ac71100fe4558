"""The gateway with a local answerer on a free port, and an openai client pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import openai

from stillroom.config import Config
from stillroom.service.gateway import GatewayThread, bind, create_app
from stillroom.service.local import TaskAnswerer
from stillroom.store import Store

TOKEN = "test-token-" + "y" * 20


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
