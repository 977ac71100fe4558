"""Tasks, examples and model versions in the store."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from stillroom.errors import TaskError
from stillroom.registry import Registry
from stillroom.store import Store


def test_task_lifecycle(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task("sort-downloads", "classify", spec={"target": 0.1})
    assert task.target == 0.1 and task.input_kind == "text" and task.state == "new"
    with pytest.raises(TaskError, match="exists already"):
        registry.create_task("sort-downloads", "classify")
    with pytest.raises(TaskError, match="use lower-case"):
        registry.create_task("Bad Name!", "classify")
    with pytest.raises(TaskError, match="must be one of classify, extract, generate"):
        registry.create_task("x", "dance")
    with pytest.raises(TaskError, match="no task named 'nope'"):
        registry.task("nope")
    assert registry.update_task(task, state="queued").state == "queued"


def test_examples_skip_exact_repeats(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task("t", "classify")
    rows = [("a", "x", "user", None), ("a", "x", "user", None), ("a", "y", "correction", 3)]
    assert registry.add_examples(task, rows) == 2
    assert [(e.input, e.output, e.source) for e in registry.examples(task)] == [
        ("a", "x", "user"),
        ("a", "y", "correction"),
    ]
    with pytest.raises(TaskError, match="example source 'guess'"):
        registry.add_examples(task, [("b", "x", "guess", None)])


def test_one_active_version_per_task(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task("t", "classify")
    first = registry.add_version(
        task, 1, student="s", path="/m/1", metrics={}, guarantee={}, status="active"
    )
    assert registry.next_version(task) == 2
    second = registry.add_version(
        task, 2, student="s", path="/m/2", metrics={"a": 1}, guarantee={}, status="shadow"
    )
    assert registry.serving_version(task) == first
    registry.set_status(second.id, "active")
    assert registry.version(first.id).status == "retired"
    assert registry.active_version(task) == registry.version(second.id)
    assert [v.version for v in registry.versions(task)] == [2, 1]


def test_a_version_and_its_task_state_are_registered_together(store: Store) -> None:
    registry = Registry(store)
    task = registry.update_task(registry.create_task("t", "extract"), state="queued")
    first = registry.add_version(
        task, 1, student="s", path="/m/1", metrics={}, guarantee={}, status="active",
        task_state="ready",
    )  # fmt: skip
    assert registry.task("t").state == "ready"
    # The task's state fails to move (a trigger stands in for a crash at that point): the new
    # version must not stay behind, nor may the active one be retired.
    with store.transaction() as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE OF state ON tasks WHEN NEW.state = 'needs-data'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        registry.add_version(
            task, 2, student="s", path="/m/2", metrics={}, guarantee={}, status="active",
            task_state="needs-data",
        )  # fmt: skip
    assert [v.path for v in registry.versions(task)] == ["/m/1"]
    assert registry.version(first.id).status == "active"
    assert registry.task("t").state == "ready"


FAILED_TEST: dict[str, Any] = {
    "bound": 0.05,
    "threshold": 0.9,
    "test": {"answered": 44, "errors": 4, "error_rate": 4 / 44, "holds": False},
}


def test_a_version_its_test_split_contradicts_never_goes_active(store: Store) -> None:
    registry = Registry(store)
    task = registry.create_task("t", "classify")
    why = r"t v1 cannot go active: its test split proves its bound wrong \(error 9.1% in 44"
    with pytest.raises(TaskError, match=why):
        registry.add_version(
            task, 1, student="s", path="/m/1", metrics={}, guarantee=FAILED_TEST, status="active"
        )
    assert registry.versions(task) == []
    failed = registry.add_version(
        task, 1, student="s", path="/m/1", metrics={}, guarantee=FAILED_TEST
    )
    with pytest.raises(TaskError, match="more examples or a new version would fix it"):
        registry.set_status(failed.id, "active")
    assert registry.version(failed.id).status == "candidate"
    assert registry.set_status(failed.id, "shadow").status == "shadow"
    held = {**FAILED_TEST, "test": {**FAILED_TEST["test"], "holds": True}}
    good = registry.add_version(task, 2, student="s", path="/m/2", metrics={}, guarantee=held)
    assert registry.set_status(good.id, "active").status == "active"
