"""Move a file into a folder; undo moves it back. Rename reuses all of it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from stillroom.config import ActionConfig, MoveAction
from stillroom.errors import ActionError, UndoError
from stillroom.events import Event
from stillroom.service.hooks.actions.base import ROLLED_BACK, Action, Journal, Outcome, Plan, short
from stillroom.service.hooks.actions.files import (
    exists,
    identity,
    make_dirs,
    missing_dirs,
    regular_file,
    remove_empty_dirs,
    sha256_or_none,
    source_facts,
)
from stillroom.service.hooks.actions.transfer import COPY_STEPS, LINK_STEPS, Settled, Transfer
from stillroom.service.hooks.naming import free_name

SETTLED_ERRORS: dict[Settled, str] = {
    "rolled_back": ROLLED_BACK,
    "vanished": "the file disappeared while it was being moved",
    "kept_both": "interrupted; both copies were kept because they differ",
}


class Move(Action):
    """`move` to a folder, keeping the name (numbered when taken)."""

    kind: ClassVar[str] = "move"
    checkpoints = ("journaled", *LINK_STEPS)
    undo_checkpoints = ("undoing", *(f"undo.{s}" for s in LINK_STEPS))
    # The same steps when source and target lie on different filesystems.
    exdev_checkpoints = ("journaled", *COPY_STEPS)
    exdev_undo_checkpoints = ("undoing", *(f"undo.{s}" for s in COPY_STEPS))

    def plan(self, config: ActionConfig, path: Path, event: Event | None) -> Plan:
        if not isinstance(config, MoveAction):
            raise ActionError(f"{self.kind} got a {config.kind} config")
        src = regular_file(path)
        folder = Path(os.path.abspath(config.to))
        if exists(folder) and not folder.is_dir():
            raise ActionError(f"{short(folder)} is not a folder")
        if folder == src.parent:
            raise ActionError(f"{short(src)} is already in {short(folder)}")
        return self.plan_to(src, folder, src.name)

    def plan_to(self, src: Path, folder: Path, name: str) -> Plan:
        dst = free_name(folder, name)
        params = {"src": str(src), "dst": str(dst), "want": name, "src_id": identity(src)}
        return Plan(self.kind, params)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        return f"{cls.kind} {short(params['src'])} -> {short(params['dst'])}"

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        facts = source_facts(Path(params["src"]), expect=params.get("src_id"))
        made = missing_dirs(Path(params["dst"]).parent)
        return {**params, **facts, "made_dirs": made, "method": "link"}

    def transfer(self, journal: Journal) -> Transfer:
        return Transfer(journal, "", self.kind)

    def execute(self, journal: Journal) -> None:
        make_dirs(journal.plan["made_dirs"])
        self.transfer(journal).run()

    def settle(self, journal: Journal, *, forward: bool) -> Outcome:
        settled = self.transfer(journal).settle(forward=forward)
        if settled == "done":
            return Outcome("done")
        remove_empty_dirs(journal, journal.plan.get("made_dirs", []))
        return Outcome("failed", SETTLED_ERRORS[settled])

    # -- undo: the same transfer, backwards, under the keys undo_* ----------------------

    def prepare_undo(self, plan: dict[str, Any]) -> dict[str, Any]:
        # A rolled-back earlier attempt left its own undo_* keys: start from the forward plan.
        plan = {k: v for k, v in plan.items() if not k.startswith("undo_")}
        src, dst = Path(plan["src"]), Path(plan["dst"])
        if not exists(dst):
            raise UndoError(f"{short(dst)} is gone; there is nothing to move back")
        placed_id = plan.get("tmp_id") if plan.get("method") == "copy" else plan.get("src_id")
        if identity(dst) != placed_id and sha256_or_none(dst) != plan.get("sha256"):
            raise UndoError(f"{short(dst)} was replaced since stillroom moved it; left in place")
        try:
            facts = source_facts(dst)
        except ActionError as exc:
            raise UndoError(str(exc)) from None
        back = {
            "undo_src": str(dst),
            "undo_dst": str(free_name(src.parent, src.name)),
            "undo_want": src.name,
            "undo_src_id": facts["src_id"],
            "undo_sha256": facts["sha256"],
            "undo_method": "link",
            "undo_made_dirs": missing_dirs(src.parent),
        }
        back["undo_summary"] = self._undo_summary({**plan, **back})
        return {**plan, **back}

    def undo_claimed(self, plan: dict[str, Any]) -> tuple[str, list[int]] | None:
        return plan["undo_src"], plan["undo_src_id"]

    @staticmethod
    def _undo_summary(plan: dict[str, Any]) -> str:
        line = f"move {short(plan['undo_src'])} back to {short(plan['undo_dst'])}"
        if plan["undo_dst"] != plan["src"]:
            line += f" ({short(plan['src'])} is taken)"
        return line

    def undo_transfer(self, journal: Journal) -> Transfer:
        return Transfer(journal, "undo_", f"{self.kind}.undo", tag=".undo")

    def undo(self, journal: Journal) -> None:
        make_dirs(journal.plan["undo_made_dirs"])
        self.undo_transfer(journal).run()
        remove_empty_dirs(journal, journal.plan.get("made_dirs", []))
        journal.plan["undo_summary"] = self._undo_summary(journal.plan)

    def settle_undo(self, journal: Journal, *, forward: bool) -> Outcome:
        settled = self.undo_transfer(journal).settle(forward=forward)
        if settled == "done":
            remove_empty_dirs(journal, journal.plan.get("made_dirs", []))
            journal.plan["undo_summary"] = self._undo_summary(journal.plan)
            return Outcome("undone")
        remove_empty_dirs(journal, journal.plan.get("undo_made_dirs", []))
        if settled == "rolled_back":
            return Outcome("done", "an interrupted undo was rolled back" if forward else None)
        if settled == "vanished":
            return Outcome("done", f"{short(journal.plan['dst'])} disappeared during an undo")
        return Outcome("done", "an undo was interrupted; both copies were kept because they differ")
