"""The event bus: monitors put events on one queue; one dispatcher stores them and acts."""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from stillroom.daemon.echo import EchoFilter
from stillroom.errors import StillroomError
from stillroom.events import Event
from stillroom.service.hooks.deciders import Decider, decide
from stillroom.store import Store

if TYPE_CHECKING:
    from stillroom.daemon.feedback import Feedback
    from stillroom.service.hooks.executor import Executor

log = logging.getLogger("stillroom.daemon")
BATCH = 500
# Events on paths journaled this recently are effects of an action, whoever ran it.
JOURNAL_ECHO_SECONDS = 120.0
# A file the user put back with `stillroom undo` is not acted on again for a day.
UNDO_MEMORY_SECONDS = 86400.0
# Put on the queue by stop(): wakes the dispatcher, which blocks on the queue without timeout.
_WAKE: Event = cast(Event, object())


class Dispatcher:
    """Consumes the queue on one thread: store each batch, then run the automations."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        echo: EchoFilter,
        deciders: list[Decider],
        *,
        dry_run: bool = False,
        feedback: Feedback | None = None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.echo = echo
        self.deciders = deciders
        self.dry_run = dry_run
        self.feedback = feedback
        self.queue: queue.Queue[Event] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stillroom-dispatcher", daemon=True)
        self.stored = 0

    def put(self, event: Event) -> None:
        """The monitors' emit callback; never blocks."""
        self.queue.put(event)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        self._stop.set()
        self.queue.put(_WAKE)  # the thread sleeps on the queue until something comes
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not (self._stop.is_set() and self.queue.empty()):
            batch = self._next_batch()
            if batch:
                self.handle(batch)

    def _next_batch(self) -> list[Event]:
        batch = [self.queue.get()]
        while len(batch) < BATCH:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return [e for e in batch if e is not _WAKE]

    def handle(self, batch: list[Event]) -> None:
        """Store a batch of events, then offer each to the deciders."""
        journaled = self.store.action_moves(since=time.time() - JOURNAL_ECHO_SECONDS)
        events = [self.echo.mark(e, journaled) for e in batch]
        try:
            ids = self.store.add_events(events)
        except Exception:  # disk full or a locked database: say so loudly, keep the daemon up
            log.exception("could not store %d events", len(events))
            return
        self.stored += len(ids)
        for stored, event_id in zip(events, ids, strict=True):
            event = stored.model_copy(update={"id": event_id})
            try:
                if self.feedback is not None:
                    self.feedback.on_event(event, event_id)
                self._act(event, event_id)
            except StillroomError as exc:
                log.warning("event %d (%s): %s", event_id, event.kind, exc)
            except Exception:  # one bad event must not stop the next: log it with its traceback
                log.exception("event %d (%s) failed; carrying on", event_id, event.kind)

    def _act(self, event: Event, event_id: int) -> None:
        if event.source != "filesystem" or event.file().by_stillroom:
            return
        decision = decide(self.deciders, event)
        if decision is None:
            return
        path = event.file().path
        undone = self.store.action_moves(time.time() - UNDO_MEMORY_SECONDS, ["undone"])
        if (None, path) in undone:
            log.info("%s left alone: an action on it was undone", path)
            return
        if self.store.paused:
            log.info("paused: %s would act on %s", decision.decider, event.file().path)
            return
        plan = self.executor.plan(decision.action, Path(event.file().path), event)
        if self.dry_run:
            log.info("dry run: %s: %s", decision.decider, plan.describe())
            return
        record = self.executor.run(
            plan, automation=decision.decider, event_id=event_id, confidence=decision.confidence
        )
        if record.state == "done":
            log.info("action %d (%s): %s", record.id, decision.decider, plan.describe())
        else:
            log.warning(
                "action %d (%s) %s: %s", record.id, decision.decider, record.state, record.error
            )
