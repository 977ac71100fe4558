"""The system monitor: real psutil readings, and the foreground application on a real Xvfb."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import Xlib
from daemon_harness import wait_until
from Xlib import Xatom
from Xlib.display import Display
from xserver import require, xvfb

from stillroom.config import Config, MonitorsConfig, SystemMonitorConfig
from stillroom.events import Event, ForegroundAppPayload, SystemPowerPayload
from stillroom.monitors.state import MachineState
from stillroom.monitors.system import Battery, SystemMonitor
from stillroom.store import Store

try:  # psutil's own battery record, wherever this version keeps it
    from psutil._ntuples import sbattery
except ImportError:
    from psutil._common import sbattery  # type: ignore[attr-defined,no-redef]

# A real X client, as toolkits write it: a titled window carrying its class and its pid.
CLIENT = """
import os, sys
from Xlib import Xatom
from Xlib.display import Display

display = Display()
screen = display.screen()
window = screen.root.create_window(0, 0, 200, 100, 0, screen.root_depth)
window.set_wm_name("SecretTitle of a private document")
window.set_wm_class("quokka", "Quokka")
window.change_property(display.intern_atom("_NET_WM_PID"), Xatom.CARDINAL, 32, [os.getpid()])
window.map()
display.sync()
print(window.id, flush=True)
sys.stdin.read()
"""

Start = Callable[..., tuple[SystemMonitor, list[Event], MachineState]]


@pytest.fixture
def start() -> Iterator[Start]:
    monitors: list[SystemMonitor] = []

    def run(
        battery: Battery | None = None, **settings: object
    ) -> tuple[SystemMonitor, list[Event], MachineState]:
        system = SystemMonitorConfig(**settings)
        events: list[Event] = []
        state = MachineState()
        monitor = SystemMonitor(
            Config(monitors=MonitorsConfig(system=system)),
            events.append,
            state=state,
            battery=battery,
        )
        monitors.append(monitor)
        monitor.start()
        return monitor, events, state

    yield run
    for monitor in monitors:
        monitor.stop()


def power_events(events: list[Event]) -> list[SystemPowerPayload]:
    return [e.payload for e in events if isinstance(e.payload, SystemPowerPayload)]


def app_names(events: list[Event]) -> list[str]:
    return [e.payload.name for e in events if isinstance(e.payload, ForegroundAppPayload)]


@pytest.mark.timeout(30)
def test_power_and_load_from_psutil(start: Start) -> None:
    reading = psutil.sensors_battery()
    expected = True if reading is None else reading.power_plugged
    monitor, events, state = start(interval_seconds=1)

    (power,) = power_events(events)  # once at start
    assert power.on_ac is expected
    assert state.conditions().on_ac is expected
    wait_until(lambda: state.conditions().cpu_percent is not None)
    cpu = state.conditions().cpu_percent
    assert cpu is not None and 0.0 <= cpu <= 100.0

    time.sleep(1.2)  # another sample, the same power source: no new event
    assert len(power_events(events)) == 1
    assert [e.kind for e in events] == ["system.power"]

    monitor.stop()
    assert state.conditions().on_ac is None  # stale readings would mislead the scheduler
    assert state.conditions().cpu_percent is None


@pytest.mark.timeout(30)
def test_power_events_only_when_the_source_changes(start: Start) -> None:
    # The battery is the one part this machine lacks: psutil's own record type stands in.
    readings = [
        sbattery(80, 7200, True),
        sbattery(79, 7000, False),
        sbattery(78, 6900, False),
        sbattery(78, 6900, True),
    ]
    seen: list[sbattery] = []

    def battery() -> sbattery:
        seen.append(readings[min(len(seen), len(readings) - 1)])
        return seen[-1]

    _, events, state = start(battery, interval_seconds=1)
    wait_until(lambda: len(seen) >= 4)
    wait_until(lambda: len(power_events(events)) == 3)
    assert [(p.on_ac, p.battery_percent) for p in power_events(events)] == [
        (True, 80.0),
        (False, 79.0),
        (True, 78.0),
    ]
    assert state.conditions().on_ac is True


@pytest.mark.timeout(30)
def test_power_unknown_when_psutil_cannot_tell(start: Start) -> None:
    # psutil reports power_plugged None when it cannot tell (its stubs say bool).
    _, events, state = start(lambda: sbattery(55, -2, None))  # type: ignore[arg-type]
    assert [(p.on_ac, p.battery_percent) for p in power_events(events)] == [(None, 55.0)]
    assert state.conditions().on_ac is None


def test_system_monitor_is_on_by_default() -> None:
    assert SystemMonitor.enabled(Config()) is True
    off = Config(monitors=MonitorsConfig(system=SystemMonitorConfig(enabled=False)))
    assert SystemMonitor.enabled(off) is False
    assert Config().monitors.system.foreground_app is False


@pytest.fixture
def display(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with xvfb() as name:
        monkeypatch.setenv("DISPLAY", name)
        monkeypatch.setenv("XDG_SESSION_TYPE", "x11")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        yield name


def activate(display: str, window: int) -> None:
    """Mark `window` active on the root window, as an EWMH window manager does."""
    connection = Display(display)
    try:
        root = connection.screen().root
        atom = connection.intern_atom("_NET_ACTIVE_WINDOW")
        root.change_property(atom, Xatom.WINDOW, 32, [window])
        connection.sync()
    finally:
        connection.close()


@pytest.mark.timeout(30)
def test_foreground_app_by_name_only(
    display: str, start: Start, tmp_path: Path, stillroom_home: Path
) -> None:
    # A program named quokka-app: a link to Python running a real X client that sets its pid.
    program = tmp_path / "quokka-app"
    program.symlink_to(sys.executable)
    env = {**os.environ, "PYTHONPATH": str(Path(Xlib.__file__).parent.parent)}
    client = subprocess.Popen(
        [str(program), "-c", CLIENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    xmessage = subprocess.Popen(
        [require("xmessage", "x11-utils"), "-title", "SecretTitle", "secret message body"],
        env={**os.environ, "DISPLAY": display},
    )
    try:
        assert client.stdout is not None
        quokka_window = int(client.stdout.readline())
        xmessage_window = _wait_for_window(display, "xmessage")

        monitor, events, _ = start(interval_seconds=1, foreground_app=True)
        assert app_names(events) == []  # no window is active yet

        activate(display, quokka_window)
        wait_until(lambda: app_names(events) == ["quokka-app"])  # the process, from _NET_WM_PID
        activate(display, xmessage_window)
        # xmessage sets no _NET_WM_PID: its WM_CLASS names it.
        wait_until(lambda: app_names(events) == ["quokka-app", "Xmessage"])
        time.sleep(1.2)  # still the same application: no new event
        assert app_names(events) == ["quokka-app", "Xmessage"]
        monitor.stop()
    finally:
        for proc in (client, xmessage):
            proc.kill()
            proc.wait()
        if client.stdin:
            client.stdin.close()
        if client.stdout:
            client.stdout.close()

    apps = [e for e in events if e.kind == "system.app"]
    assert all(e.payload.model_dump() == {"name": e.payload.name} for e in apps)
    path = stillroom_home / "data" / "stillroom.db"
    with Store(path) as db:
        db.add_events(events)
        assert app_names(db.events(kind="system.app")) == ["Xmessage", "quokka-app"]
    blob = b"".join(f.read_bytes() for f in path.parent.iterdir() if f.name.startswith(path.name))
    for secret in ("SecretTitle", "private document", "secret message body"):
        assert secret.encode() not in blob
        assert secret.encode("utf-16-le") not in blob


def _wait_for_window(display: str, name: str) -> int:
    """The top-level window whose WM_CLASS instance is `name`, once it is mapped."""
    connection = Display(display)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for window in connection.screen().root.query_tree().children:
                wm_class = window.get_wm_class()
                if wm_class and wm_class[0] == name:
                    return int(window.id)
            time.sleep(0.05)
        raise AssertionError(f"no {name} window appeared")
    finally:
        connection.close()


@pytest.mark.timeout(30)
def test_foreground_app_unavailable_on_wayland(
    start: Start, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stillroom.monitors.system")
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    _, events, _ = start(interval_seconds=1, foreground_app=True)
    time.sleep(1.2)
    assert [e.kind for e in events] == ["system.power"]
    lines = [r.getMessage() for r in caplog.records if r.name == "stillroom.monitors.system"]
    assert lines == [
        "system monitor: foreground application unavailable: "
        "Wayland does not tell other programs which window is in front"
    ]
