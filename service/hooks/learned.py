"""Learned deciders: a file task's student answering on new downloads.

In shadow, it predicts silently and the user's own move later says whether it was right; once
accepted (active), it moves the files it is sure of and leaves the rest alone. An answer is
untrusted input: it moves a file only when it names a safe folder (see targets.py); a
refusal is logged and counted on the task (`refused_targets` in its spec, on its card).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from stillroom.config import MoveAction
from stillroom.errors import ModelError
from stillroom.events import Event
from stillroom.inputs import file_input_text
from stillroom.predictions import record
from stillroom.registry import ModelVersion, Registry, Task
from stillroom.service.hooks.deciders import Decider, Decision
from stillroom.service.hooks.targets import RefusedTarget, move_target
from stillroom.service.students import StudentClient
from stillroom.store import Store

log = logging.getLogger("stillroom.service")


class TaskDecider:
    """Asks a task's student about each new file in the task's folder."""

    def __init__(
        self,
        task: Task,
        version: ModelVersion,
        client: StudentClient,
        store: Store,
        home: Path,
        destinations: Sequence[Path],
    ) -> None:
        self.task, self.version, self.client, self.store = task, version, client, store
        self.home, self.destinations = home, list(destinations)
        self.labels = frozenset(str(label) for label in version.metrics.get("labels") or {})
        self.mode = "active" if version.status == "active" else "shadow"
        self.name = f"task:{task.name}"
        folder = task.spec.get("folder")
        # Events carry roots resolved when the config loads; a task made before that (or
        # with the link's name) still matches its folder.
        self.folder = Path(os.path.realpath(folder)) if folder else None

    def decide(self, event: Event) -> Decision | None:
        if event.kind != "file.created" or event.source != "filesystem":
            return None
        payload = event.file()
        if payload.by_stillroom or payload.features is None or payload.features.symlink:
            return None
        if self.folder is not None and Path(payload.root) != self.folder:
            return None
        text = file_input_text(payload.features)
        try:
            (answer,) = self.client.predict(self.version.id, [text])
        except ModelError as exc:
            log.warning("%s: %s", self.name, exc)
            return None
        record(
            self.store,
            self.version.id,
            self.mode,
            text,
            answer.answer,
            answer.confidence,
            answer.abstained,
            event.id,
        )
        if self.mode == "shadow" or answer.abstained or answer.answer is None:
            return None
        try:
            target = move_target(
                answer.answer,
                kind=self.task.kind,
                labels=self.labels,
                home=self.home,
                roots=self.destinations,
            )
        except RefusedTarget as exc:
            log.warning(
                "%s: %s stays: refused the answer %r (%s)",
                self.name,
                payload.path,
                answer.answer,
                exc,
            )
            Registry(self.store).count_in_spec(self.task, "refused_targets")
            return None
        return Decision(MoveAction(kind="move", to=target), answer.confidence, self.name)


def task_deciders(
    store: Store, client: StudentClient, home: Path, destinations: Sequence[Path] = ()
) -> tuple[list[Decider], list[Decider]]:
    """(shadow, active) deciders of the file tasks that are not paused or declined.

    Shadows never decide; the dispatcher runs them before anything else so each new file gets
    their silent prediction."""
    registry = Registry(store)
    shadows: list[Decider] = []
    actives: list[Decider] = []
    for task in registry.tasks():
        if task.input_kind != "file" or task.state in ("paused", "declined"):
            continue
        for version in registry.versions(task):
            if version.status == "shadow":
                shadows.append(TaskDecider(task, version, client, store, home, destinations))
            elif version.status == "active":
                actives.append(TaskDecider(task, version, client, store, home, destinations))
    return shadows, actives
