"""Each file action on real files: its effect, its collisions, its failures, and its undo."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from factories import action, file_event

from stillroom.errors import ActionError
from stillroom.service.hooks.executor import Executor
from stillroom.store import Store

Snapshot = Callable[..., dict[str, bytes]]


# -- move -------------------------------------------------------------------------------


def test_move_links_then_unlinks_and_undo_restores(
    tree: Path, executor: Executor, snapshot: Snapshot, effects: list[Path]
) -> None:
    src = tree / "inbox" / "notes.txt"
    before, inode = snapshot(tree), src.stat().st_ino
    plan = executor.plan(action(kind="move", to=str(tree / "docs")), src)
    assert plan.kind == "move"
    assert plan.describe() == f"move {src} -> {tree / 'docs' / 'notes.txt'}"
    record = executor.run(plan, automation="rule", confidence=0.9)
    dst = tree / "docs" / "notes.txt"
    assert record.state == "done" and record.error is None
    assert not src.exists() and dst.read_text() == "keep me\n"
    assert dst.stat().st_ino == inode  # moved, not copied
    assert record.plan["src_id"][1] == inode and record.plan["method"] == "link"
    assert record.automation == "rule" and record.confidence == 0.9
    assert src in effects and dst in effects
    undone = executor.undo()
    assert undone.state == "undone" and undone.id == record.id
    assert snapshot(tree) == before
    assert (tree / "inbox" / "notes.txt").stat().st_ino == inode


def test_move_into_a_new_folder_and_undo_removes_the_folder(
    tree: Path, executor: Executor, snapshot: Snapshot
) -> None:
    before = snapshot(tree)
    target = tree / "archive" / "2024"
    plan = executor.plan(action(kind="move", to=str(target)), tree / "inbox" / "a.bin")
    assert not (tree / "archive").exists() and executor.store.actions() == []  # plans are pure
    record = executor.run(plan)
    assert record.state == "done"
    assert record.plan["made_dirs"] == [str(tree / "archive"), str(target)]
    assert (target / "a.bin").read_bytes() == before[str(tree / "inbox" / "a.bin")]
    executor.undo(record.id)
    assert snapshot(tree) == before and not (tree / "archive").exists()


def test_collision_at_plan_time_gets_a_numbered_name(tree: Path, executor: Executor) -> None:
    (tree / "docs" / "a (1).bin").write_bytes(b"also the user's")
    plan = executor.plan(action(kind="move", to=str(tree / "docs")), tree / "inbox" / "a.bin")
    assert plan.params["dst"] == str(tree / "docs" / "a (2).bin")
    record = executor.run(plan)
    assert record.state == "done"
    assert (tree / "docs" / "a.bin").read_bytes() == b"the user's own a.bin"
    assert (tree / "docs" / "a (1).bin").read_bytes() == b"also the user's"


@pytest.mark.parametrize("kind", ["move", "copy"])
def test_collision_at_run_time_never_overwrites(
    kind: str, tree: Path, executor: Executor, snapshot: Snapshot
) -> None:
    src = tree / "inbox" / "a.bin"
    plan = executor.plan(action(kind=kind, to=str(tree / "docs")), src)
    assert plan.params["dst"] == str(tree / "docs" / "a (1).bin")
    # Between plan and run, something else takes the planned name and the next one.
    (tree / "docs" / "a (1).bin").write_bytes(b"raced in first")
    (tree / "docs" / "a (2).bin").write_bytes(b"raced in second")
    before = snapshot(tree)
    record = executor.run(plan)
    assert record.state == "done"
    assert record.plan["dst"] == str(tree / "docs" / "a (3).bin")
    after = snapshot(tree)
    assert after[record.plan["dst"]] == before[str(src)]
    for name in ("a.bin", "a (1).bin", "a (2).bin"):
        assert after[str(tree / "docs" / name)] == before[str(tree / "docs" / name)]
    executor.undo(record.id)
    assert snapshot(tree) == before


def test_move_across_filesystems_copies_verifies_and_undoes(
    tree: Path, other_fs: Path, executor: Executor, snapshot: Snapshot, temps: Callable[..., Any]
) -> None:
    src = tree / "inbox" / "a.bin"
    before = snapshot(tree, other_fs)
    record = executor.run(executor.plan(action(kind="move", to=str(other_fs / "new")), src))
    assert record.state == "done", record.error
    assert record.plan["method"] == "copy"
    assert not src.exists()
    assert (other_fs / "new" / "a.bin").read_bytes() == before[str(src)]
    assert os.stat(other_fs / "new" / "a.bin").st_mtime_ns == record.plan["mtime_ns"]
    assert temps(tree, other_fs) == []
    undone = executor.undo(record.id)
    assert undone.plan["undo_method"] == "copy"
    assert snapshot(tree, other_fs) == before and not (other_fs / "new").exists()


def test_failed_move_is_rolled_back(
    tree: Path, executor: Executor, snapshot: Snapshot, append_only: Callable[[Path], None]
) -> None:
    """The link to the target succeeds, removing the source fails: the link goes again."""
    before = snapshot(tree)
    append_only(tree / "inbox")
    record = executor.run(
        executor.plan(action(kind="move", to=str(tree / "docs")), tree / "inbox" / "a.bin")
    )
    assert record.state == "failed"
    assert "Operation not permitted" in (record.error or "")
    assert snapshot(tree) == before


def test_run_after_the_source_vanished_fails_cleanly(
    tree: Path, executor: Executor, snapshot: Snapshot
) -> None:
    src = tree / "inbox" / "a.bin"
    plan = executor.plan(action(kind="move", to=str(tree / "docs")), src)
    src.unlink()
    before = snapshot(tree)
    record = executor.run(plan)
    assert record.state == "failed" and "does not exist" in (record.error or "")
    assert snapshot(tree) == before


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: t / "inbox" / "missing.bin", "does not exist"),
        (lambda t: t / "inbox", "not a regular file"),
        (lambda t: t / "inbox" / ".stillroom-3.tmp", "temp"),
    ],
)
def test_plan_refuses_what_it_cannot_move(
    make: Callable[[Path], Path], message: str, tree: Path, executor: Executor
) -> None:
    path = make(tree)
    if path.name.endswith(".tmp"):
        path.write_bytes(b"")
    with pytest.raises(ActionError, match=message):
        executor.plan(action(kind="move", to=str(tree / "docs")), path)


def test_plan_refuses_a_symlink_and_a_move_into_its_own_folder(
    tree: Path, executor: Executor
) -> None:
    link = tree / "inbox" / "link.bin"
    link.symlink_to(tree / "inbox" / "a.bin")
    with pytest.raises(ActionError, match="not a regular file"):
        executor.plan(action(kind="move", to=str(tree / "docs")), link)
    with pytest.raises(ActionError, match="already in"):
        executor.plan(action(kind="move", to=str(tree / "inbox")), tree / "inbox" / "a.bin")


# -- rename -----------------------------------------------------------------------------


def test_rename_from_a_template_and_undo(
    tree: Path, executor: Executor, snapshot: Snapshot
) -> None:
    src = tree / "inbox" / "notes.txt"
    before = snapshot(tree)
    at = time.mktime((2024, 3, 9, 12, 0, 0, 0, 0, -1))
    config = action(kind="rename", name="{date} {parent}-{stem}{ext}")
    plan = executor.plan(config, src, file_event(src, at=at))
    assert plan.describe() == f"rename {src} -> 2024-03-09 inbox-notes.txt"
    record = executor.run(plan)
    assert record.state == "done"
    assert (tree / "inbox" / "2024-03-09 inbox-notes.txt").read_text() == "keep me\n"
    executor.undo()
    assert snapshot(tree) == before


def test_rename_onto_a_taken_name_is_numbered(tree: Path, executor: Executor) -> None:
    (tree / "inbox" / "b.bin").write_bytes(b"taken")
    record = executor.run(
        executor.plan(action(kind="rename", name="b{ext}"), tree / "inbox" / "a.bin")
    )
    assert record.plan["dst"] == str(tree / "inbox" / "b (1).bin")
    assert (tree / "inbox" / "b.bin").read_bytes() == b"taken"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{nope}.bin", "unknown"),
        ("sub/{name}", "not a valid file name"),
        ("..", "not a valid file name"),
        ("{name}", "already named"),
        (".stillroom-1.tmp", "reserved"),
    ],
)
def test_rename_refuses_bad_templates(
    template: str, message: str, tree: Path, executor: Executor
) -> None:
    with pytest.raises(ActionError, match=message):
        executor.plan(action(kind="rename", name=template), tree / "inbox" / "a.bin")


# -- copy -------------------------------------------------------------------------------


def test_copy_and_undo_removes_only_the_copy(
    tree: Path, executor: Executor, snapshot: Snapshot, temps: Callable[..., Any]
) -> None:
    src = tree / "inbox" / "a.bin"
    os.chmod(src, 0o640)
    before = snapshot(tree)
    record = executor.run(executor.plan(action(kind="copy", to=str(tree / "docs")), src))
    copy = tree / "docs" / "a (1).bin"
    assert record.state == "done" and record.plan["dst"] == str(copy)
    assert copy.read_bytes() == src.read_bytes() and copy.stat().st_ino != src.stat().st_ino
    assert copy.stat().st_mode & 0o777 == 0o640
    assert copy.stat().st_mtime_ns == src.stat().st_mtime_ns
    assert temps(tree) == []
    executor.undo(record.id)
    assert snapshot(tree) == before


def test_copy_across_filesystems(
    tree: Path, other_fs: Path, executor: Executor, snapshot: Snapshot
) -> None:
    before = snapshot(tree, other_fs)
    record = executor.run(
        executor.plan(action(kind="copy", to=str(other_fs)), tree / "inbox" / "a.bin")
    )
    assert record.state == "done"
    assert (other_fs / "a.bin").read_bytes() == before[str(tree / "inbox" / "a.bin")]
    executor.undo(record.id)
    assert snapshot(tree, other_fs) == before


def test_journal_holds_the_plan_and_summary(tree: Path, executor: Executor, store: Store) -> None:
    record = executor.run(
        executor.plan(action(kind="copy", to=str(tree / "docs")), tree / "inbox" / "notes.txt")
    )
    stored = store.action(record.id)
    assert stored is not None and stored.plan == record.plan
    assert stored.plan["summary"] == f"copy {tree}/inbox/notes.txt -> {tree}/docs/notes.txt"
    assert len(stored.plan["sha256"]) == 64 and stored.plan["tmp"].endswith(
        f".stillroom-{record.id}.tmp"
    )
