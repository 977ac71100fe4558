"""The dispatcher on a real store and executor: store, echo, undo memory, pause, dry run."""

from __future__ import annotations

import time
from pathlib import Path

from stillroom.config import Config
from stillroom.daemon.bus import Dispatcher
from stillroom.daemon.echo import EchoFilter
from stillroom.events import Event, FilePayload
from stillroom.monitors.features import file_features
from stillroom.service.hooks.deciders import deciders_from_config
from stillroom.service.hooks.executor import Executor
from stillroom.store import Store


def setup(tmp_path: Path, store: Store, dry_run: bool = False) -> tuple[Dispatcher, Path, Path]:
    downloads, docs = tmp_path / "Downloads", tmp_path / "Docs"
    downloads.mkdir()
    config = Config.from_data(
        {
            "automations": [
                {
                    "name": "txt",
                    "match": {"extensions": ["txt"]},
                    "action": {"kind": "move", "to": str(docs)},
                }
            ]
        }
    )
    echo = EchoFilter()
    executor = Executor(store, on_effect=echo.expect)
    bus = Dispatcher(store, executor, echo, deciders_from_config(config), dry_run=dry_run)
    return bus, downloads, docs


def arrived(path: Path) -> Event:
    features = file_features(path)
    payload = FilePayload(path=str(path), root=str(path.parent), features=features)
    return Event(source="filesystem", kind="file.created", payload=payload)


def test_event_stored_and_acted_on(tmp_path: Path, store: Store) -> None:
    bus, downloads, docs = setup(tmp_path, store)
    (downloads / "a.txt").write_text("a")
    bus.handle([arrived(downloads / "a.txt")])
    assert (docs / "a.txt").read_text() == "a"
    assert store.count_events() == {"file.created": 1}
    (record,) = store.actions()
    assert record.state == "done" and record.automation == "txt" and record.event_id == 1


def test_undone_file_is_left_alone_long_after(tmp_path: Path, store: Store) -> None:
    bus, downloads, docs = setup(tmp_path, store)
    (downloads / "a.txt").write_text("a")
    bus.handle([arrived(downloads / "a.txt")])
    bus.executor.undo()
    assert (downloads / "a.txt").exists()
    # Ten minutes later, past the echo window, the file shows up again (say after a restart).
    with store.transaction() as db:
        db.execute("UPDATE actions SET updated = ?", (time.time() - 600,))
    bus.echo = EchoFilter()
    bus.handle([arrived(downloads / "a.txt")])
    assert (downloads / "a.txt").exists() and not (docs / "a.txt").exists()
    assert len(store.actions()) == 1
    (downloads / "b.txt").write_text("b")
    bus.handle([arrived(downloads / "b.txt")])
    assert (docs / "b.txt").exists()


def test_effects_of_another_process_are_marked_as_ours(tmp_path: Path, store: Store) -> None:
    bus, downloads, docs = setup(tmp_path, store)
    (downloads / "a.txt").write_text("a")
    other = Executor(store)  # as `stillroom apply` in another process would
    plan = other.plan(
        bus.deciders[0].decide(arrived(downloads / "a.txt")).action,  # type: ignore[union-attr]
        downloads / "a.txt",
    )
    other.run(plan)
    moved = Event(
        source="filesystem",
        kind="file.moved",
        payload=FilePayload(
            path=str(docs / "a.txt"), src_path=str(downloads / "a.txt"), root=str(downloads)
        ),
    )
    bus.handle([moved])
    assert store.events()[0].file().by_stillroom


def test_paused_and_dry_run_record_but_do_not_act(tmp_path: Path, store: Store) -> None:
    bus, downloads, docs = setup(tmp_path, store, dry_run=True)
    (downloads / "a.txt").write_text("a")
    bus.handle([arrived(downloads / "a.txt")])
    assert not docs.exists() and store.actions() == []
    bus.dry_run = False
    store.paused = True
    bus.handle([arrived(downloads / "a.txt")])
    assert not docs.exists() and store.actions() == []
    assert store.count_events() == {"file.created": 2}


def test_a_failing_event_does_not_stop_the_rest(tmp_path: Path, store: Store) -> None:
    bus, downloads, docs = setup(tmp_path, store)
    (downloads / "b.txt").write_text("b")
    gone = arrived(downloads / "b.txt")
    (downloads / "b.txt").unlink()
    (downloads / "c.txt").write_text("c")
    bus.handle([gone, arrived(downloads / "c.txt")])
    assert (docs / "c.txt").exists()
    assert store.count_events() == {"file.created": 2}
