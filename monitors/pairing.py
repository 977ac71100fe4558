"""Move pairing: the index of opt-in files, and departures matched with arrivals across watches."""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

from stillroom.events import FileFeatures
from stillroom.monitors.features import basic_features, quick_hash
from stillroom.monitors.settling import Root, Roots, Settling

T = TypeVar("T")
InodeKey = tuple[int | None, int | None]


@dataclass
class Entry:
    """A file known in an opt-in folder; the quick hash is filled lazily."""

    path: Path
    root: Path
    size: int
    mtime_ns: int
    inode: int
    device: int
    quick_hash: str | None = None
    scanned: bool = False  # known from the initial scan only, never reported
    symlink: bool = False

    @classmethod
    def from_stat(
        cls, path: Path, root: Path, st: os.stat_result, quick_hash: str | None = None
    ) -> Entry:
        """From an lstat: a symbolic link is indexed as itself."""
        link = stat.S_ISLNK(st.st_mode)
        return cls(
            path, root, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, quick_hash, symlink=link
        )


@dataclass(frozen=True)
class Departure:
    """A file that left an opt-in folder; `reported` says whether it was ever announced."""

    path: Path
    root: Path
    size: int
    inode: int | None
    device: int | None
    quick_hash: str | None
    mtime_ns: int
    reported: bool
    deadline: float
    symlink: bool = False

    @property
    def name(self) -> str:
        return self.path.name

    def features(self) -> FileFeatures:
        """What is known of it without the file: the type is guessed by name."""
        return basic_features(
            self.name, self.size, self.inode, self.device, self.quick_hash, self.symlink
        )

    @classmethod
    def from_entry(cls, entry: Entry, deadline: float) -> Departure:
        return cls(
            entry.path,
            entry.root,
            entry.size,
            entry.inode,
            entry.device,
            entry.quick_hash,
            entry.mtime_ns,
            reported=True,
            deadline=deadline,
            symlink=entry.symlink,
        )

    @classmethod
    def from_settling(cls, record: Settling, deadline: float) -> Departure:
        return cls(
            record.path,
            record.origin_root,
            record.size,
            record.inode,
            record.device,
            None,
            record.mtime_ns,
            reported=False,
            deadline=deadline,
            symlink=record.symlink,
        )


@dataclass(frozen=True)
class Arrival:
    """A settled new file waiting a while for the departure it may be the other half of."""

    path: Path
    root: Path
    destination: bool
    features: FileFeatures
    record: Settling
    deadline: float


def same_file(departure: Departure, arrival: Arrival) -> bool:
    """Same size and (device, inode); else the same name, size and quick hash, or the same
    name, size and mtime when the departed file was never hashed (mv keeps the mtime)."""
    features = arrival.features
    if departure.size != features.size:
        return False
    if departure.inode is not None and (departure.device, departure.inode) == (
        features.device,
        features.inode,
    ):
        return True
    if departure.name != features.name:
        return False
    if departure.quick_hash is None:
        return departure.mtime_ns == arrival.record.mtime_ns
    return departure.quick_hash == features.quick_hash


class Shelf(Generic[T]):
    """Items by path, also findable by file name and by (device, inode)."""

    def __init__(self) -> None:
        self._items: dict[Path, tuple[T, str, InodeKey]] = {}
        self._by_name: defaultdict[str, set[Path]] = defaultdict(set)
        self._by_inode: defaultdict[InodeKey, set[Path]] = defaultdict(set)

    def __contains__(self, path: object) -> bool:
        return path in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter([item for item, _, _ in self._items.values()])

    def get(self, path: Path) -> T | None:
        found = self._items.get(path)
        return found[0] if found else None

    def put(self, path: Path, inode: InodeKey, item: T) -> None:
        self.pop(path)
        self._items[path] = (item, path.name, inode)
        self._by_name[path.name].add(path)
        if inode[1] is not None:
            self._by_inode[inode].add(path)

    def pop(self, path: Path) -> T | None:
        found = self._items.pop(path, None)
        if found is None:
            return None
        item, name, inode = found
        _discard(self._by_name, name, path)
        _discard(self._by_inode, inode, path)
        return item

    def find(self, name: str | None, inode: InodeKey) -> list[T]:
        """Items with this name or this (device, inode)."""
        paths = set(self._by_name.get(name, ())) if name is not None else set()
        if inode[1] is not None:
            paths |= self._by_inode.get(inode, set())
        return [self._items[path][0] for path in sorted(paths)]

    def paths_under(self, folder: Path) -> list[Path]:
        return [path for path in self._items if path.is_relative_to(folder)]


def _discard(mapping: defaultdict[T, set[Path]], key: T, path: Path) -> None:
    paths = mapping.get(key)
    if paths is not None:
        paths.discard(path)
        if not paths:
            del mapping[key]


class FileIndex(Shelf[Entry]):
    """path -> (inode, device, size, name, quick hash) of every file in the opt-in folders."""

    def add(self, entry: Entry) -> None:
        self.put(entry.path, (entry.device, entry.inode), entry)


class Report(NamedTuple):
    """One file event to emit."""

    kind: str
    path: Path
    root: Path
    features: FileFeatures
    src: Path | None = None


