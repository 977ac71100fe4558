"""The demo's stage: a throwaway home folder, its own STILLROOM_HOME and a real daemon.

The home stands in for the user's: `~/Downloads` is opted in, `~/Documents` and `~/Pictures`
are the destinations, and every child process gets HOME pointed at it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stillroom.demo.downloads import Download
from stillroom.errors import DaemonError

DAY = 86400.0


class Stage:
    """A throwaway home (Downloads, Documents, Pictures), its STILLROOM_HOME, a real daemon."""

    def __init__(self, root: Path) -> None:
        self.home = root
        self.downloads = root / "Downloads"
        self.stillroom = root / ".stillroom"
        self.daemon: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "HOME": str(self.home), "STILLROOM_HOME": str(self.stillroom)}
        env.pop("STILLROOM_CONFIG", None)
        return env

    @property
    def config(self) -> Path:
        return self.stillroom / "config" / "config.yaml"

    @property
    def log(self) -> Path:
        return self.stillroom / "logs" / "daemon.log"

    def prepare(self, destinations: list[str]) -> None:
        """The folders, and the config a user would write: ~/Downloads opted in."""
        for folder in ["Downloads", *destinations]:
            (self.home / folder).mkdir(parents=True, exist_ok=True)
        self.config.parent.mkdir(parents=True, mode=0o700)
        config = {
            "folders": [{"path": "~/Downloads", "ignore": [".*", "*~"]}],
            "destinations": ["~/Documents", "~/Pictures"],
            "filesystem": {"settle_seconds": 0.3, "pair_window_seconds": 0.5},
            "detector": {"min_support": 20, "min_days": 2, "review_seconds": 1},
        }
        self.config.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "stillroom", "daemon", "--config", str(self.config)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops it cleanly
        )

    def ready(self) -> bool:
        self.check()
        return self.log.exists() and "daemon ready" in self.log.read_text()

    def check(self) -> None:
        if self.daemon is not None and self.daemon.poll() is not None:
            raise DaemonError(f"the daemon stopped (exit {self.daemon.returncode}); see {self.log}")

    def stop(self) -> None:
        proc, self.daemon = self.daemon, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = self.stillroom / "data" / "stillroom.db"
        if not db.exists():
            return []
        con = sqlite3.connect(db, timeout=30)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def count(self, sql: str, *args: Any) -> int:
        rows = self.query(sql, *args)
        return int(rows[0][0]) if rows else 0

    def backdate(self, days: int) -> None:
        """Spread the recorded history over the past `days` days, oldest first: the i-th
        download and the i-th move land on the same day."""
        con = sqlite3.connect(self.stillroom / "data" / "stillroom.db", timeout=30)
        try:
            with con:
                for kind in ("file.created", "file.moved"):
                    ids = [
                        r[0] for r in con.execute("SELECT id FROM events WHERE kind = ?", (kind,))
                    ]
                    for i, event_id in enumerate(sorted(ids)):
                        back = (days - i * days // len(ids)) * DAY
                        con.execute("UPDATE events SET at = at - ? WHERE id = ?", (back, event_id))
        finally:
            con.close()

    def tilde(self, path: Path) -> str:
        return "~/" + path.relative_to(self.home).as_posix()

    def decision(self, path: Path) -> Decision | None:
        """What the active student said about a download, and what its action did."""
        rows = self.query(
            "SELECT p.confidence, p.abstained, a.id, a.state, a.plan FROM predictions p"
            " JOIN events e ON e.id = p.event_id LEFT JOIN actions a ON a.event_id = e.id"
            " WHERE e.path = ? AND p.mode = 'active' ORDER BY p.id DESC, a.id DESC LIMIT 1",
            str(path),
        )
        if not rows:
            return None
        confidence, abstained, action, state, plan = rows[0]
        dst = Path(json.loads(plan)["dst"]) if plan else None
        return Decision(float(confidence), bool(abstained), action, state, dst)


@dataclass(frozen=True)
class Decision:
    confidence: float
    abstained: bool
    action: int | None  # the journal entry of the move, if it made one
    state: str | None  # planned, done, failed, undoing, undone
    dst: Path | None

    @property
    def settled(self) -> bool:
        return self.abstained or self.state in ("done", "failed")


@dataclass(frozen=True)
class Moved:
    """A download stillroom sorted: where it went and the journal entry that did it."""

    download: Download
    path: Path
    action: int

    @property
    def right(self) -> bool:
        return self.path.parent.as_posix().endswith("/" + (self.download.destination or "?"))
