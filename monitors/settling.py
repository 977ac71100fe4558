"""Which files count and when: partial downloads, own temp files, ignore globs, and settling."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stillroom.config import Config
from stillroom.monitors.features import FOLDER_FLAGS

Kind = Literal["created", "modified"]
OWN_PREFIX = ".stillroom-"


def is_partial(name: str, suffixes: Sequence[str]) -> bool:
    """Whether the name is an unfinished download (ends in a partial suffix)."""
    lower = name.lower()
    return any(lower.endswith(suffix.lower()) for suffix in suffixes)


@dataclass
class Settling:
    """A file waiting to settle; `origin` is where it was first seen, kept across renames."""

    path: Path
    kind: Kind
    origin: Path
    origin_root: Path
    from_opt_in: bool
    changed_at: float
    size: int = -1
    mtime_ns: int = -1
    inode: int | None = None
    device: int | None = None
    symlink: bool = False
    missing_since: float | None = field(default=None, compare=False)

    def observe(self, st: os.stat_result, now: float) -> None:
        """Take a fresh lstat (a link is watched as itself); any change restarts the clock."""
        self.missing_since = None
        if (st.st_size, st.st_mtime_ns) != (self.size, self.mtime_ns):
            self.size, self.mtime_ns = st.st_size, st.st_mtime_ns
            self.changed_at = now
        self.inode, self.device = st.st_ino, st.st_dev
        self.symlink = stat.S_ISLNK(st.st_mode)


class Settler:
    """The files waiting to settle, checked by one thread on each tick; not thread-safe."""

    def __init__(
        self, settle_seconds: float, partial_suffixes: Sequence[str], grace: float
    ) -> None:
        self.settle_seconds = settle_seconds
        self.partial_suffixes = tuple(partial_suffixes)
        self.grace = grace
        self._pending: dict[Path, Settling] = {}

    def __contains__(self, path: object) -> bool:
        return path in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[Settling]:
        return iter(list(self._pending.values()))

    def track(
        self, path: Path, kind: Kind, now: float, origin_root: Path, *, from_opt_in: bool
    ) -> Settling | None:
        """Start settling a file (or restart one already waiting); None when it is gone."""
        if self.touch(path, now):
            return self._pending[path]
        try:
            st = os.lstat(path)
        except OSError:
            return None
        record = Settling(path, kind, path, origin_root, from_opt_in, changed_at=now)
        record.observe(st, now)
        self._pending[path] = record
        return record

    def put(self, record: Settling, now: float) -> None:
        """Settle a known record again at its (possibly new) path."""
        record.changed_at = now
        record.missing_since = None
        self._pending[record.path] = record

    def touch(self, path: Path, now: float) -> bool:
        """Note a change to a waiting file; False when it is not waiting."""
        record = self._pending.get(path)
        if record is None:
            return False
        record.changed_at = now
        return True

    def take(self, path: Path) -> Settling | None:
        return self._pending.pop(path, None)

    def due(self, now: float) -> list[Settling]:
        """Stat every waiting file; return (and forget) those unchanged for settle_seconds."""
        settled: list[Settling] = []
        for path, record in list(self._pending.items()):
            try:
                st = os.lstat(path)
            except OSError:
                # Its delete event is on the way; forget it only if that never comes.
                record.missing_since = record.missing_since or now
                if now - record.missing_since > self.grace:
                    del self._pending[path]
                continue
            record.observe(st, now)
            if now - record.changed_at >= self.settle_seconds and not self._downloading(path):
                settled.append(self._pending.pop(path))
        return settled

    def expects(self, name: str, device: int | None, inode: int | None) -> bool:
        """Whether a waiting file could be the arrival of this name or inode."""
        for record in self._pending.values():
            if record.path.name == name:
                return True
            if inode is not None and (record.device, record.inode) == (device, inode):
                return True
        return False

    def _downloading(self, path: Path) -> bool:
        # Firefox writes `name.part` beside an empty `name` and renames it over at the end.
        return any(os.path.lexists(f"{path}{suffix}") for suffix in self.partial_suffixes)


@dataclass(frozen=True)
class Root:
    """A watched folder: an opt-in folder, or a destination root (where only moves count)."""

    path: Path
    recursive: bool
    destination: bool
    ignore: tuple[str, ...] = ()

    def contains(self, path: Path) -> bool:
        if self.recursive:
            return path != self.path and path.is_relative_to(self.path)
        return path.parent == self.path

    def ignores(self, path: Path) -> bool:
        """Globs match the relative path, the file name or any folder on the way."""
        relative = path.relative_to(self.path)
        names = (relative.as_posix(), *relative.parts)
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.ignore for name in names)


def configured_roots(config: Config) -> list[Root]:
    """Opt-in folders, then destinations; a destination that is also opt-in stays opt-in.
    The paths are the config's, resolved once when it loaded (a root that is a link, such as
    ~/Downloads -> /data/Downloads, is its real folder here, in every event and comparison)."""
    roots: dict[Path, Root] = {}
    for folder in config.folders:
        roots.setdefault(
            folder.path, Root(folder.path, folder.recursive, False, tuple(folder.ignore))
        )
    for destination in config.destinations:
        roots.setdefault(destination, Root(destination, True, True))
    return list(roots.values())


class Roots:
    """The watched roots and the files that count in them."""

    def __init__(self, roots: Iterable[Root], partial_suffixes: Sequence[str]) -> None:
        self.deepest_first = sorted(roots, key=lambda r: len(r.path.parts), reverse=True)
        self.partial_suffixes = tuple(partial_suffixes)

    def __iter__(self) -> Iterator[Root]:
        return iter(self.deepest_first)

    def locate(self, path: Path) -> Root | None:
        """The deepest root holding this file; None when its name is not for reporting."""
        name = path.name
        if name.startswith(OWN_PREFIX) or is_partial(name, self.partial_suffixes):
            return None
        for root in self.deepest_first:
            if root.contains(path):
                return None if root.ignores(path) else root
        return None

    def walk(self, root: Root) -> Iterator[tuple[Path, os.stat_result]]:
        """Every regular file and symbolic link that counts in this root (not in a deeper one),
        with its lstat. No link is followed: a linked folder is listed, never descended into,
        and each folder is opened from its parent's descriptor, so one swapped for a link is
        refused."""
        try:
            fd = os.open(root.path, FOLDER_FLAGS)
        except OSError:
            return
        try:
            yield from self._walk(root, root.path, fd)
        finally:
            os.close(fd)

    def _walk(self, root: Root, folder: Path, fd: int) -> Iterator[tuple[Path, os.stat_result]]:
        try:
            with os.scandir(fd) as scan:
                items = list(scan)
        except OSError:
            return
        for item in items:  # the entries' stat calls use `fd`: it stays open meanwhile
            path = folder / item.name
            try:
                is_folder = item.is_dir(follow_symlinks=False)
                if is_folder and not root.recursive:
                    continue
                if is_folder:
                    sub = os.open(item.name, FOLDER_FLAGS, dir_fd=fd)
                else:
                    counts = item.is_file(follow_symlinks=False) or item.is_symlink()
                    if not counts or self.locate(path) is not root:
                        continue
                    st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if not is_folder:
                yield path, st
                continue
            try:
                yield from self._walk(root, path, sub)
            finally:
                os.close(sub)
