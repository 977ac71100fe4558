"""Where a student's answer may send a file. Model answers are untrusted input.

Only a classify task picks a move target, only among the labels its serving version was
trained on, and only a plain relative folder that resolves (links followed) inside one of
the destination roots the user files into. Absolute paths, `..`, empty or hidden parts, and
folders that hold programs, settings or things started at login are refused.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from pathlib import Path

from stillroom.errors import StillroomError

# Compared lower-case, against every part of the answer and of the resolved folder below
# its root. Hidden parts (.config, .ssh, .local/share/applications, .bashrc) go anyway.
DENIED = frozenset(
    name.lower()
    for name in (
        "autostart",
        "LaunchAgents",
        "LaunchDaemons",
        "Library",
        "Applications",
        "AppData",
        "Start Menu",
        "Startup",
        "bin",
        "sbin",
    )
)


class RefusedTarget(StillroomError):
    """A student's answer that names no safe destination; the file stays where it is."""


def _check_parts(parts: Sequence[str]) -> None:
    for part in parts:
        if part in ("", ".", ".."):
            raise RefusedTarget("it has an empty, '.' or '..' part")
        if part.startswith("."):
            raise RefusedTarget(f"{part!r} is a hidden folder")
        if part.lower() in DENIED:
            raise RefusedTarget(f"{part!r} holds programs, settings or login items")


def move_target(
    answer: str, *, kind: str, labels: Collection[str], home: Path, roots: Sequence[Path]
) -> Path:
    """The folder a classify answer (a label relative to home) names; RefusedTarget if it
    is not one of `labels` or not safely inside one of the destination `roots`."""
    if kind != "classify":
        raise RefusedTarget(f"a {kind} task does not choose where files go")
    if answer not in labels:
        raise RefusedTarget("it is not one of the labels this version was trained on")
    if "\0" in answer or "\\" in answer:
        raise RefusedTarget("it is not a plain folder name")
    if answer.startswith(("/", "~")) or os.path.isabs(answer):
        raise RefusedTarget("it is an absolute path")
    _check_parts(answer.split("/"))
    if not roots:
        raise RefusedTarget("the config names no destination roots to file into")
    target = Path(os.path.realpath(home / answer))
    for root in roots:
        real = Path(os.path.realpath(root))
        if target == real or real in target.parents:
            _check_parts(target.relative_to(real).parts)
            return target
    raise RefusedTarget("it lies outside every destination root in the config")
