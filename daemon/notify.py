"""How stillroom tells the user something: proposals and pauses. Every notice goes to the log;
with a desktop, it also pops up (through desktop-notifier), and a proposal can be answered
from its buttons."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from stillroom.errors import StillroomError
from stillroom.paths import Paths, private_dir, private_file

if TYPE_CHECKING:
    import desktop_notifier

    from stillroom.config import Config
    from stillroom.daemon.proposals import Proposal

log = logging.getLogger("stillroom.daemon")
T = TypeVar("T")

SERVICE = "org.freedesktop.Notifications"
SENT_FILE = "notifications.json"
DAY = 86400.0
CALL_SECONDS = 10.0  # the longest a notice waits on the bus before it counts as failed
BUTTONS = (("accept", "Accept"), ("later", "Not now"), ("never", "Never"))


@dataclass(frozen=True)
class Notice:
    """One thing to tell: a proposal (answerable by id) or a pause."""

    kind: str  # "proposal" | "paused"
    task: str
    text: str
    proposal_id: int | None = None


class Notifier(Protocol):
    name: str

    def notify(self, notice: Notice) -> None:
        """Show the notice; must not raise for want of a desktop."""
        ...

    def close(self) -> None:
        """Stop whatever the notifier runs (threads, connections)."""
        ...


class LogNotifier:
    """Writes notices to the daemon log; `stillroom proposals` shows them too."""

    name = "log"

    def notify(self, notice: Notice) -> None:
        if notice.kind == "proposal":
            log.info(
                "proposal #%s for %s: %s  (answer: stillroom proposals accept|later|never %s)",
                notice.proposal_id,
                notice.task,
                notice.text,
                notice.proposal_id,
            )
        else:
            log.warning("%s %s: %s", notice.task, notice.kind, notice.text)

    def close(self) -> None:
        """Nothing to stop."""


class DailyLimit:
    """Desktop notifications sent in the last 24 hours (rolling), kept in a private JSON file
    so that a restart does not reset the count."""

    def __init__(self, path: Path, per_day: int, clock: Callable[[], float] = time.time) -> None:
        self.path, self.per_day, self.clock = path, per_day, clock
        self.sent = self._read()

    def _read(self) -> list[float]:
        try:
            sent = json.loads(self.path.read_text())["sent"]
            return [float(t) for t in sent]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "%s is unreadable (%s); counting desktop notifications afresh", self.path, exc
            )
            return []

    def _recent(self) -> list[float]:
        now = self.clock()
        return [t for t in self.sent if now - t < DAY]

    def allows(self) -> bool:
        """Whether one more desktop notification fits in the last 24 hours."""
        return len(self._recent()) < self.per_day

    def record(self) -> None:
        """Count one sent now, and write the count down."""
        self.sent = [*self._recent(), self.clock()]
        private_dir(self.path.parent)
        tmp = private_file(self.path.with_name(self.path.name + ".tmp"))
        tmp.write_text(json.dumps({"sent": self.sent}))
        os.replace(tmp, self.path)


class DesktopNotifier:
    """Pops notices up on the desktop (org.freedesktop.Notifications on Linux) and logs them.

    One thread runs the asyncio loop that desktop-notifier needs for button clicks; `close()`
    stops it. A proposal's Accept / Not now / Never buttons answer it as the CLI would, then
    call `on_answered` (on that thread: keep it short, e.g. wake the daemon). Without a
    notification service, or over `max_per_day`, notices go to the log only."""

    name = "desktop"

    def __init__(
        self,
        store_path: Path,
        *,
        max_per_day: int = 3,
        sent_file: Path | None = None,
        on_answered: Callable[[Proposal], None] | None = None,
        recheck_seconds: float = 300.0,
    ) -> None:
        self.store_path = store_path
        self.on_answered = on_answered
        self.recheck_seconds = recheck_seconds
        self.log = LogNotifier()
        self.limit = DailyLimit(sent_file or Paths.resolve().data_dir / SENT_FILE, max_per_day)
        self._lock = threading.Lock()
        self._closed = False
        self._desktop: desktop_notifier.DesktopNotifier | None = None
        self._missing: str | None = None  # why there is no notification service, if there isn't
        self._next_check = 0.0
        self._told = False  # whether the user was told that notifications are missing
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="stillroom-notify", daemon=True)
        self._thread.start()
        with self._lock:
            self._ready()

    def notify(self, notice: Notice) -> None:
        """Log the notice, then show it on the desktop if there is one and the day allows."""
        self.log.notify(notice)
        if threading.current_thread() is self._thread:
            return  # from on_answered: waiting on our own loop would deadlock
        with self._lock:
            if self._closed:
                return
            if not self.limit.allows():
                waits = (
                    f"proposal #{notice.proposal_id} waits in `stillroom proposals`"
                    if notice.kind == "proposal"
                    else "it is in the log only"
                )
                log.info(
                    "%d desktop notifications in the last 24 h already; %s",
                    self.limit.per_day,
                    waits,
                )
                return
            if not self._ready():
                return
            if self._call(self._send(notice), False):
                self.limit.record()
                if self._told:
                    self._told = False
                    log.info("desktop notification service found; proposals pop up again")
            else:
                self._drop_desktop()
                self._set_missing("the service refused the notification")

    def close(self) -> None:
        """Disconnect from the bus and stop the notifier's thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._drop_desktop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], failed: T) -> T:
        """Run a coroutine on the notifier's loop and wait for it; `failed` if it fails."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=CALL_SECONDS)
        except TimeoutError:
            future.cancel()
            log.debug("desktop notification call timed out after %.0f s", CALL_SECONDS)
        except Exception:  # a desktop that misbehaves must never take the daemon down
            log.debug("desktop notification call failed", exc_info=True)
        return failed

    def _ready(self) -> bool:
        """Whether a notification service is there; rechecked at most every recheck_seconds
        while it is missing, so a desktop that appears later is used."""
        if self._missing is not None and time.monotonic() < self._next_check:
            return False
        missing = self._call(_probe(), "the session bus did not answer")
        if missing is None:
            self._missing = None
            return True
        self._set_missing(missing)
        return False

    def _set_missing(self, reason: str) -> None:
        if not self._told:  # once per outage: it ends when a notification gets through
            self._told = True
            log.warning(
                "no desktop notification service (%s); proposals wait in `stillroom proposals`",
                reason,
            )
        self._missing = reason
        self._next_check = time.monotonic() + self.recheck_seconds

    def _drop_desktop(self) -> None:
        """Forget the desktop-notifier instance and its bus connection (maybe dead)."""
        if self._desktop is not None:
            self._call(_disconnect(self._desktop), None)
            self._desktop = None

    async def _send(self, notice: Notice) -> bool:
        """Show one notice; True when the service took it."""
        import desktop_notifier

        if self._desktop is None:
            self._desktop = desktop_notifier.DesktopNotifier(app_name="stillroom", app_icon=None)
        buttons: tuple[desktop_notifier.Button, ...] = ()
        if notice.kind == "proposal" and notice.proposal_id is not None:
            title = f"stillroom offers to take over {notice.task}"
            buttons = tuple(
                desktop_notifier.Button(
                    title=label,
                    identifier=reply,
                    on_pressed=partial(self._answer, notice.proposal_id, reply),
                )
                for reply, label in BUTTONS
            )
        else:
            title = f"stillroom {notice.kind} {notice.task}"
        taken = threading.Event()
        # desktop-notifier logs a failed send instead of raising; on_dispatched says it went.
        await self._desktop.send_notification(
            desktop_notifier.Notification(
                title, notice.text, buttons=buttons, on_dispatched=taken.set
            )
        )
        return taken.is_set()

    def _answer(self, proposal_id: int, reply: str) -> None:
        """A button was pressed: answer as `stillroom proposals <reply> <id>` would."""
        from stillroom.daemon.proposals import answer
        from stillroom.store import Store

        try:
            with Store(self.store_path) as store:
                proposal = answer(store, proposal_id, reply)
        except StillroomError as exc:  # answered meanwhile on the CLI, or gone
            log.warning("%s on proposal #%d's notification not taken: %s", reply, proposal_id, exc)
            return
        except Exception:  # runs on the notifier's loop: log, never raise into it
            log.exception("%s on proposal #%d's notification failed", reply, proposal_id)
            return
        log.info(
            "proposal #%d for %s: %s (from the notification)", proposal.id, proposal.task, reply
        )
        if self.on_answered is not None:
            try:
                self.on_answered(proposal)
            except Exception:  # the answer is stored; a failing daemon hook must not stop
                # the notifier's loop (the daemon still picks the change up within a minute)
                log.exception("after answering proposal #%d", proposal_id)


async def _probe() -> str | None:
    """None when a notification service can be reached, else why not. Only Linux is checked:
    elsewhere desktop-notifier talks to the system's own notification centre."""
    if sys.platform != "linux":
        return None
    from dbus_fast import Message, MessageType
    from dbus_fast.aio import MessageBus

    try:
        bus = await MessageBus().connect()
    except Exception as exc:  # a missing address, a dead socket, a refused login: all "no bus"
        return f"no session bus: {exc}"
    try:

        async def ask(member: str, *args: str) -> Any:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member=member,
                    signature="s" * len(args),
                    body=list(args),
                )
            )
            if reply.message_type != MessageType.METHOD_RETURN:
                raise RuntimeError(f"{member}: {reply.body}")
            return reply.body[0]

        # An activatable service (started on first use) counts as there.
        if await ask("NameHasOwner", SERVICE) or SERVICE in await ask("ListActivatableNames"):
            return None
        return f"nobody owns {SERVICE} on the session bus"
    except Exception as exc:
        return f"the session bus did not answer: {exc}"
    finally:
        await _close_bus(bus)


async def _close_bus(bus: Any) -> None:
    """Disconnect and wait until the socket is closed, so nothing is left to the loop."""
    bus.disconnect()
    with contextlib.suppress(Exception):  # a bus that died on its own has nothing to close
        await bus.wait_for_disconnect()


async def _disconnect(desktop: desktop_notifier.DesktopNotifier) -> None:
    """desktop-notifier has no close(): its D-Bus backend keeps its connection in `bus`."""
    from dbus_fast.aio import MessageBus

    bus = getattr(getattr(desktop, "_backend", None), "bus", None)
    if isinstance(bus, MessageBus):
        await _close_bus(bus)


def make_notifier(
    config: Config,
    store_path: Path,
    on_answered: Callable[[Proposal], None] | None = None,
) -> Notifier:
    """The desktop notifier when the config asks for it (it logs too), else the log alone."""
    if not config.notifications.desktop:
        return LogNotifier()
    return DesktopNotifier(
        store_path, max_per_day=config.notifications.max_per_day, on_answered=on_answered
    )


REGISTRY: dict[str, type[Notifier]] = {"log": LogNotifier, "desktop": DesktopNotifier}
