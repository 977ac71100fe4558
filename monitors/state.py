"""What the activity monitors know about the machine right now, for the nightly scheduler.

The input monitor (or logind) sets the idle source; the system monitor sets power and load.
The scheduler reads one `Conditions` snapshot; tests build `Conditions` directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Conditions:
    """One reading of what decides whether training may run."""

    idle_seconds: float | None  # None: no idle source (no input monitor, no logind)
    on_ac: bool | None  # None: unknown; a machine without a battery counts as on AC
    cpu_percent: float | None  # whole machine, 0-100; None before the first sample
    idle_source: str | None = None


class MachineState:
    """Thread-safe: monitors write from their threads, the scheduler reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: Callable[[], float | None] | None = None
        self._idle_source: str | None = None
        self._on_ac: bool | None = None
        self._battery: float | None = None
        self._cpu: float | None = None

    def set_idle_source(self, name: str | None, seconds: Callable[[], float | None] | None) -> None:
        """`seconds()` returns the time since the last input, or None when it cannot tell."""
        with self._lock:
            self._idle_source, self._idle = name, seconds

    def set_power(self, on_ac: bool | None, battery_percent: float | None) -> None:
        with self._lock:
            self._on_ac, self._battery = on_ac, battery_percent

    def set_cpu(self, percent: float | None) -> None:
        with self._lock:
            self._cpu = percent

    def conditions(self) -> Conditions:
        with self._lock:
            idle, source = self._idle, self._idle_source
            on_ac, cpu = self._on_ac, self._cpu
        seconds = idle() if idle is not None else None
        return Conditions(seconds, on_ac, cpu, source if seconds is not None else None)


class LastInput:
    """Idle time from input callbacks: `touch()` on every key or mouse event."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def touch(self) -> None:
        self._last = self._clock()

    def idle_seconds(self) -> float:
        return max(0.0, self._clock() - self._last)


STATE = MachineState()
"""The daemon's one instance: monitors write it, the scheduler reads it."""
