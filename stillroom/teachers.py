"""Teachers: the large models that label and synthesize examples, behind one interface.

Two HTTP backends (OpenAI-compatible chat completions and Anthropic messages) share the
retry loop: 429, 5xx, timeouts and dropped connections are tried again with exponential
backoff and jitter (a Retry-After header wins); any other 4xx is final.
"""

from __future__ import annotations

import ipaddress
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol
from urllib.parse import urlparse

import httpx

from stillroom.config import Config, Price
from stillroom.errors import TeacherError
from stillroom.pricing import cost_usd, estimate_tokens

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": text}
MAX_WAIT = 60.0  # seconds: the longest single wait between tries, Retry-After included
ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_MAX_TOKENS = 1024  # Anthropic requires max_tokens on every request


@dataclass(frozen=True)
class Completion:
    """One answer with what it cost (cost_usd is None when the model has no price)."""

    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    model: str


class Teacher(Protocol):
    """What labelling and synthesis need from a model provider."""

    model: str

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float = 0,
    ) -> Completion: ...

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """US dollars for that many tokens on this teacher's model, None when unpriced."""
        ...

    def close(self) -> None: ...


class HTTPTeacher:
    """The shared part of the HTTP backends: the client, the retries and the prices."""

    provider: ClassVar[str]

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        prices: Mapping[str, Price] | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.prices = dict(prices or {})
        self.max_retries = max_retries
        self.backoff = backoff
        self._sleep = sleep
        self._client = httpx.Client(timeout=httpx.Timeout(timeout), headers=self._headers(api_key))

    # -- what each backend says differently ------------------------------------------------

    def _headers(self, api_key: str | None) -> dict[str, str]:
        raise NotImplementedError

    def _endpoint(self) -> str:
        raise NotImplementedError

    def _body(
        self, messages: Sequence[Message], max_tokens: int | None, temperature: float
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: Any) -> tuple[str, int | None, int | None, str | None]:
        """(text, input tokens, output tokens, model) from a successful response body."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------

    def complete(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int | None = None,
        temperature: float = 0,
    ) -> Completion:
        """Ask once (with retries) and account for the tokens; the provider's counts win,
        an estimate stands in where it gives none."""
        data = self._post(self._body(messages, max_tokens, temperature))
        try:
            text, used_in, used_out, model = self._parse(data)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise TeacherError(f"{self._where()}: unexpected answer ({exc!r})") from None
        if used_in is None:
            used_in = sum(estimate_tokens(m["content"]) for m in messages)
        if used_out is None:
            used_out = estimate_tokens(text)
        model = model or self.model
        return Completion(text, used_in, used_out, self._cost(model, used_in, used_out), model)

    def cost(self, input_tokens: int, output_tokens: int) -> float | None:
        return self._cost(self.model, input_tokens, output_tokens)

    def _cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        found = cost_usd(self.prices, model, input_tokens, output_tokens)
        if found is None and model != self.model:  # a dated name the table does not know
            found = cost_usd(self.prices, self.model, input_tokens, output_tokens)
        return found

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HTTPTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _where(self) -> str:
        return f"{self.provider} teacher {self.model} at {self.base_url}"

    def _post(self, body: dict[str, Any]) -> Any:
        """POST with retries; returns the decoded JSON body of the first success."""
        url = self._endpoint()
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            try:
                response = self._client.post(url, json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self._client.timeout.read}s"
            except httpx.TransportError as exc:
                last = f"cannot connect ({exc or type(exc).__name__})"
            else:
                if response.is_success:
                    try:
                        return response.json()
                    except ValueError:
                        raise TeacherError(f"{self._where()}: the answer is not JSON") from None
                last = f"HTTP {response.status_code}: {provider_message(response)}"
                if not retryable(response.status_code):
                    raise TeacherError(f"{self._where()} refused the request: {last}")
                wait = retry_after(response.headers.get("retry-after"))
            if attempt < self.max_retries:
                self._sleep(wait if wait is not None else self._backoff(attempt))
        tries = self.max_retries + 1
        raise TeacherError(f"{self._where()}: gave up after {tries} tries; last: {last}")

    def _backoff(self, attempt: int) -> float:
        # Exponential, with jitter so parallel callers do not retry in lockstep.
        delay = min(MAX_WAIT, self.backoff * 2.0**attempt)
        return delay * random.uniform(0.5, 1.0)


class OpenAITeacher(HTTPTeacher):
    """Any OpenAI-compatible chat completions API: OpenAI, OpenRouter, Ollama, vLLM, ..."""

    provider = "openai"

    def _headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def _endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _body(
        self, messages: Sequence[Message], max_tokens: int | None, temperature: float
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body

    def _parse(self, data: Any) -> tuple[str, int | None, int | None, str | None]:
        text = data["choices"][0]["message"]["content"] or ""
        usage = data.get("usage") or {}
        return (
            str(text),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            data.get("model"),
        )


class AnthropicTeacher(HTTPTeacher):
    """Anthropic's messages API: the system prompt is a top-level field, not a message."""

    provider = "anthropic"

    def _headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        return headers | ({"x-api-key": api_key} if api_key else {})

    def _endpoint(self) -> str:
        # The conventional base URL has no /v1 (as ANTHROPIC_BASE_URL); accept one anyway.
        return f"{self.base_url.removesuffix('/v1')}/v1/messages"

    def _body(
        self, messages: Sequence[Message], max_tokens: int | None, temperature: float
    ) -> dict[str, Any]:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens or ANTHROPIC_MAX_TOKENS,
            "temperature": temperature,
            "messages": [dict(m) for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = system
        return body

    def _parse(self, data: Any) -> tuple[str, int | None, int | None, str | None]:
        text = "".join(b["text"] for b in data["content"] if b.get("type") == "text")
        usage = data.get("usage") or {}
        return text, usage.get("input_tokens"), usage.get("output_tokens"), data.get("model")


TEACHERS: dict[str, type[HTTPTeacher]] = {"openai": OpenAITeacher, "anthropic": AnthropicTeacher}
# Where each provider's endpoint and key may come from, overriding the config.
ENV_VARS = {
    "openai": ("STILLROOM_UPSTREAM_BASE_URL", "STILLROOM_UPSTREAM_API_KEY"),
    "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
}


def teacher_from_config(config: Config, env: Mapping[str, str] | None = None) -> HTTPTeacher:
    """The configured teacher; the environment's base URL and key override the config's."""
    env = os.environ if env is None else env
    settings = config.teacher
    upstream = getattr(config.gateway, settings.provider)
    url_var, key_var = ENV_VARS[settings.provider]
    base_url = env.get(url_var) or upstream.base_url
    api_key = env.get(key_var) or upstream.api_key
    if not api_key and not is_local(base_url):
        raise TeacherError(
            f"the {settings.provider} teacher at {base_url} needs an API key:"
            f" set {key_var} (or gateway.{settings.provider}.api_key in the config)"
        )
    return TEACHERS[settings.provider](
        base_url=base_url,
        model=settings.model,
        api_key=api_key,
        prices=config.gateway.prices,
        timeout=settings.timeout_seconds,
        max_retries=settings.max_retries,
    )


def is_local(url: str) -> bool:
    """True for loopback hosts (a local Ollama or llama.cpp server needs no key)."""
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retryable(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(MAX_WAIT, max(0.0, seconds))


def provider_message(response: httpx.Response) -> str:
    """The provider's own error message (OpenAI and Anthropic both use error.message)."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return str(data)[:300]
