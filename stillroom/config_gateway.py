"""The config of the gateway: providers, prices, routes and limits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
)

from stillroom.config_checks import mask_secret
from stillroom.config_types import Model
from stillroom.urls import mask_url


class UpstreamConfig(Model):
    """A model provider: where the gateway forwards and what teachers call. The key is
    better left to the environment (STILLROOM_UPSTREAM_API_KEY, ANTHROPIC_API_KEY)."""

    base_url: str = Field(description="Including /v1 for OpenAI-compatible providers.")
    api_key: str | None = Field(None, description="Prefer the environment variable.")
    timeout_seconds: float = Field(120.0, gt=0, le=3600)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr, str and rich show the key masked and the URL without userinfo or query.
        for name, value in super().__repr_args__():
            if name == "api_key" and isinstance(value, str):
                value = mask_secret(value)
            elif name == "base_url" and isinstance(value, str):
                value = mask_url(value)
            yield name, value


class Price(Model):
    """What a model costs, in US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


def _default_prices() -> dict[str, Price]:
    return {
        "gpt-4o-mini": Price(input=0.15, output=0.6),
        "gpt-4o": Price(input=2.5, output=10.0),
        "gpt-4.1-mini": Price(input=0.4, output=1.6),
        "gpt-4.1": Price(input=2.0, output=8.0),
        "claude-3-5-haiku": Price(input=0.8, output=4.0),
        "claude-sonnet-4": Price(input=3.0, output=15.0),
    }


ROUTE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~:@+=,.-")


class RouteConfig(Model):
    """One more API route the gateway forwards (besides its own table of OpenAI's and
    Anthropic's routes): `*` stands for one path segment, a final `**` for one or more."""

    path: str = Field(description="Such as /v1/realtime/sessions or /v1/vendor/*/run.")
    methods: tuple[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], ...] = Field(
        ("POST",), min_length=1
    )
    provider: Literal["openai", "anthropic"] = "openai"
    content_types: tuple[str, ...] = Field(
        ("application/json",),
        description="Media types a request body may have (multipart/form-data for uploads).",
    )
    max_mb: float | None = Field(
        None, gt=0, le=4096, description="Body limit; gateway.max_body_mb when unset."
    )

    @field_validator("path")
    @classmethod
    def _pattern(cls, value: str) -> str:
        segments = value.split("/")
        if segments[:2] != ["", "v1"] or len(segments) < 3:
            raise ValueError("a route starts with /v1/ and names at least one more segment")
        for i, segment in enumerate(segments[2:], start=2):
            last = i == len(segments) - 1
            plain = bool(segment) and set(segment) <= ROUTE_CHARS
            wild = segment == "*" or (segment == "**" and last)
            if segment in (".", "..") or not (plain or wild):
                raise ValueError(f"bad path segment {segment!r} (`**` only at the end)")
        return value

    @field_validator("content_types")
    @classmethod
    def _media_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(media.strip().lower() for media in value)


class GatewayConfig(Model):
    """The OpenAI-compatible gateway: clients point their base_url at it; it records each
    call, answers the ones a proven student is sure of, and forwards the rest."""

    enabled: bool = True
    openai: UpstreamConfig = Field(
        default_factory=lambda: UpstreamConfig(base_url="https://api.openai.com/v1")
    )
    anthropic: UpstreamConfig = Field(
        default_factory=lambda: UpstreamConfig(base_url="https://api.anthropic.com")
    )
    client_auth: bool = Field(
        True, description="Pass the client's own Authorization header when no key is set."
    )
    audit_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of a task's calls drawn for an audit before its student answers:"
        " forwarded, the model's answer checks the student's; a uniform sample of the task's"
        " calls, so these (with the calls before it answered) calibrate its retrains.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (scheme://host:port) allowed to call; none by default.",
    )
    prices: dict[str, Price] = Field(
        default_factory=_default_prices,
        description="Per model name (a prefix matches dated names), for cost estimates.",
    )
    max_body_mb: float = Field(
        32, gt=0, le=4096, description="Request body limit of JSON routes (Anthropic's own)."
    )
    max_upload_mb: float = Field(
        512,
        gt=0,
        le=4096,
        description="Body limit of upload routes (files, uploads, audio, images); streamed on.",
    )
    max_response_mb: float = Field(
        256, gt=0, le=65536, description="A provider's response is cut off beyond this."
    )
    request_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="A client has this long to send a request's head and body.",
    )
    max_concurrent: int = Field(
        64, ge=1, le=10000, description="Requests in flight at once; more get 503 at once."
    )
    extra_routes: list[RouteConfig] = Field(
        default_factory=list, description="API routes to forward beyond the built-in table."
    )
