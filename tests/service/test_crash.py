"""SIGKILL at every checkpoint of every action (and of every undo), then reconcile.

A child process runs the action with STILLROOM_CRASH_AT naming one checkpoint and dies
there by SIGKILL. The parent reconciles and checks that no file was lost, duplicated or
left as a temp, that the journal reached done or failed as the commit point says, and that
undo restores the original tree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import TypeAdapter

from stillroom.config import ActionConfig
from stillroom.service.hooks.actions import REGISTRY
from stillroom.service.hooks.actions.base import CRASH_ENV, traced_checkpoints
from stillroom.service.hooks.actions.move import Move
from stillroom.service.hooks.executor import Executor
from stillroom.store import ActionRecord, Store

ACTION: TypeAdapter[Any] = TypeAdapter(ActionConfig)
Snapshot = Callable[..., dict[str, bytes]]

CHILD = """
import json, sys
from pathlib import Path
from pydantic import TypeAdapter
from stillroom.config import ActionConfig
from stillroom.paths import Paths
from stillroom.service.hooks.executor import Executor
from stillroom.store import Store

spec = json.loads(sys.argv[1])
executor = Executor(Store(Paths.resolve().database))
if spec["op"] == "run":
    config = TypeAdapter(ActionConfig).validate_python(spec["action"])
    plan = executor.plan(config, Path(spec["path"]))
    for taken in spec.get("race", []):  # names taken between plan and run
        Path(taken).write_text("raced in")
    executor.run(plan)
else:
    executor.undo(spec["id"])
