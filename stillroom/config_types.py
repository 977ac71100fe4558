"""What every config section is built from: the strict base model and user paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def expand_path(value: Any) -> Any:
    """`~` and $VARS expand; a relative path is taken from the user's home folder."""
    if isinstance(value, str | Path):
        path = Path(os.path.expandvars(os.path.expanduser(str(value))))
        return path if path.is_absolute() else Path.home() / path
    return value


UserPath = Annotated[Path, Field(description="A folder; ~ and $VARS expand.")]


def resolve_root(value: Any) -> Any:
    """A watched root as the kernel sees it: expanded, then every link on its way resolved,
    once, when the config loads (~/Downloads -> /data/Downloads watches and compares the real
    folder; below a root no link is ever followed). A link loop is kept as written."""
    path = expand_path(value)
    if not isinstance(path, Path):
        return path
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a loop: the monitor warns that it is no folder
        return Path(os.path.abspath(path))
