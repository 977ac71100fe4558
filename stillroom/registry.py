"""Tasks, their examples and their model versions: what stillroom has learned, in the store."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stillroom.errors import TaskError
from stillroom.store import Store

TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
KINDS = ("classify", "extract", "generate")
SOURCES = ("user", "teacher", "synthetic", "correction")
# Sources whose inputs are the user's own, so the guarantee may speak of them: synthetic
# inputs were written by a model and corrections are chosen by being errors; both only train.
REAL_SOURCES = ("user", "teacher")
DEFAULT_TARGET = 0.05
SPLITS = ("train", "calibration", "test")
SHARES = (0.5, 0.3, 0.2)  # of inputs in each split, in SPLITS order
_BUCKETS = 0x10000  # the first four hex digits of an input's hash choose its split
TEST_FIX = "more examples or a new version would fix it"


@dataclass(frozen=True)
class Task:
    """A job stillroom can learn: what goes in, what comes out, how sure it must be."""

    id: int
    name: str
    kind: str
    instruction: str | None
    origin: str
    spec: dict[str, Any]
    state: str
    created: float
    updated: float

    @property
    def target(self) -> float:
        """The largest error rate the task's guarantee may allow."""
        return float(self.spec.get("target", DEFAULT_TARGET))

    @property
    def input_kind(self) -> str:
        """'file' when inputs are files (described by their features), else 'text'."""
        return str(self.spec.get("input_kind", "text"))


@dataclass(frozen=True)
class Example:
    id: int
    task_id: int
    input: str
    output: str
    source: str
    event_id: int | None
    at: float
    split: str  # train, calibration or test: fixed when the input first arrived


@dataclass(frozen=True)
class ModelVersion:
    """One trained student of a task; its files live under models/<task>/<version>/."""

    id: int
    task_id: int
    version: int
    student: str
    path: str
    status: str
    metrics: dict[str, Any]
    guarantee: dict[str, Any]
    created: float
    updated: float


def input_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def split_of(hashed: str, shares: tuple[float, float, float] = SHARES) -> str:
    """The split of an input with this `input_hash`: the same input always lands in the same
    split, so retrains and relabels never move it and duplicates never straddle two splits.
    Migration 4 applies the same rule in SQL (hex prefixes below '8000' and 'cccd')."""
    bucket = int(hashed[:4], 16)
    train = round(shares[0] * _BUCKETS)
    if bucket < train:
        return SPLITS[0]
    return SPLITS[1] if bucket < train + round(shares[1] * _BUCKETS) else SPLITS[2]


def why_test_failed(guarantee: dict[str, Any]) -> str | None:
    """Why a version with this stored guarantee may never act, or None when its test-split
    check held (or there was none: nothing was held out to fail)."""
    test = guarantee.get("test") or {}
    if not test or test.get("holds", True):
        return None
    rate, bound = test.get("error_rate"), guarantee.get("bound")
    return (
        f"its test split proves its bound wrong (error {float(rate or 0):.1%} in"
        f" {test.get('answered')} test answers, more than a {float(bound or 0):.1%} bound"
        " allows at 95% confidence)"
    )


