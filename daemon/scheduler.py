"""Periodic jobs of the daemon on APScheduler: retention now; detection and training later."""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from stillroom.config import Config
from stillroom.store import Store

log = logging.getLogger("stillroom.daemon")


def retention_job(store: Store, config: Callable[[], Config]) -> None:
    """Delete raw events past the configured age and size."""
    retention = config().retention
    deleted = store.apply_retention(retention.days, retention.max_mb * 1024 * 1024)
    if deleted:
        log.info("retention: deleted %d old events", deleted)


def make_scheduler(store: Store, config: Callable[[], Config]) -> BackgroundScheduler:
    """A scheduler with the daemon's jobs; `config` is read at each run so SIGHUP applies."""
    scheduler = BackgroundScheduler(daemon=True)
    scheduler.add_job(
        retention_job,
        "interval",
        hours=1,
        args=(store, config),
        id="retention",
        coalesce=True,
        max_instances=1,
    )
    return scheduler
