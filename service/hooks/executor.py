"""The executor: journal every file action before it happens, run it, settle it after a crash.

Each action kind knows its steps and how to read the filesystem against its journal entry;
the executor owns the journal's states: planned -> done | failed, done -> undoing ->
undone (or back to done when an undo cannot finish).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from stillroom.config import ActionConfig
from stillroom.errors import ActionError, StillroomError, UndoError
from stillroom.events import Event
from stillroom.service.hooks.actions import action_for
from stillroom.service.hooks.actions.base import Action, Journal, Outcome, Plan, checkpoint
from stillroom.service.hooks.actions.command import NOT_UNDOABLE
from stillroom.store import ActionRecord, Store

__all__ = ["Executor", "Plan", "checkpoint"]


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


class Executor:
    """Plans, runs, reconciles and undoes file actions against the store's journal."""

    def __init__(self, store: Store, *, on_effect: Callable[[Path], None] | None = None) -> None:
        self.store = store
        self.on_effect = on_effect
        self._lock = threading.Lock()

    def plan(self, action: ActionConfig, path: Path, event: Event | None = None) -> Plan:
        """What `action` would do to `path`, without side effects; ActionError if it cannot."""
        return action_for(action.kind).plan(action, Path(path), event)

    def run(
        self,
        plan: Plan,
        *,
        automation: str | None = None,
        event_id: int | None = None,
        confidence: float | None = None,
    ) -> ActionRecord:
        """Journal, execute, and return the final record (done, or failed with the world intact)."""
        impl = action_for(plan.kind)
        journal_new = partial(
            self.store.journal, automation=automation, event_id=event_id, confidence=confidence
        )
        with self._lock:
            try:
                params = impl.prepare(plan.params)
            except (StillroomError, OSError) as exc:
                record = journal_new(plan.kind, {**plan.params, "summary": plan.describe()})
                return self.store.update_action(record.id, state="failed", error=_message(exc))
            params["summary"] = impl.describe(params)
            record = journal_new(plan.kind, params)
            journal = Journal(self.store, record, self.on_effect)
            impl.step("journaled")
            try:
                impl.execute(journal)
            except BaseException as exc:
                record = self._abort(impl, journal, exc)
                if not isinstance(exc, Exception):
                    raise
                return record
            journal.plan["summary"] = impl.describe(journal.plan)
            return self.store.update_action(journal.id, state="done", plan=journal.plan)

    def _abort(self, impl: Action, journal: Journal, exc: BaseException) -> ActionRecord:
        """Roll a failed run back; if even that fails, leave it planned for reconcile."""
        try:
            outcome = impl.settle(journal, forward=False)
        except Exception as inner:
            error = f"{_message(exc)}; rollback failed ({_message(inner)}); will retry on start"
            return self.store.update_action(journal.id, plan=journal.plan, error=error)
        return self.store.update_action(
            journal.id,
            state=outcome.state,
            plan=journal.plan,
            error=_message(exc) if outcome.state == "failed" else None,
        )

    def reconcile(self) -> list[ActionRecord]:
        """Finish or roll back every action a crash left planned or undoing; idempotent."""
        settled: list[ActionRecord] = []
        with self._lock:
            for record in self.store.unfinished_actions():
                settled.append(self._reconcile(record))
        return settled

    def _reconcile(self, record: ActionRecord) -> ActionRecord:
        journal = Journal(self.store, record, self.on_effect)
        try:
            impl = action_for(record.kind)
            if record.state == "planned":
                outcome = impl.settle(journal, forward=True)
                recovered = "completed" if outcome.state == "done" else "rolled back"
            else:
                outcome = impl.settle_undo(journal, forward=True)
                recovered = "undo completed" if outcome.state == "undone" else "undo rolled back"
        except ActionError as exc:  # a kind this version does not know: nothing to inspect
            state = "failed" if record.state == "planned" else "done"
            outcome, recovered = Outcome(state, str(exc)), "abandoned"
        except OSError as exc:
            # Leave it unfinished: the next start tries again (a permission may come back).
            return self.store.update_action(record.id, error=f"cannot reconcile: {_message(exc)}")
        journal.plan["recovered"] = recovered
        journal.plan["recoveries"] = [*journal.plan.get("recoveries", []), recovered]
        # An error left by an earlier failed attempt is cleared ("" in the store).
        error = outcome.error if outcome.error or not record.error else ""
        return self.store.update_action(
            record.id, state=outcome.state, plan=journal.plan, error=error
        )

    def undo(self, action_id: int | None = None) -> ActionRecord:
        """Undo one action (default: the most recent done, undoable one); UndoError if not."""
        with self._lock:
            record = self._undo_target(action_id)
            impl = action_for(record.kind)
            plan = impl.prepare_undo(record.plan)
            record = self.store.update_action(record.id, state="undoing", plan=plan)
            journal = Journal(self.store, record, self.on_effect)
            impl.step("undoing")
            try:
                impl.undo(journal)
            except BaseException as exc:
                record = self._abort_undo(impl, journal, exc)
                if not isinstance(exc, Exception):
                    raise
                return record
            return self.store.update_action(record.id, state="undone", plan=journal.plan)

    def _abort_undo(self, impl: Action, journal: Journal, exc: BaseException) -> ActionRecord:
        """Roll a failed undo back (state done) and raise UndoError, unless it had finished."""
        try:
            outcome = impl.settle_undo(journal, forward=False)
        except Exception as inner:
            self.store.update_action(
                journal.id,
                error=f"undo failed ({_message(exc)}); its rollback failed too"
                f" ({_message(inner)}); will retry on start",
            )
            raise UndoError(f"could not undo #{journal.id}: {_message(exc)}") from exc
        record = self.store.update_action(journal.id, state=outcome.state, plan=journal.plan)
        if isinstance(exc, Exception) and outcome.state != "undone":
            raise UndoError(
                f"could not undo #{journal.id}: {_message(exc)}; nothing was changed"
            ) from exc
        return record

    def plan_undo(self, action_id: int | None = None) -> str:
        """What undo would do, in one line (for --dry-run); UndoError if it cannot."""
        with self._lock:
            record = self._undo_target(action_id)
            summary = action_for(record.kind).prepare_undo(record.plan)["undo_summary"]
        return f"{summary} (undoing #{record.id})"

    def _undo_target(self, action_id: int | None) -> ActionRecord:
        if action_id is None:
            for done in self.store.actions(limit=1_000_000, states=["done"]):
                if action_for(done.kind).undoable:
                    return done
            raise UndoError("there is no action to undo")
        record = self.store.action(action_id)
        if record is None:
            raise UndoError(f"there is no action #{action_id}")
        if not action_for(record.kind).undoable:
            raise UndoError(f"#{action_id} ran a command: {NOT_UNDOABLE}")
        if record.state == "undone":
            raise UndoError(f"#{action_id} is already undone")
        if record.state == "failed":
            raise UndoError(f"#{action_id} failed, so there is nothing to undo")
        if record.state != "done":
            raise UndoError(f"#{action_id} was interrupted; it is settled when stillroom starts")
        return record