class Registry:
    """Reads and writes tasks, examples and versions through one Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- tasks ----------------------------------------------------------------------------

    def create_task(
        self,
        name: str,
        kind: str,
        *,
        instruction: str | None = None,
        origin: str = "user",
        spec: dict[str, Any] | None = None,
    ) -> Task:
        if not TASK_NAME.match(name):
            raise TaskError(
                f"task name {name!r}: use lower-case letters, digits, '.', '_' or '-' (max 64)"
            )
        if kind not in KINDS:
            raise TaskError(f"task kind {kind!r}: must be one of {', '.join(KINDS)}")
        now = time.time()
        try:
            with self.store.transaction() as db:
                db.execute(
                    "INSERT INTO tasks (name, kind, instruction, origin, spec, state, created,"
                    " updated) VALUES (?, ?, ?, ?, ?, 'new', ?, ?)",
                    (name, kind, instruction, origin, json.dumps(spec or {}), now, now),
                )
        except sqlite3.IntegrityError:
            raise TaskError(f"a task named {name!r} exists already") from None
        return self.task(name)

    def task(self, name: str) -> Task:
        rows = self.store.query("SELECT * FROM tasks WHERE name = ?", [name])
        if not rows:
            raise TaskError(f"no task named {name!r} (`stillroom tasks` lists them)")
        return _task(rows[0])

    def task_by_id(self, task_id: int) -> Task:
        rows = self.store.query("SELECT * FROM tasks WHERE id = ?", [task_id])
        if not rows:
            raise TaskError(f"no task #{task_id}")
        return _task(rows[0])

    def tasks(self) -> list[Task]:
        return [_task(r) for r in self.store.query("SELECT * FROM tasks ORDER BY name")]

    def update_task(
        self, task: Task, *, state: str | None = None, spec: dict[str, Any] | None = None
    ) -> Task:
        with self.store.transaction() as db:
            db.execute(
                "UPDATE tasks SET state = COALESCE(?, state), spec = COALESCE(?, spec),"
                " updated = ? WHERE id = ?",
                (state, json.dumps(spec) if spec is not None else None, time.time(), task.id),
            )
        return self.task_by_id(task.id)

    def count_in_spec(self, task: Task, key: str) -> None:
        """One more of `key` in the task's spec (a counter on its card), in one statement so
        a concurrent writer of the spec loses nothing."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE tasks SET spec = json_set(spec, '$.' || ?,"
                " COALESCE(json_extract(spec, '$.' || ?), 0) + 1) WHERE id = ?",
                (key, key, task.id),
            )

    # -- examples -------------------------------------------------------------------------

    def add_examples(
        self,
        task: Task,
        rows: Iterable[tuple[str, str, str, int | None]],
        *,
        train_only: bool = False,
    ) -> int:
        """Add (input, output, source, event_id) rows; exact repeats are skipped. Each row's
        split is fixed here, once (`arrival_split`). `train_only` rows were not drawn
        uniformly from the task's real inputs (calls forwarded because its student was
        unsure, corrections): they may teach, never calibrate or test."""
        added, now = 0, time.time()
        with self.store.transaction() as db:
            for text, output, source, event_id in rows:
                if source not in SOURCES:
                    raise TaskError(f"example source {source!r}: one of {', '.join(SOURCES)}")
                hashed = input_hash(text)
                split = arrival_split(
                    db, task, hashed, output, held_out=not train_only and source in REAL_SOURCES
                )
                cursor = db.execute(
                    "INSERT OR IGNORE INTO examples (task_id, input, output, source, event_id,"
                    " at, input_hash, split) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (task.id, text, output, source, event_id, now, hashed, split),
                )
                added += cursor.rowcount
        return added

    def examples(self, task: Task) -> list[Example]:
        rows = self.store.query(
            "SELECT id, task_id, input, output, source, event_id, at, split FROM examples"
            " WHERE task_id = ? ORDER BY id",
            [task.id],
        )
        return [Example(*r) for r in rows]

    def count_examples(self, task: Task) -> int:
        rows = self.store.query("SELECT COUNT(*) FROM examples WHERE task_id = ?", [task.id])
        return int(rows[0][0])

    def has_enough(self, task: Task) -> bool:
        """Whether a task waiting for data now holds as many distinct inputs as its newest
        version's card said it needed (True before any version)."""
        versions = self.versions(task)
        if not versions:
            return True
        needed = versions[0].guarantee.get("needed")
        if needed is None:  # more of the same would not help: wait for a correction or a user
            return False
        rows = self.store.query(
            "SELECT COUNT(DISTINCT input_hash) FROM examples WHERE task_id = ?", [task.id]
        )
        return int(rows[0][0]) >= int(versions[0].metrics.get("examples", 0)) + int(needed)

    # -- model versions -------------------------------------------------------------------

    def next_version(self, task: Task) -> int:
        rows = self.store.query(
            "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE task_id = ?", [task.id]
        )
        return int(rows[0][0]) + 1

    def add_version(
        self,
        task: Task,
        version: int,
        *,
        student: str,
        path: str,
        metrics: dict[str, Any],
        guarantee: dict[str, Any],
        status: str = "candidate",
        task_state: str | None = None,
    ) -> ModelVersion:
        """Register a trained version; with `task_state`, the task's state moves in the same
        transaction, so a crash never leaves a version without its task's new state."""
        if status == "active":
            _may_act(guarantee, f"{task.name} v{version}")
        now = time.time()
        with self.store.transaction() as db:
            if status == "active":
                _retire_active(db, task.id)
            cursor = db.execute(
                "INSERT INTO model_versions (task_id, version, student, path, status, metrics,"
                " guarantee, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task.id,
                    version,
                    student,
                    path,
                    status,
                    json.dumps(metrics),
                    json.dumps(guarantee),
                    now,
                    now,
                ),
            )
            version_id = int(cursor.lastrowid or 0)
            if task_state is not None:
                db.execute(
                    "UPDATE tasks SET state = ?, updated = ? WHERE id = ?",
                    (task_state, now, task.id),
                )
        return self.version(version_id)

    def version(self, version_id: int) -> ModelVersion:
        rows = self.store.query("SELECT * FROM model_versions WHERE id = ?", [version_id])
        if not rows:
            raise TaskError(f"no model version #{version_id}")
        return _version(rows[0])

    def versions(self, task: Task) -> list[ModelVersion]:
        """Newest first."""
        rows = self.store.query(
            "SELECT * FROM model_versions WHERE task_id = ? ORDER BY version DESC", [task.id]
        )
        return [_version(r) for r in rows]

    def active_version(self, task: Task) -> ModelVersion | None:
        found = [v for v in self.versions(task) if v.status == "active"]
        return found[0] if found else None

    def serving_version(self, task: Task) -> ModelVersion | None:
        """The version that answers: the active one, else the newest shadow, else the newest."""
        versions = self.versions(task)
        for status in ("active", "shadow"):
            for version in versions:
                if version.status == status:
                    return version
        return versions[0] if versions else None

    def set_status(self, version_id: int, status: str) -> ModelVersion:
        """Move a version along candidate -> shadow -> active -> retired (one active per task).
        A version whose test-split check failed never goes active."""
        version = self.version(version_id)
        if status == "active":
            task = self.task_by_id(version.task_id)
            _may_act(version.guarantee, f"{task.name} v{version.version}")
        with self.store.transaction() as db:
            if status == "active":
                _retire_active(db, version.task_id, keep=version_id)
            db.execute(
                "UPDATE model_versions SET status = ?, updated = ? WHERE id = ?",
                (status, time.time(), version_id),
            )
        return self.version(version_id)