"""


@dataclass(frozen=True)
class Case:
    kind: str
    exdev: bool = False

    def steps(self, undo: bool) -> tuple[str, ...]:
        cls = REGISTRY[self.kind]
        if self.exdev:
            return Move.exdev_undo_checkpoints if undo else Move.exdev_checkpoints
        return cls.undo_checkpoints if undo else cls.checkpoints


CASES = [
    Case("move"),
    Case("rename"),
    Case("copy"),
    Case("convert_image"),
    Case("command"),
    Case("move", exdev=True),
]
# From these steps on, the action (or undo) is committed: reconcile finishes it.
COMMITS = {"linked", "tmp_linked", "undo.linked", "undo.tmp_linked", "undo.removed"}


def committed(steps: tuple[str, ...], step: str) -> bool:
    first = next((i for i, s in enumerate(steps) if s in COMMITS), len(steps))
    return steps.index(step) >= first


def params(case: Case, undo: bool) -> list[Any]:
    return [
        pytest.param(case, step, id=f"{case.kind}{'-exdev' if case.exdev else ''}-{step}")
        for step in case.steps(undo)
        if case.kind != "command" or not undo
    ]


RUN_PARAMS = [p for case in CASES for p in params(case, undo=False)]
UNDO_PARAMS = [p for case in CASES for p in params(case, undo=True)]


class Scene:
    """One action on a fresh tree, and the snapshots to judge a crash by."""

    def __init__(self, case: Case, tree: Path, other: Path | None, tmp_path: Path) -> None:
        self.case = case
        self.roots = [tree] + ([other] if other else [])
        self.outside = tmp_path / "command-out"
        self.outside.mkdir()
        self.src = tree / "inbox" / "a.bin"
        action: dict[str, Any] = {"kind": case.kind}
        if case.kind in ("move", "copy"):
            action["to"] = str((other / "new") if other else tree / "docs")
        elif case.kind == "rename":
            action["name"] = "{stem}-renamed{ext}"
        elif case.kind == "convert_image":
            self.src = tree / "inbox" / "pic.png"
            Image.new("RGBA", (24, 24), (10, 200, 30, 120)).save(self.src)
        else:
            script = "import sys; open(sys.argv[2], 'a').write(sys.argv[1])"
            action["argv"] = [sys.executable, "-c", script, "{path}", str(self.outside / "log")]
        self.action = action

    def crash(self, step: str, spec: dict[str, Any]) -> None:
        env = {**os.environ, CRASH_ENV: step}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]

    def crash_run(self, step: str) -> None:
        self.crash(step, {"op": "run", "action": self.action, "path": str(self.src)})

    def run(self, executor: Executor) -> ActionRecord:
        config = ACTION.validate_python(self.action)
        return executor.run(executor.plan(config, self.src))

    def expected_done(self, before: dict[str, bytes], record: ActionRecord) -> dict[str, bytes]:
        after = dict(before)
        if self.case.kind in ("move", "rename"):
            after[record.plan["dst"]] = after.pop(str(self.src))
        elif self.case.kind == "copy":
            after[record.plan["dst"]] = after[str(self.src)]
        elif self.case.kind == "convert_image":
            after[record.plan["dst"]] = Path(record.plan["dst"]).read_bytes()
        return after


@pytest.fixture
def scene_for(
    tree: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[Case], Scene]:
    def make(case: Case) -> Scene:
        other = request.getfixturevalue("other_fs") if case.exdev else None
        return Scene(case, tree, other, tmp_path)

    return make


def settle_one(executor: Executor, store: Store) -> ActionRecord:
    assert len(store.unfinished_actions()) == 1
    settled = executor.reconcile()
    assert len(settled) == 1
    assert executor.reconcile() == []  # idempotent
    return settled[0]


@pytest.mark.parametrize(("case", "step"), RUN_PARAMS)
def test_crash_during_an_action(
    case: Case,
    step: str,
    scene_for: Callable[[Case], Scene],
    executor: Executor,
    store: Store,
    snapshot: Snapshot,
    temps: Callable[..., list[str]],
) -> None:
    scene = scene_for(case)
    before = snapshot(*scene.roots)
    scene.crash_run(f"{case.kind}.{step}")
    record = settle_one(executor, store)
    assert temps(*scene.roots) == []
    after = snapshot(*scene.roots)
    if case.kind == "command":
        assert record.state == "failed" and "not run again" in (record.error or "")
        assert after == before
        return
    if committed(case.steps(undo=False), step):
        assert record.state == "done" and record.plan["recovered"] == "completed"
        assert after == scene.expected_done(before, record)
        executor.undo(record.id)
        assert snapshot(*scene.roots) == before
    else:
        assert record.state == "failed" and record.error == "rolled back after an interruption"
        assert after == before


@pytest.mark.parametrize(("case", "step"), UNDO_PARAMS)
def test_crash_during_an_undo(
    case: Case,
    step: str,
    scene_for: Callable[[Case], Scene],
    executor: Executor,
    store: Store,
    snapshot: Snapshot,
    temps: Callable[..., list[str]],
) -> None:
    scene = scene_for(case)
    before = snapshot(*scene.roots)
    record = scene.run(executor)
    assert record.state == "done", record.error
    middle = snapshot(*scene.roots)
    scene.crash(f"{case.kind}.{step}", {"op": "undo", "id": record.id})
    settled = settle_one(executor, store)
    assert temps(*scene.roots) == []
    if committed(case.steps(undo=True), step):
        assert settled.state == "undone" and settled.plan["recovered"] == "undo completed"
        assert snapshot(*scene.roots) == before
    else:
        assert settled.state == "done" and settled.plan["recovered"] == "undo rolled back"
        assert snapshot(*scene.roots) == middle
        executor.undo(record.id)
        assert snapshot(*scene.roots) == before


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.kind + ("-exdev" if c.exdev else ""))
def test_declared_checkpoints_are_the_ones_passed(
    case: Case, scene_for: Callable[[Case], Scene], executor: Executor
) -> None:
    """The crash tests above cover every checkpoint the code actually has."""
    scene = scene_for(case)
    with traced_checkpoints() as passed:
        record = scene.run(executor)
    assert record.state == "done", record.error
    assert passed == [f"{case.kind}.{s}" for s in case.steps(undo=False)]
    if case.kind == "command":
        return
    with traced_checkpoints() as passed:
        executor.undo(record.id)
    assert passed == [f"{case.kind}.{s}" for s in case.steps(undo=True)]


def test_reconcile_finishes_a_half_moved_file_left_by_hand(
    tree: Path, executor: Executor, store: Store
) -> None:
    """The state after `link` but before `unlink`, built by hand: reconcile drops the source."""
    src = tree / "inbox" / "a.bin"
    plan = {"src": str(src), "dst": str(tree / "docs" / "moved.bin"), "want": "moved.bin"}
    record = store.journal("move", Move().prepare(plan))
    os.link(src, tree / "docs" / "moved.bin")
    [settled] = executor.reconcile()
    assert settled.id == record.id and settled.state == "done"
    assert not src.exists() and (tree / "docs" / "moved.bin").exists()


@pytest.mark.parametrize("kind", ["move", "copy"])
def test_crash_after_a_run_time_collision(
    kind: str,
    tree: Path,
    tmp_path: Path,
    executor: Executor,
    store: Store,
    snapshot: Snapshot,
) -> None:
    """The planned name was taken in a race: the new name is journaled before its link."""
    scene = Scene(Case(kind), tree, None, tmp_path)
    taken = [str(tree / "docs" / "a (1).bin"), str(tree / "docs" / "a (2).bin")]
    before = snapshot(tree)
    spec = {"op": "run", "action": scene.action, "path": str(scene.src), "race": taken}
    scene.crash(f"{kind}.linked", spec)
    record = settle_one(executor, store)
    assert record.state == "done" and record.plan["dst"] == str(tree / "docs" / "a (3).bin")
    raced = {t: b"raced in" for t in taken}
    assert snapshot(tree) == scene.expected_done({**before, **raced}, record)
    executor.undo(record.id)
    assert snapshot(tree) == {**before, **raced}
