"""Names swapped between the check and the act: a link where the file was, a folder turned
into a link, a file replaced after its plan, a stranger's file on a temp's name."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from factories import action
from PIL import Image

from stillroom.service.hooks.actions.copy import Copy
from stillroom.service.hooks.executor import Executor
from stillroom.service.hooks.naming import is_temp, temp_path
from stillroom.store import Store

Snapshot = Callable[..., dict[str, bytes]]
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not for a Downloads folder"


def swap_on(trigger: Callable[[Path], bool], swap: Callable[[], None]) -> Callable[[Path], None]:
    """An on_effect hook that runs `swap` once, the first time an effect path matches."""
    done: list[bool] = []

    def hook(path: Path) -> None:
        if not done and trigger(path):
            done.append(True)
            swap()

    return hook


@pytest.mark.parametrize("kind", ["copy", "convert_image"])
def test_a_source_swapped_for_a_link_after_the_check_is_not_read(
    kind: str, tree: Path, tmp_path: Path, store: Store, temps: Callable[..., list[str]]
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    if kind == "convert_image":
        src = tree / "inbox" / "pic.png"
        Image.new("RGB", (8, 8), (1, 2, 3)).save(src)
        Image.new("RGB", (8, 8), (250, 0, 0)).save(secret, "PNG")  # a secret image
        config = action(kind="convert_image", to=str(tree / "docs"))
    else:
        src = tree / "inbox" / "a.bin"
        config = action(kind="copy", to=str(tree / "docs"))

    def swap() -> None:
        src.unlink()
        src.symlink_to(secret)

    # The temp is touched after the source was checked and just before it is read.
    executor = Executor(store, on_effect=swap_on(lambda p: is_temp(p.name), swap))
    record = executor.run(executor.plan(config, src))
    assert record.state == "failed", record.plan
    assert "symbolic link" in (record.error or "")
    assert sorted(os.listdir(tree / "docs")) == ["a.bin"]  # nothing written there
    assert temps(tree) == [] and src.is_symlink()


def test_a_folder_swapped_for_a_link_mid_move_does_not_redirect_it(
    tree: Path, tmp_path: Path, store: Store, snapshot: Snapshot
) -> None:
    src = tree / "inbox" / "notes.txt"
    inode, data = src.stat().st_ino, src.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("a stranger's notes")
    before = snapshot(elsewhere)

    def swap() -> None:
        (tree / "inbox").rename(tree / "inbox.real")
        (tree / "inbox").symlink_to(elsewhere)

    executor = Executor(store, on_effect=swap_on(lambda p: p == src, swap))
    record = executor.run(executor.plan(action(kind="move", to=str(tree / "docs")), src))
    assert record.state == "done", record.error
    moved = Path(record.plan["dst"])
    assert moved.stat().st_ino == inode and moved.read_bytes() == data  # the file we checked
    assert moved.stat().st_nlink == 1
    assert not (tree / "inbox.real" / "notes.txt").exists()
    assert snapshot(elsewhere) == before  # what the link points at was never touched


def test_a_target_folder_swapped_for_a_link_is_refused(
    tree: Path, tmp_path: Path, executor: Executor, snapshot: Snapshot
) -> None:
    autostart = tmp_path / "autostart"
    autostart.mkdir()
    src = tree / "inbox" / "a.bin"
    plan = executor.plan(action(kind="move", to=str(tree / "sorted")), src)
    (tree / "sorted").symlink_to(autostart)  # planted between plan and run
    before = snapshot(tree, autostart)
    record = executor.run(plan)
    assert record.state == "failed"
    assert "symbolic link" in (record.error or "")
    assert list(autostart.iterdir()) == [] and snapshot(tree, autostart) == before


def test_a_command_never_runs_on_a_file_replaced_after_its_plan(
    tree: Path, tmp_path: Path, executor: Executor
) -> None:
    src = tree / "inbox" / "notes.txt"
    ran = tmp_path / "ran"
    script = "import sys; open(sys.argv[1], 'w').write('ran')"
    plan = executor.plan(action(kind="command", argv=[sys.executable, "-c", script, str(ran)]), src)
    other = tree / "inbox" / "other.txt"
    other.write_text("another file under the same name")
    other.replace(src)  # a new inode at the planned name
    record = executor.run(plan)
    assert record.state == "failed" and "replaced" in (record.error or "")
    assert not ran.exists()


def test_a_rollback_removes_a_temp_only_when_it_is_the_journaled_inode(
    tree: Path, executor: Executor, store: Store
) -> None:
    """A crash left a copy planned; the name of its temp now holds someone else's file."""
    src, dst = tree / "inbox" / "a.bin", tree / "docs" / "copied.bin"
    prepared = Copy().prepare({"src": str(src), "dst": str(dst), "want": "copied.bin"})
    record = store.journal("copy", prepared)
    tmp = temp_path(dst.parent, record.id)
    gone = tree / "docs" / "written-then-lost"
    gone.write_bytes(b"what the action wrote")
    ident = [gone.stat().st_dev, gone.stat().st_ino]
    theirs = b"not stillroom's, whatever its name"
    tmp.write_bytes(theirs)  # another inode than the one journaled
    store.update_action(record.id, plan={**prepared, "tmp": str(tmp), "tmp_id": ident})
    [settled] = executor.reconcile()
    assert settled.state == "failed"
    assert tmp.read_bytes() == theirs
