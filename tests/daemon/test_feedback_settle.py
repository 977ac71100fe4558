"""Live outcomes settle: a user's move corrects any automated move of the settle window, a
move counts as right only once it settled, and early corrections pause a bad task but not a
good one (real store, real files moved by the real executor, real file.moved events)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stillroom.config import Config, MoveAction
from stillroom.daemon.bus import Dispatcher
from stillroom.daemon.echo import EchoFilter
from stillroom.daemon.feedback import DAY, Feedback, pause_reason
from stillroom.daemon.notify import Notice
from stillroom.errors import ConfigError
from stillroom.events import Event, FilePayload
from stillroom.inputs import file_input_text
from stillroom.monitors.features import file_features
from stillroom.predictions import MoveOutcomes, move_outcomes, record
from stillroom.registry import ModelVersion, Registry, Task
from stillroom.service.hooks.executor import Executor
from stillroom.store import Store

FILED = "Documents/Invoices"  # where the student files everything
RIGHT = "Documents/Receipts"  # where the user says a file belongs


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.notices: list[Notice] = []

    def notify(self, notice: Notice) -> None:
        self.notices.append(notice)

    def close(self) -> None:
        """Nothing to stop."""


@dataclass
class World:
    """A home with Downloads, an active task filing into FILED, and the daemon's parts."""

    store: Store
    home: Path
    task: Task
    version: ModelVersion
    notifier: Recorder
    feedback: Feedback
    executor: Executor
    bus: Dispatcher
    moved: list[tuple[int, Path]] = field(default_factory=list)  # (event id, where it went)

    @property
    def downloads(self) -> Path:
        return self.home / "Downloads"

    def arrive(self, name: str) -> tuple[int, Path]:
        """A download the task's student answers and the executor files, as the daemon does."""
        path = self.downloads / name
        path.write_text(f"INVOICE {name}\nAmount due: 12 EUR\n")
        features = file_features(path)
        assert features is not None
        payload = FilePayload(path=str(path), root=str(self.downloads), features=features)
        event = Event(source="filesystem", kind="file.created", payload=payload)
        event_id = self.store.add_event(event)
        text = file_input_text(features)
        record(self.store, self.version.id, "active", text, FILED, 0.97, False, event_id)
        action = MoveAction(kind="move", to=self.home / FILED)
        plan = self.executor.plan(action, path, event.model_copy(update={"id": event_id}))
        done = self.executor.run(
            plan, automation=f"task:{self.task.name}", event_id=event_id, confidence=0.97
        )
        assert done.state == "done", done.error
        filed = Path(done.plan["dst"])
        self.moved.append((event_id, filed))
        return event_id, filed

    def user_moves(self, filed: Path, at: float | None = None) -> Path:
        """The user moves a filed file into RIGHT; the dispatcher hands the event to feedback."""
        target = self.home / RIGHT / filed.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(filed, target)
        payload = FilePayload(
            path=str(target),
            root=str(self.home / "Documents"),
            features=file_features(target),
            src_path=str(filed),
        )
        event = Event(source="filesystem", kind="file.moved", payload=payload, at=at or time.time())
        assert self.bus.handle([event]) == 1
        return target

    def truth(self, event_id: int) -> str | None:
        rows = self.store.query(
            "SELECT truth FROM predictions WHERE event_id = ? AND mode = 'active'", [event_id]
        )
        truth: str | None = rows[0][0]
        return truth

    def corrections(self) -> int:
        return sum(e.source == "correction" for e in Registry(self.store).examples(self.task))

    def outcomes(self, now: float) -> MoveOutcomes:
        return move_outcomes(self.store, self.version.id, now - self.feedback.settle_days * DAY)

    def state(self) -> str:
        return Registry(self.store).task(self.task.name).state

    def backdate(self, event_id: int, days: float) -> None:
        """Recorded history: this move (prediction and action) happened `days` earlier."""
        with self.store.transaction() as db:
            for table in ("predictions", "actions"):
                db.execute(
                    f"UPDATE {table} SET at = at - ? WHERE event_id = ?", (days * DAY, event_id)
                )


@pytest.fixture
def world(tmp_path: Path, store: Store) -> World:
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    registry = Registry(store)
    task = registry.create_task(
        "sort",
        "classify",
        origin="detector",
        spec={"input_kind": "file", "folder": str(home / "Downloads")},
    )
    version = registry.add_version(
        task,
        1,
        student="s",
        path="/m",
        metrics={"labels": {FILED: 10, RIGHT: 10}},
        guarantee={"bound": 0.05, "coverage": 0.9},
        status="active",
    )
    task = registry.update_task(task, state="active")
    notifier = Recorder()
    feedback = Feedback(store, notifier, home, settle_days=7)
    echo = EchoFilter()
    executor = Executor(store, on_effect=echo.expect)
    bus = Dispatcher(store, executor, echo, [], feedback=feedback)
    return World(store, home, task, version, notifier, feedback, executor, bus)


def test_a_correction_of_a_move_older_than_200_later_actions_is_matched(world: World) -> None:
    first, filed = world.arrive("old.txt")
    for i in range(250):
        world.arrive(f"later-{i}.txt")
    recent = world.store.actions(limit=200, states=["done"])
    assert str(filed) not in {a.plan["dst"] for a in recent}
    world.user_moves(filed)
    assert world.truth(first) == RIGHT
    assert world.corrections() == 1
    assert world.state() == "queued"  # it retrains on the correction tonight
    assert not world.notifier.notices  # one slip in 251 moves is no reason to pause


