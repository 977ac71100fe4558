"""The dispatcher's state in a small file, so `stillroom status` can tell a stuck store
(it cannot ask a database that is locked)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stillroom.paths import PRIVATE_FILE


@dataclass(frozen=True)
class StoreHealth:
    """`stuck_since` (Unix time) is None while events are stored; `waiting` counts events
    not stored yet (in memory and in the spool), `spooled` those of them on disk."""

    pid: int
    stuck_since: float | None = None
    error: str | None = None
    waiting: int = 0
    spooled: int = 0

    def describe(self, now: float | None = None) -> str:
        """One line for `stillroom status`."""
        waiting = f"{self.waiting:,} events waiting" if self.waiting != 1 else "1 event waiting"
        if self.spooled:
            waiting += f" ({self.spooled:,} in the spool)"
        if self.stuck_since is None:
            return f"store: ok, catching up, {waiting}" if self.waiting else "store: ok"
        seconds = max(0, round((now if now is not None else time.time()) - self.stuck_since))
        return f"store: stuck for {seconds} s ({self.error}), {waiting}"

    def write(self, path: Path) -> None:
        """Replace the file at once: a reader sees the old state or the new one."""
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path, pid: int) -> StoreHealth | None:
        """The state daemon `pid` last wrote, or None (no file, another run's, unreadable)."""
        try:
            health = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return health if health.pid == pid else None
