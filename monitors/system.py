"""The system monitor: power source, battery and load for the scheduler (psutil).

One thread samples every `interval_seconds`: it updates the machine state, emits system.power
when the power source changes (and once at start), and, when the user opted in, system.app
when the foreground application changes, by name only, never a window title.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import psutil

from stillroom.config import Config
from stillroom.events import Event, ForegroundAppPayload, SystemPowerPayload
from stillroom.monitors.base import Emit, Monitor, register
from stillroom.monitors.state import STATE, MachineState

logger = logging.getLogger(__name__)

Battery = Callable[[], Any]  # psutil.sensors_battery: an sbattery, or None without a battery


def power(battery: Battery) -> tuple[bool | None, float | None]:
    """(on AC, battery percent). No battery means mains power; None when psutil cannot tell."""
    try:
        reading = battery()
    except (OSError, NotImplementedError, RuntimeError) as exc:
        logger.debug("battery unreadable: %s", exc)
        return None, None
    if reading is None:
        return True, None
    plugged = reading.power_plugged
    return (bool(plugged) if plugged is not None else None), float(reading.percent)


@register
class SystemMonitor(Monitor):
    """Power, battery and CPU load into the machine state; the foreground app when opted in."""

    name = "system"

    def __init__(
        self,
        config: Config,
        emit: Emit,
        *,
        state: MachineState = STATE,
        battery: Battery | None = None,
    ) -> None:
        super().__init__(config, emit)
        self.state = state
        # psutil has no sensors_battery on some platforms: read it as "cannot tell".
        default: Battery = getattr(psutil, "sensors_battery", _no_reading)
        self._battery = battery if battery is not None else default
        self._on_ac: bool | None = None
        self._app: str | None = None
        self._foreground: Foreground | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return config.monitors.system.enabled

    def start(self) -> None:
        """Sample power now (one system.power event), then every interval on a thread."""
        if self._thread is not None:
            raise RuntimeError("the system monitor is already running")
        psutil.cpu_percent(interval=None)  # the first call only sets psutil's reference point
        if self.config.monitors.system.foreground_app:
            self._foreground = Foreground.open()
        self._stopping.clear()
        self._sample_power(first=True)
        self._sample_app()
        self._thread = threading.Thread(target=self._run, name="stillroom-system", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, join the thread, and leave power and load unknown."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join()
            self.state.set_power(None, None)
            self.state.set_cpu(None)
        if self._foreground is not None:
            self._foreground.close()
            self._foreground = None

    def _run(self) -> None:
        while not self._stopping.wait(self.config.monitors.system.interval_seconds):
            self.state.set_cpu(psutil.cpu_percent(interval=None))
            self._sample_power(first=False)
            self._sample_app()

    def _sample_power(self, first: bool) -> None:
        on_ac, percent = power(self._battery)
        self.state.set_power(on_ac, percent)
        if first or on_ac != self._on_ac:
            self._on_ac = on_ac
            payload = SystemPowerPayload(on_ac=on_ac, battery_percent=percent)
            self.emit(Event(source="system", kind="system.power", payload=payload))

    def _sample_app(self) -> None:
        if self._foreground is None:
            return
        name = self._foreground.app()
        if name is not None and name != self._app:
            self._app = name
            self.emit(
                Event(source="system", kind="system.app", payload=ForegroundAppPayload(name=name))
            )


class Foreground:
    """The foreground application's name; X11 (EWMH) and macOS (AppKit), else unavailable."""

    def __init__(self, read: Callable[[], str | None], close: Callable[[], None]) -> None:
        self._read, self._close = read, close
        self._warned = False

    @classmethod
    def open(cls) -> Foreground | None:
        """A reader for this session, or None (logged once) when none works here."""
        reason: str
        if sys.platform == "darwin":
            try:
                from AppKit import NSWorkspace
            except ImportError:
                reason = "macOS without pyobjc (pip install pyobjc-framework-Cocoa)"
            else:
                workspace = NSWorkspace.sharedWorkspace()
                return cls(lambda: _mac_app(workspace), lambda: None)
        elif os.environ.get("XDG_SESSION_TYPE") == "wayland" or os.environ.get("WAYLAND_DISPLAY"):
            reason = "Wayland does not tell other programs which window is in front"
        elif os.environ.get("DISPLAY"):
            try:
                from Xlib.display import Display
                from Xlib.error import DisplayError

                display = Display()
            except (ImportError, DisplayError, OSError) as exc:
                reason = f"cannot open X display {os.environ['DISPLAY']}: {exc}"
            else:
                return cls(lambda: _x_app(display), display.close)
        else:
            reason = "no X display"
        logger.info("system monitor: foreground application unavailable: %s", reason)
        return None

    def app(self) -> str | None:
        try:
            return self._read()
        except Exception as exc:  # a window closing mid-read, a lost display: try again later
            if not self._warned:
                logger.info("system monitor: foreground application unreadable: %s", exc)
                self._warned = True
            return None

    def close(self) -> None:
        self._close()


def _x_app(display: Any) -> str | None:
    """EWMH: the root's _NET_ACTIVE_WINDOW, its _NET_WM_PID's process name, else WM_CLASS."""
    from Xlib import X

    root = display.screen().root
    active = root.get_full_property(display.intern_atom("_NET_ACTIVE_WINDOW"), X.AnyPropertyType)
    if active is None or not active.value or not active.value[0]:
        return None
    window = display.create_resource_object("window", int(active.value[0]))
    pid = window.get_full_property(display.intern_atom("_NET_WM_PID"), X.AnyPropertyType)
    if pid is not None and pid.value:
        try:
            return str(psutil.Process(int(pid.value[0])).name())
        except psutil.Error:
            pass  # another machine's client, or already gone: fall back to its class
    wm_class = window.get_wm_class()
    return str(wm_class[1]) if wm_class else None


def _mac_app(workspace: Any) -> str | None:
    app = workspace.frontmostApplication()
    return str(app.localizedName()) if app is not None else None


def _no_reading() -> None:
    raise NotImplementedError("psutil cannot read a battery on this platform")
