"""Desktop notifications over a real private D-Bus: a proposal pops up with three buttons, a
press answers it in the store, the daily limit survives a restart, and a missing notification
service is said once and never raised."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import wait_until
from notification_server import NotificationServer, session_bus

from stillroom.config import Config
from stillroom.daemon.notify import (
    DailyLimit,
    DesktopNotifier,
    LogNotifier,
    Notice,
    make_notifier,
)
from stillroom.daemon.proposals import Proposal, answer, get, review
from stillroom.paths import Paths
from stillroom.predictions import record
from stillroom.registry import Registry
from stillroom.store import Store

UNAVAILABLE = "no desktop notification service"
Factory = Callable[..., DesktopNotifier]


def shadow_task(store: Store, name: str) -> int:
    """A task whose shadow version agreed with the user 12 times: review() proposes it."""
    registry = Registry(store)
    task = registry.create_task(
        name, "classify", origin="detector", spec={"input_kind": "file", "folder": "/srv/in"}
    )
    version = registry.add_version(
        task,
        1,
        student="s",
        path="/m",
        metrics={},
        guarantee={"bound": 0.05, "coverage": 0.9},
        status="shadow",
    )
    for i in range(12):
        with store.transaction() as db:
            event_id = db.execute(
                "INSERT INTO events (at, source, kind, path, payload, bytes)"
                " VALUES (0, 'filesystem', 'file.created', ?, '{}', 2)",
                (f"/srv/in/{name}{i}",),
            ).lastrowid
        record(store, version.id, "shadow", f"file {i}", "Documents", 0.9, False, event_id)
        with store.transaction() as db:
            db.execute("UPDATE predictions SET truth = 'Documents' WHERE event_id = ?", (event_id,))
    return int(version.id)


def messages(caplog: pytest.LogCaptureFixture, part: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if part in r.getMessage()]


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with session_bus() as address:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield address


@pytest.fixture
def server(bus: str) -> Iterator[NotificationServer]:
    with NotificationServer(bus) as running:
        yield running


@pytest.fixture
def notifiers(store: Store) -> Iterator[Factory]:
    """Builds desktop notifiers on the test store; closes them all after."""
    made: list[DesktopNotifier] = []

    def build(**options: Any) -> DesktopNotifier:
        notifier = DesktopNotifier(store.path, **options)
        made.append(notifier)
        return notifier

    yield build
    for notifier in made:
        notifier.close()


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("reply", "status", "state"),
    [("accept", "active", "active"), ("never", "shadow", "declined"), ("later", "shadow", "ready")],
)
def test_a_button_answers_the_proposal(
    server: NotificationServer,
    notifiers: Factory,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    reply: str,
    status: str,
    state: str,
) -> None:
    caplog.set_level(logging.INFO, "stillroom")
    version_id = shadow_task(store, "sort")
    answered: list[Proposal] = []
    done = threading.Event()

    def on_answered(proposal: Proposal) -> None:
        answered.append(proposal)
        done.set()

    notifier = notifiers(on_answered=on_answered)
    (proposal,) = review(store, notifier)

    (call,) = server.wait_for(1)
    assert call.app_name == "stillroom"
    assert call.summary == "stillroom offers to take over sort"
    assert call.body == proposal.text
    assert "agreement with your last 12 moves" in call.body
    assert {k: v for k, v in call.buttons.items() if k != "default"} == {
        "accept": "Accept",
        "later": "Not now",
        "never": "Never",
    }
    assert messages(caplog, f"proposal #{proposal.id} for sort")  # the log has it too

    server.invoke(call.id, reply)
    assert done.wait(5)
    assert [(p.id, p.state) for p in answered] == [(proposal.id, get(store, proposal.id).state)]
    assert get(store, proposal.id).state == {"accept": "accepted"}.get(reply, reply)
    registry = Registry(store)
    assert registry.version(version_id).status == status
    assert registry.task("sort").state == state


@pytest.mark.timeout(20)
def test_clicking_the_body_answers_nothing(
    server: NotificationServer, notifiers: Factory, store: Store
) -> None:
    shadow_task(store, "a")
    shadow_task(store, "b")
    done = threading.Event()
    notifier = notifiers(on_answered=lambda p: done.set())
    proposals = {p.task: p for p in review(store, notifier)}
    first, second = server.wait_for(2)
    assert (first.body, second.body) == (proposals["a"].text, proposals["b"].text)

    server.invoke(first.id, "default")  # the body of a's notification
    server.invoke(second.id, "never")
    assert done.wait(5)  # signals arrive in order: a's click was handled before b's answer
    assert get(store, proposals["a"].id).state == "open"
    assert get(store, proposals["b"].id).state == "never"


@pytest.mark.timeout(20)
def test_a_proposal_answered_on_the_cli_first_is_only_logged(
    server: NotificationServer,
    notifiers: Factory,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shadow_task(store, "sort")
    answered: list[Proposal] = []
    notifier = notifiers(on_answered=answered.append)
    (proposal,) = review(store, notifier)
    (call,) = server.wait_for(1)
    answer(store, proposal.id, "never")

    server.invoke(call.id, "accept")
    wait_until(lambda: bool(messages(caplog, "not taken")))
    assert messages(caplog, "not taken") == [
        f"accept on proposal #{proposal.id}'s notification not taken:"
        f" proposal #{proposal.id} was already answered (never)"
    ]
    assert answered == []
    assert get(store, proposal.id).state == "never"
    notifier.notify(Notice("paused", "sort", "still alive"))  # the loop carries on
    assert len(server.wait_for(2)) == 2


@pytest.mark.timeout(20)
def test_on_answered_may_notify_without_deadlock(
    server: NotificationServer,
    notifiers: Factory,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shadow_task(store, "sort")
    done = threading.Event()

    def on_answered(proposal: Proposal) -> None:
        notifier.notify(Notice("paused", proposal.task, "told from the callback"))
        done.set()

    notifier = notifiers(on_answered=on_answered)
    review(store, notifier)
    (call,) = server.wait_for(1)
    server.invoke(call.id, "accept")
    assert done.wait(3)
    assert messages(caplog, "sort paused: told from the callback")


@pytest.mark.timeout(20)
def test_pause_notices_have_no_buttons(server: NotificationServer, notifiers: Factory) -> None:
    notifier = notifiers()
    notifier.notify(Notice("paused", "sort", "3 corrections in the last 20 moves; paused"))
    (call,) = server.wait_for(1)
    assert call.summary == "stillroom paused sort"
    assert call.body == "3 corrections in the last 20 moves; paused"
    assert set(call.buttons) <= {"default"}  # the body click desktop-notifier always offers


@pytest.mark.timeout(20)
def test_daily_limit_holds_across_a_restart(
    server: NotificationServer,
    notifiers: Factory,
    store: Store,
    stillroom_home: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "stillroom")
    for name in ("a", "b", "c"):
        shadow_task(store, name)
    first = notifiers(max_per_day=2)
    made = review(store, first)
    assert len(made) == 3
    assert [c.body for c in server.wait_for(2)] == [p.text for p in made[:2]]
    for p in made:  # every notice is in the log, sent or not
        assert messages(caplog, f"proposal #{p.id} for {p.task}")
    assert messages(caplog, f"proposal #{made[2].id} waits in `stillroom proposals`")
    first.close()

    sent = Paths.resolve().data_dir / "notifications.json"
    assert sent.is_relative_to(stillroom_home)
    assert stat.S_IMODE(os.stat(sent).st_mode) == 0o600
    assert len(json.loads(sent.read_text())["sent"]) == 2

    restarted = notifiers(max_per_day=2)
    restarted.notify(Notice("proposal", "c", made[2].text, made[2].id))
    restarted.notify(Notice("paused", "a", "paused"))
    assert len(server.calls) == 2


def test_the_limit_is_a_rolling_day(tmp_path: Path) -> None:
    path = tmp_path / "sent.json"
    now = 1_000_000.0
    path.write_text(json.dumps({"sent": [now - 25 * 3600, now - 23 * 3600]}))
    limit = DailyLimit(path, per_day=2, clock=lambda: now)
    assert limit.allows()  # the one 25 h ago no longer counts
    limit.record()
    assert not limit.allows()
    assert json.loads(path.read_text())["sent"] == [now - 23 * 3600, now]
    path.write_text("not json")
    assert DailyLimit(path, per_day=1, clock=lambda: now).allows()


@pytest.mark.timeout(20)
def test_no_service_on_the_bus_is_said_once(
    bus: str, notifiers: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "stillroom")
    notifier = notifiers(recheck_seconds=0)
    notifier.notify(Notice("proposal", "sort", "I can sort", 7))
    notifier.notify(Notice("paused", "sort", "paused"))
    assert messages(caplog, UNAVAILABLE) == [
        "no desktop notification service (nobody owns org.freedesktop.Notifications on the"
        " session bus); proposals wait in `stillroom proposals`"
    ]
    assert messages(caplog, "proposal #7 for sort: I can sort")

    with NotificationServer(bus) as server:  # a desktop that appears later is used
        notifier.notify(Notice("paused", "sort", "paused again"))
        (call,) = server.wait_for(1)
        assert call.body == "paused again"
        assert messages(caplog, "notification service found")
    notifier.close()


@pytest.mark.timeout(20)
def test_a_refused_notification_is_said_once_and_retried_later(
    server: NotificationServer, notifiers: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = notifiers(recheck_seconds=0)
    server.refuse = True
    notifier.notify(Notice("paused", "a", "first"))
    notifier.notify(Notice("paused", "b", "second"))
    assert messages(caplog, UNAVAILABLE) == [
        "no desktop notification service (the service refused the notification);"
        " proposals wait in `stillroom proposals`"
    ]
    server.refuse = False
    notifier.notify(Notice("paused", "c", "third"))
    assert [c.body for c in server.wait_for(1)] == ["third"]
    assert len(notifier.limit.sent) == 1  # refusals do not count


@pytest.mark.timeout(20)
@pytest.mark.parametrize("address", ["dead socket", None])
def test_no_bus_at_all_is_said_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    notifiers: Factory,
    caplog: pytest.LogCaptureFixture,
    address: str | None,
) -> None:
    caplog.set_level(logging.INFO, "stillroom")
    if address is None:
        monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    notifier = notifiers()
    for _ in range(3):
        notifier.notify(Notice("proposal", "sort", "I can sort", 7))
    (said,) = messages(caplog, UNAVAILABLE)
    assert said.startswith("no desktop notification service (no session bus:")
    assert said.endswith("proposals wait in `stillroom proposals`")
    assert len(messages(caplog, "proposal #7 for sort")) == 3


@pytest.mark.timeout(20)
def test_close_stops_the_thread(server: NotificationServer, store: Store) -> None:
    notifier = DesktopNotifier(store.path)
    notifier.notify(Notice("paused", "sort", "paused"))
    server.wait_for(1)
    assert any(t.name == "stillroom-notify" for t in threading.enumerate())
    notifier.close()
    notifier.close()  # twice is harmless
    assert not any(t.name == "stillroom-notify" for t in threading.enumerate())
    notifier.notify(Notice("paused", "sort", "after close"))  # logged only, no error
    assert len(server.calls) == 1


@pytest.mark.timeout(20)
def test_make_notifier_follows_the_config(bus: str, store: Store) -> None:
    off = make_notifier(Config.model_validate({"notifications": {"desktop": False}}), store.path)
    assert isinstance(off, LogNotifier)
    off.close()
    on = make_notifier(
        Config.model_validate({"notifications": {"max_per_day": 5}}), store.path, print
    )
    assert isinstance(on, DesktopNotifier)
    assert on.limit.per_day == 5
    assert on.on_answered is print
    on.close()
