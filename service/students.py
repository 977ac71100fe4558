"""Talk to the student worker child (service/worker.py): the daemon's way to ask a student.

The child is started on first use and stopped after `idle_seconds` without a request, so the
memory of torch and the encoder is held only while students are busy.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from stillroom.errors import ModelError

log = logging.getLogger("stillroom.service")


@dataclass(frozen=True)
class Answer:
    answer: str | None
    confidence: float
    abstained: bool
    reason: str | None
    best: str | None
    distance: float | None = None  # to the nearest training input, where measured


class StudentClient:
    """Serialises requests to one worker child; restarts it when it died."""

    def __init__(self, idle_seconds: float = 600.0, timeout: float = 120.0) -> None:
        self.idle_seconds = idle_seconds
        self.timeout = timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._last = 0.0

    def predict(self, version_id: int, inputs: list[str]) -> list[Answer]:
        """A version's answers (or abstentions) for the inputs."""
        reply = self._request({"version": version_id, "inputs": inputs}, f"student {version_id}")
        return [Answer(**p) for p in reply["predictions"]]

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings of the texts by the shared encoder (MiniLM)."""
        if not texts:
            return []
        vectors: list[list[float]] = self._request({"embed": texts}, "encoder")["vectors"]
        return vectors

    def _request(self, request: dict[str, Any], what: str) -> dict[str, Any]:
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(request) + "\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except OSError as exc:
                self._close()
                raise ModelError(f"the student worker stopped: {exc}") from exc
            self._last = time.monotonic()
        if not line:
            self.close()
            raise ModelError("the student worker exited; see the daemon log")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise ModelError(f"{what}: {reply['error']}")
        return reply

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        proc = subprocess.Popen(
            [sys.executable, "-m", "stillroom.service.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        if "ready" not in ready:
            proc.kill()
            proc.wait()
            raise ModelError("the student worker did not start; see the daemon log")
        log.info("student worker started (pid %d)", proc.pid)
        self._proc = proc
        return proc

    def close_if_idle(self) -> None:
        """Stop the worker when it has been idle long enough (called periodically)."""
        if not self._lock.acquire(blocking=False):
            return  # busy answering: not idle
        try:
            if self._proc is not None and time.monotonic() - self._last > self.idle_seconds:
                self._close()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        log.info("student worker stopped")
