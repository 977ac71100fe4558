"""Periodic jobs of the daemon on APScheduler: retention, detection, nightly distillation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN, SchedulerEvent
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger

from stillroom.config import Config
from stillroom.daemon.children import Children
from stillroom.daemon.nightly import JOB, NightlyDistill, local_now
from stillroom.monitors.state import STATE, Conditions
from stillroom.store import Store

log = logging.getLogger("stillroom.daemon")


def retention_job(store: Store, config: Callable[[], Config]) -> None:
    """Delete raw events past the configured age and size."""
    retention = config().retention
    deleted = store.apply_retention(retention.days, retention.max_mb * 1024 * 1024)
    if deleted:
        log.info("retention: deleted %d old events", deleted)


def make_scheduler(
    store: Store,
    config: Callable[[], Config],
    children: Children,
    *,
    conditions: Callable[[], Conditions] = STATE.conditions,
    clock: Callable[[], datetime] = local_now,
) -> BackgroundScheduler:
    """A scheduler with the daemon's jobs; `config` is read at each run so SIGHUP applies
    (except the intervals, fixed at start)."""
    scheduler = BackgroundScheduler(daemon=True)
    common = {"coalesce": True, "max_instances": 1}
    scheduler.add_job(
        retention_job, "interval", hours=1, args=(store, config), id="retention", **common
    )
    scheduler.add_job(
        children.run,
        "interval",
        minutes=config().detector.interval_minutes,
        args=("detect", "detect"),
        id="detect",
        **common,
    )
    nightly = NightlyDistill(store, config, children, conditions=conditions, clock=clock)
    schedule_nightly(scheduler, nightly, config().schedule.check_seconds)
    return scheduler


def schedule_nightly(scheduler: BaseScheduler, nightly: NightlyDistill, seconds: float) -> Job:
    """Check the nightly conditions every `seconds`; the scheduler's shutdown closes `nightly`.

    One interval trigger rather than a cron at the window's start: idle and power change at
    any moment inside the window, a daemon started mid-window must catch up, and a check
    outside the window costs a clock reading.
    """

    def closed(event: SchedulerEvent) -> None:
        nightly.close()

    scheduler.add_listener(closed, EVENT_SCHEDULER_SHUTDOWN)
    return scheduler.add_job(
        nightly.check,
        IntervalTrigger(seconds=seconds),
        id=JOB,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=None,
    )
