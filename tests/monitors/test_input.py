"""The input monitor on a real X server (Xvfb) driven by xdotool, its events in a real store."""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from daemon_harness import wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from xserver import xdotool, xvfb

from stillroom.config import Config, InputMonitorConfig, MonitorsConfig
from stillroom.errors import ConfigError
from stillroom.events import Event, InputActivityPayload
from stillroom.monitors.base import monitor_classes
from stillroom.monitors.input import STUCK_AFTER, InputMonitor, choose_source
from stillroom.monitors.shortcuts import KEY_NAMES, ORDER
from stillroom.monitors.state import MachineState
from stillroom.monitors.system import SystemMonitor
from stillroom.store import Store

MARKER = "quokkazebra"


@pytest.fixture
def display(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh Xvfb, and an environment that looks like an X11 session on it."""
    with xvfb() as name:
        monkeypatch.setenv("DISPLAY", name)
        monkeypatch.setenv("XDG_SESSION_TYPE", "x11")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        yield name


Start = Callable[..., tuple[InputMonitor, list[Event], MachineState]]


@pytest.fixture
def start() -> Iterator[Start]:
    """Start an InputMonitor with its own machine state; stopped after the test."""
    monitors: list[InputMonitor] = []

    def run(
        input_config: InputMonitorConfig | None = None, **settings: Any
    ) -> tuple[InputMonitor, list[Event], MachineState]:
        input_config = input_config or InputMonitorConfig(enabled=True, **settings)
        config = Config(monitors=MonitorsConfig(input=input_config))
        events: list[Event] = []
        state = MachineState()
        monitor = InputMonitor(config, events.append, state=state)
        monitors.append(monitor)
        monitor.start()
        return monitor, events, state

    yield run
    for monitor in monitors:
        monitor.stop()


def activity(events: list[Event]) -> list[InputActivityPayload]:
    return [e.payload for e in events if isinstance(e.payload, InputActivityPayload)]


def flush_until(
    monitor: InputMonitor, events: list[Event], done: Callable[[Counter[str]], bool]
) -> tuple[Counter[str], Counter[str]]:
    """Flush until the summed counts satisfy `done` (X delivers input asynchronously)."""

    def totals() -> tuple[Counter[str], Counter[str]]:
        counts: Counter[str] = Counter()
        shortcuts: Counter[str] = Counter()
        for p in activity(events):
            counts.update(keys=p.keys, clicks=p.clicks, scrolls=p.scrolls, moves=p.moves)
            shortcuts.update(p.shortcuts)
        return counts, shortcuts

    def reached() -> bool:
        monitor.flush()
        return done(totals()[0])

    # A flush forgets held modifiers: flushing while X still delivers a combination would cut
    # it in two, so wait until the listener has seen everything first.
    wait_until(lambda: done(totals()[0] + _pending(monitor)), timeout=10)
    wait_until(reached, timeout=10)
    time.sleep(0.3)  # anything late would show in one more flush
    monitor.flush()
    return totals()


@pytest.mark.timeout(30)
def test_idle_time_falls_on_input(display: str, start: Start) -> None:
    monitor, _, state = start()
    assert monitor.source == "pynput"
    time.sleep(1.5)
    before = state.conditions()
    assert before.idle_source == "pynput"
    assert before.idle_seconds is not None and before.idle_seconds >= 1.0

    xdotool(display, "mousemove", "200", "300")
    wait_until(lambda: (state.conditions().idle_seconds or 99) < 0.5)

    time.sleep(1.2)
    assert (state.conditions().idle_seconds or 0) >= 1.0
    xdotool(display, "key", "a")
    wait_until(lambda: (state.conditions().idle_seconds or 99) < 0.5)


@pytest.mark.timeout(30)
def test_shortcuts_are_counted_and_shift_letters_are_not(display: str, start: Start) -> None:
    monitor, events, _ = start()
    for _ in range(3):
        xdotool(display, "key", "ctrl+s")
    xdotool(display, "key", "alt+Tab")
    xdotool(display, "key", "shift+a", "shift+a")
    xdotool(display, "key", "b", "c", "1")
    xdotool(display, "click", "1")
    xdotool(display, "click", "5")  # button 5 is a scroll step
    presses = 3 * 2 + 2 + 2 * 2 + 3

    counts, shortcuts = flush_until(monitor, events, lambda c: c["keys"] >= presses)

    assert dict(shortcuts) == {"ctrl+s": 3, "alt+tab": 1}
    assert counts["keys"] >= presses
    assert counts["clicks"] == 1
    assert counts["scrolls"] == 1


@pytest.mark.timeout(30)
def test_typed_text_is_never_stored(
    display: str, start: Start, stillroom_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="stillroom")
    monitor, events, _ = start()
    xdotool(display, "type", "--delay", "5", MARKER)
    xdotool(display, "key", "ctrl+s", "ctrl+shift+t", "shift+q", "shift+u")
    presses = len(MARKER) + 2 + 3 + 2 + 2
    counts, shortcuts = flush_until(monitor, events, lambda c: c["keys"] >= presses)
    monitor.stop()
    assert counts["keys"] >= presses
    assert dict(shortcuts) == {"ctrl+s": 1, "ctrl+shift+t": 1}

    path = stillroom_home / "data" / "stillroom.db"
    with Store(path) as db:
        db.add_events(events)
        stored = [e for e in db.events(kind="input.activity", limit=1000)]
        assert len(stored) == len(activity(events))
        dumps = _database_bytes(path)  # with the write-ahead log still holding the rows
    dumps += _database_bytes(path)
    assert dumps
    for blob in [*dumps, *(e.model_dump_json().encode() for e in events)]:
        _assert_no_marker(blob)
    assert MARKER not in caplog.text


def _pending(monitor: InputMonitor) -> Counter[str]:
    with monitor._lock:
        return Counter(monitor._counts)


def _database_bytes(path: Path) -> list[bytes]:
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return [f.read_bytes() for f in files if f.exists()]


def _assert_no_marker(blob: bytes) -> None:
    for text in (MARKER, MARKER.upper()):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
            assert text.encode(encoding) not in blob, encoding
        assert text.encode().hex().encode() not in blob.lower()
    # Its letters in order with only non-letters between (JSON lists, wide encodings, ...).
    spread = b"[^A-Za-z]{0,8}".join(re.escape(c.encode()) for c in MARKER)
    assert re.search(spread, blob, re.IGNORECASE) is None


@pytest.mark.timeout(30)
def test_counts_flush_every_period_and_at_stop(display: str, start: Start) -> None:
    # Below the one-minute minimum (ConfigError from a file), only to keep the test short.
    monitor, events, _ = start(
        InputMonitorConfig(enabled=True).model_copy(update={"flush_seconds": 5})
    )
    assert monitor.flush() is None  # nothing happened yet: nothing stored
    xdotool(display, "click", "1")
    wait_until(lambda: len(activity(events)) == 1, timeout=8)
    (first,) = activity(events)
    assert first.clicks == 1 and first.keys == 0
    assert 4.0 <= first.seconds <= 7.0

    xdotool(display, "key", "ctrl+z")
    time.sleep(0.5)
    monitor.stop()
    assert activity(events)[-1].shortcuts == {"ctrl+z": 1}


@pytest.mark.timeout(30)
def test_stop_clears_the_idle_source(display: str, start: Start) -> None:
    monitor, _, state = start()
    assert state.conditions().idle_source == "pynput"
    monitor.stop()
    assert state.conditions().idle_seconds is None
    assert state.conditions().idle_source is None


@pytest.mark.timeout(30)
def test_without_any_source_it_logs_and_carries_on(
    monkeypatch: pytest.MonkeyPatch, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stillroom.monitors.input")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("XDG_SESSION_TYPE", "tty")
    monkeypatch.delenv("XDG_SESSION_ID", raising=False)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/stillroom-bus")
    monitor, _, state = start()
    assert monitor.source is None
    assert state.conditions().idle_seconds is None
    lines = [r.getMessage() for r in caplog.records if r.name == "stillroom.monitors.input"]
    assert len(lines) == 1
    assert lines[0].startswith("input monitor: no idle source: logind:")


@pytest.mark.timeout(30)
def test_forced_pynput_on_a_dead_display_does_not_fall_back(
    monkeypatch: pytest.MonkeyPatch, start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stillroom.monitors.input")
    monkeypatch.setenv("DISPLAY", ":4093")  # nothing listens there
    monitor, _, state = start(idle_source="pynput")
    assert monitor.source is None
    assert state.conditions().idle_source is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "stillroom.monitors.input"]
    assert "no idle source: pynput: cannot open X display :4093" in line


def test_choose_source() -> None:
    x11 = {"DISPLAY": ":1", "XDG_SESSION_TYPE": "x11"}
    assert choose_source("auto", x11, "linux") == ("pynput", "X11 display :1")
    wayland = {"DISPLAY": ":0", "XDG_SESSION_TYPE": "wayland"}
    assert choose_source("auto", wayland, "linux") == ("logind", "Wayland session")
    assert choose_source("auto", {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, "linux")[0] == (
        "logind"
    )
    assert choose_source("auto", {}, "linux") == ("logind", "no X display")
    assert choose_source("auto", {}, "darwin") == ("pynput", "macOS")
    assert choose_source("pynput", wayland, "linux") == ("pynput", "set in the config")
    assert choose_source("logind", x11, "linux") == ("logind", "set in the config")


def test_input_is_opt_in_and_registered() -> None:
    assert InputMonitor.enabled(Config()) is False
    on = Config(monitors=MonitorsConfig(input=InputMonitorConfig(enabled=True)))
    assert InputMonitor.enabled(on) is True
    classes = monitor_classes()
    assert classes["input"] is InputMonitor
    assert classes["system"] is SystemMonitor
    assert classes["filesystem"].enabled(Config()) is True


@pytest.mark.timeout(30)
def test_altgr_and_alt_with_letters_record_nothing(display: str, start: Start) -> None:
    monitor, events, _ = start()
    # AltGr is ISO_Level3_Shift (or Mode_switch, the AltGr pynput sees) on X; Alt+letter types
    # a character on many layouts. Only the last combination is a shortcut.
    combos = ["ISO_Level3_Shift+e", "ctrl+ISO_Level3_Shift+e", "Mode_switch+q"]
    combos += ["ctrl+Mode_switch+q", "alt+e", "alt+shift+2", "ctrl+s"]
    xdotool(display, "key", *combos)
    presses = sum(len(c.split("+")) for c in combos)
    counts, shortcuts = flush_until(monitor, events, lambda c: c["keys"] >= presses)
    assert counts["keys"] >= presses
    assert dict(shortcuts) == {"ctrl+s": 1}
    for event in events:
        assert event.model_dump_json().isascii()


@pytest.mark.timeout(30)
def test_a_stuck_modifier_is_forgotten(display: str, start: Start) -> None:
    monitor, events, _ = start()
    xdotool(display, "keydown", "ctrl")  # its release is never seen while the letters come
    time.sleep(STUCK_AFTER + 1)
    xdotool(display, "type", "--delay", "5", MARKER)
    xdotool(display, "keyup", "ctrl")
    xdotool(display, "key", "ctrl+s")
    presses = 1 + len(MARKER) + 2
    _, shortcuts = flush_until(monitor, events, lambda c: c["keys"] >= presses)
    assert dict(shortcuts) == {"ctrl+s": 1}


def test_the_flush_period_is_at_least_a_minute() -> None:
    with pytest.raises(ConfigError, match=r"monitors\.input\.flush_seconds: .*greater than or"):
        Config.from_data({"monitors": {"input": {"flush_seconds": 59}}})
    assert Config.from_data({"monitors": {"input": {"flush_seconds": 60}}})


# Per platform, with pynput's own key objects fed to the callbacks (no listener needed).


@pytest.fixture(scope="module")
def keyboard() -> Iterator[ModuleType]:
    """pynput.keyboard, imported once on a display (its X backend refuses to load without)."""
    with xvfb() as name:
        before = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = name
        try:
            from pynput import keyboard
        finally:
            if before is None:
                del os.environ["DISPLAY"]
            else:
                os.environ["DISPLAY"] = before
    yield keyboard


def fed(platform: str, *steps: tuple[str, Any]) -> InputActivityPayload | None:
    """What one flush stores after `steps` of ("press" | "release", key) on `platform`."""
    config = Config(monitors=MonitorsConfig(input=InputMonitorConfig(enabled=True)))
    events: list[Event] = []
    monitor = InputMonitor(config, events.append, state=MachineState(), platform=platform)
    for action, key in steps:
        (monitor._on_press if action == "press" else monitor._on_release)(key)
    event = monitor.flush()
    if event is None:
        return None
    assert isinstance(event.payload, InputActivityPayload)
    text = event.model_dump_json()
    assert text.isascii() and "\\u" not in text, text  # no character typed, in any form
    return event.payload


def combo(*keys: Any) -> list[tuple[str, Any]]:
    """Press the keys in order, release them in reverse order."""
    return [("press", k) for k in keys] + [("release", k) for k in reversed(keys)]


def test_windows_altgr_and_ctrl_alt_type_characters(keyboard: ModuleType) -> None:
    Key, KeyCode = keyboard.Key, keyboard.KeyCode
    euro = KeyCode(vk=0x45, char="€")  # VK_E
    # Windows reports AltGr as Ctrl plus AltGr; Ctrl+Alt is AltGr there too.
    for held in ([Key.ctrl_l, Key.alt_gr], [Key.ctrl_l, Key.alt_l], [Key.alt_gr]):
        payload = fed("win32", *combo(*held, euro))
        assert payload is not None and payload.shortcuts == {} and payload.keys == len(held) + 1
    payload = fed("win32", *combo(Key.ctrl_l, Key.alt_l, Key.delete))
    assert payload is not None and payload.shortcuts == {"ctrl+alt+delete": 1}


def test_macos_option_types_characters(keyboard: ModuleType) -> None:
    Key, KeyCode = keyboard.Key, keyboard.KeyCode
    steps = [
        *combo(Key.alt, KeyCode(vk=0x0E, char="\u00b4", is_dead=True)),  # Option+E: a dead acute
        *combo(Key.alt_r, KeyCode(vk=0x13, char="™")),  # Option+2
        *combo(Key.alt, Key.shift, KeyCode(vk=0x01, char="Í")),  # Option+Shift+S
    ]
    payload = fed("darwin", *steps)
    assert payload is not None and payload.shortcuts == {} and payload.keys == 7
    payload = fed("darwin", *combo(Key.cmd, Key.alt, KeyCode(vk=0x22, char="\u02c6")))
    assert payload is not None and payload.shortcuts == {"alt+super+i": 1}
    payload = fed("darwin", *combo(Key.alt, Key.left))
    assert payload is not None and payload.shortcuts == {"alt+left": 1}


def test_ctrl_c_as_a_control_character_is_named_by_its_key(keyboard: ModuleType) -> None:
    Key, KeyCode = keyboard.Key, keyboard.KeyCode
    cases = [("win32", 0x43), ("linux", ord("c")), ("darwin", 0x08)]
    for platform, vk in cases:
        payload = fed(platform, *combo(Key.ctrl, KeyCode(vk=vk, char="\x03")))
        assert payload is not None and payload.shortcuts == {"ctrl+c": 1}, platform


def test_a_non_ascii_key_is_named_by_its_code_or_dropped(keyboard: ModuleType) -> None:
    Key, KeyCode = keyboard.Key, keyboard.KeyCode
    # AZERTY: the key that types é is VK_2 on Windows, eacute/Eacute keysyms on X.
    payload = fed("win32", *combo(Key.ctrl, Key.shift, KeyCode(vk=0x32, char="É")))
    assert payload is not None and payload.shortcuts == {"ctrl+shift+2": 1}
    payload = fed("linux", *combo(Key.ctrl, Key.shift, KeyCode(vk=0xC9, char="É")))
    assert payload is not None and payload.shortcuts == {}
    cyrillic = KeyCode(vk=0x6D3, char="\u0441")  # Cyrillic_es, where C is on a Russian layout
    payload = fed("linux", *combo(Key.ctrl, cyrillic))
    assert payload is not None and payload.shortcuts == {}
    no_code = KeyCode(char="s")  # a character without a key code is never named
    payload = fed("win32", *combo(Key.ctrl, no_code))
    assert payload is not None and payload.shortcuts == {}


def test_held_modifiers_end_at_each_flush(keyboard: ModuleType) -> None:
    Key, KeyCode = keyboard.Key, keyboard.KeyCode
    config = Config(monitors=MonitorsConfig(input=InputMonitorConfig(enabled=True)))
    events: list[Event] = []
    monitor = InputMonitor(config, events.append, state=MachineState(), platform="linux")
    monitor._on_press(Key.ctrl)  # its release is lost
    monitor.flush()
    for char in "abc":
        monitor._on_press(KeyCode(vk=ord(char), char=char))
    event = monitor.flush()
    assert event is not None and isinstance(event.payload, InputActivityPayload)
    assert event.payload.shortcuts == {} and event.payload.keys == 3


SHORTCUT = re.compile(
    r"(?:ctrl\+)?(?:alt\+)?(?:super\+)?(?:shift\+)?(?:"
    + "|".join(sorted(KEY_NAMES, key=len, reverse=True))
    + ")"
)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_shortcut_names_come_only_from_the_allowlist(keyboard: ModuleType, data: Any) -> None:
    platform = data.draw(st.sampled_from(["linux", "win32", "darwin"]))
    code = st.one_of(st.none(), st.integers(0, 0x110000))
    key_codes = st.builds(keyboard.KeyCode, vk=code, char=st.one_of(st.none(), st.characters()))
    keys = st.one_of(st.sampled_from(list(keyboard.Key)), key_codes)
    steps = data.draw(st.lists(st.tuples(st.sampled_from(["press", "release"]), keys), max_size=30))
    payload = fed(platform, *steps)
    for name in payload.shortcuts if payload else {}:
        assert SHORTCUT.fullmatch(name), name
        assert name.split("+")[-1] not in ORDER
