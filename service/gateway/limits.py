"""What one client may cost the gateway: requests in flight at once, bytes of a request
body, and time to send it. A request over a limit is answered, never waited out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Set by the server's protocol (server.py) when a request's head is complete: the loop time
# by which its body must have arrived, so head and body share one deadline.
DEADLINE = "stillroom.deadline"

Refuse = Callable[[Scope, int, str, str, dict[str, str]], Response]


class BodyTooLarge(Exception):
    """The request body went past its route's limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over this route's limit of {limit} bytes")


class RequestTimeout(Exception):
    """The client did not send the whole request in time (408)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the request did not arrive within {seconds:g} s")


class ResponseTooLarge(Exception):
    """The provider's response went past gateway.max_response_mb: it is cut off."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the provider's response is over the limit of {limit} bytes")


class LimitedReceive:
    """`receive` counting the body's bytes and keeping the deadline; once the body is whole,
    later calls (waiting for a disconnect while a response streams) pass straight on.

    A streamed body (an upload, which goes on only as fast as the provider takes it) has
    no deadline for the whole: each part must come within `seconds` of the one before."""

    def __init__(
        self,
        receive: Receive,
        max_bytes: int,
        deadline: float,
        seconds: float,
        streamed: bool = False,
    ) -> None:
        self.receive = receive
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.seconds = seconds
        self.streamed = streamed
        self.seen = 0
        self.done = False

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        now = asyncio.get_running_loop().time()
        left = self.seconds if self.streamed else self.deadline - now
        if left <= 0:
            raise RequestTimeout(self.seconds)
        try:
            async with asyncio.timeout(left):
                message = await self.receive()
        except TimeoutError:
            raise RequestTimeout(self.seconds) from None
        if message["type"] != "http.request":
            self.done = True
            return message
        self.seen += len(message.get("body", b""))
        if self.seen > self.max_bytes:
            raise BodyTooLarge(self.max_bytes)
        self.done = not message.get("more_body", False)
        return message


def deadline(scope: Scope, seconds: float) -> float:
    """When the request's body must be in: the server's deadline, else `seconds` from now."""
    given = scope.get(DEADLINE)
    if isinstance(given, float):
        return given
    return asyncio.get_running_loop().time() + seconds


def announced_length(headers: Headers) -> int | str | None:
    """The Content-Length the client announced, None without one, or what is wrong."""
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        return f"Content-Length {value[:40]!r} is not a number"
    return int(value)


class Admission:
    """ASGI middleware: at most `max_concurrent` requests in flight; the next ones get 503
    with Retry-After at once (a queue would hold their memory and their sockets)."""

    def __init__(self, app: ASGIApp, *, max_concurrent: int, refuse: Refuse) -> None:
        self.app = app
        self.max_concurrent = max_concurrent
        self.refuse = refuse
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_concurrent:
            message = f"the gateway has {self.max_concurrent} requests in flight; try again"
            headers = {"Retry-After": "1", "Connection": "close"}
            await self.refuse(scope, 503, message, "too_many_requests", headers)(
                scope, receive, send
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
