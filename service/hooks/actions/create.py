"""Actions that create a new file (copy, convert): write a temp, then link it into place.

The temp `.stillroom-<id>.tmp` is written and fsynced beside the target, its sha256 and
inode journaled, then hard-linked to a free name (a link never replaces) and removed. The
link is the commit point. Undo removes the new file only while it still hashes to what we
wrote: an edited output is the user's now and stays.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

from stillroom.errors import ActionError, UndoError
from stillroom.service.hooks.actions.base import ROLLED_BACK, Action, Journal, Outcome, short
from stillroom.service.hooks.actions.files import (
    exists,
    identity,
    link_free,
    make_dirs,
    missing_dirs,
    remove_empty_dirs,
    remove_temp,
    sha256,
    sha256_or_none,
    source_facts,
)
from stillroom.service.hooks.naming import temp_path


class CreateAction(Action):
    """Base of copy and convert_image: plans hold `src`, `dst` and `want` (the wanted name)."""

    checkpoints = ("journaled", "tmp_written", "tmp_journaled", "linked", "tmp_removed")
    undo_checkpoints = ("undoing", "undo.removed")
    output = "file"  # what undo calls the created file

    @abstractmethod
    def write(self, plan: dict[str, Any], tmp: Path) -> str | None:
        """Create `tmp` (it does not exist yet), fsynced; return its sha256 if known."""

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        facts = source_facts(Path(params["src"]), digest=False)
        return {**params, **facts, "made_dirs": missing_dirs(Path(params["dst"]).parent)}

    def execute(self, journal: Journal) -> None:
        plan = journal.plan
        make_dirs(plan["made_dirs"])
        tmp = temp_path(Path(plan["dst"]).parent, journal.id)
        journal.update(tmp=str(tmp))
        journal.touch(tmp)
        expected = self.write(plan, tmp)
        self.step("tmp_written")
        digest = sha256(tmp)
        if expected is not None and digest != expected:
            raise ActionError(f"{short(plan['dst'])}: what was written does not read back")
        journal.update(sha256=digest, tmp_id=identity(tmp))
        self.step("tmp_journaled")
        link_free(journal, tmp, "dst", plan["want"])
        self.step("linked")
        journal.touch(tmp)
        os.unlink(tmp)
        self.step("tmp_removed")

    def settle(self, journal: Journal, *, forward: bool) -> Outcome:
        plan = journal.plan
        dst, tmp_id = plan["dst"], plan.get("tmp_id")
        placed = tmp_id is not None and identity(dst) == tmp_id
        remove_temp(journal, plan.get("tmp"))
        if placed and forward:
            return Outcome("done")
        if placed:
            if sha256_or_none(dst) != plan.get("sha256"):
                return Outcome("failed", f"{short(dst)} changed meanwhile; left in place")
            journal.touch(dst)
            os.unlink(dst)
        remove_empty_dirs(journal, plan.get("made_dirs", []))
        return Outcome("failed", ROLLED_BACK)

    # -- undo: remove what we created, if it is still exactly what we wrote ---------------

    def _check_output(self, plan: dict[str, Any]) -> None:
        dst = plan["dst"]
        digest = sha256_or_none(dst)
        if digest is None:
            raise UndoError(f"{short(dst)} is gone; there is nothing to remove")
        if digest != plan.get("sha256"):
            raise UndoError(f"{short(dst)} changed since stillroom wrote it; left in place")

    def prepare_undo(self, plan: dict[str, Any]) -> dict[str, Any]:
        self._check_output(plan)
        return {**plan, "undo_summary": f"remove the {self.output} {short(plan['dst'])}"}

    def undo(self, journal: Journal) -> None:
        self._check_output(journal.plan)
        journal.touch(journal.plan["dst"])
        os.unlink(journal.plan["dst"])
        self.step("undo.removed")
        remove_empty_dirs(journal, journal.plan.get("made_dirs", []))

    def settle_undo(self, journal: Journal, *, forward: bool) -> Outcome:
        # Removing the file is the commit point: while it is there, nothing was undone yet.
        if exists(journal.plan["dst"]):
            return Outcome("done", "an interrupted undo was rolled back" if forward else None)
        remove_empty_dirs(journal, journal.plan.get("made_dirs", []))
        return Outcome("undone")
