"""The API routes the gateway forwards, all in one table: path pattern, methods, provider,
request media types and body limit. A path that is no route is answered 404 and never
forwarded; one that could mean another path upstream (`..`, `%2e`, `//`, `\\`) is 400.

In a pattern `*` is one path segment and a final `**` one or more."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode

from stillroom.config_gateway import ROUTE_CHARS, GatewayConfig
from stillroom.service.gateway.forward import Provider

MB = 1024 * 1024
JSON = ("application/json",)
# Upload routes take multipart forms (files, audio, image edits) besides JSON, and more bytes.
UPLOAD = ("multipart/form-data", "application/json")
Limit = Literal["body", "upload"]
READ, WRITE, EVERY = ("GET",), ("POST",), ("GET", "POST", "DELETE")

# (pattern, methods, provider, which limit). Where OpenAI and Anthropic share a path
# (/v1/models), a request with an anthropic-version header goes to Anthropic.
TABLE: tuple[tuple[str, tuple[str, ...], Provider, Limit], ...] = (
    ("/v1/chat/completions", ("GET", "POST"), "openai", "body"),
    ("/v1/chat/completions/*", EVERY, "openai", "body"),
    ("/v1/chat/completions/*/messages", READ, "openai", "body"),
    ("/v1/completions", WRITE, "openai", "body"),
    ("/v1/embeddings", WRITE, "openai", "body"),
    ("/v1/moderations", WRITE, "openai", "body"),
    ("/v1/models", READ, "openai", "body"),
    ("/v1/models/*", ("GET", "DELETE"), "openai", "body"),
    ("/v1/responses", WRITE, "openai", "body"),
    ("/v1/responses/**", EVERY, "openai", "body"),
    ("/v1/conversations", WRITE, "openai", "body"),
    ("/v1/conversations/**", EVERY, "openai", "body"),
    ("/v1/files", ("GET", "POST"), "openai", "upload"),
    ("/v1/files/*", ("GET", "DELETE"), "openai", "body"),
    ("/v1/files/*/content", READ, "openai", "body"),
    ("/v1/uploads", WRITE, "openai", "body"),
    ("/v1/uploads/**", WRITE, "openai", "upload"),
    ("/v1/audio/**", WRITE, "openai", "upload"),
    ("/v1/images/**", WRITE, "openai", "upload"),
    ("/v1/batches", ("GET", "POST"), "openai", "body"),
    ("/v1/batches/*", READ, "openai", "body"),
    ("/v1/batches/*/cancel", WRITE, "openai", "body"),
    ("/v1/fine_tuning/**", EVERY, "openai", "body"),
    ("/v1/assistants", ("GET", "POST"), "openai", "body"),
    ("/v1/assistants/*", EVERY, "openai", "body"),
    ("/v1/threads", WRITE, "openai", "body"),
    ("/v1/threads/**", EVERY, "openai", "body"),
    ("/v1/vector_stores", ("GET", "POST"), "openai", "body"),
    ("/v1/vector_stores/**", EVERY, "openai", "body"),
    ("/v1/messages", WRITE, "anthropic", "body"),
    ("/v1/messages/count_tokens", WRITE, "anthropic", "body"),
    ("/v1/messages/batches", ("GET", "POST"), "anthropic", "body"),
    ("/v1/messages/batches/*", ("GET", "DELETE"), "anthropic", "body"),
    ("/v1/messages/batches/*/cancel", WRITE, "anthropic", "body"),
    ("/v1/messages/batches/*/results", READ, "anthropic", "body"),
    ("/v1/models", READ, "anthropic", "body"),
    ("/v1/models/*", READ, "anthropic", "body"),
    ("/v1/complete", WRITE, "anthropic", "body"),
)
ROUTE = "stillroom.route"  # the scope key where the Guard leaves a request's Found route
# The gateway's own routes: the health page is public, the rest need the local token.
OWN_ROUTES = {"/stillroom/health": True, "/stillroom/calls": False}

BAD_ESCAPES = (b"%2e", b"%2f", b"%5c", b"%25", b"%00")


@dataclass(frozen=True)
class Route:
    pattern: tuple[str, ...]
    methods: frozenset[str]
    provider: Provider
    content_types: frozenset[str]
    max_bytes: int
    streamed: bool = False  # an upload's body goes on as it arrives, never held whole

    def matches(self, segments: list[str]) -> bool:
        if "" in segments:  # a trailing slash: no route has one
            return False
        pattern = self.pattern
        if pattern and pattern[-1] == "**":
            head = pattern[:-1]
            if len(segments) <= len(head):
                return False
            segments = segments[: len(head)]
            pattern = head
        if len(segments) != len(pattern):
            return False
        return all(p in ("*", s) for p, s in zip(pattern, segments, strict=True))


@dataclass(frozen=True)
class Found:
    """A request's route, and the path and query to send upstream (checked, rebuilt)."""

    route: Route
    path: str
    query: str


