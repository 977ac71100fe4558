"""Nightly distillation: the decision table, the real APScheduler job starting and stopping a
real child, and a real `stillroom distill --now` stopped mid-run and resumed cleanly."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from stillroom.config import Config, ScheduleConfig
from stillroom.daemon.children import Children
from stillroom.daemon.nightly import NightlyDistill, decide, window_opened
from stillroom.daemon.scheduler import make_scheduler, schedule_nightly
from stillroom.monitors.state import Conditions
from stillroom.paths import Paths
from stillroom.registry import ModelVersion, Registry, Task
from stillroom.store import Store
from stillroom.trainers.distill import (
    STOPPED_EXIT,
    Stopped,
    committing,
    distill_classifier,
    stop_on_sigterm,
    task_done,
)

if TYPE_CHECKING:
    from stillroom.service.encoder import Encoder

NIGHT = ScheduleConfig()  # 01:00-06:00, 15 idle minutes, on AC, CPU below 30%
LATE = ScheduleConfig(window="22:00-06:00")  # crosses midnight
ANY_POWER = ScheduleConfig(require_ac=False)
ANY_IDLE = ScheduleConfig(idle_minutes=0)
AWAY = Conditions(idle_seconds=20 * 60, on_ac=True, cpu_percent=5.0, idle_source="pynput")
BACK = replace(AWAY, idle_seconds=3.0)


def at(hour: int, minute: int = 0, day: int = 14) -> datetime:
    return datetime(2026, 3, day, hour, minute).astimezone()


# -- the decision table -------------------------------------------------------------------

IDLE = [
    # (time, conditions, schedule, queued) -> (action, cause), with nothing running
    (at(2), AWAY, NIGHT, 2, "start", "ready"),
    (at(1), AWAY, NIGHT, 1, "start", "ready"),  # the window's first minute
    (at(0, 59), AWAY, NIGHT, 1, "wait", "window"),
    (at(6), AWAY, NIGHT, 1, "wait", "window"),  # the end is not inside
    (at(14), AWAY, NIGHT, 1, "wait", "window"),
    (at(2), AWAY, NIGHT, 0, "wait", "queue"),
    (at(2), BACK, NIGHT, 1, "wait", "active"),
    (at(2), replace(AWAY, idle_seconds=14 * 60), NIGHT, 1, "wait", "active"),
    (at(2), replace(AWAY, on_ac=False), NIGHT, 1, "wait", "battery"),
    (at(2), replace(AWAY, on_ac=False), ANY_POWER, 1, "start", "ready"),
    (at(2), replace(AWAY, on_ac=None), NIGHT, 1, "start", "ready"),  # no battery: AC
    (at(2), replace(AWAY, cpu_percent=30.0), NIGHT, 1, "wait", "busy"),
    (at(2), replace(AWAY, cpu_percent=None), NIGHT, 1, "start", "ready"),
    (at(2), replace(AWAY, idle_seconds=None, idle_source=None), NIGHT, 1, "start", "ready"),
    (at(2), Conditions(None, False, 5.0), NIGHT, 1, "wait", "battery"),
    (at(2), Conditions(None, True, 80.0), NIGHT, 1, "wait", "busy"),
    (at(2), BACK, ANY_IDLE, 1, "start", "ready"),
    (at(23, 30), AWAY, LATE, 1, "start", "ready"),
    (at(3), AWAY, LATE, 1, "start", "ready"),
    (at(21, 59), AWAY, LATE, 1, "wait", "window"),
    (at(12), AWAY, LATE, 1, "wait", "window"),
    (at(23, 30), BACK, LATE, 1, "wait", "active"),
]

RUNNING = [
    # (time, conditions, schedule) -> (action, cause), with the child running
    (at(2), AWAY, NIGHT, "continue", "running"),
    (at(2), BACK, NIGHT, "stop", "user-back"),
    (at(2), replace(AWAY, idle_seconds=14 * 60), NIGHT, "stop", "user-back"),
    (at(2), replace(AWAY, on_ac=False), NIGHT, "stop", "unplugged"),
    (at(2), replace(AWAY, on_ac=None), NIGHT, "continue", "running"),
    (at(2), replace(AWAY, cpu_percent=100.0), NIGHT, "continue", "running"),  # our own load
    (at(2), Conditions(None, True, 90.0), NIGHT, "continue", "running"),
    (at(6), AWAY, NIGHT, "stop", "window-end"),
    (at(6, 30), AWAY, LATE, "stop", "window-end"),
    (at(0, 30), AWAY, LATE, "continue", "running"),
    (at(2), replace(AWAY, on_ac=False), ANY_POWER, "continue", "running"),
    (at(2), BACK, ANY_IDLE, "continue", "running"),
]


@pytest.mark.parametrize(("now", "conditions", "schedule", "queued", "action", "cause"), IDLE)
def test_decide_when_nothing_runs(
    now: datetime,
    conditions: Conditions,
    schedule: ScheduleConfig,
    queued: int,
    action: str,
    cause: str,
) -> None:
    decision = decide(now, conditions, schedule, running=False, queued=queued)
    assert (decision.action, decision.cause) == (action, cause), decision.reason


@pytest.mark.parametrize(("now", "conditions", "schedule", "action", "cause"), RUNNING)
def test_decide_while_running(
    now: datetime, conditions: Conditions, schedule: ScheduleConfig, action: str, cause: str
) -> None:
    # Nothing queued any more: a running child still finishes what it has.
    decision = decide(now, conditions, schedule, running=True, queued=0)
    assert (decision.action, decision.cause) == (action, cause), decision.reason


def test_reasons_say_why() -> None:
    start = decide(at(2), AWAY, NIGHT, running=False, queued=2)
    assert start.reason == "in the window, 2 task(s) queued, idle 20 min, on AC, CPU 5%"
    blind = decide(at(2), Conditions(None, None, None), NIGHT, running=False, queued=1)
    assert "no idle source, power unknown, load unknown" in blind.reason
    assert "input 3 s ago" in decide(at(2), BACK, NIGHT, running=True, queued=0).reason
    busy = decide(at(2), replace(AWAY, cpu_percent=55.0), NIGHT, running=False, queued=1)
    assert busy.reason == "the machine is busy (CPU 55% >= 30%)"
    end = decide(at(6), AWAY, NIGHT, running=True, queued=1)
    assert end.reason == "the window 01:00-06:00 ended; the rest waits for the next night"


def test_window_opened_across_midnight() -> None:
    assert window_opened(at(3), LATE) == at(22, 0, day=13)
    assert window_opened(at(23), LATE) == at(22, 0, day=14)
    assert window_opened(at(3), NIGHT) == at(1, 0, day=14)
    assert window_opened(at(7), LATE) is None


# -- the real scheduler with an observable child ------------------------------------------

CHILD = """
import os, signal, sys, time
from pathlib import Path

