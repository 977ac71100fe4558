"""The typed config: YAML becomes these pydantic models in one place, `Config.from_path`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from stillroom.config_automations import (
    ActionConfig,
    Automation,
    CommandAction,
    ConvertImageAction,
    CopyAction,
    DecidedKind,
    Match,
    MoveAction,
    RenameAction,
)
from stillroom.config_checks import CONFIG_VERSION, describe, migrate, show
from stillroom.config_gateway import GatewayConfig, Price, RouteConfig, UpstreamConfig
from stillroom.config_types import Model, UserPath, expand_path, resolve_root
from stillroom.errors import ConfigError

# The sections live in their own modules; callers import every config type from here.
__all__ = [
    "ActionConfig",
    "Automation",
    "CommandAction",
    "Config",
    "ConvertImageAction",
    "CopyAction",
    "DecidedKind",
    "GatewayConfig",
    "Match",
    "MoveAction",
    "Price",
    "RenameAction",
    "RouteConfig",
    "UpstreamConfig",
    "UserPath",
    "expand_path",
    "resolve_root",
]


class FolderConfig(Model):
    """An opt-in folder: stillroom records what happens to files arriving here."""

    path: UserPath
    recursive: bool = False
    ignore: list[str] = Field(
        default_factory=list, description="Globs matched against file names and relative paths."
    )

    _expand = field_validator("path", mode="before")(resolve_root)


class FilesystemConfig(Model):
    """Timings of the filesystem monitor."""

    settle_seconds: float = Field(
        1.0, ge=0, le=600, description="A new file is reported once its size stopped changing."
    )
    pair_window_seconds: float = Field(
        2.0, ge=0, le=60, description="How long a delete waits for its create (moves)."
    )
    partial_suffixes: list[str] = Field(
        default_factory=lambda: [".part", ".crdownload", ".tmp", ".download", ".partial"],
    )
    snippet_chars: int = Field(400, ge=0, le=10_000)


class DetectorConfig(Model):
    """When repeated behaviour becomes a candidate task."""

    min_support: int = Field(20, ge=2, description="Events a task needs before it is proposed.")
    min_days: int = Field(2, ge=1, description="Distinct days those events must span.")
    min_cluster_size: int = Field(3, ge=2, description="HDBSCAN: smallest group of signatures.")
    max_labels: int = Field(
        100, ge=2, description="More distinct outcomes than this: not classify."
    )
    min_label_count: int = Field(3, ge=1, description="Classify needs each label seen this often.")
    interval_minutes: int = Field(60, ge=1, description="How often the daemon runs detection.")
    learn_from_existing: bool = Field(
        False,
        description="With your consent, files already in the destination folders are"
        " labelled examples too (their folder is the label).",
    )
    review_seconds: int = Field(
        60, ge=1, description="How often the daemon reviews shadow students and live errors."
    )


class TeacherConfig(Model):
    """The large model that labels and synthesizes examples for tasks made by hand."""

    provider: Literal["openai", "anthropic"] = "openai"
    model: str = "gpt-4o-mini"
    max_retries: int = Field(3, ge=0, le=10)
    timeout_seconds: float = Field(60.0, gt=0, le=3600)


class ServerConfig(Model):
    host: str = Field(
        "127.0.0.1", description="Anything but loopback needs the local token on every route."
    )
    port: int = Field(8765, ge=1, le=65535)


class RuntimeConfig(Model):
    """How students are served: llama.cpp models loaded on demand, kept while used."""

    encoder: Literal["llama.cpp", "sentence-transformers"] = Field(
        "llama.cpp",
        description="Classifier inputs are embedded by the encoder as GGUF (no torch) or by"
        " sentence-transformers (the fallback; imports torch).",
    )
    memory_budget_mb: int = Field(
        1024, ge=64, description="Least recently used models are unloaded past this."
    )
    keep_alive_seconds: float = Field(
        600.0, gt=0, description="A model unused this long is unloaded (pinned ones stay)."
    )
    pinned: list[str] = Field(
        default_factory=list, description="Tasks whose models stay loaded: hot tasks."
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="llama.cpp threads (default: 1 for the encoder, half the cores for a base).",
    )
    base: str = Field(
        "smollm2-135m-instruct",
        description="Base LLM of generative students: the packaged SmolLM2 or a .gguf path.",
    )


class InputMonitorConfig(Model):
    """Keyboard and mouse activity (pynput, opt-in): idle time and shortcut counts, never the
    text typed."""

    enabled: bool = Field(False, description="Opt-in: record activity and shortcut counts.")
    idle_source: Literal["auto", "pynput", "logind"] = Field(
        "auto",
        description="auto: pynput under X11, logind's IdleHint under Wayland or without X.",
    )
    flush_seconds: float = Field(
        300.0,
        ge=60,
        le=86_400,
        description="Counts are stored as one event per this period (at least a minute, so that"
        " no event holds few enough keys to rebuild what was typed).",
    )


class SystemMonitorConfig(Model):
    """Power, battery and load (psutil); the foreground application only when opted in."""

    enabled: bool = True
    interval_seconds: float = Field(30.0, ge=1, le=3600, description="How often it samples.")
    foreground_app: bool = Field(
        False, description="Opt-in: record the foreground application's name as context."
    )


class MonitorsConfig(Model):
    input: InputMonitorConfig = Field(default_factory=InputMonitorConfig)
    system: SystemMonitorConfig = Field(default_factory=SystemMonitorConfig)


class NotificationsConfig(Model):
    """How proposals and pauses reach the user: desktop notifications, else the CLI."""

    desktop: bool = Field(True, description="Use the desktop's notification service if any.")
    max_per_day: int = Field(3, ge=0, le=100, description="Desktop notifications a day at most.")


def _clock(value: str) -> int:
    hours, _, minutes = value.partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"{value!r} is not a time like 01:00")
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ValueError(f"{value!r} is not a time of day")
    return h * 60 + m


class ScheduleConfig(Model):
    """When queued tasks are trained: inside the window, while you are away, on AC power and
    with the machine quiet. `stillroom distill --now` ignores all of it."""

    window: str = Field(
        "01:00-06:00", description="Local time, HH:MM-HH:MM; may cross midnight (22:00-06:00)."
    )
    idle_minutes: float = Field(
        15.0, ge=0, le=1440, description="No keyboard or mouse input for this long."
    )
    require_ac: bool = Field(True, description="Train only on AC power (laptops).")
    max_cpu_percent: float = Field(
        30.0, gt=0, le=100, description="Other load above this (whole machine) defers training."
    )
    check_seconds: float = Field(
        60.0, ge=1, le=3600, description="How often the conditions are checked in the window."
    )

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        start, sep, end = value.replace(" ", "").partition("-")
        if not sep:
            raise ValueError(f"{value!r} is not a window like 01:00-06:00")
        if _clock(start) == _clock(end):
            raise ValueError(f"{value!r} is an empty window")
        return f"{start}-{end}"

    def minutes(self) -> tuple[int, int]:
        """(start, end) in minutes after midnight; end < start crosses midnight."""
        start, _, end = self.window.partition("-")
        return _clock(start), _clock(end)


class FeedbackConfig(Model):
    """How your own moves judge a task's automated ones."""

    settle_days: float = Field(
        7.0,
        gt=0,
        allow_inf_nan=False,
        description="Moving or undoing a file a task filed within this many days is a"
        " correction; a move left alone this long counts as right.",
    )


