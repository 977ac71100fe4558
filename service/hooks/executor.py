"""The executor: journal every file action before it happens, run it, settle it after a crash.

Each action kind knows its steps and how to read the filesystem against its journal entry;
the executor owns the journal's states: planned -> done | failed, done -> undoing ->
undone (or back to done when an undo cannot finish).

Several processes share the journal (the daemon, `stillroom apply`, `stillroom undo`): every
state change is a compare-and-set, and an action claims its file's (device, inode) in the
same transaction that journals it (or starts its undo), so one process at a time acts on a
file. The claim goes when the action settles; a dead process's claim is taken over by
whoever settles its action.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

from stillroom.config import ActionConfig
from stillroom.errors import ActionError, ConflictError, StillroomError, UndoError
from stillroom.events import Event
from stillroom.service.hooks.actions import action_for
from stillroom.service.hooks.actions.base import Action, Journal, Outcome, Plan, checkpoint
from stillroom.service.hooks.actions.command import NOT_UNDOABLE
from stillroom.service.hooks.actions.files import identity
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
        """Journal, execute, and return the final record (done, or failed with the world
        intact). ActionError, with nothing journaled, while another process acts on the file."""
        impl = action_for(plan.kind)
        journal_new = partial(
            self.store.journal, automation=automation, event_id=event_id, confidence=confidence
        )
        with self._lock:
            try:
                params = impl.prepare(plan.params)
            except (StillroomError, OSError) as exc:
                record = journal_new(plan.kind, {**plan.params, "summary": plan.describe()})
                return self._fail(record, _message(exc))
            params["summary"] = impl.describe(params)
            claimed = impl.claimed(params)
            record = self._journal_claimed(
                lambda: journal_new(plan.kind, params, claim=claimed[1] if claimed else None)
            )
            if claimed is not None and identity(claimed[0]) != claimed[1]:
                # Between the check and the claim, someone else acted on it: nothing was done.
                return self._fail(record, f"{claimed[0]} changed or moved before stillroom acted")
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
            return self.store.update_action(
                journal.id, state="done", plan=journal.plan, expect="planned"
            )

    def _fail(self, record: ActionRecord, error: str) -> ActionRecord:
        """A journaled action that did nothing: failed (unless a reconcile got there first)."""
        try:
            return self.store.update_action(
                record.id, state="failed", error=error, expect="planned"
            )
        except ConflictError:
            return self.store.action(record.id) or record

    def _journal_claimed(self, write: Callable[[], ActionRecord]) -> ActionRecord:
        """Write a journal change that claims a file; a claim left by a dead process is
        settled first (once). ActionError while a live process holds it."""
        try:
            return write()
        except ConflictError as exc:
            if exc.alive or exc.holder is None:
                raise ActionError(str(exc)) from None
            held = self.store.action(exc.holder)
            if held is not None and held.state in ("planned", "undoing"):
                if not self.store.take_over_claims(held.id):
                    raise ActionError(str(exc)) from None
                self._reconcile(held)
            else:
                self.store.clear_stale_claims()
        try:
            return write()
        except ConflictError as exc:
            raise ActionError(str(exc)) from None

    def _abort(self, impl: Action, journal: Journal, exc: BaseException) -> ActionRecord:
        """Roll a failed run back; if even that fails, leave it planned for reconcile."""
        try:
            outcome = impl.settle(journal, forward=False)
        except Exception as inner:
            error = f"{_message(exc)}; rollback failed ({_message(inner)}); will retry on start"
            return self.store.update_action(
                journal.id, plan=journal.plan, error=error, expect="planned"
            )
        return self.store.update_action(
            journal.id,
            state=outcome.state,
            plan=journal.plan,
            error=_message(exc) if outcome.state == "failed" else None,
            expect="planned",
        )

    def reconcile(self) -> list[ActionRecord]:
        """Finish or roll back every action a crash left planned or undoing; idempotent.
        Actions that a live process (another stillroom, say) still runs are left to it."""
        settled: list[ActionRecord] = []
        with self._lock:
            self.store.clear_stale_claims()
            for record in self.store.unfinished_actions():
                if not self.store.take_over_claims(record.id):
                    continue
                try:
                    settled.append(self._reconcile(record))
                except ConflictError:  # settled by another process meanwhile
                    continue
        return settled

    def _reconcile(self, record: ActionRecord) -> ActionRecord:
        """Settle one unfinished action whose claims this process holds (or has none)."""
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
            return self.store.update_action(
                record.id, error=f"cannot reconcile: {_message(exc)}", expect=record.state
            )
        journal.plan["recovered"] = recovered
        journal.plan["recoveries"] = [*journal.plan.get("recoveries", []), recovered]
        # An error left by an earlier failed attempt is cleared ("" in the store).
        error = outcome.error if outcome.error or not record.error else ""
        return self.store.update_action(
            record.id, state=outcome.state, plan=journal.plan, error=error, expect=record.state
        )

    def undo(self, action_id: int | None = None) -> ActionRecord:
        """Undo one action (default: the most recent done, undoable one); UndoError if not."""
        with self._lock:
            target = self._undo_target(action_id)
            impl = action_for(target.kind)
            plan = impl.prepare_undo(target.plan)
            claimed = impl.undo_claimed(plan)
            try:
                record = self._journal_claimed(
                    lambda: self.store.update_action(
                        target.id,
                        state="undoing",
                        plan=plan,
                        expect="done",
                        claim=claimed[1] if claimed else None,
                    )
                )
            except ActionError as exc:
                raise UndoError(f"cannot undo #{target.id} now: {exc}") from None
            if claimed is not None and identity(claimed[0]) != claimed[1]:
                self.store.update_action(target.id, state="done", expect="undoing")
                raise UndoError(
                    f"cannot undo #{target.id}: {claimed[0]} changed meanwhile; nothing was changed"
                )
            journal = Journal(self.store, record, self.on_effect)
            impl.step("undoing")
            try:
                impl.undo(journal)
            except BaseException as exc:
                record = self._abort_undo(impl, journal, exc)
                if not isinstance(exc, Exception):
                    raise
                return record
            return self.store.update_action(
                record.id, state="undone", plan=journal.plan, expect="undoing"
            )

    def _abort_undo(self, impl: Action, journal: Journal, exc: BaseException) -> ActionRecord:
        """Roll a failed undo back (state done) and raise UndoError, unless it had finished."""
        try:
            outcome = impl.settle_undo(journal, forward=False)
        except Exception as inner:
            self.store.update_action(
                journal.id,
                error=f"undo failed ({_message(exc)}); its rollback failed too"
                f" ({_message(inner)}); will retry on start",
                expect="undoing",
            )
            raise UndoError(f"could not undo #{journal.id}: {_message(exc)}") from exc
        record = self.store.update_action(
            journal.id, state=outcome.state, plan=journal.plan, expect="undoing"
        )
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