class Pairer:
    """The index plus the departures and arrivals waiting for their other half; one thread
    uses it. Every method returns the reports its decision makes."""

    def __init__(self, linger: float) -> None:
        self.linger = linger
        self.index = FileIndex()
        self._departures: Shelf[Departure] = Shelf()
        self._arrivals: Shelf[Arrival] = Shelf()

    def depart(self, departure: Departure) -> list[Report]:
        """A file left: pair it with a waiting arrival, else let it wait."""
        key = (departure.device, departure.inode)
        for arrival in self._arrivals.find(departure.name, key):
            if same_file(departure, arrival):
                self._arrivals.pop(arrival.path)
                return [self._pair(departure, arrival)]
        self._departures.put(departure.path, key, departure)
        return []

    def arrive(self, arrival: Arrival) -> list[Report]:
        """A new file settled: pair it with a waiting departure or with an indexed file whose
        path is gone (its delete is still on the way), else let it wait."""
        features = arrival.features
        key = (features.device, features.inode)
        for departure in self._departures.find(features.name, key):
            if same_file(departure, arrival):
                self._departures.pop(departure.path)
                return [self._pair(departure, arrival)]
        for entry in self.index.find(features.name, key):
            departure = Departure.from_entry(entry, arrival.deadline)
            if same_file(departure, arrival) and not os.path.lexists(entry.path):
                self.index.pop(entry.path)
                return [self._pair(departure, arrival)]
        self._arrivals.put(arrival.path, key, arrival)
        return []

    def withdraw(self, path: Path) -> Arrival | None:
        """Take back a waiting arrival (it changed, moved or vanished)."""
        return self._arrivals.pop(path)

    def holds(self, path: Path) -> bool:
        return path in self._arrivals

    def paths_under(self, folder: Path) -> list[Path]:
        """Indexed files and waiting arrivals inside a folder."""
        return self.index.paths_under(folder) + self._arrivals.paths_under(folder)

    def expects(self, name: str, device: int | None, inode: int | None) -> bool:
        """Whether a file of this name or inode could be one leaving an opt-in folder."""
        key = (device, inode)
        return bool(self._departures.find(name, key) or self.index.find(name, key))

    @property
    def waiting(self) -> bool:
        """Whether a departure or an arrival waits for its partner (a tick is due)."""
        return bool(len(self._departures) or len(self._arrivals))

    def expire(self, now: float, busy: Callable[[Departure], bool]) -> list[Report]:
        """Report what waited past its deadline; a departure whose arrival may still be
        settling (`busy`) lingers a little longer."""
        gone = [
            d
            for d in self._departures
            if now >= d.deadline and not (now < d.deadline + self.linger and busy(d))
        ]
        came = [a for a in self._arrivals if now >= a.deadline]
        for departure in gone:
            self._departures.pop(departure.path)
        for arrival in came:
            self._arrivals.pop(arrival.path)
        return self._unpaired(gone, came)

    def flush(self) -> list[Report]:
        """Report everything still waiting (on stop)."""
        gone, came = list(self._departures), list(self._arrivals)
        self._departures, self._arrivals = Shelf(), Shelf()
        return self._unpaired(gone, came)

    def hash_namesakes(self, name: str) -> None:
        """Hash indexed files of this name now, so a copy of one (a cross-device move)
        can still be matched once its source is gone."""
        for entry in self.index.find(name, (None, None)):
            if entry.quick_hash is None:
                entry.quick_hash = quick_hash(entry.path, entry.root)

    def scan(self, roots: Roots) -> None:
        """Index every file of the opt-in folders (stat only)."""
        for root in roots:
            if not root.destination:
                for path, st in roots.walk(root):
                    entry = Entry.from_stat(path, root.path, st)
                    entry.scanned = True
                    self.index.add(entry)

    def compare(
        self, roots: Roots, skip: Callable[[Path], bool]
    ) -> tuple[list[tuple[Path, Root]], list[tuple[Path, Root]], list[Path]]:
        """The opt-in files the index lacks, those changed since, and the indexed ones gone."""
        new: list[tuple[Path, Root]] = []
        changed: list[tuple[Path, Root]] = []
        seen: set[Path] = set()
        for root in roots:
            if root.destination:
                continue
            for path, st in roots.walk(root):
                seen.add(path)
                entry = self.index.get(path)
                if skip(path):
                    continue
                if entry is None:
                    new.append((path, root))
                elif (entry.size, entry.mtime_ns, entry.inode) != (
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ino,
                ):
                    changed.append((path, root))
        return new, changed, [entry.path for entry in self.index if entry.path not in seen]

    def remember(self, path: Path, root: Path, digest: str | None) -> None:
        """Index a file of an opt-in folder as it is now (a link as itself)."""
        try:
            self.index.add(Entry.from_stat(path, root, os.lstat(path), digest))
        except OSError:
            self.index.pop(path)

    def _pair(self, departure: Departure, arrival: Arrival) -> Report:
        features = arrival.features
        if not arrival.destination:
            self.remember(arrival.path, arrival.root, features.quick_hash)
        if departure.path == arrival.path:
            kind = "file.modified" if departure.reported else "file.created"
            return Report(kind, arrival.path, arrival.root, features)
        if not departure.reported and not arrival.destination:
            # Never announced where it was: it simply arrived here.
            return Report("file.created", arrival.path, arrival.root, features)
        return Report("file.moved", arrival.path, departure.root, features, departure.path)

    def _unpaired(self, gone: list[Departure], came: list[Arrival]) -> list[Report]:
        reports = [Report("file.deleted", d.path, d.root, d.features()) for d in gone if d.reported]
        for arrival in came:
            if not arrival.destination:  # a plain create in a destination is nobody's business
                self.remember(arrival.path, arrival.root, arrival.features.quick_hash)
                reports.append(Report("file.created", arrival.path, arrival.root, arrival.features))
        return reports
