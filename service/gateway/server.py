"""Serving the gateway with uvicorn: in the foreground (`stillroom serve`) or on a thread of
the daemon. The socket is bound first, so a taken port is an OSError before anything runs.
Each connection has a deadline for a request's head, so a client that trickles it in (or
sends nothing) cannot hold a connection open."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from typing import Any, cast

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from stillroom.service.gateway.limits import DEADLINE

GRACE_SECONDS = 5.0  # open streams get this long to finish at shutdown
TICK_SECONDS = 1.0
HEAD_SECONDS = 30.0
MAX_HEAD_BYTES = 64 * 1024  # a request line and headers beyond this get 431
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (raises OSError when it is taken or not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: uvicorn writes a response's head and body
        # separately, and with Nagle's algorithm the client's delayed ACK held each
        # keep-alive answer back ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def freeze_heap() -> None:
    """Move everything alive after start-up out of the garbage collector's sight. A full
    collection walks every object; with the imports and app frozen it stays short, and the
    gateway's p99 at 100 requests/s fell from ~13 ms to ~7 ms here (bench/gateway.py)."""
    gc.collect()
    gc.freeze()


def base_url(host: str, port: int) -> str:
    """The URL clients put in their base_url (a wildcard host is reached on loopback)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


class HeadDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's head: from the
    connection (or the previous response) until the headers are in, at most `seconds`, or
    the connection is closed. uvicorn's keep-alive timer stops at the first byte, so one
    byte a second would otherwise hold a connection for ever. The head's size is capped
    too (httptools sets no limit), and the deadline goes on in the scope for the body."""

    seconds = HEAD_SECONDS
    _timer: asyncio.TimerHandle | None = None
    _since = 0.0
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def _await_head(self) -> None:
        self._since = self.loop.time()
        self._head_bytes = 0
        self._timer = self.loop.call_later(self.seconds, self._overdue)

    def _head_in(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _overdue(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            self._head_bytes += len(data)
        super().data_received(data)
        too_large = self._timer is not None and self._head_bytes > MAX_HEAD_BYTES
        if too_large and not self.transport.is_closing():
            self._head_in()
            self.transport.write(HEAD_TOO_LARGE)
            self.transport.close()

    def on_headers_complete(self) -> None:
        since = self._since if self._timer is not None else self.loop.time()
        self._head_in()
        super().on_headers_complete()
        cast(dict[str, Any], self.scope)[DEADLINE] = since + self.seconds

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request (uvicorn armed its keep-alive timer): a new deadline.
        if self.timeout_keep_alive_task is not None and self._timer is None:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_in()
        super().connection_lost(exc)


def protocol(seconds: float) -> type[HeadDeadline]:
    """The protocol class with a head deadline of `seconds`."""
    return type("HeadDeadline", (HeadDeadline,), {"seconds": seconds})


class QuietServer(uvicorn.Server):
    """uvicorn with a once-a-second housekeeping loop instead of ten times a second: the
    Date header has one-second resolution anyway, and every wakeup shows in an idle
    daemon's CPU (a bare server thread idled at 4.8% here, 3.0% with this). A stop is
    noticed within a second."""

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # on_tick refreshes the Date every 10 counts
            await asyncio.sleep(TICK_SECONDS)
            should_exit = await self.on_tick(counter)


def server(app: FastAPI) -> uvicorn.Server:
    """A uvicorn server that leaves logging to stillroom and keeps no access log; requests
    have the gateway's request_timeout_seconds to arrive."""
    seconds = float(getattr(app.state, "request_timeout", HEAD_SECONDS))
    config = uvicorn.Config(
        app,
        http=protocol(seconds),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(GRACE_SECONDS),
    )
    return QuietServer(config)


class GatewayThread:
    """The gateway on its own thread, on a socket bound by `bind`; `stop` joins it."""

    def __init__(self, app: FastAPI, sock: socket.socket) -> None:
        self.server = server(app)
        self.sock = sock
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [sock]},
            name="stillroom-gateway",
            daemon=True,
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("the gateway did not start in time")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(GRACE_SECONDS + 5)
        self.sock.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self.server.started
