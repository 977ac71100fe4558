"""A private X server for tests: Xvfb on a free display, driven with xdotool.

CI installs both (apt packages xvfb and xdotool); a missing binary fails the test, loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO


def require(binary: str, package: str) -> str:
    """The binary's path; raises with the apt package to install when it is missing."""
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is not installed: apt-get install {package}")
    return path


@contextmanager
def xvfb(timeout: float = 10.0) -> Iterator[str]:
    """Start Xvfb on a free display, yield its name (":N") once it accepts clients, kill it."""
    binary = require("Xvfb", "xvfb")
    # -displayfd: Xvfb itself picks a display number whose socket and lock file are free and
    # writes it to the pipe once it accepts connections, so parallel tests never collide.
    read_end, write_end = os.pipe()
    screen = ["-screen", "0", "1280x800x24"]
    # -noreset: by default Xvfb resets when its last client leaves, refusing whoever connects
    # during the reset (a test's second client, between two steps).
    argv = [binary, "-displayfd", str(write_end), *screen, "-nolisten", "tcp", "-noreset"]
    # Its log goes to a file, not a pipe, so that Xvfb's warnings can never block it.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            argv,
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        os.close(write_end)
        try:
            display = f":{_read_display(read_end, proc, log, timeout)}"
            _wait_accepting(display, timeout)
            yield display
        finally:
            os.close(read_end)
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def xdotool(display: str, *args: str) -> None:
    """Run xdotool against `display` (keys, typing, pointer moves, clicks)."""
    binary = require("xdotool", "xdotool")
    env = {**os.environ, "DISPLAY": display}
    subprocess.run([binary, *args], env=env, check=True, timeout=20, capture_output=True)


def _read_display(fd: int, proc: subprocess.Popen[bytes], log: IO[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    text = b""
    os.set_blocking(fd, False)
    while not text.endswith(b"\n"):
        if proc.poll() is not None:
            log.seek(0)
            err = log.read().decode(errors="replace")
            raise RuntimeError(f"Xvfb exited with {proc.returncode}: {err.strip()[-500:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("Xvfb did not report a display in time")
        try:
            chunk = os.read(fd, 64)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if not chunk:
            time.sleep(0.02)
        text += chunk
    return int(text.strip())


def _wait_accepting(display: str, timeout: float) -> None:
    from Xlib.display import Display
    from Xlib.error import DisplayError

    deadline = time.monotonic() + timeout
    while True:
        try:
            Display(display).close()
            return
        except (DisplayError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
