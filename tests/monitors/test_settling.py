"""Which files count and when they have settled, on real files with explicit clocks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from stillroom.config import Config, FolderConfig
from stillroom.monitors.settling import Root, Roots, Settler, configured_roots, is_partial

SUFFIXES = [".part", ".crdownload", ".tmp", ".download", ".partial"]


def settler(settle: float = 0.5, grace: float = 1.0) -> Settler:
    return Settler(settle, SUFFIXES, grace)


def test_partial_names() -> None:
    assert is_partial("movie.mkv.part", SUFFIXES)
    assert is_partial("Unconfirmed 123.CRDOWNLOAD", SUFFIXES)
    assert not is_partial("party.txt", SUFFIXES)
    assert not is_partial("report.pdf", SUFFIXES)


def test_a_file_settles_once_unchanged_for_the_settle_time(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"1234")
    waiting = settler()
    assert waiting.track(path, "created", 0.0, tmp_path, from_opt_in=True) is not None
    assert waiting.due(0.4) == []
    [record] = waiting.due(0.5)
    assert (record.path, record.size, record.kind) == (path, 4, "created")
    assert path not in waiting


def test_growth_restarts_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    path.write_bytes(b"x")
    waiting = settler()
    waiting.track(path, "created", 0.0, tmp_path, from_opt_in=True)
    path.write_bytes(b"xx")
    assert waiting.due(0.4) == []  # sees the new size: settles 0.5 s from now
    assert waiting.due(0.8) == []
    assert [r.size for r in waiting.due(0.9)] == [2]


def test_a_touch_or_a_second_track_restarts_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("a")
    waiting = settler()
    first = waiting.track(path, "created", 0.0, tmp_path, from_opt_in=True)
    assert waiting.track(path, "created", 0.3, tmp_path, from_opt_in=True) is first
    assert waiting.touch(path, 0.6) and not waiting.touch(tmp_path / "other", 0.6)
    assert waiting.due(1.0) == [] and len(waiting.due(1.1)) == 1


def test_firefox_placeholder_waits_for_its_part_file(tmp_path: Path) -> None:
    placeholder, part = tmp_path / "setup.exe", tmp_path / "setup.exe.part"
    placeholder.touch()
    part.write_bytes(b"downloading")
    waiting = settler()
    waiting.track(placeholder, "created", 0.0, tmp_path, from_opt_in=True)
    assert waiting.due(10.0) == []
    part.replace(placeholder)
    assert waiting.due(10.1) == []  # it changed: the clock restarts
    [record] = waiting.due(10.6)
    assert record.size == len(b"downloading")


def test_a_vanished_file_is_kept_a_while_for_its_delete_event(tmp_path: Path) -> None:
    path = tmp_path / "brief.txt"
    path.write_text("here")
    waiting = settler(grace=1.0)
    assert waiting.track(tmp_path / "never.txt", "created", 0.0, tmp_path, from_opt_in=True) is None
    record = waiting.track(path, "created", 0.0, tmp_path, from_opt_in=True)
    assert record is not None
    path.unlink()
    assert waiting.due(5.0) == [] and path in waiting
    assert waiting.expects("brief.txt", None, None)
    assert waiting.expects("other-name", record.device, record.inode)
    assert waiting.due(6.1) == [] and path not in waiting


def test_roots_deepest_first_with_ignores_and_own_files(tmp_path: Path) -> None:
    documents = Root(tmp_path / "Documents", recursive=True, destination=True)
    inbox = Root(tmp_path / "Documents" / "inbox", recursive=False, destination=False)
    downloads = Root(tmp_path / "Downloads", True, False, ignore=("*.log", "cache", "tmp/*"))
    roots = Roots([documents, inbox, downloads], SUFFIXES)
    assert roots.locate(tmp_path / "Documents" / "inbox" / "a.pdf") is inbox
    assert roots.locate(tmp_path / "Documents" / "inbox" / "sub" / "a.pdf") is documents
    assert roots.locate(tmp_path / "Downloads" / "deep" / "a.pdf") is downloads
    assert roots.locate(tmp_path / "Elsewhere" / "a.pdf") is None
    for name in ("x.log", "cache/a/b.txt", "tmp/a.txt", ".stillroom-1.tmp", "film.mkv.part"):
        assert roots.locate(tmp_path / "Downloads" / name) is None, name


def test_walk_lists_the_files_that_count_in_a_root(tmp_path: Path) -> None:
    for relative in ("a.txt", "b.part", "sub/c.txt", "skip/d.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(relative)
    flat = Root(tmp_path, recursive=False, destination=False)
    deep = Root(tmp_path, recursive=True, destination=False, ignore=("skip",))
    found = {p.relative_to(tmp_path).as_posix() for p, _ in Roots([flat], SUFFIXES).walk(flat)}
    assert found == {"a.txt"}
    found = {p.relative_to(tmp_path).as_posix() for p, _ in Roots([deep], SUFFIXES).walk(deep)}
    assert found == {"a.txt", "sub/c.txt"}


def test_configured_roots_keep_an_opt_in_folder_opt_in(tmp_path: Path) -> None:
    config = Config(
        folders=[FolderConfig(path=tmp_path / "Downloads", ignore=["*.iso"])],
        destinations=[tmp_path / "Downloads", tmp_path / "Documents"],
    )
    roots = configured_roots(config)
    assert [(r.path.name, r.destination, r.recursive) for r in roots] == [
        ("Downloads", False, False),
        ("Documents", True, True),
    ]
    assert roots[0].ignore == ("*.iso",)


def test_walk_lists_links_as_themselves_and_never_descends_into_one(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "deeper").mkdir(parents=True)
    (outside / "secret.txt").write_text("not yours")
    (outside / "deeper" / "more.txt").write_text("not yours either")
    root_path = tmp_path / "Downloads"
    (root_path / "sub").mkdir(parents=True)
    (root_path / "a.txt").write_text("a")
    (root_path / "sub" / "c.txt").write_text("c")
    (root_path / "to-file.txt").symlink_to(outside / "secret.txt")
    (root_path / "linked").symlink_to(outside)
    (root_path / "sub" / "dangling.pdf").symlink_to(tmp_path / "never-was.pdf")
    deep = Root(root_path, recursive=True, destination=False)
    found = dict(Roots([deep], SUFFIXES).walk(deep))
    assert {p.relative_to(root_path).as_posix() for p in found} == {
        "a.txt",
        "sub/c.txt",
        "to-file.txt",
        "linked",
        "sub/dangling.pdf",
    }
    for name in ("to-file.txt", "linked", "sub/dangling.pdf"):
        st = found[root_path / name]
        assert stat.S_ISLNK(st.st_mode) and st.st_ino == os.lstat(root_path / name).st_ino


def test_a_link_settles_as_itself(tmp_path: Path) -> None:
    link = tmp_path / "gone.pdf"
    link.symlink_to(tmp_path / "never-was.pdf")  # dangling: a stat that follows would fail
    waiting = settler()
    record = waiting.track(link, "created", 0.0, tmp_path, from_opt_in=True)
    assert record is not None and record.symlink
    assert record.inode == os.lstat(link).st_ino
    [settled] = waiting.due(0.5)
    assert settled.path == link


def test_configured_roots_are_the_resolved_folders(tmp_path: Path) -> None:
    real_downloads, real_documents = tmp_path / "data" / "Downloads", tmp_path / "data" / "Docs"
    real_downloads.mkdir(parents=True)
    real_documents.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "Downloads").symlink_to(real_downloads)
    (home / "Documents").symlink_to(real_documents)
    config = Config(
        folders=[FolderConfig(path=home / "Downloads")], destinations=[home / "Documents"]
    )
    roots = configured_roots(config)
    assert [(r.path, r.destination) for r in roots] == [
        (real_downloads, False),
        (real_documents, True),
    ]