class RetentionConfig(Model):
    days: int = Field(90, ge=1, description="Raw events older than this are deleted.")
    max_mb: int = Field(500, ge=1, description="Oldest raw events go first past this size.")


class Config(Model):
    """The whole config file."""

    version: int = CONFIG_VERSION
    folders: list[FolderConfig] = Field(default_factory=list)
    destinations: list[UserPath] = Field(
        default_factory=list,
        description="Roots where a file moved from an opt-in folder counts as the user filing it.",
    )
    automations: list[Automation] = Field(default_factory=list)
    filesystem: FilesystemConfig = Field(default_factory=FilesystemConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    _expand = field_validator("destinations", mode="before")(
        lambda v: [resolve_root(p) for p in v] if isinstance(v, list) else v
    )

    @field_validator("automations")
    @classmethod
    def _unique_names(cls, value: list[Automation]) -> list[Automation]:
        seen: set[str] = set()
        for automation in value:
            if automation.name in seen:
                raise ValueError(f"two automations are named {automation.name!r}")
            seen.add(automation.name)
        return value

    @classmethod
    def from_path(cls, path: Path) -> Config:
        """Read and validate one YAML file; any problem raises a ConfigError naming it."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(path, [f"cannot read: {exc.strerror or exc}"]) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(path, [f"not UTF-8 text (byte {exc.start})"]) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(path, [f"{where}not valid YAML ({problem})"]) from exc
        except RecursionError:  # PyYAML parses nesting recursively
            raise ConfigError(path, ["not valid YAML (nested too deeply)"]) from None
        return cls.from_data({} if data is None else data, path)

    @classmethod
    def from_data(cls, data: Any, path: object = "<config>") -> Config:
        if not isinstance(data, dict):
            raise ConfigError(path, [f"the file must be a mapping of keys, got {show(data)}"])
        data = migrate(data, path)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(path, [describe(err) for err in exc.errors()]) from None

    @classmethod
    def schema_dict(cls) -> dict[str, Any]:
        return cls.model_json_schema()
