"""What the user does after a student spoke: the truth for shadow predictions, corrections
of automated moves (new examples), and pausing a task whose live error breaks its bound."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from stillroom.binomial import breaks_bound
from stillroom.daemon.notify import Notice, Notifier
from stillroom.errors import TaskError
from stillroom.events import Event
from stillroom.inputs import destination_label, file_input_text
from stillroom.predictions import MoveOutcomes, move_outcomes, set_truth, set_truth_for_event
from stillroom.registry import Registry, Task
from stillroom.store import Store

log = logging.getLogger("stillroom.daemon")
UNDONE = "(undone)"
DAY = 86_400.0


def pause_reason(outcomes: MoveOutcomes, bound: float, settle_days: float) -> str | None:
    """Why a task's moves prove, at 95% confidence, an error rate above `bound`; None if not.

    Early, the corrections (and undos) alone must prove it: every open move counts as right,
    the count kindest to the task, so a pause holds whatever the open ones turn out to be.
    With a 5% bound one correction never pauses a task; 2 do within its first 7 moves, 3
    within 16, 4 within 28, 5 within 40. Then the moves old enough to have settled are
    tested on their own too: there every outcome is in, so a week of open moves cannot
    dilute an error rate already shown. (A fresh correction joins that test only once its
    move settles: counting it earlier, beside no fresh right moves, would inflate the rate.)
    """
    if breaks_bound(outcomes.wrong, outcomes.moves, bound):
        return (
            f"{outcomes.wrong} of its {outcomes.moves} automated moves were corrected or undone,"
            f" more than its bound of {bound:.1%} allows even if all the others are right"
        )
    if breaks_bound(outcomes.settled_wrong, outcomes.settled, bound):
        return (
            f"{outcomes.settled_wrong} of its {outcomes.settled} automated moves older than"
            f" {settle_days:g} days were corrected or undone, more than its bound of"
            f" {bound:.1%} allows"
        )
    return None


class Feedback:
    """`settle_days` (the config's feedback.settle_days): how long a user's move or undo of an
    automated move still corrects it; a move left alone that long counts as right."""

    def __init__(
        self, store: Store, notifier: Notifier, home: Path, *, settle_days: float = 7.0
    ) -> None:
        self.store, self.notifier, self.home = store, notifier, home
        self.settle_days = settle_days
        self.registry = Registry(store)

    def on_event(self, event: Event, event_id: int) -> None:
        """A user's move settles predictions about the file, and may correct an action."""
        if event.kind != "file.moved" or event.source != "filesystem":
            return
        payload = event.file()
        if payload.by_stillroom or not payload.src_path:
            return
        truth = destination_label(payload.path, self.home)
        set_truth(self.store, payload.src_path, truth)
        since = event.at - self.settle_days * DAY
        for action in self.store.actions_to(payload.src_path, since, states=["done"]):
            by = action.automation or ""
            if by.startswith("task:"):
                self._correct(by.removeprefix("task:"), action.event_id, event, event_id, truth)
                break

    def _correct(
        self, name: str, action_event: int | None, event: Event, event_id: int, truth: str
    ) -> None:
        try:
            task = self.registry.task(name)
        except TaskError:
            return
        if action_event is not None:
            set_truth_for_event(self.store, action_event, truth)
        features = event.file().features
        if features is not None:
            self.registry.add_examples(
                task, [(file_input_text(features), truth, "correction", event_id)]
            )
        if task.state not in ("paused", "declined"):
            task = self.registry.update_task(task, state="queued")  # retrain tonight
        log.info("%s: correction, the user filed %s into %s", name, event.file().path, truth)
        self.check(task)

    def note_undos(self) -> None:
        """An automated move the user undid before it settled counts as an error of its task."""
        for action in self.store.actions(limit=500, states=["undone"]):
            if not (action.automation or "").startswith("task:") or action.event_id is None:
                continue
            if action.updated - action.at <= self.settle_days * DAY:
                set_truth_for_event(self.store, action.event_id, UNDONE)

    def check(self, task: Task, now: float | None = None) -> bool:
        """Pause the task when its automated moves break the stated bound (the rule is
        `pause_reason`'s); True if it paused."""
        version = self.registry.active_version(task)
        if version is None or task.state == "paused":
            return False
        settled_before = (time.time() if now is None else now) - self.settle_days * DAY
        outcomes = move_outcomes(self.store, version.id, settled_before)
        bound = float(version.guarantee.get("bound", 1.0))
        reason = pause_reason(outcomes, bound, self.settle_days)
        if reason is None:
            return False
        self.registry.update_task(task, state="paused")
        text = (
            f"{reason}; it stopped acting and will retrain on the corrections"
            f" (`stillroom tasks resume {task.name}` turns it back on)"
        )
        self.notifier.notify(Notice("paused", task.name, text))
        return True

    def check_all(self, now: float | None = None) -> None:
        self.note_undos()
        for task in self.registry.tasks():
            self.check(task, now)
