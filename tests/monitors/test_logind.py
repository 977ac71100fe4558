"""Idle time from logind's IdleHint, over a real private D-Bus daemon.

logind cannot run here, so a small stand-in owns org.freedesktop.login1 on that bus: the
Manager's GetSession/GetSessionByPID and a Session with IdleHint and IdleSinceHintMonotonic,
behind the same D-Bus interface the real one serves.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import wait_until
from dbus_fast import DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusObjectPath, DBusStr, DBusUInt32, DBusUInt64
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from stillroom.config import Config, InputMonitorConfig, MonitorsConfig
from stillroom.monitors.input import InputMonitor
from stillroom.monitors.logind import AUTO_PATH, LogindIdle, LogindUnavailable
from stillroom.monitors.state import MachineState

SESSION_ID = "c7"
SESSION_PATH = "/org/freedesktop/login1/session/c7"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:tmpdir={tmp}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class FakeSession(ServiceInterface):
    def __init__(self) -> None:
        super().__init__("org.freedesktop.login1.Session")
        self.idle = False
        self.since = 0

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> DBusStr:
        return SESSION_ID

    @dbus_property(access=PropertyAccess.READ)
    def IdleHint(self) -> DBusBool:
        return self.idle

    @dbus_property(access=PropertyAccess.READ)
    def IdleSinceHintMonotonic(self) -> DBusUInt64:
        return self.since


class FakeManager(ServiceInterface):
    def __init__(self, by_pid: bool) -> None:
        super().__init__("org.freedesktop.login1.Manager")
        self.by_pid = by_pid
        self.calls: list[str] = []

    @dbus_method()
    def GetSessionByPID(self, pid: DBusUInt32) -> DBusObjectPath:
        self.calls.append("GetSessionByPID")
        if not self.by_pid:
            # What logind answers for a process outside any session (a systemd service).
            raise DBusError(
                "org.freedesktop.login1.NoSessionForPID",
                f"PID {pid} does not belong to any known session",
            )
        return SESSION_PATH

    @dbus_method()
    def GetSession(self, session_id: DBusStr) -> DBusObjectPath:
        self.calls.append(f"GetSession({session_id})")
        if session_id != SESSION_ID:
            raise DBusError("org.freedesktop.login1.NoSuchSession", f"No session '{session_id}'")
        return SESSION_PATH


class FakeLogind:
    """org.freedesktop.login1 on `address`, served from its own thread and event loop."""

    def __init__(self, address: str, *, by_pid: bool = True, auto: bool = False) -> None:
        self.address = address
        self.session = FakeSession()
        # logind serves the caller's session under a second path too.
        self.alias = FakeSession() if auto else None
        self.manager = FakeManager(by_pid)
        self.error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._done: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-logind")

    def __enter__(self) -> FakeLogind:
        self._thread.start()
        assert self._ready.wait(10), "the fake logind did not start"
        if self.error is not None:
            self._thread.join(5)
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self._thread.join(10)

    def set_idle(self, idle: bool, since_us: int, signal: bool = True) -> None:
        """Change the session's idle hint like logind does, with PropertiesChanged or silently."""

        def change() -> None:
            for session in (self.session, self.alias):
                if session is None:
                    continue
                session.idle, session.since = idle, since_us
                if signal:
                    session.emit_properties_changed(
                        {"IdleHint": idle, "IdleSinceHintMonotonic": since_us}
                    )

        self.call(change)

    def call(self, fn: Callable[[], Any]) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # handed to the test by __enter__
            self.error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._done = asyncio.Event()
        bus = await MessageBus(bus_address=self.address).connect()
        bus.export("/org/freedesktop/login1", self.manager)
        bus.export(SESSION_PATH, self.session)
        if self.alias is not None:
            bus.export(AUTO_PATH, self.alias)
        await bus.request_name("org.freedesktop.login1")
        self._ready.set()
        await self._done.wait()
        bus.disconnect()
        await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    """A private dbus-daemon; its address."""
    binary = shutil.which("dbus-daemon")
    assert binary, "dbus-daemon is not installed: apt-get install dbus"
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(tmp=tmp_path))
    proc = subprocess.Popen(
        [binary, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("unix:"), f"dbus-daemon printed {address!r}"
        yield address
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def ninety_seconds_ago() -> int:
    return int((time.monotonic() - 90) * 1e6)


@pytest.fixture
def reader() -> Iterator[Callable[..., LogindIdle]]:
    readers: list[LogindIdle] = []

    def make(address: str, **options: Any) -> LogindIdle:
        idle = LogindIdle(address, **options)
        readers.append(idle)
        return idle

    yield make
    for idle in readers:
        idle.stop()


@pytest.mark.timeout(30)
def test_idle_follows_the_session_idle_hint(
    bus: str, reader: Callable[..., LogindIdle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_SESSION_ID", raising=False)
    with FakeLogind(bus) as logind:
        idle = reader(bus)
        idle.start()
        assert idle.session == SESSION_PATH  # session/auto is not there: found by our pid
        assert logind.manager.calls == ["GetSessionByPID"]
        assert idle.idle_seconds() == 0.0

        logind.set_idle(True, ninety_seconds_ago())
        wait_until(lambda: (idle.idle_seconds() or 0) > 0)
        assert 89.0 <= (idle.idle_seconds() or 0) <= 95.0

        logind.set_idle(False, 0)
        wait_until(lambda: idle.idle_seconds() == 0.0)
        idle.stop()
        assert idle.idle_seconds() is None


@pytest.mark.timeout(30)
def test_polling_sees_changes_that_came_without_a_signal(
    bus: str, reader: Callable[..., LogindIdle]
) -> None:
    with FakeLogind(bus) as logind:
        idle = reader(bus, poll_seconds=0.2)
        idle.start()
        logind.set_idle(True, ninety_seconds_ago(), signal=False)
        wait_until(lambda: (idle.idle_seconds() or 0) >= 89.0)


@pytest.mark.timeout(30)
def test_the_auto_session_comes_first(bus: str, reader: Callable[..., LogindIdle]) -> None:
    with FakeLogind(bus, auto=True) as logind:
        idle = reader(bus)
        logind.set_idle(True, ninety_seconds_ago())
        idle.start()
        # Through the alias to the session's own path, where its signals come from.
        assert logind.manager.calls == [f"GetSession({SESSION_ID})"]
        assert idle.session == SESSION_PATH
        assert 89.0 <= (idle.idle_seconds() or 0) <= 95.0
        logind.set_idle(False, 0)
        wait_until(lambda: idle.idle_seconds() == 0.0)


@pytest.mark.timeout(30)
def test_outside_a_session_it_falls_back_to_xdg_session_id(
    bus: str, reader: Callable[..., LogindIdle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_SESSION_ID", SESSION_ID)
    with FakeLogind(bus, by_pid=False) as logind:
        logind.set_idle(True, ninety_seconds_ago(), signal=False)
        idle = reader(bus)
        idle.start()
        assert logind.manager.calls == ["GetSessionByPID", f"GetSession({SESSION_ID})"]
        assert idle.session == SESSION_PATH
        assert 89.0 <= (idle.idle_seconds() or 0) <= 95.0


@pytest.mark.timeout(30)
def test_no_session_says_why(
    bus: str, reader: Callable[..., LogindIdle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_SESSION_ID", raising=False)
    with FakeLogind(bus, by_pid=False):
        idle = reader(bus)
        with pytest.raises(LogindUnavailable, match=r"NoSessionForPID.*XDG_SESSION_ID is not set"):
            idle.start()
        assert idle.idle_seconds() is None


@pytest.mark.timeout(30)
def test_unreachable_bus_or_no_logind_raise(
    bus: str, reader: Callable[..., LogindIdle], tmp_path: Path
) -> None:
    with pytest.raises(LogindUnavailable, match="system bus unreachable"):
        reader(f"unix:path={tmp_path}/no-bus").start()
    with pytest.raises(LogindUnavailable, match="ServiceUnknown"):
        reader(bus).start()  # a bus, but nobody owns org.freedesktop.login1


@pytest.mark.timeout(30)
def test_wayland_session_takes_idle_from_logind(
    bus: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stillroom.monitors.input")
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setenv("DISPLAY", ":0")  # XWayland: pynput would see only X clients
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus)
    state = MachineState()
    config = Config(monitors=MonitorsConfig(input=InputMonitorConfig(enabled=True)))
    with FakeLogind(bus) as logind:
        monitor = InputMonitor(config, lambda event: None, state=state)
        monitor.start()
        try:
            assert monitor.source == "logind"
            lines = [r.getMessage() for r in caplog.records if r.name == "stillroom.monitors.input"]
            assert lines == ["input monitor: idle time from logind IdleHint (Wayland session)"]
            assert state.conditions().idle_seconds == 0.0
            logind.set_idle(True, ninety_seconds_ago())
            wait_until(lambda: (state.conditions().idle_seconds or 0) > 0)
            reading = state.conditions()
            assert reading.idle_source == "logind"
            assert reading.idle_seconds is not None and 89.0 <= reading.idle_seconds <= 95.0
            logind.set_idle(False, 0)
            wait_until(lambda: state.conditions().idle_seconds == 0.0)
            assert monitor.flush() is None  # logind gives idle time, never activity counts
        finally:
            monitor.stop()
    assert state.conditions().idle_source is None
