"""The filesystem monitor on real folders with real watchdog events."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stillroom.config import FolderConfig
from stillroom.monitors.base import monitor_classes
from stillroom.monitors.features import quick_hash
from stillroom.monitors.filesystem import FilesystemMonitor

LOGGER = "stillroom.monitors.filesystem"
SETTLE = 0.2  # as the start_monitor fixture sets it
QUIET = 1.1
Start = Callable[..., Any]  # the start_monitor fixture: (monitor, recorder)


def grow(path: Path, chunks: int, pause: float = 0.1, size: int = 4096) -> int:
    """Write a file in chunks, like a download; returns its final size."""
    with open(path, "wb") as fh:
        for _ in range(chunks):
            fh.write(os.urandom(size))
            fh.flush()
            time.sleep(pause)
    return chunks * size


def test_new_text_file_is_reported_once_settled(start_monitor: Start, downloads: Path) -> None:
    _, seen = start_monitor()
    path = downloads / "letter.txt"
    text = "Dear reader, " * 50
    path.write_text(text)
    event = seen.wait_for("file.created", "letter.txt")
    assert seen.quiet() == [("file.created", "letter.txt", None)]
    payload, st = event.file(), path.stat()
    assert (event.source, payload.path, payload.root) == ("filesystem", str(path), str(downloads))
    assert payload.src_path is None and not payload.by_stillroom
    features = payload.features
    assert features is not None
    assert (features.name, features.extension, features.mime) == ("letter.txt", "txt", "text/plain")
    assert (features.size, features.inode, features.device) == (st.st_size, st.st_ino, st.st_dev)
    assert features.snippet == text[:400]
    assert features.quick_hash == quick_hash(path)


def test_new_pdf_carries_its_first_page(
    start_monitor: Start, downloads: Path, pdf_bytes: Callable[[str], bytes]
) -> None:
    _, seen = start_monitor()
    (downloads / "invoice.pdf").write_bytes(pdf_bytes("Invoice 42 from ACME"))
    features = seen.wait_for("file.created", "invoice.pdf").file().features
    assert features is not None
    assert (features.mime, features.snippet) == ("application/pdf", "Invoice 42 from ACME")


def test_part_download_is_one_created_for_the_final_name(
    start_monitor: Start, downloads: Path
) -> None:
    _, seen = start_monitor()
    # Firefox: an empty placeholder under the final name, the data in `.part`, renamed over it.
    final = downloads / "report.pdf"
    final.touch()
    size = grow(downloads / "report.pdf.part", chunks=6)  # longer than settling takes
    os.replace(downloads / "report.pdf.part", final)
    event = seen.wait_for("file.created", "report.pdf")
    assert seen.quiet() == [("file.created", "report.pdf", None)]
    assert event.file().features is not None and event.file().features.size == size


def test_crdownload_is_one_created_for_the_final_name(
    start_monitor: Start, downloads: Path
) -> None:
    _, seen = start_monitor()
    partial = downloads / "Unconfirmed 81723.crdownload"
    size = grow(partial, chunks=4)
    partial.rename(downloads / "holiday.jpg")
    event = seen.wait_for("file.created", "holiday.jpg")
    assert seen.quiet() == [("file.created", "holiday.jpg", None)]
    assert event.file().features is not None and event.file().features.size == size


def test_growing_file_is_reported_after_it_stops(start_monitor: Start, downloads: Path) -> None:
    _, seen = start_monitor(settle_seconds=0.3)
    size = grow(downloads / "video.mp4", chunks=8)  # 0.8 s of writing, pauses under 0.3 s
    last_write = time.time()
    event = seen.wait_for("file.created", "video.mp4")
    assert seen.quiet() == [("file.created", "video.mp4", None)]
    assert event.file().features is not None and event.file().features.size == size
    assert event.at >= last_write + 0.3 - 0.05


def test_move_to_a_destination_is_one_moved(
    start_monitor: Start, downloads: Path, documents: Path
) -> None:
    _, seen = start_monitor()
    (documents / "Taxes").mkdir()
    source = downloads / "w2.pdf"
    source.write_bytes(b"%PDF-1.4 not really")
    created = seen.wait_for("file.created", "w2.pdf")
    target = documents / "Taxes" / "w2.pdf"
    source.rename(target)  # same filesystem: the inode says it is the same file
    moved = seen.wait_for("file.moved", "w2.pdf")
    assert seen.quiet() == [("file.created", "w2.pdf", None), ("file.moved", "w2.pdf", "w2.pdf")]
    payload = moved.file()
    assert (payload.src_path, payload.path, payload.root) == (
        str(source),
        str(target),
        str(downloads),
    )
    assert payload.features is not None and created.file().features is not None
    assert payload.features.inode == created.file().features.inode


@pytest.mark.parametrize("pause", [0.0, 0.4], ids=["delete-at-once", "delete-after-settling"])
def test_copy_then_delete_is_one_moved(
    start_monitor: Start, downloads: Path, documents: Path, pause: float
) -> None:
    _, seen = start_monitor()
    source = downloads / "photo.jpg"
    source.write_bytes(os.urandom(200_000))
    created = seen.wait_for("file.created", "photo.jpg").file().features
    target = documents / "photo.jpg"
    shutil.copyfile(source, target)  # what mv does across filesystems: copy, then delete
    time.sleep(pause)
    source.unlink()
    moved = seen.wait_for("file.moved", "photo.jpg").file()
    assert seen.quiet() == [
        ("file.created", "photo.jpg", None),
        ("file.moved", "photo.jpg", "photo.jpg"),
    ]
    assert (moved.src_path, moved.path, moved.root) == (str(source), str(target), str(downloads))
    assert moved.features is not None and created is not None
    # Another inode: it paired by name, size and quick hash.
    assert moved.features.inode == target.stat().st_ino != created.inode
    assert moved.features.quick_hash == created.quick_hash


def test_preexisting_file_moved_across_devices(
    start_monitor: Start, downloads: Path, documents: Path
) -> None:
    source = downloads / "old-scan.png"
    source.write_bytes(os.urandom(70_000))
    _, seen = start_monitor()
    # Known only from the stat-only scan; it may be gone before anything hashes it, so the
    # mtime that mv keeps stands in for the hash.
    shutil.copy2(source, documents / "old-scan.png")
    source.unlink()
    seen.wait_for("file.moved", "old-scan.png")
    assert seen.quiet() == [("file.moved", "old-scan.png", "old-scan.png")]


def test_rename_inside_the_folder_is_moved(start_monitor: Start, downloads: Path) -> None:
    _, seen = start_monitor()
    (downloads / "IMG_0001.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(100))
    seen.wait_for("file.created", "IMG_0001.jpg")
    (downloads / "IMG_0001.jpg").rename(downloads / "beach.jpg")
    moved = seen.wait_for("file.moved", "beach.jpg")
    assert moved.file().root == str(downloads)
    assert seen.quiet(0.5) == [
        ("file.created", "IMG_0001.jpg", None),
        ("file.moved", "beach.jpg", "IMG_0001.jpg"),
    ]


def test_quick_move_before_settling_is_still_a_move(
    start_monitor: Start, downloads: Path, documents: Path
) -> None:
    _, seen = start_monitor(settle_seconds=1.0)
    (downloads / "ticket.pdf").write_bytes(b"%PDF-1.4 boarding pass")
    time.sleep(0.3)  # seen, but not settled yet
    (downloads / "ticket.pdf").rename(documents / "ticket.pdf")
    moved = seen.wait_for("file.moved", "ticket.pdf")
    assert moved.file().root == str(downloads)
    assert seen.quiet() == [("file.moved", "ticket.pdf", "ticket.pdf")]


def test_folder_moved_to_a_destination_moves_each_file(
    start_monitor: Start, downloads: Path, documents: Path
) -> None:
    _, seen = start_monitor(folders=[FolderConfig(path=downloads, recursive=True)])
    album = downloads / "album"
    album.mkdir()
    for name in ("one.jpg", "two.jpg"):
        (album / name).write_bytes(os.urandom(1000))
    seen.wait(lambda events: len(events) == 2)
    album.rename(documents / "album")
    seen.wait(lambda events: sum(e.kind == "file.moved" for e in events) == 2)
    assert sorted(seen.quiet()) == [
        ("file.created", "one.jpg", None),
        ("file.created", "two.jpg", None),
        ("file.moved", "one.jpg", "one.jpg"),
        ("file.moved", "two.jpg", "two.jpg"),
    ]


def test_activity_in_a_destination_is_never_emitted(
    start_monitor: Start, downloads: Path, documents: Path
) -> None:
    (documents / "diary.txt").write_text("private")
    _, seen = start_monitor()
    (documents / "new.txt").write_text("mine alone")
    (documents / "diary.txt").write_text("still private")
    (documents / "diary.txt").rename(documents / "journal.txt")
    (documents / "new.txt").unlink()
    time.sleep(SETTLE)
    (downloads / "marker.txt").write_text("events flow")
    seen.wait_for("file.created", "marker.txt")
    assert seen.quiet() == [("file.created", "marker.txt", None)]


def test_deletes_and_modifications(start_monitor: Start, downloads: Path) -> None:
    _, seen = start_monitor()
    kept, doomed = downloads / "kept.csv", downloads / "doomed.txt"
    kept.write_text("a,b\n")
    doomed.write_text("bye")
    seen.wait(lambda events: len(events) == 2)
    with kept.open("a") as fh:
        fh.write("1,2\n")
    doomed.unlink()
    (downloads / "fleeting.txt").write_text("gone before it settles")
    (downloads / "fleeting.txt").unlink()
    modified = seen.wait_for("file.modified", "kept.csv")
    deleted = seen.wait_for("file.deleted", "doomed.txt")
    assert sorted(seen.quiet()) == [
        ("file.created", "doomed.txt", None),
        ("file.created", "kept.csv", None),
        ("file.deleted", "doomed.txt", None),
        ("file.modified", "kept.csv", None),
    ]
    assert modified.file().features is not None and modified.file().features.size == 8
    assert deleted.file().features is not None and deleted.file().features.size == 3


def test_missing_folder_is_one_warning_and_the_rest_works(
    start_monitor: Start,
    downloads: Path,
    documents: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = tmp_path / "Nowhere"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    monitor, seen = start_monitor(
        folders=[FolderConfig(path=missing), FolderConfig(path=downloads)]
    )
    warnings = [r for r in caplog.records if r.name == LOGGER and str(missing) in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert monitor.watched == [downloads, documents]
    (downloads / "fine.txt").write_text("ok")
    seen.wait_for("file.created", "fine.txt")


def test_ignored_and_own_files_are_not_reported(start_monitor: Start, downloads: Path) -> None:
    folder = FolderConfig(
        path=downloads, recursive=True, ignore=["*.log", "cache/*", "node_modules"]
    )
    _, seen = start_monitor(folders=[folder])
    for relative in ("app.log", "cache/blob.bin", "node_modules/pkg/index.js", "sub/keep.txt"):
        (downloads / relative).parent.mkdir(parents=True, exist_ok=True)
        (downloads / relative).write_text("x")
    (downloads / ".stillroom-3f2a.tmp").write_text("stillroom's own temp file")
    (downloads / "keep.txt").write_text("x")
    seen.wait(lambda events: len(events) == 2)
    assert sorted(seen.quiet()) == [("file.created", "keep.txt", None)] * 2
    assert sorted(e.file().path for e in seen.events) == [
        str(downloads / "keep.txt"),
        str(downloads / "sub" / "keep.txt"),
    ]


def test_a_burst_of_500_files_is_reported_exactly_once(
    start_monitor: Start, downloads: Path
) -> None:
    _, seen = start_monitor()
    names = [f"file-{i:03}.txt" for i in range(500)]
    for name in names:
        (downloads / name).write_text(name)
    seen.wait(lambda events: len(events) >= 500, timeout=20)
    reported = [name for _, name, _ in seen.quiet()]
    assert sorted(reported) == names


def test_stop_joins_every_thread_and_can_be_called_twice(start_monitor: Start) -> None:
    before = set(threading.enumerate())
    monitor, _ = start_monitor()
    started = [t for t in threading.enumerate() if t not in before]
    assert started and all(t.name.startswith("stillroom-fs-") for t in started), started
    monitor.stop()
    monitor.stop()
    assert not [t for t in started if t.is_alive()]
    with pytest.raises(RuntimeError):
        monitor.rescan()


def test_quiet_start_emits_nothing(start_monitor: Start, downloads: Path) -> None:
    (downloads / "already-here.txt").write_text("old news")
    _, seen = start_monitor()
    assert seen.quiet(QUIET / 2) == []


def test_registered_as_filesystem() -> None:
    assert monitor_classes()["filesystem"] is FilesystemMonitor
