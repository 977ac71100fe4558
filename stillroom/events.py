"""What monitors report: an Event with a typed payload per kind."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

Source = Literal["filesystem", "input", "system", "llm"]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileFeatures(Payload):
    """What a file is, cheaply: enough to describe it to a rule or a student."""

    name: str
    extension: str = Field(description="Lower case, without the dot; '' when none.")
    mime: str
    size: int
    snippet: str | None = Field(None, description="The start of its text, for text and PDF.")
    inode: int | None = None
    device: int | None = None
    quick_hash: str | None = Field(None, description="sha256 of size + first and last 64 KiB.")
    symlink: bool = Field(
        False,
        description="A symbolic link, recorded as itself: nothing of its target was read, and"
        " no automation acts on it.",
    )


class FilePayload(Payload):
    """A file event: where it happened, what the file is, where it came from when moved."""

    path: str
    root: str = Field(description="The opt-in folder or destination root that saw it.")
    features: FileFeatures | None = None
    src_path: str | None = Field(None, description="For file.moved: where it was before.")
    by_stillroom: bool = Field(False, description="Caused by one of stillroom's own actions.")


class LLMCallPayload(Payload):
    """One call to a model provider, as the gateway (or an imported log) saw it. Secrets are
    redacted before a payload is built; `messages` and `response` are the provider's JSON."""

    provider: Literal["openai", "anthropic"] = "openai"
    endpoint: str = Field("/v1/chat/completions", description="The route called.")
    model: str
    messages: list[dict[str, Any]] = Field(description="Chat messages, system ones included.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The rest of the request: temperature, tools, ..."
    )
    response: dict[str, Any] | str | None = Field(
        None, description="The response body (a chat completion), or its text when imported."
    )
    status: int | None = Field(200, description="HTTP status; None when it never completed.")
    stream: bool = False
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = Field(None, description="Estimated from the config's price table.")
    answered_by: Literal["upstream", "local", "audit"] = Field(
        "upstream", description="local: a student answered; audit: forwarded to check one."
    )
    task: str | None = Field(None, description="The learned task that matched, if any.")
    abstained: bool = Field(
        False,
        description="Forwarded because the task's student was unsure or the input out of its"
        " scope (and not drawn for an audit): not a uniform sample of the task's calls, so its"
        " answer trains students but never calibrates their guarantee.",
    )
    origin: str = Field("gateway", description="gateway, or where an imported call came from.")


class InputActivityPayload(Payload):
    """Keyboard and mouse activity over one period: counts and timings, never the text typed."""

    seconds: float = Field(description="Length of the period counted.")
    keys: int = Field(0, description="Key presses of any key.")
    clicks: int = Field(0, description="Mouse button presses.")
    scrolls: int = Field(0, description="Scroll wheel steps.")
    moves: int = Field(0, description="Bursts of pointer motion (a pause starts a new one).")
    shortcuts: dict[str, int] = Field(
        default_factory=dict, description='Ctrl/Alt/Super combinations, e.g. {"ctrl+s": 3}.'
    )
    idle_seconds: float | None = Field(None, description="Time since the last input, at flush.")


class SystemPowerPayload(Payload):
    """The power source changed (or the monitor started)."""

    on_ac: bool | None = Field(description="None when psutil cannot tell; no battery is AC.")
    battery_percent: float | None = None


class ForegroundAppPayload(Payload):
    """The foreground application changed: its name only, never a window title."""

    name: str


PAYLOAD_TYPES: dict[str, type[Payload]] = {
    "llm.call": LLMCallPayload,
    "file.created": FilePayload,
    "file.modified": FilePayload,
    "file.moved": FilePayload,
    "file.deleted": FilePayload,
    "input.activity": InputActivityPayload,
    "system.power": SystemPowerPayload,
    "system.app": ForegroundAppPayload,
}


class Event(BaseModel):
    """One thing a monitor saw."""

    model_config = ConfigDict(frozen=True)

    source: Source
    kind: str
    payload: SerializeAsAny[Payload]
    at: float = Field(default_factory=time.time, description="Unix time.")
    id: int | None = None

    def payload_json(self) -> str:
        return self.payload.model_dump_json(exclude_none=True)

    @classmethod
    def from_row(cls, id: int, source: str, kind: str, at: float, payload: str) -> Event:
        model = PAYLOAD_TYPES.get(kind)
        data: dict[str, Any] = json.loads(payload)
        body = (model or GenericPayload).model_validate(data)
        return cls(id=id, source=source, kind=kind, at=at, payload=body)

    def llm_call(self) -> LLMCallPayload:
        """The payload of an llm.call event (raises TypeError for other kinds)."""
        if not isinstance(self.payload, LLMCallPayload):
            raise TypeError(f"{self.kind} is not an llm.call event")
        return self.payload

    def file(self) -> FilePayload:
        """The payload of a file event (raises TypeError for other kinds)."""
        if not isinstance(self.payload, FilePayload):
            raise TypeError(f"{self.kind} is not a file event")
        return self.payload


class GenericPayload(Payload):
    """A payload of a kind this version has no model for, kept as stored (flat keys)."""

    model_config = ConfigDict(extra="allow", frozen=True)
