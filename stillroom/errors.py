"""Every exception stillroom raises on purpose. The CLI maps them to one-line messages."""

from __future__ import annotations


class StillroomError(Exception):
    """Base class: a failure the user can act on, with a message that says how."""

    exit_code = 1


class ConfigError(StillroomError):
    """A config file is missing, unreadable or invalid; names the file, key path and value."""

    exit_code = 2

    def __init__(self, path: object, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{self.path}: " + "; ".join(problems))


class StoreError(StillroomError):
    """The database cannot be opened or migrated."""


class ConflictError(StoreError):
    """Another process got there first: it changed the action's state, or holds the claim on
    the file. `holder` is the action holding the claim, `alive` whether its process runs."""

    def __init__(self, message: str, holder: int | None = None, alive: bool = True) -> None:
        super().__init__(message)
        self.holder = holder
        self.alive = alive


class DaemonError(StillroomError):
    """The daemon cannot start (already running, lock held) or cannot be reached."""

    exit_code = 3


class ActionError(StillroomError):
    """A file action could not be planned, executed or undone; nothing was overwritten."""


class UndoError(ActionError):
    """An action cannot be undone (its effects are gone, changed, or were never ours)."""


class TaskError(StillroomError):
    """A task does not exist, exists already, or cannot be trained or run as asked."""


class ModelError(StillroomError):
    """A model version's files are missing, changed since training, or unreadable."""


class TeacherError(StillroomError):
    """A teacher model could not be reached, refused a request, or would cost too much."""


class LogsError(StillroomError):
    """An llm logs database is missing, unreadable, or not one llm wrote."""


class ServiceError(StillroomError):
    """The OS service file cannot be written or removed (not stillroom's, or not writable)."""


class MonitorError(StillroomError):
    """A monitor's source (X display, logind, D-Bus) is unavailable."""
