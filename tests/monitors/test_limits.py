"""When inotify runs out: lost events (queue overflow) and refused watches (ENOSPC, EMFILE)."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent

from stillroom.config import FolderConfig
from stillroom.monitors.filesystem import RescanResult
from stillroom.monitors.inotify import watch_error

LOGGER = "stillroom.monitors.filesystem"
QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")
Start = Callable[..., Any]


def writable(path: Path) -> bool:
    try:
        path.write_text(path.read_text())
    except OSError:
        return False
    return True


@contextmanager
def inotify_queue_limit(size: int) -> Iterator[None]:
    """The kernel reads this limit when an inotify instance is made: lower it only for that.
    It is machine-wide, so it is restored at once."""
    old = QUEUE_LIMIT.read_text()
    QUEUE_LIMIT.write_text(str(size))
    try:
        yield
    finally:
        QUEUE_LIMIT.write_text(old)


def test_rescan_reports_what_the_events_missed(start_monitor: Start, downloads: Path) -> None:
    (downloads / "known.txt").write_text("indexed at start")
    (downloads / "edited.txt").write_text("v1")
    monitor, seen = start_monitor()
    monitor._observer.unschedule_all()  # events stop reaching the monitor, as if lost
    (downloads / "known.txt").unlink()
    (downloads / "edited.txt").write_text("version 2")
    (downloads / "unseen.txt").write_text("arrived while nobody listened")
    assert monitor.rescan() == RescanResult(created=1, modified=1, deleted=1)
    seen.wait(lambda events: len(events) == 3)
    assert sorted(seen.quiet()) == [
        ("file.created", "unseen.txt", None),
        ("file.deleted", "known.txt", None),
        ("file.modified", "edited.txt", None),
    ]
    assert monitor.rescan() == RescanResult(created=0, modified=0, deleted=0)


def test_queue_overflow_rescans_and_loses_nothing(
    start_monitor: Start, downloads: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    names = [f"burst-{i:03}.txt" for i in range(300)]
    if writable(QUEUE_LIMIT):
        with inotify_queue_limit(16):
            monitor, seen = start_monitor()
        # One quick process makes ~600 events against a 16-event queue.
        subprocess.run(["touch", *(str(downloads / n) for n in names)], check=True)
    else:
        monitor, seen = start_monitor()
        for name in names:
            (downloads / name).touch()
        # The kernel's overflow event, through watchdog's own reader (cannot lower the limit).
        overflow = InotifyEvent(-1, InotifyConstants.IN_Q_OVERFLOW, 0, b"")
        monitor._observer.inotify.handle_event(overflow)
    seen.wait(lambda events: len(events) >= len(names), timeout=20)
    assert sorted(name for _, name, _ in seen.quiet()) == names
    assert monitor.overflows >= 1
    assert any("overflowed" in r.getMessage() for r in caplog.records if r.name == LOGGER)


def test_real_kernel_overflow_rescans_and_loses_nothing(
    start_monitor: Start, downloads: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The kernel's own IN_Q_OVERFLOW, without root: stall watchdog's reader while more
    events happen than max_queued_events holds, then let it read."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    limit = int(QUEUE_LIMIT.read_text())
    if limit > 200_000:
        pytest.skip(f"max_queued_events is {limit}: too many files to overflow it quickly")
    # A new file with content is two queued events (IN_CREATE, IN_MODIFY).
    names = [f"flood-{i:05}.txt" for i in range(limit // 2 + 1_000)]
    monitor, seen = start_monitor()
    assert monitor._observer is not None
    # watchdog's reader takes this lock around each read: holding it stalls the reader after
    # at most one buffer, and the kernel queue fills as it would on a machine too busy to read.
    reader_lock = monitor._observer.inotify._lock
    with reader_lock:
        for name in names:
            (downloads / name).write_text(name)
        time.sleep(0.2)
        assert monitor.overflows == 0
    seen.wait(lambda events: len(events) >= len(names), timeout=45)
    assert monitor.overflows >= 1
    reported = seen.quiet()  # and nothing twice
    assert sorted(name for _, name, _ in reported) == names
    assert {kind for kind, _, _ in reported} == {"file.created"}
    assert any("overflowed" in r.getMessage() for r in caplog.records if r.name == LOGGER)


SCRIPT = """
import json, logging, sys
from pathlib import Path
from stillroom.config import Config, FolderConfig
from stillroom.monitors.filesystem import FilesystemMonitor

