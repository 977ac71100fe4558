"""Who may talk to the gateway, and what it forwards: Host, Origin and Sec-Fetch-Site checks
(no DNS rebinding, no web pages), the route table, the local token (kept in a private file)
wherever stillroom holds a provider key or the route reads stored data, and each route's
media types and body limit."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from collections.abc import Collection
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stillroom.paths import PRIVATE_FILE, private_dir
from stillroom.service.gateway.forward import Provider
from stillroom.service.gateway.limits import (
    BodyTooLarge,
    LimitedReceive,
    RequestTimeout,
    ResponseTooLarge,
    announced_length,
    deadline,
)
from stillroom.service.gateway.replies import provider_error
from stillroom.service.gateway.routes import (
    OWN_ROUTES,
    ROUTE,
    Found,
    Refusal,
    RouteTable,
    error_provider,
)

log = logging.getLogger("stillroom.gateway")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
CREDENTIALS = ("authorization", "x-api-key", "api-key", "x-stillroom-token")
OWN_MAX_BYTES = 64 * 1024
POLICY_VIOLATION = 1008
TOKEN_HINT = (
    "pass the local stillroom token as the API key (Authorization: Bearer <token>, or"
    " x-api-key: <token>); `stillroom token` prints it"
)


def load_token(path: Path) -> str:
    """The local token in `path`, created (0600) on first use."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE)
    except FileExistsError:
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    os.chmod(path, PRIVATE_FILE)
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """Host headers the gateway answers; None (any) when it listens on every interface,
    where the token required on every route is the guard."""
    if host in WILDCARDS:
        return None
    names = set(LOOPBACK_NAMES)
    if not is_loopback(host):
        names.add(f"[{host}]" if ":" in host else host)
    found = {f"{name}:{port}" for name in names}
    if port == 80:
        found |= names
    return frozenset(found)


def token_in(headers: Headers) -> list[str]:
    """Every value a client may have put the token in (its API key headers, any scheme case)."""
    found = []
    for name in CREDENTIALS:
        value = headers.get(name)
        if not value:
            continue
        scheme, _, rest = value.strip().partition(" ")
        found.append(rest.strip() if scheme.lower() == "bearer" else value.strip())
    return found


def is_token(value: str, token: str) -> bool:
    return secrets.compare_digest(value.encode(), token.encode())


