"""Fixtures for the daemon tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonHarness


@pytest.fixture
def daemon(tmp_path: Path, stillroom_home: Path) -> Iterator[DaemonHarness]:
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
