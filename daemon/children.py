"""Heavy work (detection, distillation) runs in child processes: niced, logged, killable.

A crash or kill of a child leaves the daemon and the store intact; the daemon never
imports torch itself.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("stillroom.daemon")
NICE = 10


class Children:
    """Starts `stillroom <args>` children one job name at a time; stops them all on demand."""

    def __init__(
        self,
        logs_dir: Path,
        config_path: Path | None = None,
        command: Sequence[str] = (sys.executable, "-m", "stillroom"),
    ) -> None:
        self.logs_dir = logs_dir
        self.config_path = config_path
        self.command = tuple(command)  # what `run` prefixes to its arguments
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def run(self, name: str, *args: str, timeout: float = 6 * 3600) -> int | None:
        """Run `stillroom ARGS` to the end (or until stopped); return its exit code."""
        argv = [*self.command, *args]
        env = dict(os.environ)
        if self.config_path is not None:
            env["STILLROOM_CONFIG"] = str(self.config_path)
        logfile = self.logs_dir / f"{name}.log"
        with self._lock:
            if self._closed or name in self._running:
                return None
            with logfile.open("ab") as out:
                os.chmod(logfile, 0o600)
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    preexec_fn=lambda: os.nice(NICE),
                    start_new_session=True,
                )
            self._running[name] = proc
        started = time.monotonic()
        log.info("%s started (pid %d)", name, proc.pid)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            code = proc.wait()
        finally:
            with self._lock:
                self._running.pop(name, None)
        log.info(
            "%s finished with %s in %.0f s (log: %s)",
            name,
            code,
            time.monotonic() - started,
            logfile,
        )
        return code

    def running(self) -> dict[str, int]:
        """Job name -> pid of each child running now."""
        with self._lock:
            return {name: proc.pid for name, proc in self._running.items()}

    def stop(self, name: str | None = None) -> None:
        """Stop one child (or, with no name, all and refuse new ones)."""
        with self._lock:
            if name is None:
                self._closed = True
            procs = [p for n, p in self._running.items() if name is None or n == name]
        for proc in procs:
            self._kill(proc)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM, then SIGKILL after 10 s: a training child may be mid-step."""
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
