"""What the user does after a student spoke: the truth for shadow predictions, corrections
of automated moves (new examples), and pausing a task whose live error breaks its bound."""

from __future__ import annotations

import logging
from pathlib import Path

from stillroom.binomial import breaks_bound
from stillroom.daemon.notify import Notice, Notifier
from stillroom.errors import TaskError
from stillroom.events import Event
from stillroom.inputs import destination_label, file_input_text
from stillroom.predictions import live_stats, set_truth, set_truth_for_event
from stillroom.registry import Registry, Task
from stillroom.store import Store

log = logging.getLogger("stillroom.daemon")
UNDONE = "(undone)"


class Feedback:
    def __init__(self, store: Store, notifier: Notifier, home: Path) -> None:
        self.store, self.notifier, self.home = store, notifier, home
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
        for action in self.store.actions(limit=200, states=["done"]):
            by = action.automation or ""
            if action.plan.get("dst") == payload.src_path and by.startswith("task:"):
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
        """An automated move the user undid counts as an error of its task."""
        for action in self.store.actions(limit=500, states=["undone"]):
            if (action.automation or "").startswith("task:") and action.event_id is not None:
                set_truth_for_event(self.store, action.event_id, UNDONE)

    def check(self, task: Task) -> bool:
        """Pause the task when its live error breaks the stated bound; True if it paused."""
        version = self.registry.active_version(task)
        if version is None or task.state == "paused":
            return False
        stats = live_stats(self.store, version.id, "active", assume_right=True)
        bound = float(version.guarantee.get("bound", 1.0))
        if not breaks_bound(stats.errors, stats.judged, bound):
            return False
        self.registry.update_task(task, state="paused")
        text = (
            f"{stats.errors} of its last {stats.judged} automated moves were corrected, more"
            f" than its bound of {bound:.1%} allows; it stopped acting and will retrain on the"
            f" corrections (`stillroom tasks resume {task.name}` turns it back on)"
        )
        self.notifier.notify(Notice("paused", task.name, text))
        return True

    def check_all(self) -> None:
        self.note_undos()
        for task in self.registry.tasks():
            self.check(task)
