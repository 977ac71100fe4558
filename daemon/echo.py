"""Recognise the filesystem events that stillroom's own actions cause."""

from __future__ import annotations

import threading
import time
from collections.abc import Set
from pathlib import Path

from stillroom.events import Event, FilePayload


class EchoFilter:
    """Paths an action is about to touch; events on them within `ttl` are stillroom's own."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._expected: dict[str, float] = {}
        self._lock = threading.Lock()

    def expect(self, path: Path) -> None:
        with self._lock:
            self._expected[str(path)] = time.monotonic() + self.ttl

    def mark(self, event: Event, journaled: Set[tuple[str | None, str]] = frozenset()) -> Event:
        """The event, flagged `by_stillroom` when one of our actions caused it.

        An event is ours when it lands where an action was about to put a file, or when its
        (from, to) matches a recent journal entry, so the effects of actions run by another
        process (`stillroom apply`, `stillroom undo`) are recognised too. A later move of
        that file (the user correcting it) lands elsewhere and stays the user's.
        """
        payload = event.payload
        if not isinstance(payload, FilePayload):
            return event
        now = time.monotonic()
        with self._lock:
            if len(self._expected) > 1000:
                self._expected = {p: t for p, t in self._expected.items() if t > now}
            ours = (
                self._expected.get(payload.path, 0.0) > now
                or (payload.src_path, payload.path) in journaled
            )
        if not ours:
            return event
        return event.model_copy(
            update={"payload": payload.model_copy(update={"by_stillroom": True})}
        )
