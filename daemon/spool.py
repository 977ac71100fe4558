"""Events that wait on disk while the store is stuck: JSON lines, replayed in order."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from stillroom.events import Event
from stillroom.paths import PRIVATE_FILE, private_dir

log = logging.getLogger("stillroom.daemon")


class Spool:
    """An append-only file of events and how far it has been replayed (a side file holding a
    byte offset, so a restart does not store the replayed part twice). Removed once empty."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset_path = path.with_name(path.name + ".offset")
        self._offset = 0
        self._waiting = 0
        if path.exists():
            self._offset = _read_offset(self._offset_path)
            with path.open("rb") as f:
                f.seek(self._offset)
                self._waiting = sum(1 for line in f if line.strip())
            if not self._waiting:
                self._remove()

    def __len__(self) -> int:
        """Events not replayed yet."""
        return self._waiting

    def append(self, events: Iterable[Event]) -> None:
        lines = [_line(event) for event in events]
        if not lines:
            return
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        with os.fdopen(fd, "ab") as f:
            f.write(b"".join(lines))
            f.flush()
            os.fsync(f.fileno())
        self._waiting += len(lines)

    def peek(self, limit: int) -> list[tuple[Event, int]]:
        """The next `limit` events at most, each with the offset just past it (for
        `consume`); reading does not replay them."""
        found: list[tuple[Event, int]] = []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            while len(found) < limit:
                line = f.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    event = Event.from_row(0, **data).model_copy(update={"id": None})
                except (ValueError, TypeError) as exc:  # a damaged line must not wedge the rest
                    log.error("spool %s: skipping an unreadable event: %s", self.path, exc)
                    self._waiting -= 1
                    self._offset = f.tell()
                    continue
                found.append((event, f.tell()))
        return found

    def consume(self, count: int, offset: int | None) -> None:
        """Mark the first `count` events `peek` returned as stored, up to `offset`; the file
        goes once all of it is."""
        self._waiting -= count
        if offset is not None:
            self._offset = offset
        if self._waiting <= 0:
            self._waiting = 0
            self._remove()
            return
        tmp = self._offset_path.with_name(self._offset_path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
            with os.fdopen(fd, "w") as f:
                f.write(str(self._offset))
            os.replace(tmp, self._offset_path)
        except OSError as exc:  # replay goes on; only a restart would store some twice
            log.error("cannot note the spool's progress in %s: %s", self._offset_path, exc)

    def _remove(self) -> None:
        self._offset = 0
        for path in (self.path, self._offset_path):
            path.unlink(missing_ok=True)


def _line(event: Event) -> bytes:
    data = {"source": event.source, "kind": event.kind, "at": event.at}
    return (json.dumps({**data, "payload": event.payload_json()}) + "\n").encode()


def _read_offset(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0
