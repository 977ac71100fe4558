"""Nightly distillation that respects the user: when to start and stop the training child.

`decide` is the whole policy, pure: inside the schedule's window, with tasks queued, on AC
power, the machine quiet and the user away, the child starts; it stops when the user comes
back, the power is unplugged or the window ends. `NightlyDistill` is the scheduler's job
that reads the conditions every `check_seconds` and acts on the decision.

Choices the config leaves open:
- Power unknown (`on_ac` None: no battery, as on a desktop or a VM) counts as AC power.
- Load unknown (`cpu_percent` None: no sample yet, or the system monitor is off) does not
  defer training; load is only checked before a start, since once our child runs the load
  is mostly its own.
- No idle source (`idle_seconds` None: no input monitor, no logind): the window, power and
  load decide alone.
- The user is back when the idle time drops below `idle_minutes`: idle only grows without
  input, so that means input since the start, seen within one check. It is the start
  condition itself, so a stop is never followed by an immediate restart.
- At the window's end a running child is stopped: the user is usually back in the morning,
  and the unfinished task stays queued for the next night.
- A stopped task stays queued and is trained again from the start next time (tasks finished
  before the stop keep their new versions). A child that fails by itself is not restarted
  in the same window: it would fail again at every check.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from stillroom.config import Config, ScheduleConfig
from stillroom.daemon.children import Children
from stillroom.monitors.state import STATE, Conditions
from stillroom.registry import Registry
from stillroom.store import Store

log = logging.getLogger("stillroom.daemon")
JOB = "distill"  # the child's name in Children, and its log file logs/distill.log
# How a child ends on SIGTERM: `stillroom distill` exits 128 + 15 after cleaning up, a child
# not yet past its start dies of the signal. Not a failure, whoever sent it (the daemon's
# own shutdown stops its children first).
STOPPED = (128 + signal.SIGTERM, -signal.SIGTERM)

Action = Literal["start", "stop", "wait", "continue"]


@dataclass(frozen=True)
class Decision:
    """What to do now, why in words, and a short cause that names the rule."""

    action: Action
    reason: str
    cause: str


def local_now() -> datetime:
    """The local wall-clock time, which the window is written in."""
    return datetime.now().astimezone()


def window_opened(now: datetime, schedule: ScheduleConfig) -> datetime | None:
    """When the window that contains `now` opened, or None outside the window."""
    start, end = schedule.minutes()
    minute = now.hour * 60 + now.minute
    opened = now.replace(hour=start // 60, minute=start % 60, second=0, microsecond=0)
    if start < end:
        return opened if start <= minute < end else None
    if minute >= start:
        return opened
    return opened - timedelta(days=1) if minute < end else None


def decide(
    now: datetime, conditions: Conditions, schedule: ScheduleConfig, *, running: bool, queued: int
) -> Decision:
    """Start, stop, wait or continue the nightly training child."""
    idle, on_ac, cpu = conditions.idle_seconds, conditions.on_ac, conditions.cpu_percent
    away = schedule.idle_minutes * 60
    unplugged = schedule.require_ac and on_ac is False
    if running:
        if window_opened(now, schedule) is None:
            return Decision(
                "stop",
                f"the window {schedule.window} ended; the rest waits for the next night",
                "window-end",
            )
        if unplugged:
            return Decision("stop", "the power was unplugged", "unplugged")
        if idle is not None and idle < away:
            return Decision("stop", f"the user is back (input {idle:.0f} s ago)", "user-back")
        return Decision("continue", "the conditions still hold", "running")
    if window_opened(now, schedule) is None:
        return Decision("wait", f"outside the window {schedule.window}", "window")
    if queued == 0:
        return Decision("wait", "no task is queued", "queue")
    if unplugged:
        return Decision("wait", "on battery power", "battery")
    if cpu is not None and cpu >= schedule.max_cpu_percent:
        return Decision(
            "wait", f"the machine is busy (CPU {cpu:.0f}% >= {schedule.max_cpu_percent:g}%)", "busy"
        )
    if idle is not None and idle < away:
        return Decision(
            "wait",
            f"the user is active (input {idle:.0f} s ago; waiting for"
            f" {schedule.idle_minutes:g} min without input)",
            "active",
        )
    facts = [
        f"{queued} task(s) queued",
        "no idle source" if idle is None else f"idle {idle / 60:.0f} min",
        "on AC" if on_ac else ("power unknown" if on_ac is None else "on battery"),
        "load unknown" if cpu is None else f"CPU {cpu:.0f}%",
    ]
    return Decision("start", "in the window, " + ", ".join(facts), "ready")


class NightlyDistill:
    """The scheduler job: each `check()` decides and starts or stops `stillroom distill --now`.

    The child runs in its own thread (`Children.run` blocks), so a check returns at once;
    `close()` stops the child and joins that thread.
    """

    def __init__(
        self,
        store: Store,
        config: Callable[[], Config],
        children: Children,
        *,
        conditions: Callable[[], Conditions] = STATE.conditions,
        clock: Callable[[], datetime] = local_now,
    ) -> None:
        self.registry = Registry(store)
        self.config = config
        self.children = children
        self.conditions = conditions
        self.clock = clock
        self.exits: list[int | None] = []  # exit code of each child run, in order
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False  # we asked the running child to stop
        self._opened: datetime | None = None  # the window the current child started in
        self._failed_in: datetime | None = None  # the window whose run failed by itself
        self._failed_code: int | None = None
        self._said: tuple[str, str] | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def queued(self) -> int:
        return sum(1 for task in self.registry.tasks() if task.state == "queued")

    def check(self) -> Decision:
        """Read the conditions, decide, act; log the decision when it changes."""
        now, schedule = self.clock(), self.config().schedule
        running = self.running
        opened = window_opened(now, schedule)
        queued = self.queued() if opened is not None and not running else 0
        decision = decide(now, self.conditions(), schedule, running=running, queued=queued)
        if decision.action == "start" and self._closed:
            decision = Decision("wait", "the daemon is stopping", "closed")
        if decision.action == "start" and opened is not None and opened == self._failed_in:
            decision = Decision(
                "wait",
                f"the run in this window failed (exit {self._failed_code}, see logs/"
                f"{JOB}.log); the next try is in the next window",
                "failed",
            )
        self._say(decision)
        if decision.action == "start":
            self._start(opened)
        elif decision.action == "stop":
            self._stop()
        return decision

    def close(self) -> None:
        """Stop a running child and join its thread; no child starts after this."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._say(Decision("stop", "the daemon is stopping", "closed"))
        while thread is not None and thread.is_alive():
            self._stop()  # again if the child registered only after the last try
            thread.join(timeout=1)

    def _start(self, opened: datetime | None) -> None:
        with self._lock:
            if self._closed:
                return
            self._stopping, self._opened = False, opened
            self._thread = threading.Thread(target=self._run, name="nightly-distill", daemon=True)
            self._thread.start()

    def _stop(self) -> None:
        with self._lock:
            self._stopping = True
        self.children.stop(JOB)  # SIGTERM to the child's group; SIGKILL after 10 s

    def _run(self) -> None:
        try:
            code = self.children.run(JOB, "distill", "--now")
        except OSError as exc:  # no log file, no interpreter: it would fail every check
            log.error("nightly distillation could not start: %s", exc)
            code = -1
        with self._lock:
            self.exits.append(code)
            if code not in (0, None, *STOPPED) and not self._stopping:
                self._failed_in, self._failed_code = self._opened, code
                log.warning("nightly distillation failed by itself (exit %s)", code)

    def _say(self, decision: Decision) -> None:
        """Log a decision once per change of what it is and why, not at every check."""
        key = (decision.action, decision.cause)
        if key == self._said:
            return
        self._said = key
        if decision.action == "continue":  # the start said it already
            return
        verb = {"start": "starting", "stop": "stopping", "wait": "waiting"}[decision.action]
        log.info("nightly distillation: %s: %s", verb, decision.reason)
