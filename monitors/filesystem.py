"""The filesystem monitor: watchdog events in opt-in folders and destinations become file events."""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirDeletedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from stillroom.config import Config
from stillroom.events import Event, FilePayload
from stillroom.monitors.base import Emit, Monitor, register
from stillroom.monitors.features import file_features
from stillroom.monitors.inotify import Observer, watch_error
from stillroom.monitors.pairing import Arrival, Departure, Pairer, Report
from stillroom.monitors.settling import Kind, Roots, Settler, Settling, configured_roots

logger = logging.getLogger(__name__)

FOLLOWED = 10_000  # filed downloads whose next move (a correction) is still reported
_STOP = object()
_OVERFLOW = object()


@dataclass(frozen=True)
class RescanResult:
    """What a rescan found that the index did not know."""

    created: int
    modified: int
    deleted: int


@dataclass
class _Rescan:
    done: threading.Event = field(default_factory=threading.Event)
    result: RescanResult | None = None


@register
class FilesystemMonitor(Monitor):
    """Reports files arriving, changing, moving and leaving in the opt-in folders."""

    name = "filesystem"

    def __init__(self, config: Config, emit: Emit) -> None:
        super().__init__(config, emit)
        settings = config.filesystem
        self.watched: list[Path] = []
        self.overflows = 0
        self._window = settings.pair_window_seconds
        # watchdog holds a lone moved_from 0.5 s before it reports it as a delete.
        self._hold = max(self._window, InotifyMoveEventGrouper.delay + 0.1)
        self._interval = min(0.25, max(0.02, min(settings.settle_seconds, self._hold) / 4))
        self._roots = Roots((), settings.partial_suffixes)
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._overflowed = threading.Event()
        self._rescan_due: float | None = None
        self._warned_at = -math.inf
        self._observer: Observer | None = None
        self._worker: threading.Thread | None = None
        self._settler = Settler(settings.settle_seconds, settings.partial_suffixes, self._hold)
        self._pairer = Pairer(linger=settings.settle_seconds + 1.0)
        self._followed: dict[Path, Path] = {}

    # lifecycle

    def start(self) -> None:
        """Watch every existing folder and start the worker; missing folders are skipped."""
        if self._worker is not None:
            raise RuntimeError("the filesystem monitor is already running")
        settings = self.config.filesystem
        self._stopping.clear()
        self._ready.clear()
        self._rescan_due = None
        self._settler = Settler(settings.settle_seconds, settings.partial_suffixes, self._hold)
        self._pairer = Pairer(linger=settings.settle_seconds + 1.0)
        wanted = configured_roots(self.config)
        try:
            observer = Observer(self._inbox, self._overflow)
        except OSError as exc:
            logger.warning(watch_error(", ".join(str(r.path) for r in wanted), exc))
            self._ready.set()
            return
        self._observer = observer
        observer.start()
        active = observer.watch(wanted)
        self._roots = Roots(active, settings.partial_suffixes)
        self.watched = [root.path for root in wanted if root in active]
        self._worker = threading.Thread(target=self._run, name="stillroom-fs-worker", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        """Stop watching, report what still waited for its pair, and join every thread."""
        observer, worker = self._observer, self._worker
        self._observer = self._worker = None
        if observer is not None:
            observer.stop()
            observer.join()
        self._stopping.set()
        if worker is not None:
            self._inbox.put(_STOP)
            worker.join()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the initial scan of the opt-in folders is done."""
        return self._ready.wait(timeout)

    def rescan(self, timeout: float = 60.0) -> RescanResult:
        """Compare the opt-in folders with the index and report the differences."""
        if self._worker is None or not self._worker.is_alive():
            raise RuntimeError("the filesystem monitor is not running")
        request = _Rescan()
        self._inbox.put(request)
        if not request.done.wait(timeout):
            raise TimeoutError(f"the rescan did not finish in {timeout} s")
        if request.result is None:
            raise RuntimeError("the rescan failed; the log says why")
        return request.result

    def _overflow(self) -> None:
        if not self._overflowed.is_set():
            self._overflowed.set()
            self._inbox.put(_OVERFLOW)

    # the worker thread: the only one that touches the index, settler and pairer

    def _run(self) -> None:
        self._guard(self._pairer.scan, self._roots)
        self._ready.set()
        next_tick = time.monotonic() + self._interval
        while True:
            # Nothing settling, pairing or rescanning: sleep until an event comes (an idle
            # daemon's every timed wakeup costs CPU).
            busy = self._rescan_due is not None or len(self._settler) or self._pairer.waiting
            timeout = max(0.0, next_tick - time.monotonic()) if busy else None
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP and self._stopping.is_set():
                break
            if item is not None:
                self._guard(self._dispatch, item)
            now = time.monotonic()
            if self._rescan_due is not None and now >= self._rescan_due:
                self._rescan_due = None
                self._guard(self._rescan, now)
            if now >= next_tick:
                self._guard(self._tick, now)
                next_tick = now + self._interval
        self._guard(self._report_all, self._pairer.flush)

    def _guard(self, work: Callable[..., object], *args: object) -> None:
        try:
            work(*args)
        except Exception:  # the worker must outlive one bad file: log with traceback, go on
            logger.exception("filesystem monitor: %s failed; carrying on", work.__name__)

    def _dispatch(self, item: object) -> None:
        now = time.monotonic()
        if isinstance(item, FileSystemEvent):
            self._on_event(item, now)
        elif isinstance(item, _Rescan):
            try:
                item.result = self._rescan(now)
            finally:
                item.done.set()
        elif item is _OVERFLOW:
            self._overflowed.clear()
            self.overflows += 1
            if self._rescan_due is None:
                # A burst overflows again and again: one rescan once it has likely passed.
                self._rescan_due = now + 0.5
            if now - self._warned_at > 60:
                self._warned_at = now
                logger.warning(
                    "the inotify queue overflowed and events were lost; rescanning the opt-in "
                    "folders (further overflows this minute are not logged)"
                )

    def _on_event(self, event: FileSystemEvent, now: float) -> None:
        src = Path(os.fsdecode(event.src_path))
        if isinstance(event, DirDeletedEvent):
            for path in self._known_under(src):
                self._on_deleted(path, now)
        elif event.is_directory:
            return
        elif isinstance(event, FileMovedEvent):
            self._on_moved(src, Path(os.fsdecode(event.dest_path)), now)
        elif isinstance(event, FileCreatedEvent):
            self._on_created(src, now)
        elif isinstance(event, FileModifiedEvent):
            self._on_modified(src, now)
        elif isinstance(event, FileDeletedEvent):
            self._on_deleted(src, now)

    def _on_created(self, path: Path, now: float) -> None:
        root = self._roots.locate(path)
        if root is None or self._settler.touch(path, now) or self._resettle(path, now):
            return
        entry = self._pairer.index.get(path)
        if entry is not None and not entry.scanned and _inode(path) == entry.inode:
            self._on_modified(path, now)  # a stale event for a file already reported
            return
        if root.destination and not self._may_pair(path):
            return
        self._pairer.hash_namesakes(path.name)
        self._settler.track(path, "created", now, root.path, from_opt_in=not root.destination)

    def _on_modified(self, path: Path, now: float) -> None:
        if self._settler.touch(path, now) or self._resettle(path, now):
            return
        root = self._roots.locate(path)
        if root is not None and not root.destination:
            kind: Kind = "modified" if path in self._pairer.index else "created"
            self._settler.track(path, kind, now, root.path, from_opt_in=True)

    def _on_deleted(self, path: Path, now: float) -> None:
        record = self._take_unreported(path)
        entry = self._pairer.index.pop(path)
        deadline = now + self._window
        if entry is not None:
            departure = Departure.from_entry(entry, deadline)
        elif record is not None and record.from_opt_in:
            departure = Departure.from_settling(record, deadline)
        else:
            return
        self._report_all(self._pairer.depart, departure)

    def _on_moved(self, src: Path, dest: Path, now: float) -> None:
        dest_root = self._roots.locate(dest)
        if dest_root is None:
            self._followed.pop(src, None)
            self._on_deleted(src, now)
            return
        origin = self._followed.pop(src, None)
        if origin is not None and dest_root.destination:
            # Filed again inside the destinations: the user correcting where it went.
            features = file_features(dest, self.config.filesystem.snippet_chars, dest_root.path)
            if features is not None:
                self._report(Report("file.moved", dest, origin, features, src))
            return
        record = self._take_unreported(src)
        if record is not None and record.kind == "created":
            record.path = dest  # never reported: it settles at its new place
            self._settler.put(record, now)
            return
        entry = self._pairer.index.pop(src)
        src_root = self._roots.locate(src)
        if entry is not None:
            root = entry.root
        elif src_root is not None and not src_root.destination:
            root = src_root.path
        else:
            self._on_created(dest, now)  # a finished download, or a file from a destination
            return
        features = file_features(dest, self.config.filesystem.snippet_chars, dest_root.path)
        if features is None:  # already gone from there too: it left
            if entry is not None:
                departure = Departure.from_entry(entry, now + self._window)
                self._report_all(self._pairer.depart, departure)
            return
        if not dest_root.destination:
            self._pairer.remember(dest, dest_root.path, features.quick_hash)
            if record is not None:
                record.path = dest
                self._settler.put(record, now)
        self._report(Report("file.moved", dest, root, features, src))

    def _tick(self, now: float) -> None:
        for record in self._settler.due(now):
            self._on_settled(record, now)
        busy = self._settler.expects
        self._report_all(self._pairer.expire, now, lambda d: busy(d.name, d.device, d.inode))

    def _on_settled(self, record: Settling, now: float) -> None:
        root = self._roots.locate(record.path)
        if root is None:
            return
        features = file_features(record.path, self.config.filesystem.snippet_chars, root.path)
        if features is None:
            return
        if record.kind == "modified":
            if not root.destination:
                old = self._pairer.index.get(record.path)
                self._pairer.remember(record.path, root.path, features.quick_hash)
                if old is None or old.quick_hash is None or old.quick_hash != features.quick_hash:
                    self._report(Report("file.modified", record.path, root.path, features))
        elif root.destination and record.from_opt_in:
            # Renamed from an opt-in folder into a destination before it ever settled.
            self._report(
                Report("file.moved", record.path, record.origin_root, features, record.origin)
            )
        else:
            deadline = now + self._hold
            arrival = Arrival(record.path, root.path, root.destination, features, record, deadline)
            self._report_all(self._pairer.arrive, arrival)

    def _report_all(self, decide: Callable[..., list[Report]], *args: object) -> None:
        for report in decide(*args):
            self._report(report)

    def _report(self, report: Report) -> None:
        if report.kind == "file.moved" and report.root != report.path.parent:
            dest_root = self._roots.locate(report.path)
            if dest_root is not None and dest_root.destination:
                self._follow(report.path, report.root)
        if report.features.symlink and report.kind != "file.deleted":
            logger.info(
                "%s is a symbolic link: recorded without its content; no automation acts on it",
                report.path,
            )
        payload = FilePayload(
            path=str(report.path),
            root=str(report.root),
            features=report.features,
            src_path=None if report.src is None else str(report.src),
        )
        self.emit(Event(source="filesystem", kind=report.kind, payload=payload))

    def _rescan(self, now: float) -> RescanResult:
        new, changed, gone = self._pairer.compare(self._roots, self._pending)
        for path, root in new:
            self._settler.track(path, "created", now, root.path, from_opt_in=True)
        for path, root in changed:
            self._settler.track(path, "modified", now, root.path, from_opt_in=True)
        for path in gone:
            self._on_deleted(path, now)
        return RescanResult(len(new), len(changed), len(gone))

    def _follow(self, path: Path, origin: Path) -> None:
        """Remember where a filed download came from, so a later move of it is reported."""
        self._followed[path] = origin
        while len(self._followed) > FOLLOWED:
            self._followed.pop(next(iter(self._followed)))

    def _pending(self, path: Path) -> bool:
        return path in self._settler or self._pairer.holds(path)

    def _may_pair(self, path: Path) -> bool:
        """Whether a new file in a destination could be one leaving an opt-in folder."""
        try:
            st = os.lstat(path)
        except OSError:
            return False
        key = (path.name, st.st_dev, st.st_ino)
        return self._pairer.expects(*key) or self._settler.expects(*key)

    def _resettle(self, path: Path, now: float) -> bool:
        """A waiting arrival changed: it settles again."""
        arrival = self._pairer.withdraw(path)
        if arrival is not None:
            self._settler.put(arrival.record, now)
        return arrival is not None

    def _take_unreported(self, path: Path) -> Settling | None:
        record = self._settler.take(path)
        if record is None and (arrival := self._pairer.withdraw(path)) is not None:
            record = arrival.record
        return record

    def _known_under(self, folder: Path) -> list[Path]:
        paths = {r.path for r in self._settler if r.path.is_relative_to(folder)}
        return sorted(paths.union(self._pairer.paths_under(folder)))


def _inode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None
