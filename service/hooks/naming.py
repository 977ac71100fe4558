"""File names: collision-free targets ("name (1).ext") and stillroom's own temp names."""

from __future__ import annotations

import os
from pathlib import Path

from stillroom.errors import ActionError

TEMP_PREFIX = ".stillroom-"
TEMP_SUFFIX = ".tmp"
# Suffixes that read as one: "backup (1).tar.gz", not "backup.tar (1).gz".
COMPOUND_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst")
MAX_TRIES = 10_000


def split_name(name: str) -> tuple[str, str]:
    """(stem, extension with its dot); a leading dot does not start an extension."""
    lower = name.lower()
    for suffix in COMPOUND_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


def numbered(name: str, number: int) -> str:
    """`report.pdf` numbered 2 is `report (2).pdf`."""
    stem, ext = split_name(name)
    return f"{stem} ({number}){ext}"


def free_name(folder: Path, name: str) -> Path:
    """The first of `name`, `name (1)`, `name (2)`, ... that nothing in `folder` holds yet."""
    candidate = folder / name
    for number in range(1, MAX_TRIES):
        if not os.path.lexists(candidate):
            return candidate
        candidate = folder / numbered(name, number)
    raise ActionError(f"no free name for {name!r} in {folder}")


def temp_path(folder: Path, action_id: int, tag: str = "") -> Path:
    """Where action `action_id` writes before its atomic, no-replace placement."""
    return folder / f"{TEMP_PREFIX}{action_id}{tag}{TEMP_SUFFIX}"


def is_temp(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def check_plain_name(name: str) -> str:
    """A single file name: no folder separators, not `.` or `..`, not one of our temps."""
    if not name or name in (".", "..") or "/" in name or "\0" in name or os.sep in name:
        raise ActionError(f"{name!r} is not a valid file name")
    if is_temp(name):
        raise ActionError(f"{name!r} is reserved for stillroom's temp files")
    return name
