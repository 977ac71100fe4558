"""Symbolic links in and around the watched folders, with real watchdog events: a link is
recorded as itself and never followed, a root that is a link is watched as its real folder."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonHarness

from stillroom.config import FolderConfig

LOGGER = "stillroom.monitors.filesystem"
LINK_LINE = "is a symbolic link: recorded without its content; no automation acts on it"
OPENAI_KEY = "sk-" + "Zq9Xw8Vu7T" * 4  # 40 characters after sk-
Start = Callable[..., Any]  # the start_monitor fixture: (monitor, recorder)


def raw_database_bytes(db: Path) -> dict[str, bytes]:
    """The database file and its -wal and -shm files, byte for byte, as they lie on disk."""
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    return {path.name: path.read_bytes() for path in files if path.exists()}


def pieces(secret: str, width: int = 8) -> list[bytes]:
    """Every `width`-character piece of a secret: none may appear anywhere."""
    data = secret.encode()
    return [data[i : i + width] for i in range(len(data) - width + 1)]


def test_a_linked_download_is_stored_as_a_link_without_a_byte_of_its_target(
    daemon: DaemonHarness, tmp_path: Path
) -> None:
    marker = f"SECRET-{uuid.uuid4().hex}"
    secret = tmp_path / "secret.txt"  # ~/secret.txt, outside every watched folder
    secret.write_text(f"my bank pin and {marker}\n")
    daemon.start()
    (daemon.downloads / "notes.txt").symlink_to(secret)
    # A regular download beside it: its key must reach the database only redacted.
    (daemon.downloads / "deploy.txt").write_text(f"OPENAI_API_KEY={OPENAI_KEY} password=hunter2xyz")

    def stored() -> dict[str, dict[str, Any]]:
        return {Path(e["path"]).name: e["features"] for e in daemon.events("file.created")}

    created = daemon.wait(
        lambda: stored().keys() >= {"notes.txt", "deploy.txt"} and stored(), what="both stored"
    )
    link = created["notes.txt"]
    assert link["symlink"] is True and "snippet" not in link and "quick_hash" not in link
    assert link["mime"] == "inode/symlink"
    assert link["size"] == os.lstat(daemon.downloads / "notes.txt").st_size
    snippet = created["deploy.txt"]["snippet"]
    assert "[REDACTED:openai-key]" in snippet and "[REDACTED:password]" in snippet
    daemon.wait(lambda: f"notes.txt {LINK_LINE}" in daemon.log(), what="the log line")
    for when in ("while running", "after stopping"):
        raw = raw_database_bytes(daemon.db)
        assert daemon.db.name in raw and len(raw[daemon.db.name]) > 0
        for name, data in raw.items():
            for secret_text in (marker, OPENAI_KEY, "hunter2xyz"):
                leaked = [p for p in pieces(secret_text) if p in data]
                assert not leaked, f"{name} {when} holds {leaked[:3]} of {secret_text}"
        if when == "while running":
            assert daemon.stop(daemon.procs[-1]) == 0
    rows = daemon.query(
        "SELECT payload FROM events WHERE path = ?", str(daemon.downloads / "notes.txt")
    )
    assert rows and all(json.loads(r[0])["features"]["symlink"] for r in rows)


def test_links_to_files_folders_and_nowhere_are_recorded_as_links(
    start_monitor: Start, downloads: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    secret = tmp_path / "secret.txt"
    secret.write_text("private words")
    (tmp_path / "Private").mkdir()
    _, seen = start_monitor()
    (downloads / "notes.txt").symlink_to(secret)
    (downloads / "Photos").symlink_to(tmp_path / "Private")
    (downloads / "gone.pdf").symlink_to(tmp_path / "never-was.pdf")
    seen.wait(lambda events: len(events) == 3)
    assert sorted(seen.quiet()) == [
        ("file.created", "Photos", None),
        ("file.created", "gone.pdf", None),
        ("file.created", "notes.txt", None),
    ]
    for event in seen.events:
        features = event.file().features
        assert features is not None and features.symlink
        assert (features.snippet, features.quick_hash) == (None, None)
        path = Path(event.file().path)
        assert features.size == os.lstat(path).st_size
        lines = [r for r in caplog.records if r.name == LOGGER and str(path) in r.getMessage()]
        assert len(lines) == 1 and LINK_LINE in lines[0].getMessage()


def test_a_link_filed_into_a_destination_is_a_moved_link(
    start_monitor: Start, downloads: Path, documents: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("private words")
    _, seen = start_monitor()
    (downloads / "notes.txt").symlink_to(tmp_path / "secret.txt")
    created = seen.wait_for("file.created", "notes.txt").file().features
    (downloads / "notes.txt").rename(documents / "notes.txt")
    moved = seen.wait_for("file.moved", "notes.txt").file()
    assert moved.features is not None and created is not None
    assert moved.features.symlink and moved.features.inode == created.inode
    assert moved.features.snippet is None
    assert seen.quiet() == [
        ("file.created", "notes.txt", None),
        ("file.moved", "notes.txt", "notes.txt"),
    ]


def test_roots_that_are_links_are_watched_as_their_real_folders(
    start_monitor: Start, tmp_path: Path
) -> None:
    real_downloads, real_documents = tmp_path / "data" / "Downloads", tmp_path / "data" / "Docs"
    real_downloads.mkdir(parents=True)
    real_documents.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "Downloads").symlink_to(real_downloads)  # ~/Downloads -> /data/Downloads
    (home / "Documents").symlink_to(real_documents)
    monitor, seen = start_monitor(
        folders=[FolderConfig(path=home / "Downloads")], destinations=[home / "Documents"]
    )
    assert monitor.watched == [real_downloads, real_documents]
    (home / "Downloads" / "letter.txt").write_text("Dear reader")  # written through the link
    created = seen.wait_for("file.created", "letter.txt").file()
    assert (created.root, created.path) == (str(real_downloads), str(real_downloads / "letter.txt"))
    assert created.features is not None and created.features.snippet == "Dear reader"
    (home / "Downloads" / "letter.txt").rename(home / "Documents" / "letter.txt")
    moved = seen.wait_for("file.moved", "letter.txt").file()
    assert (moved.root, moved.path, moved.src_path) == (
        str(real_downloads),
        str(real_documents / "letter.txt"),
        str(real_downloads / "letter.txt"),
    )


def test_a_linked_folder_in_a_recursive_folder_is_never_descended_into(
    start_monitor: Start, downloads: Path, tmp_path: Path
) -> None:
    before, after = tmp_path / "Before", tmp_path / "After"
    for folder in (before, after):
        (folder / "deeper").mkdir(parents=True)
        (folder / "old.txt").write_text("there all along")
    (downloads / "early").symlink_to(before)  # there when the monitor starts
    (downloads / "real").mkdir()
    monitor, seen = start_monitor(folders=[FolderConfig(path=downloads, recursive=True)])
    (downloads / "late").symlink_to(after)  # arrives while it runs
    seen.wait_for("file.created", "late")
    for folder in (before, after):
        (folder / "new.txt").write_text("written behind the link")
        (folder / "deeper" / "new.txt").write_text("and deeper")
        (folder / "old.txt").write_text("changed behind the link")
    (downloads / "real" / "seen.txt").write_text("a real subfolder is watched")
    seen.wait_for("file.created", "seen.txt")
    assert sorted(seen.quiet()) == [
        ("file.created", "late", None),
        ("file.created", "seen.txt", None),
    ]
    assert monitor.rescan().created == 0  # a rescan does not walk through the links either
    assert sorted(seen.quiet()) == [
        ("file.created", "late", None),
        ("file.created", "seen.txt", None),
    ]
    for event in seen.events:
        assert Path(event.file().path).parent in (downloads, downloads / "real")
