"""The SQLite store: migrations, WAL, private files, events, journal, retention."""

from __future__ import annotations

import sqlite3
import stat
import time
from pathlib import Path

import pytest

from stillroom.errors import StoreError
from stillroom.events import Event, FileFeatures, FilePayload
from stillroom.migrations import MIGRATIONS
from stillroom.store import Store


def file_event(path: str, at: float | None = None, kind: str = "file.created") -> Event:
    features = FileFeatures(name=Path(path).name, extension="txt", mime="text/plain", size=5)
    payload = FilePayload(path=path, root="/home/u/Downloads", features=features)
    return Event(source="filesystem", kind=kind, payload=payload, at=at or time.time())


def test_new_database_is_migrated_wal_and_private(store: Store) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = [r[0] for r in db.execute("SELECT version FROM schema_migrations")]
    assert versions == [number for number, _, _ in MIGRATIONS]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


def test_migrations_are_numbered_in_order_and_applied_once(store: Store) -> None:
    numbers = [number for number, _, _ in MIGRATIONS]
    assert numbers == list(range(1, len(numbers) + 1))
    assert store.migrate() == numbers[-1]
    reopened = Store(store.path)
    assert reopened.migrate() == numbers[-1]
    reopened.close()


def test_newer_schema_refused(store: Store) -> None:
    with store.transaction() as db:
        db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    with pytest.raises(StoreError, match="newer stillroom"):
        Store(store.path)


def test_events_round_trip_typed(store: Store) -> None:
    ids = store.add_events([file_event("/d/a.txt"), file_event("/d/b.txt", kind="file.moved")])
    assert ids == [1, 2]
    newest = store.events(limit=1)[0]
    assert newest.id == 2 and newest.kind == "file.moved"
    assert isinstance(newest.payload, FilePayload)
    assert newest.file().features is not None and newest.file().features.name == "b.txt"
    assert store.count_events() == {"file.created": 1, "file.moved": 1}
    assert [e.id for e in store.events(kind="file.created")] == [1]


def test_retention_by_age_then_size(store: Store) -> None:
    old = time.time() - 100 * 86400
    store.add_events([file_event(f"/d/old{i}.txt", at=old) for i in range(3)])
    store.add_events([file_event(f"/d/new{i}.txt") for i in range(10)])
    assert store.apply_retention(days=90, max_bytes=10**9) == 3
    one = len(store.events(limit=1)[0].payload_json())
    # Room for four events: the six oldest go, the newest four stay.
    assert store.apply_retention(days=90, max_bytes=4 * one + 2) == 6
    assert sorted(e.file().path for e in store.events()) == [f"/d/new{i}.txt" for i in (6, 7, 8, 9)]


def test_forget_deletes_for_real(store: Store) -> None:
    store.add_event(file_event("/d/secret-plans.txt"))
    assert store.forget() == 1
    store.close()
    # secure_delete + checkpoint: the path is not left in the file's free pages.
    for suffix in ("", "-wal"):
        data = Path(f"{store.path}{suffix}")
        if data.exists():
            assert b"secret-plans" not in data.read_bytes()


def test_action_journal_states(store: Store) -> None:
    record = store.journal("move", {"src": "/a", "dest": "/b"}, automation="r", confidence=1.0)
    assert record.state == "planned" and record.plan == {"src": "/a", "dest": "/b"}
    assert store.unfinished_actions() == [record]
    done = store.update_action(record.id, state="done", plan={"src": "/a", "dest": "/b (1)"})
    assert done.state == "done" and done.plan["dest"] == "/b (1)"
    assert store.unfinished_actions() == []
    assert store.count_actions() == {"done": 1}
    with pytest.raises(sqlite3.IntegrityError):
        store.update_action(record.id, state="exploded")


def test_pause_flag_shared_between_connections(store: Store) -> None:
    assert not store.paused
    other = Store(store.path)
    other.paused = True
    assert store.paused
    other.paused = False
    assert not store.paused
    other.close()


def test_an_old_database_gets_a_fixed_split_for_each_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stillroom.registry import Registry, input_hash, split_of

    path = tmp_path / "old.db"
    texts = [f"old example {i}" for i in range(200)]
    with monkeypatch.context() as old:
        old.setattr("stillroom.store.MIGRATIONS", [m for m in MIGRATIONS if m[0] < 4])
        with Store(path) as before, before.transaction() as db:
            db.execute(
                "INSERT INTO tasks (name, kind, origin, spec, state, created, updated)"
                " VALUES ('t', 'classify', 'user', '{}', 'new', 0, 0)"
            )
            for i, text in enumerate(texts):
                for output in ("a", "b"):  # one input, two outputs: one split for both rows
                    db.execute(
                        "INSERT INTO examples (task_id, input, output, source, at, input_hash)"
                        " VALUES (1, ?, ?, 'user', ?, ?)",
                        (text, output, i, input_hash(text)),
                    )
    with Store(path) as after:
        registry = Registry(after)
        examples = registry.examples(registry.task("t"))
    assert len(examples) == 400
    assert all(e.split == split_of(input_hash(e.input)) for e in examples)
    assert {e.split for e in examples} == {"train", "calibration", "test"}
    # New rows for the same inputs join the split their old rows were given.
    with Store(path) as again:
        registry = Registry(again)
        task = registry.task("t")
        registry.add_examples(task, [(texts[0], "c", "correction", None)])
        splits = {e.split for e in registry.examples(task) if e.input == texts[0]}
    assert splits == {split_of(input_hash(texts[0]))}
