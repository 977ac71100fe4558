"""Candidates become tasks: their events become examples, and the task is queued to distil.

Run after each detection, so a task's data set grows with every new repetition and the
nightly job retrains it.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from stillroom.config import Config
from stillroom.daemon.signatures import observe, variable_part
from stillroom.inputs import destination_label, file_input_text
from stillroom.monitors.features import file_features
from stillroom.registry import Registry, Task
from stillroom.store import Store

# Only classifiers distil today; extraction and generation students come with the GGUF runtime.
DISTILLABLE = ("classify",)
MAX_EXISTING = 5000


def promote_candidates(store: Store, config: Config | None = None) -> list[Task]:
    """Create or refresh the task of every live classify candidate; queue those that grew.

    With `detector.learn_from_existing`, files already in the destinations join file tasks."""
    registry = Registry(store)
    rows = store.query(
        "SELECT * FROM candidates WHERE state != 'dismissed' AND kind IN"
        f" ({', '.join('?' * len(DISTILLABLE))}) ORDER BY id",
        DISTILLABLE,
    )
    existing = config.destinations if config and config.detector.learn_from_existing else []
    return [task for row in rows if (task := _promote(store, registry, row, existing)) is not None]


def _promote(
    store: Store, registry: Registry, row: sqlite3.Row, existing: list[Path]
) -> Task | None:
    detail: dict[str, Any] = json.loads(row["detail"])
    family = detail.get("family", "file")
    task = registry.task_by_id(row["task_id"]) if row["task_id"] else None
    if task is None:
        task = registry.create_task(
            _free_name(registry, task_name(row["signature"], family)),
            "classify",
            instruction=row["signature"],
            origin="detector",
            spec={"input_kind": "file" if family == "file" else "text", "family": family},
        )
        with store.transaction() as db:
            db.execute(
                "UPDATE candidates SET task_id = ?, state = 'queued' WHERE id = ?",
                (task.id, row["id"]),
            )
    examples, folder = [], None
    for event_id in detail.get("event_ids", []):
        event = store.event(int(event_id))
        seen = observe(event) if event is not None else None
        if event is None or seen is None or seen.outcome is None:
            continue
        folder = folder or getattr(event.payload, "root", None)
        text = seen.input if family == "file" else variable_part(seen.input)
        examples.append((text, seen.outcome, "user" if family == "file" else "teacher", event_id))
    if family == "file" and folder and task.spec.get("folder") != folder:
        task = registry.update_task(task, spec={**task.spec, "folder": folder})
    if family == "file":
        examples += existing_examples(existing)
    added = registry.add_examples(task, examples)
    if added and task.state not in ("queued", "paused", "declined"):
        task = registry.update_task(task, state="queued")
    return task


def existing_examples(roots: list[Path]) -> list[tuple[str, str, str, int | None]]:
    """Files already filed in the destinations, each labelled with its folder (capped)."""
    found: list[tuple[str, str, str, int | None]] = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if len(found) >= MAX_EXISTING:
                return found
            if path.name.startswith(".") or not path.is_file():
                continue
            features = file_features(path)
            if features is not None:
                found.append((file_input_text(features), destination_label(path), "user", None))
    return found


def task_name(signature: str, family: str) -> str:
    """A readable name: sort-downloads for a folder, the instruction's first words otherwise."""
    if family == "file":
        folder = re.search(r"arrived in (\S+)", signature)
        base = folder.group(1).rstrip("/").rsplit("/", 1)[-1] if folder else "files"
        return "sort-" + _slug(base)
    words = [w for w in re.findall(r"[a-z0-9]+", signature.lower()) if w not in _MASKS][:4]
    return _slug("-".join(words)) or "prompt-task"


_MASKS = {"input", "num", "quoted", "date", "time", "path", "url", "email", "json", "code", "id"}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "task"


def _free_name(registry: Registry, name: str) -> str:
    taken = {t.name for t in registry.tasks()}
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate
