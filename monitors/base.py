"""The monitor interface and the registry that maps a config name to a monitor class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from stillroom.config import Config
from stillroom.events import Event

Emit = Callable[[Event], None]


class Monitor(ABC):
    """Watches one kind of thing and calls `emit` from its own threads; never blocks it."""

    name: ClassVar[str]

    def __init__(self, config: Config, emit: Emit) -> None:
        self.config = config
        self.emit = emit

    @classmethod
    def enabled(cls, config: Config) -> bool:
        """Whether the daemon should run this monitor under `config`; opt-in ones say no."""
        return True

    @abstractmethod
    def start(self) -> None:
        """Start watching; returns at once."""

    @abstractmethod
    def stop(self) -> None:
        """Stop watching and join every thread this monitor started."""


REGISTRY: dict[str, type[Monitor]] = {}


def register(cls: type[Monitor]) -> type[Monitor]:
    REGISTRY[cls.name] = cls
    return cls


def monitor_classes() -> dict[str, type[Monitor]]:
    """Every built-in monitor, imported on demand."""
    # Each module registers its class on import.
    from stillroom.monitors import filesystem, input, system  # noqa: F401

    return dict(REGISTRY)
