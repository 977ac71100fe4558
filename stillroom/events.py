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


class FilePayload(Payload):
    """A file event: where it happened, what the file is, where it came from when moved."""

    path: str
    root: str = Field(description="The opt-in folder or destination root that saw it.")
    features: FileFeatures | None = None
    src_path: str | None = Field(None, description="For file.moved: where it was before.")
    by_stillroom: bool = Field(False, description="Caused by one of stillroom's own actions.")


PAYLOAD_TYPES: dict[str, type[Payload]] = {
    "file.created": FilePayload,
    "file.modified": FilePayload,
    "file.moved": FilePayload,
    "file.deleted": FilePayload,
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

    def file(self) -> FilePayload:
        """The payload of a file event (raises TypeError for other kinds)."""
        if not isinstance(self.payload, FilePayload):
            raise TypeError(f"{self.kind} is not a file event")
        return self.payload


class GenericPayload(Payload):
    """A payload of a kind this version has no model for, kept as stored (flat keys)."""

    model_config = ConfigDict(extra="allow", frozen=True)
