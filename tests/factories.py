"""Small builders the tests share: action configs and file events (tests import this)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from stillroom.config import ActionConfig
from stillroom.events import Event, FileFeatures, FilePayload

ACTION: TypeAdapter[Any] = TypeAdapter(ActionConfig)


def action(**fields: Any) -> Any:
    """An action config from keyword fields, validated as the config file would be."""
    return ACTION.validate_python(fields)


def file_event(path: Path, at: float | None = None) -> Event:
    """A file.created event for an existing file, with plain features."""
    features = FileFeatures(
        name=path.name, extension="bin", mime="application/octet-stream", size=path.stat().st_size
    )
    payload = FilePayload(path=str(path), root=str(path.parent), features=features)
    return Event(
        source="filesystem", kind="file.created", payload=payload, at=at or time.time(), id=7
    )
