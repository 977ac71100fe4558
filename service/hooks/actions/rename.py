"""Rename a file in its folder from a template; the mechanics are move's."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, ClassVar

from stillroom.config import ActionConfig, RenameAction
from stillroom.errors import ActionError
from stillroom.events import Event
from stillroom.service.hooks.actions.base import Plan, short
from stillroom.service.hooks.actions.files import regular_file
from stillroom.service.hooks.actions.move import Move
from stillroom.service.hooks.naming import check_plain_name, split_name

PLACEHOLDER = re.compile(r"\{(\w*)\}")


def render(template: str, src: Path, event: Event | None) -> str:
    """Fill {stem} {ext} (with its dot, '' when none) {name} {date} {parent} into a name.

    {date} is the day the event happened, or the file's modification day without one.
    """
    stem, ext = split_name(src.name)
    when = event.at if event is not None else src.stat().st_mtime
    values = {
        "stem": stem,
        "ext": ext,
        "name": src.name,
        "date": time.strftime("%Y-%m-%d", time.localtime(when)),
        "parent": src.parent.name,
    }

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            known = " ".join("{" + k + "}" for k in values)
            raise ActionError(f"rename template {template!r}: unknown {match.group(0)} ({known})")
        return values[key]

    return PLACEHOLDER.sub(fill, template)


class Rename(Move):
    """`rename` within the file's folder (numbered when the new name is taken)."""

    kind: ClassVar[str] = "rename"

    def plan(self, config: ActionConfig, path: Path, event: Event | None) -> Plan:
        if not isinstance(config, RenameAction):
            raise ActionError(f"{self.kind} got a {config.kind} config")
        src = regular_file(path)
        name = check_plain_name(render(config.name, src, event))
        if name == src.name:
            raise ActionError(f"{short(src)} is already named {name!r}")
        return self.plan_to(src, src.parent, name)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        return f"rename {short(params['src'])} -> {Path(params['dst']).name}"
