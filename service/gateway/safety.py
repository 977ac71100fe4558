"""Who may talk to the gateway: Host and Origin checks (no DNS rebinding, no web pages) and
the local token, kept in a private file, for whatever reads stored data or changes state."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Collection
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from stillroom.paths import PRIVATE_FILE, private_dir
from stillroom.service.gateway.replies import error_response

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
PUBLIC_PATHS = frozenset({"/stillroom/health"})


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


class Guard:
    """ASGI middleware: refuse foreign Host headers (421), browser Origins (403) and calls
    without the token (401) where it is needed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        token: str,
        allowed_origins: Collection[str] = (),
    ) -> None:
        self.app = app
        self.hosts = allowed_hosts(host, port)
        self.token = token
        self.origins = frozenset(allowed_origins)
        self.token_everywhere = not is_loopback(host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message, code = refusal
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        await error_response(status, message, code, extra)(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """(status, message, code) when the request is refused, else None."""
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if self.hosts is not None and host not in self.hosts:
            return 421, f"host {host or '(none)'} is not served here", "host_not_allowed"
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return 403, f"requests from web pages ({origin}) are refused", "origin_not_allowed"
        path = str(scope.get("path", ""))
        needs_token = self.token_everywhere or (
            path.startswith("/stillroom/") and path not in PUBLIC_PATHS
        )
        if needs_token and not self.has_token(headers):
            return 401, "this route needs the local stillroom token", "token_required"
        return None

    def has_token(self, headers: Headers) -> bool:
        given = headers.get("x-stillroom-token") or ""
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("bearer ") and not given:
            given = auth[7:].strip()
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())