out = Path(sys.argv[1])
pid = os.getpid()

def stop(signum, frame):
    (out / f"{pid}.term").write_text("SIGTERM")
    sys.exit(143)

signal.signal(signal.SIGTERM, stop)
(out / f"{pid}.args").write_text(" ".join(sys.argv[2:]))
if os.environ.get("CHILD_FAILS"):
    sys.exit(3)
while True:
    time.sleep(0.05)
"""


class Box:
    """What the monitors would say and what the clock reads; the test changes both."""

    def __init__(self, conditions: Conditions, now: datetime) -> None:
        self.conditions, self.now = conditions, now


def wait_for(what: Callable[[], Any], seconds: float, message: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := what()):
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
    return found


def queue_task(store: Store, name: str = "inbox") -> Task:
    registry = Registry(store)
    return registry.update_task(registry.create_task(name, "classify"), state="queued")


@pytest.fixture
def watched(tmp_path: Path) -> tuple[Children, Path]:
    """Children whose `distill` child is a small script that records its start and SIGTERM."""
    script, out, logs = tmp_path / "child.py", tmp_path / "out", tmp_path / "logs"
    script.write_text(CHILD)
    out.mkdir()
    logs.mkdir()
    return Children(logs, command=(sys.executable, str(script), str(out))), out


@pytest.fixture
def box() -> Box:
    return Box(BACK, at(2))


@pytest.fixture
def nightly(store: Store, watched: tuple[Children, Path], box: Box) -> Iterator[NightlyDistill]:
    config = Config()
    job = NightlyDistill(
        store,
        lambda: config,
        watched[0],
        conditions=lambda: box.conditions,
        clock=lambda: box.now,
    )
    queue_task(store)
    scheduler = BackgroundScheduler()
    schedule_nightly(scheduler, job, 0.2)
    scheduler.start()
    yield job
    scheduler.shutdown(wait=True)  # closes the job: stops its child, joins its thread
    assert not job.running


def started(out: Path) -> list[int]:
    return sorted(int(p.stem) for p in out.glob("*.args"))


@pytest.mark.timeout(60)
def test_scheduler_starts_stops_and_restarts_the_child(
    store: Store,
    watched: tuple[Children, Path],
    box: Box,
    nightly: NightlyDistill,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="stillroom.daemon")
    out = watched[1]
    time.sleep(1.0)  # five checks while the user is active: nothing starts
    assert started(out) == []
    box.conditions = AWAY
    (first,) = wait_for(lambda: started(out), 10, "the child never started")
    assert (out / f"{first}.args").read_text() == "distill --now"
    assert psutil.Process(first).is_running()

    box.conditions = BACK  # the user touches the mouse
    wait_for(lambda: (out / f"{first}.term").exists(), 10, "the child got no SIGTERM")
    wait_for(lambda: not psutil.pid_exists(first), 10, "the stopped child is still there")
    wait_for(lambda: nightly.exits == [143], 10, "the stop was not recorded")
    time.sleep(0.6)
    assert started(out) == [first]  # no restart while the user is active

    box.conditions = AWAY  # the user leaves again
    wait_for(lambda: len(started(out)) == 2, 10, "the child never started again")
    second = next(pid for pid in started(out) if pid != first)
    box.now = at(6)  # the window ends
    wait_for(lambda: (out / f"{second}.term").exists(), 10, "the window's end stopped nothing")
    wait_for(lambda: nightly.exits == [143, 143], 10, "the stop was not recorded")
    time.sleep(0.6)

    said = [r.getMessage() for r in caplog.records if "nightly distillation" in r.getMessage()]
    assert said == [
        "nightly distillation: waiting: the user is active (input 3 s ago; waiting for 15 min"
        " without input)",
        "nightly distillation: starting: in the window, 1 task(s) queued, idle 20 min, on AC,"
        " CPU 5%",
        "nightly distillation: stopping: the user is back (input 3 s ago)",
        "nightly distillation: waiting: the user is active (input 3 s ago; waiting for 15 min"
        " without input)",
        "nightly distillation: starting: in the window, 1 task(s) queued, idle 20 min, on AC,"
        " CPU 5%",
        "nightly distillation: stopping: the window 01:00-06:00 ended; the rest waits for the"
        " next night",
        "nightly distillation: waiting: outside the window 01:00-06:00",
    ]


@pytest.mark.timeout(60)
def test_a_failed_child_waits_for_the_next_window(
    store: Store,
    watched: tuple[Children, Path],
    box: Box,
    nightly: NightlyDistill,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHILD_FAILS", "1")
    out = watched[1]
    box.conditions = AWAY
    wait_for(lambda: nightly.exits == [3], 10, "the child never ran")
    time.sleep(1.0)  # five more checks in the same window
    assert nightly.exits == [3]
    assert nightly.check().cause == "failed"
    box.now = at(2, day=15)  # the next night
    wait_for(lambda: len(nightly.exits) == 2, 10, "no new try in the next window")
    assert len(started(out)) == 2


@pytest.mark.timeout(60)
def test_make_scheduler_wires_the_check_and_its_shutdown(
    store: Store, watched: tuple[Children, Path], box: Box
) -> None:
    children, out = watched
    config = Config()
    scheduler = make_scheduler(
        store, lambda: config, children, conditions=lambda: box.conditions, clock=lambda: box.now
    )
    job = scheduler.get_job("distill")
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval == timedelta(seconds=config.schedule.check_seconds)
    queue_task(store)
    box.conditions = AWAY
    scheduler.start()
    try:
        assert job.func().action == "start"  # one check now rather than in a minute
        (pid,) = wait_for(lambda: started(out), 10, "the child never started")
    finally:
        scheduler.shutdown(wait=True)
    assert (out / f"{pid}.term").exists()  # the shutdown stopped the child
    assert not psutil.pid_exists(pid)


# -- a real training child, stopped and resumed -------------------------------------------

INTENTS = {
    "card-lost": [
        "I lost my card {}",
        "My card was stolen {}",
        "Someone took my wallet with the card {}",
        "I cannot find my debit card {}",
    ],
    "balance": [
        "How much money is in my account {}",
        "Show my balance {}",
        "What is left on my savings {}",
        "Tell me my current balance {}",
    ],
    "transfer": [
        "Send 50 euros to my sister {}",
        "Move money to my savings {}",
        "Pay my landlord the rent {}",
        "Transfer 20 dollars to Tom {}",
    ],
}
WHEN = ["today", "this morning", "yesterday", "right now", "please", "again"]


def banking_examples(per_label: int, seed: int = 0) -> list[tuple[str, str, str, int | None]]:
    rng = random.Random(seed)
    rows: list[tuple[str, str, str, int | None]] = []
    for label, frames in INTENTS.items():
        pairs = [(f, w) for f in frames for w in WHEN]
        for frame, when in rng.sample(pairs, per_label):
            rows.append((frame.format(when), label, "user", None))
    return rows


def version_folders(task: str) -> list[str]:
    folder = Paths.resolve().models_dir / task
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_real_distill_child_is_stopped_and_resumed(store: Store, box: Box) -> None:
    registry = Registry(store)
    task = registry.create_task("banking", "classify", instruction="Which request is this?")
    registry.add_examples(task, banking_examples(8))
    registry.update_task(task, state="queued")
    logs = Paths.resolve().ensure().logs_dir
    log = logs / "distill.log"
    config = Config()
    nightly = NightlyDistill(
        store,
        lambda: config,
        Children(logs),
        conditions=lambda: box.conditions,
        clock=lambda: box.now,
    )
    scheduler = BackgroundScheduler()
    schedule_nightly(scheduler, nightly, 0.2)
    scheduler.start()
    try:
        box.conditions = AWAY
        wait_for(
            lambda: log.exists() and "banking: embedding" in log.read_text(),
            60,
            "training never started",
        )
        box.conditions = BACK  # the user is back while the child trains
        wait_for(lambda: nightly.exits, 30, "the child was not stopped")
        text = log.read_text()
        assert nightly.exits == [STOPPED_EXIT], text
        assert "stopped: will resume at the next run (banking stays queued" in text
        assert registry.task("banking").state == "queued"
        assert registry.versions(registry.task("banking")) == []
        assert version_folders("banking") == []  # no v1, no scratch

        box.conditions = AWAY  # away again: the queue resumes
        wait_for(lambda: len(nightly.exits) == 2, 180, "the resumed run never finished")
        text = log.read_text()
        assert nightly.exits == [STOPPED_EXIT, 0], text
    finally:
        scheduler.shutdown(wait=True)
    fresh = registry.task("banking")
    assert fresh.state != "queued"
    (version,) = registry.versions(fresh)
    assert version.version == 1
    assert version_folders("banking") == ["v1"]
    assert (Path(version.path) / "manifest.json").exists()
    assert "version v1 (minilm-logreg" in text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_distill_by_hand_stops_cleanly_on_sigterm(store: Store, tmp_path: Path) -> None:
    registry = Registry(store)
    task = registry.create_task("banking", "classify")
    registry.add_examples(task, banking_examples(8))
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        child = subprocess.Popen(
            [sys.executable, "-m", "stillroom", "distill", "banking", "--now"],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "banking: embedding" in out.read_text(), 60, "training never started")
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == STOPPED_EXIT
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "stopped: banking was not trained (`stillroom distill banking --now`" in out.read_text()
    assert registry.task("banking").state == "new"
    assert registry.versions(task) == []
    assert version_folders("banking") == []


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_untrainable_task_does_not_hold_back_the_queue(store: Store, tmp_path: Path) -> None:
    registry = Registry(store)
    scarce = registry.create_task("scarce", "classify")
    registry.add_examples(scarce, banking_examples(8)[:2])  # two examples: cannot train
    banking = registry.create_task("banking", "classify")
    registry.add_examples(banking, banking_examples(8))
    for task in (scarce, banking):
        registry.update_task(task, state="queued")
    done = subprocess.run(
        [sys.executable, "-m", "stillroom", "distill", "--now"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped scarce:" in done.stdout
    assert registry.task("scarce").state == "needs-data"
    assert registry.versions(registry.task("scarce")) == []
    assert [v.version for v in registry.versions(registry.task("banking"))] == [1]
    assert registry.task("banking").state != "queued"
    assert version_folders("banking") == ["v1"]


def test_sigterm_waits_for_a_commit_and_stops_after_it() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_sigterm():
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once
        committing()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # held: the commit goes on
        with pytest.raises(Stopped):
            task_done()
        task_done()  # nothing waits any more
    assert signal.getsignal(signal.SIGTERM) == before


class SignalledRegistry(Registry):
    """A real registry that receives SIGTERM at the worst moment: inside `add_version`."""

    def add_version(self, task: Task, version: int, **fields: Any) -> ModelVersion:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        return super().add_version(task, version, **fields)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    """The shared MiniLM, loaded once; loading starts tqdm's monitor thread, which must
    exist before the leak check of the test that uses it."""
    from stillroom.service.encoder import Encoder

    loaded = Encoder()
    loaded.encode(["warm up"])
    return loaded


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_distill_classifier_stops_cleanly_in_process(store: Store, encoder: Encoder) -> None:
    registry = Registry(store)
    task = registry.create_task("banking", "classify")
    registry.add_examples(task, banking_examples(8))
    paths = Paths.resolve()

    def stop_at_calibration(text: str) -> None:
        if text.startswith("calibrating"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

    with stop_on_sigterm():
        with pytest.raises(Stopped):  # stopped before the version is written: nothing stays
            distill_classifier(registry, task, encoder, paths, stop_at_calibration)
        assert registry.versions(task) == []
        assert version_folders("banking") == []
        assert registry.task("banking").state == "new"

        # Stopped while registering: the version completes, then the run stops.
        signalled = SignalledRegistry(store)
        result = distill_classifier(signalled, task, encoder, paths)
        with pytest.raises(Stopped):
            task_done()
    (version,) = registry.versions(task)
    assert version == result.version
    assert (Path(version.path) / "manifest.json").exists()
    assert registry.task("banking").state == "needs-data"
    assert version_folders("banking") == ["v1"]
