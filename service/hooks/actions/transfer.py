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
from typing import Any, BinaryIO, Literal

from stillroom.errors import ActionError
from stillroom.service.hooks.actions.base import Journal, checkpoint
from stillroom.service.hooks.actions.files import (
    check_source,
    copy_from,
    exists,
    folder_fd,
    identity,
    identity_at,
    link_free,
    reading,
    remove_temp,
    same_file,
    sha256_or_none,
    write_new,
)
from stillroom.service.hooks.naming import temp_path

Settled = Literal["done", "rolled_back", "vanished", "kept_both"]

LINK_STEPS = ("linked", "unlinked_src")
COPY_STEPS = ("tmp_written", "tmp_journaled", "tmp_linked", "tmp_removed", "unlinked_src")


class Transfer:
    """A move recorded under journal keys `<prefix>src`, `<prefix>dst`, `<prefix>tmp`, ...

    Needs `src`, `dst`, `want` (the name to number on a collision), `src_id` and `sha256`
    of the source, journaled before `run`. Both folders are opened once, without following
    a link, and every name is resolved through them.
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
        src, src_id = Path(self.get("src")), self.get("src_id")
        with folder_fd(src.parent) as sd, folder_fd(Path(self.get("dst")).parent) as dd:
            check_source(sd, src.name, src_id, src)
            j.touch(src)
            try:
                dst = link_free(j, self.key("dst"), self.get("want"), (sd, src.name), dd)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self._run_copy(src, sd, dd)
                return
            self.step("linked")
            if identity_at(dd, dst.name) != src_id:
                raise ActionError(f"{src} was replaced while it was being moved")
            check_source(sd, src.name, src_id, src)  # the name we unlink is still our file
            j.touch(src)
            os.unlink(src.name, dir_fd=sd)
        self.step("unlinked_src")

    def _run_copy(self, src: Path, sd: int, dd: int) -> None:
        j = self.journal
        tmp = temp_path(Path(self.get("dst")).parent, j.id, self.tag)
        j.update(**{self.key("method"): "copy", self.key("tmp"): str(tmp)})
        j.touch(tmp)

        def fill(out: BinaryIO) -> str:
            with reading(src.name, folder=sd, expect=self.get("src_id")) as fh:
                return copy_from(fh, out)

        digest = write_new(j, self.key("tmp_id"), dd, tmp.name, fill)
        self.step("tmp_written")
        if digest != self.get("sha256") or identity_at(sd, src.name) != self.get("src_id"):
            raise ActionError(f"{src} changed while it was being copied")
        j.update(**{self.key("tmp_sha256"): digest})
        self.step("tmp_journaled")
        dst = link_free(j, self.key("dst"), self.get("want"), (dd, tmp.name), dd)
        self.step("tmp_linked")
        j.touch(tmp)
        os.unlink(tmp.name, dir_fd=dd)
        self.step("tmp_removed")
        want = self.get("sha256")
        if sha256_or_none(dst.name, folder=dd) != want or (
            sha256_or_none(src.name, folder=sd) != want
        ):
            raise ActionError(f"the copy at {dst} does not match {src}")
        check_source(sd, src.name, self.get("src_id"), src)
        j.touch(src)
        os.unlink(src.name, dir_fd=sd)
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
        remove_temp(j, self.get("tmp"), self.get("tmp_id"))
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
