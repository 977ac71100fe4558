"""watchdog's inotify observer as stillroom runs it: named threads, an overflow hook, warnings."""

from __future__ import annotations

import errno
import itertools
import logging
import queue
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from watchdog.events import (
    DirDeletedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import InotifyEvent, InotifyFD

from stillroom.monitors.settling import Root

logger = logging.getLogger("stillroom.monitors.filesystem")

# Open, close and attribute events are never asked of the kernel: fewer events, fewer overflows.
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
]


def watch_error(folder: object, exc: OSError) -> str:
    """One actionable line for a folder that could not be watched."""
    if exc.errno == errno.ENOSPC:
        return (
            f"not watching {folder}: the inotify watch limit is reached; raise "
            "fs.inotify.max_user_watches, e.g. `sudo sysctl fs.inotify.max_user_watches=524288` "
            "(add it to /etc/sysctl.d/ to keep it)"
        )
    if exc.errno == errno.EMFILE:
        return (
            f"not watching {folder}: the inotify instance limit is reached; raise "
            "fs.inotify.max_user_instances, e.g. `sudo sysctl fs.inotify.max_user_instances=1024` "
            "(and fs.inotify.max_user_watches likewise if watches run out next)"
        )
    return f"not watching {folder}: {exc.strerror or exc}"


class _InotifyFD(InotifyFD):
    """watchdog's inotify reader thread, telling us when the kernel queue overflowed."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__()
        self.name = "stillroom-fs-inotify"
        self._on_overflow = on_overflow

    def handle_event(self, event: InotifyEvent) -> None:
        super().handle_event(event)  # watchdog first rebuilds its recursive watches
        if event.is_queue_overflow:
            self._on_overflow()


class _Emitter(InotifyEmitter):
    _serial: ClassVar[Iterator[int]] = itertools.count(1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = f"stillroom-fs-emitter-{next(self._serial)}"


class _Inbox(FileSystemEventHandler):
    def __init__(self, inbox: queue.SimpleQueue[object]) -> None:
        self._inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._inbox.put(event)


class Observer(BaseObserver):
    """An inotify observer with its own reader thread that puts every event on `inbox`;
    stop() stops and joins its emitters and reader too. Raises OSError (EMFILE) when the
    kernel refuses another inotify instance."""

    def __init__(self, inbox: queue.SimpleQueue[object], on_overflow: Callable[[], None]) -> None:
        self.inotify = _InotifyFD(on_overflow)
        self.inotify.start()
        super().__init__(_Emitter, inotify_fd=self.inotify)
        self.name = "stillroom-fs-observer"
        self._handler = _Inbox(inbox)

    def watch(self, roots: Iterable[Root]) -> list[Root]:
        """Schedule each existing root (start the observer first); warn about and skip the
        rest. A root inside a recursive watch is seen through it, without its own."""
        active: list[Root] = []
        for root in sorted(roots, key=lambda r: len(r.path.parts)):
            if not root.path.is_dir():
                kind = "destination" if root.destination else "opt-in folder"
                logger.warning("%s %s does not exist; not watching it", kind, root.path)
                continue
            if not any(r.recursive and root.path.is_relative_to(r.path) for r in active):
                try:
                    self.schedule(
                        self._handler,
                        str(root.path),
                        recursive=root.recursive,
                        event_filter=WATCHED_EVENTS,
                        follow_symlink=False,  # never descend into a linked folder
                    )
                except OSError as exc:
                    logger.warning(watch_error(root.path, exc))
                    continue
            active.append(root)
        return active

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self.inotify.stop()
        self.inotify.join()