@dataclass(frozen=True)
class Refusal:
    """Why a request is answered here and not forwarded: no route (400 a bad path, 404 no
    such route, 405 not with this method), or what the Guard refuses (401, 403, 413, ...)."""

    status: int
    message: str
    code: str
    allow: tuple[str, ...] = ()


def path_problem(raw_path: bytes, path: str) -> str | None:
    """Why a path may not be forwarded, looking at the raw bytes and the decoded text alike:
    traversal (`..`, `.`, `%2e`), another meaning of slash (`%2f`, `\\`, `//`), double
    encoding (`%25`), or characters that no API path has."""
    raw = raw_path.split(b"?", 1)[0]
    lowered = raw.lower()
    if b"\\" in raw or "\\" in path or b"%5c" in lowered:
        return "a path with a backslash is refused"
    if any(escape in lowered for escape in BAD_ESCAPES):
        return "a path with a percent-encoded dot, slash or percent sign is refused"
    if b"//" in raw or "//" in path:
        return "a path with an empty segment (//) is refused"
    for segments in (raw.split(b"/"), path.encode("utf-8", "replace").split(b"/")):
        if b"." in segments or b".." in segments:
            return "a path with . or .. segments is refused"
    if not path.startswith("/") or not set(path) <= ROUTE_CHARS | {"/"}:
        return "the path has characters that no API route uses"
    return None


class RouteTable:
    """The table above, plus the config's extra routes, with their body limits in bytes."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)

    @classmethod
    def from_config(cls, gateway: GatewayConfig) -> RouteTable:
        limits = {"body": gateway.max_body_mb, "upload": gateway.max_upload_mb}
        routes = [
            Route(
                pattern=tuple(pattern.split("/")[1:]),
                methods=frozenset(methods),
                provider=provider,
                content_types=frozenset(UPLOAD if limit == "upload" else JSON),
                max_bytes=int(limits[limit] * MB),
                streamed=limit == "upload",
            )
            for pattern, methods, provider, limit in TABLE
        ]
        for extra in gateway.extra_routes:
            max_mb = extra.max_mb or gateway.max_body_mb
            routes.append(
                Route(
                    pattern=tuple(extra.path.split("/")[1:]),
                    methods=frozenset(extra.methods),
                    provider=extra.provider,
                    content_types=frozenset(extra.content_types),
                    max_bytes=int(max_mb * MB),
                    streamed=max_mb > gateway.max_body_mb,
                )
            )
        return cls(routes)

    def find(
        self, method: str, path: str, raw_path: bytes, query: bytes, headers: Mapping[str, str]
    ) -> Found | Refusal:
        """The route of a /v1 request, or why there is none."""
        problem = path_problem(raw_path, path)
        if problem is not None:
            return Refusal(400, problem, "invalid_path")
        segments = path.split("/")[1:]
        matching = [r for r in self.routes if r.matches(segments)]
        if not matching:
            return Refusal(404, f"no API route {path} is forwarded here", "unknown_route")
        with_method = [r for r in matching if method in r.methods]
        if not with_method:
            allow = tuple(sorted({m for r in matching for m in r.methods}))
            message = f"{path} takes {', '.join(allow)}, not {method}"
            return Refusal(405, message, "method_not_allowed", allow)
        wanted: Provider = "anthropic" if "anthropic-version" in headers else "openai"
        route = next((r for r in with_method if r.provider == wanted), with_method[0])
        return Found(route, path, clean_query(query))


def clean_query(query: bytes) -> str:
    """The query string decoded and encoded again: what goes upstream is well-formed."""
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="replace")
    return urlencode(pairs)


def error_provider(path: str, headers: Mapping[str, str]) -> Provider:
    """Whose error shape a refusal takes when no route was found."""
    anthropic = path.startswith(("/v1/messages", "/v1/complete"))
    return "anthropic" if anthropic or "anthropic-version" in headers else "openai"