class Guard:
    """ASGI middleware in front of every route: refuses foreign Host headers (421), web
    pages (403), bad paths (400), what is no route (404, 405), calls without the token where
    it is needed (401), bodies of the wrong type (415) or size (413) and requests that
    take too long to arrive (408), each in the provider's error shape. Websockets are
    closed: no route takes one."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        token: str,
        routes: RouteTable,
        keyed: Collection[Provider] = (),
        request_timeout: float = 30.0,
        allowed_origins: Collection[str] = (),
    ) -> None:
        self.app = app
        self.hosts = allowed_hosts(host, port)
        self.token = token
        self.routes = routes
        self.keyed = frozenset(keyed)
        self.timeout = request_timeout
        self.origins = frozenset(allowed_origins)
        self.token_everywhere = not is_loopback(host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await refuse_websocket(receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        checked = self.check(scope, headers)
        if isinstance(checked, Refusal):
            await self.refuse(scope, headers, checked)(scope, receive, send)
            return
        found = scope.get(ROUTE)
        streamed = isinstance(found, Found) and found.route.streamed
        until = deadline(scope, self.timeout)
        limited = LimitedReceive(receive, checked, until, self.timeout, streamed)
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watched)
        except (BodyTooLarge, RequestTimeout, ResponseTooLarge) as exc:
            if started:  # returning unfinished makes uvicorn close the connection
                log.warning("%s %s cut off: %s", scope["method"], scope["path"], exc)
                return
            status = 408 if isinstance(exc, RequestTimeout) else 413
            code = "request_timeout" if status == 408 else "request_too_large"
            refusal = Refusal(status, str(exc), code)
            await self.refuse(scope, headers, refusal, close=True)(scope, receive, send)

    def check(self, scope: Scope, headers: Headers) -> Refusal | int:
        """The body limit in bytes of a request that may pass, else why it may not."""
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return Refusal(421, f"host {host or '(none)'} is not served here", "host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            message = f"requests from web pages ({origin}) are refused"
            return Refusal(403, message, "origin_not_allowed")
        site = headers.get("sec-fetch-site", "").lower()
        if site in ("cross-site", "same-site") and origin not in self.origins:
            return Refusal(403, f"{site} requests from web pages are refused", "site_not_allowed")
        if "upgrade" in headers:
            return Refusal(400, "no route here takes a connection upgrade", "upgrade_refused")
        path, method = str(scope["path"]), str(scope["method"])
        if path in OWN_ROUTES:
            if method != "GET":
                message = f"{path} takes GET, not {method}"
                return Refusal(405, message, "method_not_allowed", ("GET",))
            if (self.token_everywhere or not OWN_ROUTES[path]) and not self.has_token(headers):
                return Refusal(
                    401, f"this route needs the local token: {TOKEN_HINT}", "token_required"
                )
            return OWN_MAX_BYTES
        raw_path = scope.get("raw_path") or path.encode()
        found = self.routes.find(method, path, raw_path, scope.get("query_string", b""), headers)
        if not isinstance(found, Found):
            return found
        scope[ROUTE] = found
        route = found.route
        if (self.token_everywhere or route.provider in self.keyed) and not self.has_token(headers):
            message = f"stillroom holds the {route.provider} key here: {TOKEN_HINT}"
            if self.token_everywhere and route.provider not in self.keyed:
                message = f"off loopback every route needs the local token: {TOKEN_HINT}"
            return Refusal(401, message, "token_required")
        refusal = body_problem(method, headers, route.content_types, route.max_bytes)
        return refusal or route.max_bytes

    def has_token(self, headers: Headers) -> bool:
        return any(is_token(value, self.token) for value in token_in(headers))

    def refuse(
        self, scope: Scope, headers: Headers, refusal: Refusal, close: bool = False
    ) -> Response:
        found = scope.get(ROUTE)
        path = str(scope.get("path", ""))
        provider = (
            found.route.provider if isinstance(found, Found) else error_provider(path, headers)
        )
        extra: dict[str, str] = {}
        if refusal.status == 401:
            extra["WWW-Authenticate"] = "Bearer"
        if refusal.allow:
            extra["Allow"] = ", ".join(refusal.allow)
        if close or has_body(headers):  # the unread body must not be taken for a request
            extra["Connection"] = "close"
        anthropic = provider == "anthropic" and not path.startswith("/stillroom/")
        return provider_error(anthropic, refusal.status, refusal.message, refusal.code, extra)


def has_body(headers: Headers) -> bool:
    length = announced_length(headers)
    return "transfer-encoding" in headers or isinstance(length, str) or bool(length)


def body_problem(
    method: str, headers: Headers, media_types: Collection[str], max_bytes: int
) -> Refusal | None:
    """What is wrong with a body before a byte of it is read: its type (that of a POST, PUT
    or PATCH even without a body: a web page's simple request is text/plain) or its size."""
    length = announced_length(headers)
    if isinstance(length, str):
        return Refusal(400, length, "invalid_request")
    media = headers.get("content-type", "").partition(";")[0].strip().lower()
    if not has_body(headers) and not (media and method in ("POST", "PUT", "PATCH")):
        return None
    if media not in media_types:
        wanted = " or ".join(sorted(media_types))
        message = f"this route takes {wanted}, not {media or 'a body without a content type'}"
        return Refusal(415, message, "unsupported_media_type")
    if length is not None and length > max_bytes:
        message = f"the request body ({length} bytes) is over this route's limit of {max_bytes}"
        return Refusal(413, message, "request_too_large")
    return None


async def refuse_websocket(receive: Receive, send: Send) -> None:
    """Close a websocket before accepting it (the server answers its handshake with 403)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})
