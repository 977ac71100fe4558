"""The event bus: monitors put events on one queue; one dispatcher stores them and acts.

A store that fails (a locked database, a full disk) never costs an event: the batch is
retried with backoff while new events wait in memory, then in a spool file, and all of them
are stored in order once the store works again.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, cast

from stillroom.daemon.echo import EchoFilter
from stillroom.daemon.health import StoreHealth
from stillroom.daemon.spool import Spool
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
# A stuck store is tried again after 0.1 s, doubling up to 5 s between tries.
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0
# Events held in memory while the store is stuck; beyond this they go to the spool file.
MEMORY_BOUND = 100_000
# How often the state file is rewritten while events wait.
HEALTH_SECONDS = 1.0
# Put on the queue by stop(): wakes the dispatcher, which blocks on the queue without timeout.
_WAKE: Event = cast(Event, object())
# Errors no retry can fix: the statement or the data is wrong, not the database's state.
_PERMANENT = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
)


def transient(exc: BaseException) -> bool:
    """Whether a store failure may pass by itself (locked, busy, disk full, I/O error)."""
    if isinstance(exc, sqlite3.Error):
        return not isinstance(exc, _PERMANENT)
    return isinstance(exc, StillroomError)


class Dispatcher:
    """Consumes the queue on one thread: store each batch, then run the automations.

    Order is kept across a stuck store: the spool's events come first, then those waiting
    in memory, then the queue. With no spool, waiting events stay in memory.
    """

    def __init__(
        self,
        store: Store,
        executor: Executor,
        echo: EchoFilter,
        deciders: list[Decider],
        *,
        dry_run: bool = False,
        feedback: Feedback | None = None,
        spool: Spool | None = None,
        health_file: Path | None = None,
        memory_bound: int = MEMORY_BOUND,
    ) -> None:
        self.store = store
        self.executor = executor
        self.echo = echo
        self.deciders = deciders
        self.dry_run = dry_run
        self.feedback = feedback
        self.spool = spool
        self.health_file = health_file
        self.memory_bound = memory_bound
        self.queue: queue.Queue[Event] = queue.Queue()
        self._pending: deque[Event] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stillroom-dispatcher", daemon=True)
        self._delay = RETRY_FIRST_SECONDS
        self._stuck_since: float | None = None
        self._stuck_error = ""
        self._health_at = -HEALTH_SECONDS
        self._health_shown: tuple[bool, bool] | None = None
        self.stored = 0

    def put(self, event: Event) -> None:
        """The monitors' emit callback; never blocks."""
        self.queue.put(event)

    def start(self) -> None:
        if self.spool is not None and len(self.spool):
            log.info("%d events wait in %s from an earlier run", len(self.spool), self.spool.path)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop; if the store is stuck, spool what waits."""
        self._stop.set()
        self.queue.put(_WAKE)  # the thread sleeps on the queue until something comes
        if self._thread.is_alive():
            self._thread.join()

    @property
    def waiting(self) -> int:
        """Events not stored yet: queued, in memory and in the spool."""
        return (
            self.queue.qsize()
            + len(self._pending)
            + (len(self.spool) if self.spool is not None else 0)
        )

    def health(self) -> StoreHealth:
        return StoreHealth(
            pid=os.getpid(),
            stuck_since=self._stuck_since,
            error=self._stuck_error if self._stuck_since is not None else None,
            waiting=self.waiting,
            spooled=len(self.spool) if self.spool is not None else 0,
        )

    # the dispatcher thread

    def _run(self) -> None:
        self._show_health(force=True)
        while True:
            try:
                if not self._step():
                    break
            except Exception:  # the thread outlives anything: log it, go on with the next
                log.exception("dispatcher: unexpected failure; carrying on")
                if self._stop.wait(1.0):  # stopping: keep what waits for the next start
                    self._spill_all()
                    break
        self._show_health(force=True)

    def _step(self) -> bool:
        """Store and act on one batch; False once stopping with nothing left to do."""
        offsets: list[int] = []
        if self.spool is not None and len(self.spool):
            spooled = self.spool.peek(BATCH)
            batch, offsets = [e for e, _ in spooled], [o for _, o in spooled]
            if not batch:  # only unreadable lines were left
                self.spool.consume(0, None)
                return True
        elif self._pending:
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
        elif self._stop.is_set() and self.queue.empty():
            return False
        else:
            batch = self._next_batch()
            if not batch:
                return True
        stored, done = self._store(batch)
        if offsets and self.spool is not None and done:
            self.spool.consume(done, offsets[done - 1])
        elif not offsets and done < len(batch):
            self._pending.extendleft(reversed(batch[done:]))
        if done == len(batch) and self._stuck_since is not None:
            self._recovered()
        self._act_all(stored)
        if done < len(batch):
            if self._stop.is_set():
                self._spill_all()
                return False
            self._wait_and_gather()
        self._show_health()
        return True

    def _next_batch(self) -> list[Event]:
        batch = [self.queue.get()]
        while len(batch) < BATCH:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return [e for e in batch if e is not _WAKE]

    def handle(self, batch: list[Event]) -> int:
        """Store a batch of events (one try), then offer each stored one to the deciders;
        return how many of the batch are done (the rest could not be stored yet)."""
        stored, done = self._store(batch)
        self._act_all(stored)
        return done

    def _store(self, batch: list[Event]) -> tuple[list[Event], int]:
        """Store what the store takes: (stored events with their ids, how many of `batch`
        are done). An event no retry can store is logged and skipped; a transient failure
        stops there and marks the store stuck."""
        try:
            return self._add(batch), len(batch)
        except Exception as exc:
            if transient(exc):
                self._stuck(exc)
                return [], 0
            if len(batch) == 1:
                log.exception("an event (%s) cannot be stored; skipping it", batch[0].kind)
                return [], 1
        stored: list[Event] = []  # one of them is bad: store them one by one to find it
        for done, event in enumerate(batch):
            try:
                stored += self._add([event])
            except Exception as exc:
                if transient(exc):
                    self._stuck(exc)
                    return stored, done
                log.exception("an event (%s) cannot be stored; skipping it", event.kind)
        return stored, len(batch)

    def _add(self, batch: list[Event]) -> list[Event]:
        # Late events (replayed from the spool) look as far back as they are old.
        since = min(e.at for e in batch) - JOURNAL_ECHO_SECONDS
        journaled = self.store.action_moves(since=min(since, time.time() - JOURNAL_ECHO_SECONDS))
        events = [self.echo.mark(e, journaled) for e in batch]
        ids = self.store.add_events(events)
        self.stored += len(ids)
        return [e.model_copy(update={"id": i}) for e, i in zip(events, ids, strict=True)]

    def _act_all(self, events: list[Event]) -> None:
        for event in events:
            event_id = event.id or 0
            try:
                if self.feedback is not None:
                    self.feedback.on_event(event, event_id)
                self._act(event, event_id)
            except StillroomError as exc:
                log.warning("event %d (%s): %s", event_id, event.kind, exc)
            except Exception:  # one bad event must not stop the next: log it with its traceback
                log.exception("event %d (%s) failed; carrying on", event_id, event.kind)

    # a stuck store

    def _stuck(self, exc: BaseException) -> None:
        self._stuck_error = str(exc) or type(exc).__name__
        if self._stuck_since is None:
            self._stuck_since = time.time()
            self._delay = RETRY_FIRST_SECONDS
            log.warning(
                "cannot store events (%s); they wait (in memory up to %d, then in %s) and the"
                " store is retried",
                self._stuck_error,
                self.memory_bound,
                self.spool.path if self.spool is not None else "memory only: no spool",
                exc_info=exc,
            )
        self._show_health(force=True)

    def _recovered(self) -> None:
        assert self._stuck_since is not None
        log.info(
            "the store works again after %.0f s; %d events still waiting are stored now",
            time.time() - self._stuck_since,
            self.waiting,
        )
        self._stuck_since = None
        self._show_health(force=True)

    def _wait_and_gather(self) -> None:
        """Sleep until the next try, taking in new events meanwhile (memory, then spool)."""
        deadline = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, RETRY_MAX_SECONDS)
        while not self._stop.is_set():
            self._gather()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                event = self.queue.get(timeout=min(left, HEALTH_SECONDS))
            except queue.Empty:
                continue
            if event is not _WAKE:
                self._pending.append(event)
        self._gather()

    def _gather(self) -> None:
        while True:
            try:
                event = self.queue.get_nowait()
            except queue.Empty:
                break
            if event is not _WAKE:
                self._pending.append(event)
        if len(self._pending) > self.memory_bound:
            self._spill()
        self._show_health()

    def _spill(self) -> None:
        """Move the events waiting in memory to the end of the spool."""
        if self.spool is None or not self._pending:
            return
        try:
            self.spool.append(self._pending)
        except OSError as exc:  # a full disk: they stay in memory, and are tried again
            log.error("cannot spool %d events to %s: %s", len(self._pending), self.spool.path, exc)
            return
        self._pending.clear()

    def _spill_all(self) -> None:
        """Stopping while the store is stuck: everything waiting goes to the spool."""
        self._gather()
        self._spill()
        if self._pending:
            log.error("stopping with %d events that could not be stored", len(self._pending))
        elif self.spool is not None and len(self.spool):
            log.info("%d events wait in %s for the next start", len(self.spool), self.spool.path)

    def _show_health(self, *, force: bool = False) -> None:
        if self.health_file is None:
            return
        now = time.monotonic()
        # Events merely queued are the normal flow: the file changes only with a backlog.
        backlog = len(self._pending) + (len(self.spool) if self.spool is not None else 0)
        shown = (self._stuck_since is not None, backlog > 0)
        recent = now - self._health_at < HEALTH_SECONDS
        if not force and shown == self._health_shown and (recent or not any(shown)):
            return
        try:
            self.health().write(self.health_file)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.health_file, exc)
        self._health_at, self._health_shown = now, shown

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
