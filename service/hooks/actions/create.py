"""Actions that create a new file (copy, convert): write a temp, then link it into place.

The temp `.stillroom-<id>.tmp` is created beside the target and its inode journaled before
anything is written into it; written and fsynced, its sha256 journaled, it is hard-linked
to a free name (a link never replaces) and removed. The link is the commit point. Undo
removes the new file only while it still hashes to what we wrote: an edited output is the
user's now and stays.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, BinaryIO

from stillroom.errors import ActionError, UndoError
from stillroom.service.hooks.actions.base import ROLLED_BACK, Action, Journal, Outcome, short
from stillroom.service.hooks.actions.files import (
    exists,
    folder_fd,
    identity,
    identity_at,
    link_free,
    make_dirs,
    missing_dirs,
    remove_empty_dirs,
    remove_temp,
    sha256,
    sha256_or_none,
    source_facts,
    write_new,
)
from stillroom.service.hooks.naming import temp_path


class CreateAction(Action):
    """Base of copy and convert_image: plans hold `src`, `dst` and `want` (the wanted name)."""

    checkpoints = ("journaled", "tmp_written", "tmp_journaled", "linked", "tmp_removed")
    undo_checkpoints = ("undoing", "undo.removed")
    output = "file"  # what undo calls the created file

    @abstractmethod
    def write(self, plan: dict[str, Any], out: BinaryIO) -> str | None:
        """Fill `out`, the new temp file (its inode is journaled already); return its sha256
        if known. The source is read through a descriptor checked against `src_id`."""

    def prepare(self, params: dict[str, Any]) -> dict[str, Any]:
        facts = source_facts(Path(params["src"]), digest=False, expect=params.get("src_id"))
        return {**params, **facts, "made_dirs": missing_dirs(Path(params["dst"]).parent)}

    def execute(self, journal: Journal) -> None:
        plan = journal.plan
        make_dirs(plan["made_dirs"])
        tmp = temp_path(Path(plan["dst"]).parent, journal.id)
        journal.update(tmp=str(tmp))
        with folder_fd(tmp.parent) as folder:
            journal.touch(tmp)
            expected = write_new(
                journal, "tmp_id", folder, tmp.name, lambda out: self.write(plan, out)
            )
            self.step("tmp_written")
            digest = sha256(tmp.name, folder=folder)
            if expected is not None and digest != expected:
                raise ActionError(f"{short(plan['dst'])}: what was written does not read back")
            journal.update(sha256=digest)
            self.step("tmp_journaled")
            link_free(journal, "dst", plan["want"], (folder, tmp.name), folder)
            self.step("linked")
            journal.touch(tmp)
            os.unlink(tmp.name, dir_fd=folder)
        self.step("tmp_removed")

    def settle(self, journal: Journal, *, forward: bool) -> Outcome:
        plan = journal.plan
        dst, tmp_id = plan["dst"], plan.get("tmp_id")
        placed = tmp_id is not None and identity(dst) == tmp_id and plan.get("sha256") is not None
        remove_temp(journal, plan.get("tmp"), tmp_id)
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
        return {
            **plan,
            "undo_dst_id": identity(plan["dst"]),
            "undo_summary": f"remove the {self.output} {short(plan['dst'])}",
        }

    def undo_claimed(self, plan: dict[str, Any]) -> tuple[str, list[int]] | None:
        ident = plan.get("undo_dst_id")
        return (plan["dst"], list(ident)) if ident else None

    def undo(self, journal: Journal) -> None:
        plan = journal.plan
        dst = Path(plan["dst"])
        with folder_fd(dst.parent) as folder:
            # Check and remove through one folder descriptor: the name we hashed is the one
            # we remove, and it is still the inode the claim holds.
            ident, claimed = identity_at(folder, dst.name), plan.get("undo_dst_id")
            if ident is None:
                raise UndoError(f"{short(dst)} is gone; there is nothing to remove")
            if claimed is not None and ident != claimed:
                raise UndoError(f"{short(dst)} was replaced meanwhile; left in place")
            if sha256_or_none(dst.name, folder=folder) != plan.get("sha256"):
                raise UndoError(f"{short(dst)} changed since stillroom wrote it; left in place")
            journal.touch(dst)
            os.unlink(dst.name, dir_fd=folder)
        self.step("undo.removed")
        remove_empty_dirs(journal, journal.plan.get("made_dirs", []))

    def settle_undo(self, journal: Journal, *, forward: bool) -> Outcome:
        # Removing the file is the commit point: while it is there, nothing was undone yet.
        if exists(journal.plan["dst"]):
            return Outcome("done", "an interrupted undo was rolled back" if forward else None)
        remove_empty_dirs(journal, journal.plan.get("made_dirs", []))
        return Outcome("undone")
