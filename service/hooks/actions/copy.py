"""Copy a file into a folder; undo removes the copy while it is unchanged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from stillroom.config import ActionConfig, CopyAction
from stillroom.errors import ActionError
from stillroom.events import Event
from stillroom.service.hooks.actions.base import Plan, short
from stillroom.service.hooks.actions.create import CreateAction
from stillroom.service.hooks.actions.files import (
    copy_from,
    exists,
    identity,
    reading,
    regular_file,
)
from stillroom.service.hooks.naming import free_name


class Copy(CreateAction):
    """`copy` to a folder, keeping the name (numbered when taken), mode and times."""

    kind: ClassVar[str] = "copy"
    output = "copy"

    def plan(self, config: ActionConfig, path: Path, event: Event | None) -> Plan:
        if not isinstance(config, CopyAction):
            raise ActionError(f"{self.kind} got a {config.kind} config")
        src = regular_file(path)
        folder = Path(os.path.abspath(config.to))
        if exists(folder) and not folder.is_dir():
            raise ActionError(f"{short(folder)} is not a folder")
        dst = free_name(folder, src.name)
        params = {"src": str(src), "dst": str(dst), "want": src.name, "src_id": identity(src)}
        return Plan(self.kind, params)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        return f"copy {short(params['src'])} -> {short(params['dst'])}"

    def write(self, plan: dict[str, Any], out: BinaryIO) -> str | None:
        with reading(plan["src"], expect=plan["src_id"]) as src:
            return copy_from(src, out)
