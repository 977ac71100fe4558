"""Idle time from systemd-logind: the session's IdleHint over the system D-Bus.

The fallback idle source where pynput cannot see input (Wayland, no X display). A thread runs
a small asyncio loop with a dbus-fast connection; it reads the session's properties at start,
again on every PropertiesChanged signal and every `poll_seconds`, and caches them, so
`idle_seconds()` returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from stillroom.errors import MonitorError

logger = logging.getLogger(__name__)

LOGIN1 = "org.freedesktop.login1"
MANAGER_PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
SESSION = "org.freedesktop.login1.Session"
PROPERTIES = "org.freedesktop.DBus.Properties"
AUTO_PATH = "/org/freedesktop/login1/session/auto"


class LogindUnavailable(MonitorError):
    """logind cannot be reached, or this process belongs to no session it knows."""


class LogindIdle:
    """The caller's logind session, read from its own thread; start() raises when unusable."""

    def __init__(
        self, address: str | None = None, *, poll_seconds: float = 30.0, timeout: float = 3.0
    ) -> None:
        # None: DBUS_SYSTEM_BUS_ADDRESS, else the standard system bus socket.
        self.address = address
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.session: str | None = None
        self._lock = threading.Lock()
        self._hint: tuple[bool, int] | None = None  # (IdleHint, IdleSinceHintMonotonic in µs)
        self._ready = threading.Event()
        self._error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Connect and find the session; raises LogindUnavailable saying why."""
        if self._thread is not None:
            raise RuntimeError("the logind reader is already running")
        self._ready.clear()
        self._error = None
        # Made here, not in the thread, so that stop() always has them to signal.
        self._loop, self._stopping = asyncio.new_event_loop(), asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="stillroom-logind", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.timeout + 1.0):
            self._error = "logind did not answer in time"
        if self._error is not None:
            error = self._error
            self.stop()
            raise LogindUnavailable(error)

    def stop(self) -> None:
        """Close the connection and join the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        self._thread = None
        if thread is None:
            return
        if loop is not None and stopping is not None:
            # A closed loop raises RuntimeError: its thread is on its way out already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        thread.join()
        with self._lock:
            self._hint = None

    def idle_seconds(self) -> float | None:
        """Seconds since the session went idle; 0 while active; None when unknown."""
        with self._lock:
            hint = self._hint
        if hint is None:
            return None
        idle, since_us = hint
        if not idle or since_us <= 0:
            return 0.0
        # IdleSinceHintMonotonic is CLOCK_MONOTONIC, the clock of time.monotonic() on Linux.
        return max(0.0, time.monotonic() - since_us / 1e6)

    # the thread

    def _run(self) -> None:
        loop = self._loop
        assert loop is not None
        try:
            loop.run_until_complete(self._main())
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        assert self._stopping is not None
        try:
            bus = await asyncio.wait_for(self._connect(), self.timeout)
        except Exception as exc:  # any failure to connect means: no idle from logind
            self._error = _reason(exc)
            return
        self._ready.set()
        warned = False
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)
                if self._stopping.is_set():
                    break
                try:
                    if not bus.connected:
                        bus = await asyncio.wait_for(self._connect(), self.timeout)
                    else:
                        await self._read(bus)
                    warned = False
                except Exception as exc:  # logind went away: unknown until it answers again
                    with self._lock:
                        self._hint = None
                    if not warned:
                        logger.warning("logind idle hint unavailable: %s", _reason(exc))
                        warned = True
        finally:
            await _close(bus)

    async def _connect(self) -> MessageBus:
        bus = MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM)
        await bus.connect()
        try:
            self.session = await self._find_session(bus)
            await _call(
                bus,
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "AddMatch",
                "s",
                [
                    f"type='signal',sender='{LOGIN1}',interface='{PROPERTIES}',"
                    f"member='PropertiesChanged',path='{self.session}'"
                ],
            )
            bus.add_message_handler(self._on_message)
            await self._read(bus)
        except BaseException:
            await _close(bus)
            raise
        return bus

    async def _find_session(self, bus: MessageBus) -> str:
        """The caller's session: logind's `auto` alias, then by our pid, then XDG_SESSION_ID."""
        tried: list[str] = []
        try:
            auto = await _properties(bus, AUTO_PATH)
        except LogindUnavailable as exc:
            tried.append(f"session/auto: {exc}")
        else:
            # Signals come from the session's own path, not from the alias: look it up.
            with contextlib.suppress(LogindUnavailable):
                reply = await _call(
                    bus, LOGIN1, MANAGER_PATH, MANAGER, "GetSession", "s", [str(auto.get("Id"))]
                )
                return str(reply[0])
            return AUTO_PATH
        try:
            reply = await _call(
                bus, LOGIN1, MANAGER_PATH, MANAGER, "GetSessionByPID", "u", [os.getpid()]
            )
            return str(reply[0])
        except LogindUnavailable as exc:
            tried.append(f"GetSessionByPID: {exc}")
        session_id = os.environ.get("XDG_SESSION_ID")
        if session_id:
            try:
                reply = await _call(
                    bus, LOGIN1, MANAGER_PATH, MANAGER, "GetSession", "s", [session_id]
                )
                return str(reply[0])
            except LogindUnavailable as exc:
                tried.append(f"GetSession({session_id}): {exc}")
        else:
            tried.append("XDG_SESSION_ID is not set")
        raise LogindUnavailable("no logind session for this process (" + "; ".join(tried) + ")")

    async def _read(self, bus: MessageBus) -> None:
        assert self.session is not None
        values = await _properties(bus, self.session)
        idle, since = values.get("IdleHint"), values.get("IdleSinceHintMonotonic")
        if not isinstance(idle, bool):
            raise LogindUnavailable(f"{self.session} has no IdleHint")
        with self._lock:
            self._hint = (idle, int(since) if isinstance(since, int) else 0)

    def _on_message(self, message: Message) -> None:
        if (
            message.message_type == MessageType.SIGNAL
            and message.member == "PropertiesChanged"
            and message.path == self.session
            and message.body
            and message.body[0] == SESSION
        ):
            changed = {k: v.value for k, v in message.body[1].items()}
            with self._lock:
                old = self._hint or (False, 0)
                idle = changed.get("IdleHint", old[0])
                since = changed.get("IdleSinceHintMonotonic", old[1])
                self._hint = (bool(idle), int(since))


async def _call(
    bus: MessageBus,
    destination: str,
    path: str,
    interface: str,
    member: str,
    sig: str,
    body: list[Any],
) -> list[Any]:
    reply = await bus.call(
        Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=sig,
            body=body,
        )
    )
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body else ""
        raise LogindUnavailable(f"{reply.error_name}: {text}".rstrip(": "))
    return list(reply.body)


async def _properties(bus: MessageBus, path: str) -> dict[str, Any]:
    reply = await _call(bus, LOGIN1, path, PROPERTIES, "GetAll", "s", [SESSION])
    return {name: variant.value for name, variant in reply[0].items()}


async def _close(bus: MessageBus) -> None:
    bus.disconnect()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(bus.wait_for_disconnect(), 1.0)  # type: ignore[no-untyped-call]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "logind did not answer in time"
    if isinstance(exc, LogindUnavailable):
        return str(exc)
    return f"system bus unreachable: {exc}" if str(exc) else type(exc).__name__
