"""Move pairing on real files: what a departure and an arrival mean together or alone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from stillroom.monitors.features import file_features
from stillroom.monitors.pairing import Arrival, Departure, Entry, Pairer
from stillroom.monitors.settling import Root, Roots, Settling


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "Downloads").mkdir()
    (tmp_path / "Documents").mkdir()
    return tmp_path / "Downloads", tmp_path / "Documents"


def indexed(pairer: Pairer, path: Path, root: Path, *, hashed: bool = True) -> Entry:
    features = file_features(path)
    assert features is not None
    pairer.remember(path, root, features.quick_hash if hashed else None)
    entry = pairer.index.get(path)
    assert entry is not None
    return entry


def arrival(path: Path, root: Path, *, destination: bool, deadline: float = 10.0) -> Arrival:
    features = file_features(path)
    assert features is not None
    st = path.stat()
    record = Settling(path, "created", path, root, not destination, 0.0)
    record.observe(st, 0.0)
    return Arrival(path, root, destination, features, record, deadline)


def test_a_departure_then_its_arrival_is_one_move(home: tuple[Path, Path]) -> None:
    downloads, documents = home
    source, target = downloads / "a.pdf", documents / "a.pdf"
    source.write_bytes(os.urandom(1000))
    pairer = Pairer(linger=1.0)
    entry = indexed(pairer, source, downloads)
    source.rename(target)
    pairer.index.pop(source)
    assert pairer.depart(Departure.from_entry(entry, deadline=1.0)) == []
    [report] = pairer.arrive(arrival(target, documents, destination=True))
    assert report[:3] == ("file.moved", target, downloads) and report.src == source
    assert pairer.expire(100.0, lambda d: False) == []


def test_an_arrival_then_its_departure_is_one_move_by_name_and_hash(
    home: tuple[Path, Path],
) -> None:
    downloads, documents = home
    source, target = downloads / "b.bin", documents / "b.bin"
    source.write_bytes(os.urandom(200_000))
    pairer = Pairer(linger=1.0)
    entry = indexed(pairer, source, downloads)
    shutil.copyfile(source, target)  # another inode: only name, size and hash match
    assert pairer.arrive(arrival(target, documents, destination=True)) == []  # source still there
    source.unlink()
    pairer.index.pop(source)
    [report] = pairer.depart(Departure.from_entry(entry, deadline=1.0))
    assert (report.kind, report.path, report.src) == ("file.moved", target, source)


def test_an_arrival_pairs_at_once_with_an_indexed_file_that_is_gone(
    home: tuple[Path, Path],
) -> None:
    downloads, documents = home
    source, target = downloads / "c.txt", documents / "c.txt"
    source.write_text("same bytes")
    pairer = Pairer(linger=1.0)
    indexed(pairer, source, downloads, hashed=False)  # the stat-only scan
    shutil.copy2(source, target)  # mv across devices keeps the mtime
    source.unlink()
    [report] = pairer.arrive(arrival(target, documents, destination=True))
    assert (report.kind, report.src) == ("file.moved", source)
    assert source not in pairer.index


def test_different_content_does_not_pair(home: tuple[Path, Path]) -> None:
    downloads, documents = home
    source, target = downloads / "d.txt", documents / "d.txt"
    source.write_text("one version")
    pairer = Pairer(linger=1.0)
    entry = indexed(pairer, source, downloads)
    target.write_text("the other!!")  # same name and size, other bytes
    source.unlink()
    pairer.index.pop(source)
    assert pairer.depart(Departure.from_entry(entry, deadline=1.0)) == []
    assert pairer.arrive(arrival(target, documents, destination=True)) == []
    reports = pairer.expire(100.0, lambda d: False)
    assert [(r.kind, r.path) for r in reports] == [("file.deleted", source)]  # target: private


def test_alone_after_the_window(home: tuple[Path, Path]) -> None:
    downloads, _ = home
    new, old = downloads / "new.txt", downloads / "old.txt"
    new.write_text("new")
    old.write_text("old")
    pairer = Pairer(linger=1.0)
    entry = indexed(pairer, old, downloads)
    old.unlink()
    pairer.index.pop(old)
    pairer.depart(Departure.from_entry(entry, deadline=1.0))
    pairer.arrive(arrival(new, downloads, destination=False, deadline=1.0))
    assert pairer.holds(new)
    assert pairer.expire(0.9, lambda d: False) == []
    [created] = pairer.expire(1.0, lambda d: True)
    assert created[:3] == ("file.created", new, downloads) and created.src is None
    assert pairer.expire(1.5, lambda d: True) == []  # lingers: a namesake is still settling
    [deleted] = pairer.expire(2.0, lambda d: True)
    assert (deleted.kind, deleted.path, deleted.features.size) == ("file.deleted", old, 3)
    assert new in pairer.index


def test_a_file_never_announced_is_created_where_it_lands(home: tuple[Path, Path]) -> None:
    downloads, _ = home
    first, renamed = downloads / "tmp-name.txt", downloads / "final.txt"
    first.write_text("fresh")
    record = Settling(first, "created", first, downloads, True, 0.0)
    record.observe(first.stat(), 0.0)
    first.rename(renamed)
    pairer = Pairer(linger=1.0)
    assert pairer.depart(Departure.from_settling(record, deadline=1.0)) == []
    [report] = pairer.arrive(arrival(renamed, downloads, destination=False))
    assert (report.kind, report.path, report.src) == ("file.created", renamed, None)
    assert pairer.flush() == []


def test_compare_finds_new_changed_and_gone(home: tuple[Path, Path]) -> None:
    downloads, _ = home
    for name in ("kept.txt", "changed.txt", "gone.txt"):
        (downloads / name).write_text(name)
    roots = Roots([Root(downloads, recursive=False, destination=False)], [".part"])
    pairer = Pairer(linger=1.0)
    pairer.scan(roots)
    assert all(entry.scanned and entry.quick_hash is None for entry in pairer.index)
    (downloads / "gone.txt").unlink()
    (downloads / "changed.txt").write_text("changed, longer")
    (downloads / "new.txt").write_text("new")
    (downloads / "new.part").write_text("partial")
    new, changed, gone = pairer.compare(roots, skip=lambda path: False)
    assert [p.name for p, _ in new] == ["new.txt"]
    assert [p.name for p, _ in changed] == ["changed.txt"]
    assert [p.name for p in gone] == ["gone.txt"]
    assert pairer.compare(roots, skip=lambda path: path.name == "new.txt")[0] == []


def test_expects_by_name_or_inode(home: tuple[Path, Path]) -> None:
    downloads, _ = home
    path = downloads / "e.txt"
    path.write_text("e")
    pairer = Pairer(linger=1.0)
    entry = indexed(pairer, path, downloads)
    assert pairer.expects("e.txt", None, None)
    assert pairer.expects("renamed.txt", entry.device, entry.inode)
    assert not pairer.expects("other.txt", entry.device, entry.inode + 1)
