"""`stillroom serve`: the OpenAI-compatible gateway on its own, without the daemon."""

from __future__ import annotations

import errno
import logging
from typing import Annotated

import typer

from stillroom.cli.options import ConfigOption, console, err_console, get_config, open_store
from stillroom.paths import Paths

PortOption = Annotated[
    int | None,
    typer.Option("--port", "-p", min=1, max=65535, help="Port (default: server.port)."),
]


def serve(config: ConfigOption = None, port: PortOption = None) -> None:
    """Serve the gateway: point a client's base_url at it; every call is recorded.

    Calls go to gateway.openai (gateway.anthropic for /v1/messages) in the config, or to
    STILLROOM_UPSTREAM_BASE_URL with STILLROOM_UPSTREAM_API_KEY (ANTHROPIC_BASE_URL with
    ANTHROPIC_API_KEY). Without a key, each client's own key is passed on.
    """
    from stillroom.service.gateway import base_url, bind, create_app, freeze_heap, load_token
    from stillroom.service.gateway.server import server

    cfg, _ = get_config(config)
    if port is not None:
        cfg = cfg.model_copy(update={"server": cfg.server.model_copy(update={"port": port})})
    host, port = cfg.server.host, cfg.server.port
    try:
        sock = bind(host, port)
    except OSError as exc:
        err_console.print(f"error: {_bind_problem(exc, host, port)}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    paths = Paths.resolve().ensure()
    token = load_token(paths.token_file)
    _log_to_stderr()
    with open_store() as store:
        app = create_app(
            cfg,
            sink=store.add_event,
            token=token,
            store=store,
            allowed_origins=cfg.gateway.allowed_origins,
        )
        console.print(f"stillroom gateway on {base_url(host, port)}", markup=False)
        console.print(f"  set your client's base_url to {base_url(host, port)}", markup=False)
        console.print(
            f"  local token (`stillroom token`; the API key of /v1 calls while a provider key is"
            f" stored): {paths.token_file}",
            markup=False,
        )
        freeze_heap()
        server(app).run(sockets=[sock])


def _bind_problem(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is taken (is `stillroom daemon` running? it serves the"
            " gateway too); choose another with --port"
        )
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def _log_to_stderr() -> None:
    logger = logging.getLogger("stillroom")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
