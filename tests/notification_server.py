"""A private D-Bus session bus and a small org.freedesktop.Notifications server on it, for the
notifier's tests: the server records every Notify call and can press a notification's buttons
(tests import this)."""

from __future__ import annotations

import asyncio
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from dbus_fast import DBusError, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusDict, DBusInt32, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
CLOSED_DISMISSED = 2  # the spec's reason codes for NotificationClosed
CLOSED_BY_CALL = 3
# dbus-fast reads a postponed "None" return annotation as no signature at all, and refuses it.
NoReply = Annotated[None, DBusSignature("")]

# No <servicedir>: nothing on this machine can be activated on the test bus.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@contextmanager
def session_bus(timeout: float = 10.0) -> Iterator[str]:
    """Start a private dbus-daemon; yield its address once it listens; kill it after."""
    exe = shutil.which("dbus-daemon")
    if exe is None:
        raise RuntimeError("dbus-daemon not found: install the dbus package (apt-get install dbus)")
    # A short folder in /tmp: a unix socket path must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="stillroom-bus-"))
    config = folder / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=folder / "socket"))
    proc = subprocess.Popen(
        [exe, f"--config-file={config}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        address = proc.stdout.readline().strip() if ready else ""
        if not address:
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"dbus-daemon did not start within {timeout} s: {err.strip()}")
        yield address
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class NotifyCall:
    """One Notify call as the server received it."""

    id: int
    app_name: str
    replaces_id: int
    app_icon: str
    summary: str
    body: str
    actions: list[str]
    hints: dict[str, Any]
    expire_timeout: int

    @property
    def buttons(self) -> dict[str, str]:
        """Action key -> label (the spec sends them as a flat list of pairs)."""
        return dict(zip(self.actions[::2], self.actions[1::2], strict=True))


class _Notifications(ServiceInterface):
    def __init__(self, server: NotificationServer) -> None:
        super().__init__(NAME)
        self.server = server

    @dbus_method()
    def Notify(
        self,
        app_name: DBusStr,
        replaces_id: DBusUInt32,
        app_icon: DBusStr,
        summary: DBusStr,
        body: DBusStr,
        actions: Annotated[list[str], DBusSignature("as")],
        hints: DBusDict,
        expire_timeout: DBusInt32,
    ) -> DBusUInt32:
        if self.server.refuse:
            raise DBusError("org.freedesktop.DBus.Error.Failed", "refused for the test")
        return self.server._record(
            app_name,
            replaces_id,
            app_icon,
            summary,
            body,
            list(actions),
            {k: v.value for k, v in hints.items()},
            expire_timeout,
        )

    @dbus_method()
    def CloseNotification(self, nid: DBusUInt32) -> NoReply:
        self.NotificationClosed(nid, CLOSED_BY_CALL)

    @dbus_method()
    def GetCapabilities(self) -> Annotated[list[str], DBusSignature("as")]:
        return ["actions", "body"]

    @dbus_method()
    def GetServerInformation(self) -> Annotated[tuple[str, str, str, str], DBusSignature("ssss")]:
        return ("stillroom-test", "stillroom", "1.0", "1.2")

    @dbus_signal()
    def ActionInvoked(self, nid: int, key: str) -> Annotated[tuple[int, str], DBusSignature("us")]:
        return (nid, key)

    @dbus_signal()
    def NotificationClosed(
        self, nid: int, reason: int
    ) -> Annotated[tuple[int, int], DBusSignature("uu")]:
        return (nid, reason)


class NotificationServer:
    """org.freedesktop.Notifications on the bus at `address`, in its own thread and loop."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls: list[NotifyCall] = []
        self.refuse = False  # True: Notify answers with an error, as a broken server would
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="notification-server")
        self._bus: MessageBus | None = None
        self._iface = _Notifications(self)

    def start(self, timeout: float = 10.0) -> NotificationServer:
        """Connect, export the interface and own the name; returns once that is done."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout)
        return self

    async def _start(self) -> None:
        self._bus = await MessageBus(bus_address=self.address).connect()
        self._bus.export(PATH, self._iface)
        reply = await self._bus.request_name(NAME)
        if reply != RequestNameReply.PRIMARY_OWNER:
            raise RuntimeError(f"could not own {NAME}: {reply}")

    def stop(self) -> None:
        """Leave the bus and stop the thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop.close()

    async def _stop(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            await self._bus.wait_for_disconnect()

    def __enter__(self) -> NotificationServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(
        self,
        app_name: str,
        replaces_id: int,
        app_icon: str,
        summary: str,
        body: str,
        actions: list[str],
        hints: dict[str, Any],
        expire_timeout: int,
    ) -> int:
        with self._changed:
            nid = replaces_id or len(self.calls) + 1
            self.calls.append(
                NotifyCall(
                    nid,
                    app_name,
                    replaces_id,
                    app_icon,
                    summary,
                    body,
                    actions,
                    hints,
                    expire_timeout,
                )
            )
            self._changed.notify_all()
        return nid

    def wait_for(self, count: int, timeout: float = 5.0) -> list[NotifyCall]:
        """The calls so far, once there are at least `count` of them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.calls) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.calls)} Notify calls, wanted {count}")
                self._changed.wait(left)
            return list(self.calls)

    def invoke(self, nid: int, key: str) -> None:
        """Press a button (or the body, key "default"), as a user would: ActionInvoked, then
        NotificationClosed, as real servers send them."""

        async def emit() -> None:
            self._iface.ActionInvoked(nid, key)
            self._iface.NotificationClosed(nid, CLOSED_DISMISSED)

        asyncio.run_coroutine_threadsafe(emit(), self._loop).result(5)
