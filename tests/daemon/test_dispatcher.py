"""The dispatcher through a stuck store and a failing handler: nothing dropped, never dies."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from daemon_harness import DaemonHarness, wait_until

from stillroom.daemon.bus import Dispatcher, transient
from stillroom.daemon.echo import EchoFilter
from stillroom.daemon.health import StoreHealth
from stillroom.daemon.spool import Spool
from stillroom.errors import StoreError
from stillroom.events import Event, FilePayload
from stillroom.service.hooks.deciders import Decider, Decision
from stillroom.service.hooks.executor import Executor
from stillroom.store import Store

BURST = 2_000
LOCKED_SECONDS = 10.0


@contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another connection holds the database's write lock, as a second process would."""
    con = sqlite3.connect(database, timeout=30, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def created(paths: list[str]) -> list[Event]:
    return [
        Event(source="filesystem", kind="file.created", payload=FilePayload(path=p, root="/r"))
        for p in paths
    ]


def stored_paths(database: Path) -> list[str]:
    con = sqlite3.connect(database, timeout=10)
    try:
        return [r[0] for r in con.execute("SELECT path FROM events ORDER BY id")]
    finally:
        con.close()


def make_dispatcher(
    store: Store, home: Path, deciders: list[Decider] | None = None, **options: object
) -> Dispatcher:
    echo = EchoFilter()
    return Dispatcher(
        store,
        Executor(store, on_effect=echo.expect),
        echo,
        deciders or [],
        spool=Spool(home / "data" / "spool.jsonl"),
        health_file=home / "bus.json",
        **options,
    )


def test_daemon_stores_every_file_of_a_burst_through_a_locked_database(
    daemon: DaemonHarness,
) -> None:
    proc = daemon.start()
    names = [f"burst-{i:04}.txt" for i in range(BURST)]
    started = time.monotonic()
    for name in names[: BURST // 2]:
        (daemon.downloads / name).write_text(name)
    daemon.wait(lambda: daemon.events("file.created"), what="the burst's first events")
    with locked(daemon.db):
        locked_at = time.monotonic()
        for name in names[BURST // 2 :]:
            (daemon.downloads / name).write_text(name)
        # Longer than the daemon's 5 s busy timeout: the dispatcher's own retry must carry it.
        stuck = wait_until(
            lambda: [
                line
                for line in daemon.cli("status").stdout.splitlines()
                if line.startswith("store: stuck for")
            ],
            timeout=LOCKED_SECONDS,
            what="status to report the stuck store",
        )
        assert "database is locked" in stuck[0] and "waiting" in stuck[0]
        time.sleep(max(0.0, locked_at + LOCKED_SECONDS - time.monotonic()))
    rows = daemon.wait(
        lambda: (
            found
            if len(found := daemon.query("SELECT path FROM events WHERE kind = 'file.created'"))
            >= BURST
            else None
        ),
        timeout=40,
        what="every file stored",
    )
    elapsed = time.monotonic() - started
    time.sleep(1.0)  # nothing late, nothing twice
    paths = [r[0] for r in daemon.query("SELECT path FROM events WHERE kind = 'file.created'")]
    assert len(rows) == BURST and sorted(paths) == [str(daemon.downloads / n) for n in names]
    status = daemon.cli("status").stdout.splitlines()
    assert status[:2] == [f"running (pid {proc.pid})", "store: ok"]
    log = daemon.log()
    assert log.count("cannot store events (database is locked)") == 1
    assert "the store works again after" in log
    assert daemon.stop(proc) == 0
    assert not (daemon.home / "data" / "spool.jsonl").exists()
    [again] = [line for line in log.splitlines() if "the store works again" in line]
    print(f"{BURST} files, locked {LOCKED_SECONDS:.0f} s, all stored after {elapsed:.1f} s;")
    print(again)


def test_events_past_the_memory_bound_wait_in_the_spool_in_order(
    store: Store, stillroom_home: Path
) -> None:
    fast = Store(store.path, busy_timeout=0.2)
    bus = make_dispatcher(fast, stillroom_home, memory_bound=100)
    spool = stillroom_home / "data" / "spool.jsonl"
    paths = [f"/r/f{i:04}" for i in range(1_500)]
    bus.start()
    try:
        with locked(store.path):
            for event in created(paths[:1_000]):
                bus.put(event)
            wait_until(spool.exists, timeout=10, what="the spool")
            assert stat.S_IMODE(spool.stat().st_mode) == 0o600
            for event in created(paths[1_000:]):
                bus.put(event)
            health = wait_until(
                lambda: (
                    (h := StoreHealth.read(bus.health_file or Path(), os.getpid()))
                    and h.waiting == 1_500
                    and h
                ),
                what="the waiting events counted",
            )
            assert health.stuck_since is not None and health.spooled >= 1_400
            assert "database is locked" in health.describe()
        wait_until(lambda: bus.stored == 1_500, timeout=30, what="everything stored")
        assert stored_paths(store.path) == paths
        assert not spool.exists()
        assert wait_until(
            lambda: (
                (h := StoreHealth.read(bus.health_file or Path(), os.getpid()))
                and h.stuck_since is None
                and h.waiting == 0
            )
        )
    finally:
        bus.stop()
        fast.close()


def test_stopping_while_stuck_spools_everything_for_the_next_start(
    store: Store, stillroom_home: Path
) -> None:
    fast = Store(store.path, busy_timeout=0.2)
    paths = [f"/r/g{i:03}" for i in range(300)]
    with locked(store.path):
        bus = make_dispatcher(fast, stillroom_home)
        bus.start()
        for event in created(paths):
            bus.put(event)
        wait_until(lambda: bus.health().stuck_since is not None, what="stuck")
        bus.stop()
        assert len(Spool(stillroom_home / "data" / "spool.jsonl")) == 300
    again = make_dispatcher(fast, stillroom_home)
    again.put(created(["/r/later"])[0])
    again.start()
    wait_until(lambda: again.stored == 301, what="the spool replayed")
    again.stop()
    fast.close()
    assert stored_paths(store.path) == [*paths, "/r/later"]
    assert not (stillroom_home / "data" / "spool.jsonl").exists()


class Exploding:
    """A decider with a bug that shows on one file."""

    name = "exploding"

    def decide(self, event: Event) -> Decision | None:
        if event.file().path.endswith("bad.txt"):
            raise RuntimeError("a bug in a decider")
        return None


def test_an_exception_for_one_event_does_not_stop_the_next(
    store: Store, stillroom_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="stillroom.daemon")
    bus = make_dispatcher(store, stillroom_home, [Exploding()])
    bus.start()
    try:
        for path in ("/r/a.txt", "/r/bad.txt"):
            bus.put(created([path])[0])
        wait_until(lambda: bus.stored == 2, what="two events")
        bus.put(created(["/r/c.txt"])[0])
        wait_until(lambda: bus.stored == 3, what="the event after the bad one")
        assert stored_paths(store.path) == ["/r/a.txt", "/r/bad.txt", "/r/c.txt"]
        [failure] = [r for r in caplog.records if r.exc_info]
        assert "failed; carrying on" in failure.getMessage()
        assert "a bug in a decider" in caplog.text
        assert bus._thread.is_alive()
    finally:
        bus.stop()


def test_which_store_errors_are_retried() -> None:
    assert transient(sqlite3.OperationalError("database is locked"))
    assert transient(StoreError("cannot open database"))
    assert not transient(sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert not transient(RuntimeError("a bug"))
