"""The action interface: plan without side effects, execute step by step, settle after a crash."""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from stillroom.config import ActionConfig
from stillroom.errors import UndoError
from stillroom.events import Event
from stillroom.store import ActionRecord, Store

CRASH_ENV = "STILLROOM_CRASH_AT"
ROLLED_BACK = "rolled back after an interruption"

_trace: list[str] | None = None


def checkpoint(name: str) -> None:
    """Fault injection: die by SIGKILL here when STILLROOM_CRASH_AT names this step."""
    if _trace is not None:
        _trace.append(name)
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def traced_checkpoints() -> Iterator[list[str]]:
    """Collect the checkpoints passed inside the block (tests check the declared lists)."""
    global _trace
    previous, _trace = _trace, []
    try:
        yield _trace
    finally:
        _trace = previous


def short(path: str | Path) -> str:
    """A path as the user thinks of it: `~/Downloads/a.pdf`."""
    text, home = str(path), str(Path.home())
    if home != "/" and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text


@dataclass(frozen=True)
class Plan:
    """What an action would do, computed without side effects; `params` is JSON-able."""

    kind: str
    params: dict[str, Any]

    def describe(self) -> str:
        """One line for --dry-run."""
        from stillroom.service.hooks.actions import REGISTRY

        return REGISTRY[self.kind].describe(self.params)


@dataclass(frozen=True)
class Outcome:
    """Where settling an interrupted or failed action left it."""

    state: str
    error: str | None = None


class Journal:
    """One action's journal entry while it runs: every step is written here before it happens."""

    def __init__(
        self, store: Store, record: ActionRecord, on_effect: Callable[[Path], None] | None
    ) -> None:
        self.store = store
        self.id = record.id
        self.state = record.state
        self.plan: dict[str, Any] = dict(record.plan)
        self._on_effect = on_effect

    def update(self, **changes: Any) -> None:
        """Journal changes of the plan, while the action is still in the state it ran in."""
        self.plan.update(changes)
        self.store.update_action(self.id, plan=self.plan, expect=self.state)

    def touch(self, *paths: str | Path) -> None:
        """Tell the daemon which paths we are about to create, rename or remove."""
        if self._on_effect is not None:
            for path in paths:
                self._on_effect(Path(path))


class Action(ABC):
    """One kind of file action. Instances are stateless; the journal carries the state."""

    kind: ClassVar[str]
    undoable: ClassVar[bool] = True
    # Step names, checkpointed as f"{kind}.{step}" in this order on the usual path.
    checkpoints: ClassVar[tuple[str, ...]] = ()
    undo_checkpoints: ClassVar[tuple[str, ...]] = ()

    def step(self, name: str) -> None:
        checkpoint(f"{self.kind}.{name}")

    @abstractmethod
    def plan(self, config: ActionConfig, path: Path, event: Event | None) -> Plan:
        """What this action would do to `path`; raises ActionError when it cannot apply."""

    @classmethod
    @abstractmethod
    def describe(cls, params: dict[str, Any]) -> str:
        """One line: what the plan does."""

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        """The plan plus facts read just before journaling (inode, size, hash); no effects."""
        return dict(params)

    def claimed(self, plan: dict[str, Any]) -> tuple[str, list[int]] | None:
        """The file a prepared plan acts on, as (path, [device, inode]): the executor claims
        it before the action runs, so no other process acts on it at the same time."""
        src, ident = plan.get("src"), plan.get("src_id")
        return (str(src), list(ident)) if src and ident else None

    def undo_claimed(self, plan: dict[str, Any]) -> tuple[str, list[int]] | None:
        """The same for a prepared undo."""
        return None

    @abstractmethod
    def execute(self, journal: Journal) -> None:
        """Do it; any exception leads to `settle(forward=False)`."""

    @abstractmethod
    def settle(self, journal: Journal, *, forward: bool) -> Outcome:
        """Inspect the filesystem against the journal; finish (forward) or roll back."""

    def prepare_undo(self, plan: dict[str, Any]) -> dict[str, Any]:
        """The plan plus what undo will do (`undo_summary`); raises UndoError if it cannot."""
        raise UndoError(f"a {self.kind} action cannot be undone")

    def undo(self, journal: Journal) -> None:
        raise UndoError(f"a {self.kind} action cannot be undone")

    def settle_undo(self, journal: Journal, *, forward: bool) -> Outcome:
        """Finish an interrupted undo (state undone) or roll it back (state done)."""
        return Outcome("done", "an interrupted undo was rolled back")
