"""Fixtures for the monitors: real folders, a running FilesystemMonitor and what it emitted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stillroom.config import Config, FilesystemConfig, FolderConfig
from stillroom.events import Event
from stillroom.monitors.filesystem import FilesystemMonitor

SETTLE = 0.2
WINDOW = 0.5
# Long enough for a late duplicate to show: settle, the arrival's hold (>= 0.6 s), a margin.
QUIET = 1.1


class Recorder:
    """The emit callback: keeps every event, and waits for the ones a test expects."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def summary(self) -> list[tuple[str, str, str | None]]:
        """(kind, file name, source file name) per event, in order."""
        return [
            (
                e.kind,
                Path(e.file().path).name,
                Path(e.file().src_path).name if e.file().src_path else None,
            )
            for e in self.events
        ]

    def wait(self, predicate: Callable[[list[Event]], bool], timeout: float = 10.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events so far: {self.summary()}")
            time.sleep(0.02)

    def wait_for(self, kind: str, name: str, timeout: float = 10.0) -> Event:
        """The first event of this kind for a file of this name."""
        found = self.wait(
            lambda events: any(e.kind == kind and Path(e.file().path).name == name for e in events),
            timeout,
        )
        return next(e for e in found if e.kind == kind and Path(e.file().path).name == name)

    def quiet(self, seconds: float = QUIET) -> list[tuple[str, str, str | None]]:
        """Let late events arrive, then the summary."""
        time.sleep(seconds)
        return self.summary()


Start = Callable[..., tuple[FilesystemMonitor, Recorder]]


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    path = tmp_path / "Downloads"
    path.mkdir()
    return path


@pytest.fixture
def documents(tmp_path: Path) -> Path:
    path = tmp_path / "Documents"
    path.mkdir()
    return path


@pytest.fixture
def start_monitor(downloads: Path, documents: Path) -> Iterator[Start]:
    """Start a FilesystemMonitor (Downloads opt-in, Documents a destination by default)."""
    monitors: list[FilesystemMonitor] = []

    def start(
        folders: list[FolderConfig] | None = None,
        destinations: list[Path] | None = None,
        **settings: Any,
    ) -> tuple[FilesystemMonitor, Recorder]:
        timings = {"settle_seconds": SETTLE, "pair_window_seconds": WINDOW, **settings}
        config = Config(
            folders=[FolderConfig(path=downloads)] if folders is None else folders,
            destinations=[documents] if destinations is None else destinations,
            filesystem=FilesystemConfig(**timings),
        )
        recorder = Recorder()
        monitor = FilesystemMonitor(config, recorder)
        monitors.append(monitor)
        monitor.start()
        assert monitor.wait_ready(10)
        return monitor, recorder

    yield start
    for monitor in monitors:
        monitor.stop()


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, byte offsets and all."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


@pytest.fixture
def pdf_bytes() -> Callable[[str], bytes]:
    return minimal_pdf