def first_status(task: Task, passed: bool, guarantee: dict[str, Any]) -> str:
    """The status a freshly distilled version starts in. Passed: a task made by hand is the
    user's own request and goes live (`active`); tasks stillroom found itself answer silently
    (`shadow`) until the user accepts. Not passed only for want of real examples (no threshold
    yet, more data would help) on a task the gateway can match: `shadow`, so it watches real
    calls, whose answers become its examples until its bound can hold. Else `candidate`."""
    if passed:
        return "active" if task.origin == "user" else "shadow"
    waiting = guarantee.get("threshold") is None and guarantee.get("needed") is not None
    if waiting and task.spec.get("templates") and why_test_failed(guarantee) is None:
        return "shadow"
    return "candidate"


def arrival_split(
    db: sqlite3.Connection, task: Task, hashed: str, output: str, *, held_out: bool = True
) -> str:
    """The split of an arriving example: its input's split when the task has seen the input
    (a relabel or a repeat moves nothing), else train when it may not be `held_out` (not a
    real input drawn uniformly: see `REAL_SOURCES`), else a classify label's first example
    goes to train (so every label can be learned, as a stratified split would), else
    `split_of`. Decided before any student sees the example, and never changed after."""
    row = db.execute(
        "SELECT split FROM examples WHERE task_id = ? AND input_hash = ? LIMIT 1",
        (task.id, hashed),
    ).fetchone()
    if row is not None:
        return str(row[0])
    if not held_out:
        return SPLITS[0]
    if task.kind == "classify":
        learned = db.execute(
            "SELECT 1 FROM examples WHERE task_id = ? AND output = ? AND split = 'train' LIMIT 1",
            (task.id, output),
        ).fetchone()
        if learned is None:
            return SPLITS[0]
    return split_of(hashed)


def _may_act(guarantee: dict[str, Any], name: str) -> None:
    """Refuse to activate a version its own held-out test contradicts: the one place every
    activation (by hand, by proposal, by distillation) passes through."""
    failure = why_test_failed(guarantee)
    if failure is not None:
        raise TaskError(f"{name} cannot go active: {failure}; {TEST_FIX}")


def _retire_active(db: sqlite3.Connection, task_id: int, keep: int = 0) -> None:
    """Retire the task's active version (one active per task), all but `keep`."""
    db.execute(
        "UPDATE model_versions SET status = 'retired', updated = ?"
        " WHERE task_id = ? AND status = 'active' AND id != ?",
        (time.time(), task_id, keep),
    )


def _task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        instruction=row["instruction"],
        origin=row["origin"],
        spec=json.loads(row["spec"]),
        state=row["state"],
        created=row["created"],
        updated=row["updated"],
    )


def _version(row: sqlite3.Row) -> ModelVersion:
    return ModelVersion(
        id=row["id"],
        task_id=row["task_id"],
        version=row["version"],
        student=row["student"],
        path=row["path"],
        status=row["status"],
        metrics=json.loads(row["metrics"]),
        guarantee=json.loads(row["guarantee"]),
        created=row["created"],
        updated=row["updated"],
    )
