"""Moving one file without ever losing or duplicating it: link, then unlink.

Same filesystem: `link(src, dst)` then `unlink(src)`. Across filesystems (EXDEV): copy to a
temp beside dst (fsynced), link the temp to dst, remove the temp, and unlink src only once
both files hash to what src held. The link to dst is the commit point: before it, settling
rolls back; after it, settling finishes (or, on a failed run, removes the extra name).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Literal

from stillroom.errors import ActionError
from stillroom.service.hooks.actions.base import Journal, checkpoint
from stillroom.service.hooks.actions.files import (
    copy_new,
    exists,
    identity,
    link_free,
    remove_temp,
    same_file,
    sha256_or_none,
)
from stillroom.service.hooks.naming import temp_path

Settled = Literal["done", "rolled_back", "vanished", "kept_both"]

LINK_STEPS = ("linked", "unlinked_src")
COPY_STEPS = ("tmp_written", "tmp_journaled", "tmp_linked", "tmp_removed", "unlinked_src")


class Transfer:
    """A move recorded under journal keys `<prefix>src`, `<prefix>dst`, `<prefix>tmp`, ...

    Needs `src`, `dst`, `want` (the name to number on a collision), `src_id` and `sha256`
    of the source, journaled before `run`.
    """

    def __init__(self, journal: Journal, prefix: str, label: str, tag: str = "") -> None:
        self.journal = journal
        self.prefix = prefix
        self.label = label
        self.tag = tag

    def key(self, name: str) -> str:
        return self.prefix + name

    def get(self, name: str) -> Any:
        return self.journal.plan.get(self.key(name))

    def step(self, name: str) -> None:
        checkpoint(f"{self.label}.{name}")

    def run(self) -> None:
        j = self.journal
        src = Path(self.get("src"))
        j.touch(src)
        try:
            dst = link_free(j, src, self.key("dst"), self.get("want"))
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._run_copy(src)
            return
        self.step("linked")
        if identity(dst) != self.get("src_id"):
            raise ActionError(f"{src} was replaced while it was being moved")
        j.touch(src)
        os.unlink(src)
        self.step("unlinked_src")

    def _run_copy(self, src: Path) -> None:
        j = self.journal
        tmp = temp_path(Path(self.get("dst")).parent, j.id, self.tag)
        j.update(**{self.key("method"): "copy", self.key("tmp"): str(tmp)})
        j.touch(tmp)
        digest = copy_new(src, tmp)
        self.step("tmp_written")
        if digest != self.get("sha256") or identity(src) != self.get("src_id"):
            raise ActionError(f"{src} changed while it was being copied")
        j.update(**{self.key("tmp_id"): identity(tmp)})
        self.step("tmp_journaled")
        dst = link_free(j, tmp, self.key("dst"), self.get("want"))
        self.step("tmp_linked")
        j.touch(tmp)
        os.unlink(tmp)
        self.step("tmp_removed")
        want = self.get("sha256")
        if sha256_or_none(dst) != want or sha256_or_none(src) != want:
            raise ActionError(f"the copy at {dst} does not match {src}")
        j.touch(src)
        os.unlink(src)
        self.step("unlinked_src")

    def placed(self) -> bool:
        """Whether dst holds our file: a link of src, or the temp we wrote and journaled."""
        src, dst = self.get("src"), self.get("dst")
        if not dst or not exists(dst):
            return False
        if exists(src) and same_file(src, dst):
            return True
        ident = identity(dst)
        return ident is not None and ident in (self.get("src_id"), self.get("tmp_id"))

    def settle(self, *, forward: bool) -> Settled:
        """Make the journal and the filesystem agree again; idempotent."""
        j = self.journal
        src, dst = self.get("src"), self.get("dst")
        placed = self.placed()
        # A temp is always ours to drop: either dst already holds its inode, or src is intact.
        remove_temp(j, self.get("tmp"))
        if not placed:
            return "rolled_back" if exists(src) else "vanished"
        if not exists(src):
            return "done"
        if same_file(src, dst):
            victim = src if forward else dst
            j.touch(victim)
            os.unlink(victim)
            return "done" if forward else "rolled_back"
        want = self.get("sha256")
        ours = sha256_or_none(dst) == want
        if forward and ours and sha256_or_none(src) == want:
            j.touch(src)
            os.unlink(src)
            return "done"
        if ours:
            j.touch(dst)
            os.unlink(dst)
            return "rolled_back"
        return "kept_both"
