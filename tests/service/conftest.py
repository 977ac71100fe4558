"""Fixtures for the file-action tests: a real tree, a second filesystem, snapshots."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stillroom.service.hooks.executor import Executor
from stillroom.service.hooks.naming import is_temp
from stillroom.store import Store

Snapshot = Callable[..., dict[str, bytes]]


def _snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under the roots, by absolute path, with its bytes."""
    files: dict[str, bytes] = {}
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                files[path] = Path(path).read_bytes()
    return files


@pytest.fixture
def snapshot() -> Snapshot:
    return _snapshot


@pytest.fixture
def temps() -> Callable[..., list[str]]:
    """Stillroom temp files left anywhere under the roots."""

    def find(*roots: Path) -> list[str]:
        return [
            os.path.join(folder, name)
            for root in roots
            for folder, _, names in os.walk(root)
            for name in names
            if is_temp(name)
        ]

    return find


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """inbox/ with a few files, docs/ with one name that collides."""
    root = tmp_path / "tree"
    (root / "inbox").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "inbox" / "a.bin").write_bytes(os.urandom(3000))
    (root / "inbox" / "notes.txt").write_text("keep me\n")
    (root / "docs" / "a.bin").write_bytes(b"the user's own a.bin")
    return root


@pytest.fixture
def effects() -> list[Path]:
    return []


@pytest.fixture
def executor(store: Store, effects: list[Path]) -> Executor:
    return Executor(store, on_effect=effects.append)


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on another filesystem (/dev/shm), so moves there take the EXDEV path."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm: no second filesystem to move across")
    folder = Path(tempfile.mkdtemp(prefix="stillroom-test-", dir="/dev/shm"))
    try:
        if os.stat(folder).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same filesystem as the test folder")
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def append_only() -> Iterator[Callable[[Path], None]]:
    """Mark folders append-only (files can be added, none removed): a real unlink failure."""
    marked: list[Path] = []

    def mark(folder: Path) -> None:
        if shutil.which("chattr") is None:
            pytest.skip("chattr is not installed: cannot make a folder append-only")
        done = subprocess.run(["chattr", "+a", str(folder)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder append-only here: {done.stderr.decode().strip()}")
        marked.append(folder)

    yield mark
    for folder in marked:
        subprocess.run(["chattr", "-a", str(folder)], check=True)
