"""The config of user-written automations: which files a rule matches and what it does."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ByteSize,
    Field,
    ValidationError,
    field_validator,
)

from stillroom.command_argv import problem as argv_problem
from stillroom.config_types import Model, UserPath, resolve_root

DecidedKind = Literal["file.created", "file.moved", "file.modified"]


class Match(Model):
    """Which files a rule applies to; every given condition must hold."""

    events: list[DecidedKind] = Field(default_factory=lambda: list[DecidedKind](["file.created"]))
    folders: list[UserPath] | None = None
    extensions: list[str] | None = None
    name: list[str] | None = Field(None, description="Globs on the file name.")
    mime: list[str] | None = Field(None, description="Globs on the MIME type, e.g. image/*.")
    min_size: ByteSize | None = None
    max_size: ByteSize | None = None

    # Resolved like the watched roots, so a rule's folder compares with the events' paths.
    _expand = field_validator("folders", mode="before")(
        lambda v: [resolve_root(p) for p in v] if isinstance(v, list) else v
    )

    @field_validator("extensions", "name", "mime", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [e.lower().lstrip(".") for e in value]


class MoveAction(Model):
    kind: Literal["move"]
    to: UserPath
    # Resolved once at load: an action then never follows a link at its target folder.
    _expand = field_validator("to", mode="before")(resolve_root)


class RenameAction(Model):
    kind: Literal["rename"]
    name: str = Field(description="Template: {stem} {ext} {name} {date} {parent}.")


class CopyAction(Model):
    kind: Literal["copy"]
    to: UserPath
    _expand = field_validator("to", mode="before")(resolve_root)


class ConvertImageAction(Model):
    kind: Literal["convert_image"]
    format: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: int = Field(90, ge=1, le=100)
    to: UserPath | None = Field(
        None, description="Folder of the converted copy; default beside it."
    )
    max_megapixels: float = Field(
        50.0, gt=0, le=1000, description="Larger images are refused (decompression bombs)."
    )
    memory_mb: int = Field(
        1024, ge=256, le=65536, description="Address-space cap of the process that decodes."
    )
    timeout: float = Field(60.0, gt=0, le=3600, description="Seconds the decoding may take.")
    _expand = field_validator("to", mode="before")(resolve_root)


class CommandAction(Model):
    kind: Literal["command"]
    argv: list[str] = Field(
        min_length=1,
        description="Program and arguments, never through a shell; {path} expands, only as a"
        " whole argument after the program and never as a shell's or interpreter's code.",
    )
    timeout: float = Field(30.0, gt=0, le=3600)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment of the command besides PATH, HOME and LANG (nothing else of"
        " stillroom's own environment is passed on).",
    )

    @field_validator("argv")
    @classmethod
    def _path_placement(cls, value: list[str]) -> list[str]:
        found = argv_problem(value)
        if found is not None:
            raise ValueError(found)
        return value


ActionConfig = Annotated[
    MoveAction | RenameAction | CopyAction | ConvertImageAction | CommandAction,
    Field(discriminator="kind"),
]


class Automation(Model):
    """A user-written rule: files that match get the action."""

    name: str = Field(min_length=1)
    enabled: bool = True
    match: Match = Field(default_factory=Match)
    action: ActionConfig

    @field_validator("action", mode="wrap")
    @classmethod
    def _name_command_problems(cls, value: Any, handler: Any, info: Any) -> Any:
        """A command's misplaced {path} is reported with the automation's name."""
        try:
            return handler(value)
        except ValidationError as exc:
            argv = value.get("argv") if isinstance(value, dict) else None
            found = None
            if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
                found = argv_problem(argv) if exc.error_count() == 1 else None
            if found is None:  # not (only) a misplaced {path}: reported as it is
                raise
            name = info.data.get("name", "?")
            raise ValueError(f"automation {name!r}: {found}") from exc
