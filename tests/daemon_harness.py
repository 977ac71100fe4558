"""A real daemon in a subprocess, on a private home and config (tests import this)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DaemonHarness:
    home: Path
    config: Path
    downloads: Path
    documents: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "daemon.log"

    @property
    def db(self) -> Path:
        return self.home / "data" / "stillroom.db"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "STILLROOM_HOME": str(self.home), **extra}

    def write_config(self, **overrides: Any) -> None:
        data: dict[str, Any] = {
            "folders": [{"path": str(self.downloads)}],
            "destinations": [str(self.documents)],
            "filesystem": {"settle_seconds": 0.2, "pair_window_seconds": 0.5},
            # The daemon serves the gateway: a port of its own, so test runs never collide.
            "server": {"port": free_port()},
        }
        data.update(overrides)
        self.config.write_text(json.dumps(data))

    def wait(self, predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        return wait_until(predicate, timeout, what)

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        ready_before = self.log().count("daemon ready")
        proc = subprocess.Popen(
            [sys.executable, "-m", "stillroom", "daemon", "--config", str(self.config)],
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        wait_until(
            lambda: self.log().count("daemon ready") > ready_before or proc.poll() is not None,
            what="daemon ready",
        )
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=30)

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stillroom", *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def events(self, kind: str) -> list[dict[str, Any]]:
        rows = self.query("SELECT payload FROM events WHERE kind = ? ORDER BY id", kind)
        return [json.loads(r[0]) for r in rows]


def run_cli(
    *args: str, home: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """`stillroom ARGS` as a user runs it, with no stdin."""
    return subprocess.run(
        [sys.executable, "-m", "stillroom", *args],
        env={**os.environ, "STILLROOM_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
