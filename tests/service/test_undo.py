"""Undo: which action it picks, what it refuses, and where a moved file goes back to."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from stillroom.config import ActionConfig
from stillroom.errors import UndoError
from stillroom.service.hooks.executor import Executor
from stillroom.store import ActionRecord

ACTION: TypeAdapter[Any] = TypeAdapter(ActionConfig)
Snapshot = Callable[..., dict[str, bytes]]


def run(executor: Executor, path: Path, **fields: Any) -> ActionRecord:
    record = executor.run(executor.plan(ACTION.validate_python(fields), path))
    assert record.state == "done", record.error
    return record


def test_undo_everything_newest_first_restores_the_tree(
    tree: Path, executor: Executor, snapshot: Snapshot
) -> None:
    before = snapshot(tree)
    moved = run(executor, tree / "inbox" / "a.bin", kind="move", to=str(tree / "docs"))
    renamed = run(executor, Path(moved.plan["dst"]), kind="rename", name="renamed{ext}")
    run(executor, Path(renamed.plan["dst"]), kind="copy", to=str(tree / "inbox"))
    run(executor, tree / "inbox" / "notes.txt", kind="command", argv=["true"])
    run(executor, tree / "inbox" / "notes.txt", kind="move", to=str(tree / "deep" / "er"))
    undone = []
    while True:
        try:
            undone.append(executor.undo().id)
        except UndoError as exc:
            assert "no action to undo" in str(exc)
            break
    assert undone == [5, 3, 2, 1]  # newest first, the command skipped
    assert snapshot(tree) == before and not (tree / "deep").exists()


def test_undo_refusals_name_the_reason(tree: Path, executor: Executor) -> None:
    record = run(executor, tree / "inbox" / "a.bin", kind="copy", to=str(tree / "docs"))
    executor.undo(record.id)
    with pytest.raises(UndoError, match="already undone"):
        executor.undo(record.id)
    with pytest.raises(UndoError, match="no action #99"):
        executor.undo(99)
    failed = executor.run(
        executor.plan(
            ACTION.validate_python({"kind": "command", "argv": ["false"]}), tree / "inbox" / "a.bin"
        )
    )
    assert failed.state == "failed"
    with pytest.raises(UndoError, match="a command's effects are your own"):
        executor.undo(failed.id)


def test_moving_back_onto_a_taken_name_picks_a_free_one(tree: Path, executor: Executor) -> None:
    src = tree / "inbox" / "notes.txt"
    record = run(executor, src, kind="move", to=str(tree / "docs"))
    src.write_text("a new file the user made meanwhile")
    assert "(" in executor.plan_undo(record.id)
    undone = executor.undo(record.id)
    assert undone.plan["undo_dst"] == str(tree / "inbox" / "notes (1).txt")
    assert f"({src} is taken)" in undone.plan["undo_summary"]
    assert src.read_text() == "a new file the user made meanwhile"
    assert (tree / "inbox" / "notes (1).txt").read_text() == "keep me\n"


def test_undo_of_a_moved_file_that_is_gone_or_replaced(
    tree: Path, executor: Executor, tmp_path: Path
) -> None:
    gone = run(executor, tree / "inbox" / "a.bin", kind="move", to=str(tree / "docs"))
    Path(gone.plan["dst"]).unlink()
    with pytest.raises(UndoError, match="is gone"):
        executor.undo(gone.id)

    replaced = run(executor, tree / "inbox" / "notes.txt", kind="move", to=str(tree / "docs"))
    dst = Path(replaced.plan["dst"])
    dst.unlink()
    dst.write_text("something else entirely")
    with pytest.raises(UndoError, match="was replaced"):
        executor.undo(replaced.id)
    assert dst.read_text() == "something else entirely"
    assert executor.store.action(replaced.id).state == "done"  # type: ignore[union-attr]


def test_undo_accepts_the_same_bytes_under_a_new_inode_and_in_place_edits(
    tree: Path, executor: Executor
) -> None:
    record = run(executor, tree / "inbox" / "a.bin", kind="move", to=str(tree / "docs"))
    dst = Path(record.plan["dst"])
    data = dst.read_bytes()
    shutil.copyfile(dst, dst.with_suffix(".tmpcopy"))
    dst.unlink()
    dst.with_suffix(".tmpcopy").rename(dst)  # what an editor's atomic save does
    executor.undo(record.id)
    assert (tree / "inbox" / "a.bin").read_bytes() == data

    record = run(executor, tree / "inbox" / "notes.txt", kind="move", to=str(tree / "docs"))
    with open(record.plan["dst"], "a") as fh:
        fh.write("edited after the move\n")
    executor.undo(record.id)
    assert (tree / "inbox" / "notes.txt").read_text() == "keep me\nedited after the move\n"


def test_copy_undo_refuses_an_edited_or_missing_copy(tree: Path, executor: Executor) -> None:
    record = run(executor, tree / "inbox" / "notes.txt", kind="copy", to=str(tree / "docs"))
    copy = Path(record.plan["dst"])
    copy.write_text("the user's words now")
    with pytest.raises(UndoError, match="changed since stillroom wrote it; left in place"):
        executor.undo(record.id)
    assert copy.read_text() == "the user's words now"
    copy.unlink()
    with pytest.raises(UndoError, match="is gone"):
        executor.plan_undo(record.id)


def test_plan_undo_describes_without_acting(
    tree: Path, executor: Executor, snapshot: Snapshot
) -> None:
    record = run(executor, tree / "inbox" / "a.bin", kind="copy", to=str(tree / "docs"))
    after = snapshot(tree)
    line = executor.plan_undo()
    assert line == f"remove the copy {record.plan['dst']} (undoing #{record.id})"
    assert snapshot(tree) == after
    assert executor.store.action(record.id).state == "done"  # type: ignore[union-attr]


def test_failed_undo_is_rolled_back_to_done(
    tree: Path, executor: Executor, snapshot: Snapshot, append_only: Callable[[Path], None]
) -> None:
    """Linking back works, removing the moved name fails: the undo is rolled back."""
    record = run(executor, tree / "inbox" / "a.bin", kind="move", to=str(tree / "docs"))
    after = snapshot(tree)
    append_only(tree / "docs")
    with pytest.raises(UndoError, match="nothing was changed"):
        executor.undo(record.id)
    assert snapshot(tree) == after
    assert executor.store.action(record.id).state == "done"  # type: ignore[union-attr]


def test_undo_on_effect_sees_every_path(
    tree: Path, executor: Executor, effects: list[Path]
) -> None:
    record = run(executor, tree / "inbox" / "a.bin", kind="move", to=str(tree / "docs"))
    effects.clear()
    executor.undo(record.id)
    assert Path(record.plan["dst"]) in effects and tree / "inbox" / "a.bin" in effects