class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())

warnings = []
logging.getLogger("stillroom.monitors.filesystem").addHandler(Keep())
Path("/proc/sys/user", sys.argv[1]).write_text(sys.argv[2])
folders = [FolderConfig(path=p) for p in sys.argv[3:]]
monitor = FilesystemMonitor(Config(folders=folders), lambda event: None)
monitor.start()
watched = [str(p) for p in monitor.watched]
monitor.stop()
print(json.dumps({"watched": watched, "warnings": warnings}))
"""


def in_user_namespace(limit: str, value: int, folders: list[Path]) -> dict[str, Any]:
    """Run a monitor in a user namespace of its own, whose inotify limits are its own."""
    argv = ["unshare", "--user", "--map-root-user", sys.executable, "-c", SCRIPT, limit]
    done = subprocess.run(
        [*argv, str(value), *map(str, folders)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def user_namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.mark.skipif(not user_namespaces_work(), reason="cannot make a user namespace here")
def test_running_out_of_watches_warns_and_skips_only_that_folder(tmp_path: Path) -> None:
    folders = [tmp_path / name for name in ("one", "two", "three")]
    for folder in folders:
        folder.mkdir()
    out = in_user_namespace("max_inotify_watches", 2, folders)
    assert out["watched"] == [str(folders[0]), str(folders[1])]
    [warning] = out["warnings"]
    assert str(folders[2]) in warning
    assert "sudo sysctl fs.inotify.max_user_watches=" in warning

    out = in_user_namespace("max_inotify_instances", 0, folders)
    assert out["watched"] == []
    [warning] = out["warnings"]
    assert all(str(folder) in warning for folder in folders)
    assert "sudo sysctl fs.inotify.max_user_instances=" in warning


def test_watch_errors_say_what_to_raise(tmp_path: Path) -> None:
    # The exceptions exactly as watchdog's inotify_c raises them.
    no_space = watch_error(tmp_path, OSError(errno.ENOSPC, "inotify watch limit reached"))
    assert str(tmp_path) in no_space
    assert "`sudo sysctl fs.inotify.max_user_watches=524288`" in no_space
    no_instance = watch_error(tmp_path, OSError(errno.EMFILE, "inotify instance limit reached"))
    assert "fs.inotify.max_user_instances" in no_instance
    assert "fs.inotify.max_user_watches" in no_instance
    denied = watch_error(tmp_path, OSError(errno.EACCES, "Permission denied"))
    assert denied == f"not watching {tmp_path}: Permission denied"


def test_recursive_watch_covers_nested_roots(
    start_monitor: Start, downloads: Path, documents: Path
) -> None:
    inbox = documents / "inbox"
    inbox.mkdir()
    monitor, seen = start_monitor(
        folders=[FolderConfig(path=downloads), FolderConfig(path=inbox)],
        destinations=[documents],
    )
    assert monitor.watched == [downloads, inbox, documents]
    assert len(monitor._observer.emitters) == 2  # inbox is seen through the Documents watch
    (inbox / "scan.pdf").write_bytes(b"%PDF-1.4 scanned")
    created = seen.wait_for("file.created", "scan.pdf")
    assert created.file().root == str(inbox)
    (inbox / "scan.pdf").rename(documents / "scan.pdf")
    moved = seen.wait_for("file.moved", "scan.pdf")
    assert (moved.file().root, moved.file().src_path) == (str(inbox), str(inbox / "scan.pdf"))
