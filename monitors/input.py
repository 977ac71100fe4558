"""The input monitor (opt-in): idle time for the scheduler, activity counts for the store.

Under X11 (and macOS, Windows) pynput's listeners see every key and pointer event; their
callbacks only bump counters. What is kept is counts and shortcut names (by key code, see
shortcuts.py), never a typed character nor anything ordered that could rebuild text. Under
Wayland pynput sees only X clients, so idle time comes from logind's IdleHint instead, and
nothing is counted.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stillroom.config import Config
from stillroom.events import Event, InputActivityPayload
from stillroom.monitors.base import Emit, Monitor, register
from stillroom.monitors.shortcuts import key_name, modifier, shortcut, x_base_keysyms
from stillroom.monitors.state import STATE, LastInput, MachineState

if TYPE_CHECKING:
    from stillroom.monitors.logind import LogindIdle

logger = logging.getLogger(__name__)

MOVE_GAP = 1.0  # seconds without motion that end one burst of pointer moves
# A key release the listener missed would make every later key look like a shortcut: held
# modifiers are forgotten after this long without a key event, and at every flush.
STUCK_AFTER = 5.0


def choose_source(
    setting: str, env: Mapping[str, str], platform: str = sys.platform
) -> tuple[str, str]:
    """The idle source a setting picks here, and why: ("pynput" | "logind", reason)."""
    if setting in ("pynput", "logind"):
        return setting, "set in the config"
    if platform in ("darwin", "win32"):
        return "pynput", "macOS" if platform == "darwin" else "Windows"
    if env.get("XDG_SESSION_TYPE") == "wayland" or env.get("WAYLAND_DISPLAY"):
        # Under XWayland pynput would see only X clients: a user typing elsewhere looks idle.
        return "logind", "Wayland session"
    if env.get("DISPLAY"):
        return "pynput", f"X11 display {env['DISPLAY']}"
    return "logind", "no X display"


@register
class InputMonitor(Monitor):
    """Idle time and activity counts from the keyboard and mouse (or logind's idle hint)."""

    name = "input"

    def __init__(
        self, config: Config, emit: Emit, *, state: MachineState = STATE, platform: str = ""
    ) -> None:
        super().__init__(config, emit)
        self.state = state
        self.platform = platform or sys.platform  # whose key codes and rules apply
        self.source: str | None = None
        self.last_input = LastInput()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._shortcuts: Counter[str] = Counter()
        self._held: set[str] = set()
        self._last_key = -1e9
        self._x_base: dict[int, int] = {}  # X keysym -> keysym of its key without modifiers
        self._last_move = -1e9
        self._period_start = time.monotonic()
        self._listeners: list[Any] = []
        self._keyboard: Any = None
        self._logind: LogindIdle | None = None
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return config.monitors.input.enabled

    def start(self) -> None:
        """Pick the idle source, say which in one log line, and start it; never raises."""
        if self.source is not None:
            raise RuntimeError("the input monitor is already running")
        source, reason = choose_source(self.config.monitors.input.idle_source, os.environ)
        problems: list[str] = []
        if source == "pynput":
            problem = self._start_pynput()
            if problem is None:
                return self._started("pynput", f"idle time from pynput ({reason})")
            problems.append(f"pynput: {problem}")
            if self.config.monitors.input.idle_source == "auto":
                source, reason = "logind", f"pynput unusable: {problem}"
        if source == "logind":
            problem = self._start_logind()
            if problem is None:
                return self._started("logind", f"idle time from logind IdleHint ({reason})")
            problems.append(f"logind: {problem}")
        self.state.set_idle_source(None, None)
        logger.warning("input monitor: no idle source: %s", "; ".join(problems))

    def stop(self) -> None:
        """Stop listening, store the last counts, clear the idle source, join every thread."""
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            _stop_listener(listener)
        for listener in listeners:
            _join_listener(listener)
        self._keyboard = None
        if self._logind is not None:
            self._logind.stop()
            self._logind = None
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            self._stopping.set()
            flusher.join()
            self.flush()
        if self.source is not None:
            self.state.set_idle_source(None, None)
        self.source = None

    def flush(self) -> Event | None:
        """Emit the counts since the last flush as one input.activity event, if any."""
        now = time.monotonic()
        with self._lock:
            counts, self._counts = self._counts, Counter()
            shortcuts, self._shortcuts = self._shortcuts, Counter()
            seconds, self._period_start = now - self._period_start, now
            self._held.clear()
        if not counts and not shortcuts:
            return None
        event = Event(
            source="input",
            kind="input.activity",
            payload=InputActivityPayload(
                seconds=round(seconds, 3),
                keys=counts["keys"],
                clicks=counts["clicks"],
                scrolls=counts["scrolls"],
                moves=counts["moves"],
                shortcuts=dict(sorted(shortcuts.items())),
                idle_seconds=round(self.last_input.idle_seconds(), 3),
            ),
        )
        self.emit(event)
        return event

    # sources

    def _started(self, source: str, line: str) -> None:
        self.source = source
        idle = self._pynput_idle if source == "pynput" else self._logind_idle
        self.state.set_idle_source(source, idle)
        logger.info("input monitor: %s", line)

    def _pynput_idle(self) -> float | None:
        # A listener ends early only when its X server went away: then nobody can tell.
        if not all(listener.is_alive() for listener in self._listeners):
            return None
        return self.last_input.idle_seconds()

    def _logind_idle(self) -> float | None:
        logind = self._logind
        return logind.idle_seconds() if logind is not None else None

    def _start_pynput(self) -> str | None:
        """Start both listeners; None on success, else what went wrong."""
        problem = _x_problem() if sys.platform.startswith("linux") else None
        if problem is not None:
            return problem
        try:
            from pynput import keyboard, mouse
        except ImportError as exc:
            return str(exc).splitlines()[0]
        self._keyboard = keyboard.Listener(on_press=self._on_press, on_release=self._on_release)
        pointer = mouse.Listener(
            on_move=self._on_move, on_click=self._on_click, on_scroll=self._on_scroll
        )
        self._listeners = [self._keyboard, pointer]
        for listener in self._listeners:
            listener.start()
        if not all(_wait_ready(listener, timeout=5.0) for listener in self._listeners):
            for listener in self._listeners:
                # Stopping a listener that never got ready would wait for it forever.
                if getattr(listener, "_ready", False):
                    listener.stop()
                    listener.join(2.0)
            self._listeners, self._keyboard = [], None
            return "its listeners did not start"
        self.last_input.touch()
        base = x_base_keysyms() if self.platform.startswith("linux") else {}
        with self._lock:
            self._period_start = time.monotonic()
            self._x_base = base
        self._stopping.clear()
        self._flusher = threading.Thread(target=self._flush_loop, name="stillroom-input-flush")
        self._flusher.daemon = True
        self._flusher.start()
        return None

    def _start_logind(self) -> str | None:
        """Start reading logind's idle hint; None on success, else what went wrong."""
        try:
            # dbus-fast is installed on Linux only.
            from stillroom.monitors.logind import LogindIdle, LogindUnavailable
        except ImportError as exc:
            return f"cannot talk to D-Bus: {exc}"
        logind = LogindIdle()
        try:
            logind.start()
        except LogindUnavailable as exc:
            return str(exc)
        self._logind = logind
        return None

    def _flush_loop(self) -> None:
        period = self.config.monitors.input.flush_seconds
        while not self._stopping.wait(period):
            self.flush()

    # pynput callbacks: they run on the listeners' threads for every event, so stay cheap.

    def _on_press(self, key: Any, injected: bool = False) -> None:
        now = time.monotonic()
        self.last_input.touch()
        held = modifier(key, self.platform)
        with self._lock:
            self._forget_stuck(now)
            self._counts["keys"] += 1
            if held is not None:
                self._held.add(held)
            elif self._held:
                # Only a combination is named, by its key code; a character is never looked at.
                combo = shortcut(
                    self._held, key_name(key, self.platform, self._x_base), self.platform
                )
                if combo is not None:
                    self._shortcuts[combo] += 1

    def _on_release(self, key: Any, injected: bool = False) -> None:
        now = time.monotonic()
        self.last_input.touch()
        released = modifier(key, self.platform)
        with self._lock:
            self._forget_stuck(now)
            if released is not None:
                self._held.discard(released)

    def _forget_stuck(self, now: float) -> None:
        """Held modifiers end after STUCK_AFTER seconds without a key event (lock held)."""
        if now - self._last_key > STUCK_AFTER:
            self._held.clear()
        self._last_key = now

    def _on_move(self, x: int, y: int, injected: bool = False) -> None:
        now = time.monotonic()
        self.last_input.touch()
        with self._lock:
            if now - self._last_move > MOVE_GAP:
                self._counts["moves"] += 1
            self._last_move = now

    def _on_click(self, x: int, y: int, button: Any, pressed: bool, injected: bool = False) -> None:
        self.last_input.touch()
        if pressed:
            with self._lock:
                self._counts["clicks"] += 1

    def _on_scroll(self, x: int, y: int, dx: int, dy: int, injected: bool = False) -> None:
        self.last_input.touch()
        with self._lock:
            self._counts["scrolls"] += 1


def _x_problem() -> str | None:
    """Why pynput cannot listen on this X display, or None when it can."""
    display = os.environ.get("DISPLAY")
    if not display:
        return "DISPLAY is not set"
    try:
        from Xlib import error
        from Xlib.display import Display
    except ImportError as exc:
        return str(exc)
    try:
        connection = Display(display)
    except (error.DisplayError, OSError) as exc:
        return f"cannot open X display {display}: {exc}"
    try:
        # pynput listens through the RECORD extension.
        if not connection.has_extension("RECORD"):
            return f"X display {display} lacks the RECORD extension"
    finally:
        connection.close()
    return None


def _stop_listener(listener: Any) -> None:
    """Stop a pynput listener so that its thread ends now, not at the next input event."""
    try:
        listener.stop()
    except Exception as exc:  # its X server went away: the thread has ended already
        logger.debug("input monitor: stopping a listener: %s", exc)
    # pynput (1.8) asks for the end of the XRecord context on the connection that is blocked
    # reading it, and never flushes that request: the thread waits for one more input event.
    # Asking on its other connection, and flushing, ends the recording at once.
    display, context = getattr(listener, "_display_stop", None), getattr(listener, "_context", None)
    if display is not None and context is not None:
        try:
            display.record_disable_context(context)
            display.flush()
        except Exception as exc:  # the thread may have closed it already: nothing left to end
            logger.debug("input monitor: ending the X recording: %s", exc)


def _join_listener(listener: Any) -> None:
    try:
        listener.join()  # pynput re-raises here what failed on the listener's thread
    except Exception as exc:
        logger.warning("input monitor: a listener failed: %s", exc)


def _wait_ready(listener: Any, timeout: float) -> bool:
    """pynput's own wait() has no timeout and hangs forever if the listener's thread died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if getattr(listener, "_ready", True):
            return True
        if not listener.is_alive() and listener.ident is not None:
            return False
        time.sleep(0.01)
    return False