def test_a_move_counts_as_right_only_once_it_settled(world: World) -> None:
    event_id, _ = world.arrive("a.txt")
    now = time.time()
    for later in (now, now + 6.9 * DAY):
        early = world.outcomes(later)
        assert (early.moves, early.right, early.wrong, early.open) == (1, 0, 0, 1)
        assert early.judged == 0 and early.settled == 0
    settled = world.outcomes(now + 7.01 * DAY)
    assert (settled.moves, settled.right, settled.wrong, settled.open) == (1, 1, 0, 0)
    assert settled.judged == settled.settled == 1
    assert world.truth(event_id) is None  # nobody said anything: the window did


def test_a_correction_within_the_window_counts_and_one_after_it_does_not(world: World) -> None:
    kept, filed_kept = world.arrive("kept.txt")
    late, filed_late = world.arrive("late.txt")
    world.backdate(kept, days=6)
    world.backdate(late, days=8)
    world.user_moves(filed_kept)  # six days on: still a correction
    world.user_moves(filed_late)  # eight days on: the user tidying up, not a correction
    assert world.truth(kept) == RIGHT and world.truth(late) is None
    assert world.corrections() == 1
    outcomes = world.outcomes(time.time())
    assert (outcomes.wrong, outcomes.right, outcomes.open, outcomes.settled) == (1, 1, 0, 1)


def test_an_undo_before_the_move_settled_is_an_error_and_after_it_is_not(world: World) -> None:
    soon, _ = world.arrive("soon.txt")
    world.executor.undo()
    late, _ = world.arrive("late.txt")
    world.backdate(late, days=8)  # filed eight days ago, undone now
    world.executor.undo()
    world.feedback.check_all()
    assert world.truth(soon) == "(undone)"
    assert world.truth(late) is None


def test_three_early_corrections_pause_a_bad_task_at_once(world: World) -> None:
    for i in range(10):
        world.arrive(f"f{i}.txt")
    for n, (_, filed) in enumerate(world.moved[:3], start=1):
        world.user_moves(filed)
        # 1 or 2 of 10 could still be a 5% task's luck; 3 of 10 cannot, whatever the 7 open
        # moves turn out to be.
        assert world.state() == ("paused" if n == 3 else "queued")
    (notice,) = world.notifier.notices
    assert notice.kind == "paused" and notice.task == "sort"
    assert notice.text.startswith(
        "3 of its 10 automated moves were corrected or undone, more than its bound of 5.0%"
        " allows even if all the others are right; it stopped acting"
    )
    assert world.outcomes(time.time()).right == 0  # nothing settled: the open ones decided nothing


def test_one_correction_does_not_pause_a_good_task(world: World) -> None:
    for i in range(10):
        world.arrive(f"f{i}.txt")
    world.user_moves(world.moved[0][1])
    now = time.time()
    for later in (now, now + 8 * DAY):  # the other nine settle right: still no pause
        world.feedback.check_all(now=later)
        assert world.state() == "queued"
    assert not world.notifier.notices
    assert (world.outcomes(now + 8 * DAY).wrong, world.outcomes(now + 8 * DAY).right) == (1, 9)


def test_settled_moves_pause_a_task_that_fresh_moves_would_hide(world: World) -> None:
    for i in range(10):
        world.arrive(f"old-{i}.txt")
    for event_id, _ in world.moved:
        world.backdate(event_id, days=6)
    for i in range(100):
        world.arrive(f"new-{i}.txt")
    for _, filed in world.moved[:3]:
        world.user_moves(filed)
    assert world.state() == "queued"  # 3 of 110 proves nothing while 100 are open
    now = time.time()
    assert not world.feedback.check(Registry(world.store).task("sort"), now=now)
    # Two days on, the first ten have settled: 3 of them wrong breaks a 5% bound.
    assert world.feedback.check(Registry(world.store).task("sort"), now=now + 2 * DAY)
    (notice,) = world.notifier.notices
    assert notice.text.startswith(
        "3 of its 10 automated moves older than 7 days were corrected or undone"
    )


@pytest.mark.parametrize(
    ("wrong", "moves", "bound", "pauses"),
    [
        (1, 1, 0.05, False),
        (2, 7, 0.05, True),
        (2, 8, 0.05, False),
        (3, 16, 0.05, True),
        (3, 17, 0.05, False),
        (4, 28, 0.05, True),
        (1, 5, 0.01, True),
        (1, 6, 0.01, False),
    ],
)
def test_the_early_rule_as_the_readme_states_it(
    wrong: int, moves: int, bound: float, pauses: bool
) -> None:
    early = MoveOutcomes(moves=moves, wrong=wrong, right=0, settled=0, settled_wrong=0)
    assert (pause_reason(early, bound, 7.0) is not None) == pauses


def test_settle_days_is_in_the_config_and_must_be_positive(tmp_path: Path) -> None:
    assert Config().feedback.settle_days == 7.0
    assert Config.from_data({"feedback": {"settle_days": 2.5}}).feedback.settle_days == 2.5
    path = tmp_path / "config.yaml"
    path.write_text("feedback: {settle_days: -1}\n")
    with pytest.raises(ConfigError) as caught:
        Config.from_path(path)
    assert str(caught.value) == (
        f"{path}: feedback.settle_days: Input should be greater than 0 (got -1)"
    )
