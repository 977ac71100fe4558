"""Periodic jobs of the daemon on APScheduler: retention, detection, nightly distillation."""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from stillroom.config import Config
from stillroom.daemon.children import Children
from stillroom.store import Store

log = logging.getLogger("stillroom.daemon")


def retention_job(store: Store, config: Callable[[], Config]) -> None:
    """Delete raw events past the configured age and size."""
    retention = config().retention
    deleted = store.apply_retention(retention.days, retention.max_mb * 1024 * 1024)
    if deleted:
        log.info("retention: deleted %d old events", deleted)


def make_scheduler(
    store: Store, config: Callable[[], Config], children: Children
) -> BackgroundScheduler:
    """A scheduler with the daemon's jobs; `config` is read at each run so SIGHUP applies."""
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
    scheduler.add_job(
        children.run,
        "cron",
        hour=2,
        minute=0,
        args=("distill", "distill", "--now"),
        id="distill",
        **common,
    )
    return scheduler
