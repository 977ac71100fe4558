"""Shared fixtures: a private STILLROOM_HOME per test, a real store, and a thread-leak check."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonHarness

from stillroom.store import Store


@pytest.fixture(autouse=True)
def stillroom_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own STILLROOM_HOME and no inherited config."""
    home = tmp_path / "stillroom-home"
    monkeypatch.setenv("STILLROOM_HOME", str(home))
    monkeypatch.delenv("STILLROOM_CONFIG", raising=False)
    return home


@pytest.fixture
def store(stillroom_home: Path) -> Iterator[Store]:
    with Store(stillroom_home / "data" / "stillroom.db") as db:
        yield db


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test that leaves a thread running fails: every thread must have a stop path."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


@pytest.fixture
def daemon(tmp_path: Path, stillroom_home: Path) -> Iterator[DaemonHarness]:
    """A daemon harness with its folders and a default config; its processes are killed after."""
    harness = DaemonHarness(
        home=stillroom_home,
        config=tmp_path / "config.yaml",
        downloads=tmp_path / "Downloads",
        documents=tmp_path / "Documents",
    )
    harness.downloads.mkdir()
    harness.documents.mkdir()
    harness.write_config()
    yield harness
    for proc in harness.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
