"""Candidates become tasks: their events become examples, and the task is queued to distil.

Run after each detection, so a task's data set grows with every new repetition and the
nightly job retrains it. A prompt task also keeps in its spec what the gateway needs to match
a call to it and to answer as the teacher would (see `prompt_spec`).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stillroom.config import Config
from stillroom.daemon.signatures import Observation, observe, variable_part
from stillroom.events import Event
from stillroom.inputs import destination_label, file_input_text
from stillroom.monitors.features import file_features
from stillroom.prompts import label_key, template_hash
from stillroom.registry import Registry, Task
from stillroom.store import Store

# Only classifiers distil today; extraction and generation students come with the GGUF runtime
# (their candidates wait, as candidates).
DISTILLABLE = ("classify",)
MAX_EXISTING = 5000
MAX_INSTRUCTIONS = 20


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
    seen = _observed(store, detail)
    train_only: list[tuple[str, str, str, int | None]] = []
    if family == "file":
        examples = [(o.input, o.outcome or "", "user", o.event_id) for _, o in seen]
        folder = next((r for e, _ in seen if (r := getattr(e.payload, "root", None))), None)
        if folder and task.spec.get("folder") != folder:
            task = registry.update_task(task, spec={**task.spec, "folder": folder})
        examples += existing_examples(existing)
    else:
        rows = [
            (e, (variable_part(o.input), label_key(o.outcome or ""), "teacher", o.event_id))
            for e, o in seen
        ]
        # Calls forwarded because the task's student abstained are harder than its traffic:
        # they teach, but a bound calibrated on them would not speak of the calls it answers.
        examples = [row for e, row in rows if not _abstained(e)]
        train_only = [row for e, row in rows if _abstained(e)]
        spec = {**task.spec, **prompt_spec(row["signature"], detail, seen)}
        if spec != task.spec:
            task = registry.update_task(task, spec=spec)
    added = registry.add_examples(task, examples)
    added += registry.add_examples(task, train_only, train_only=True)
    if added and task.state not in ("queued", "paused", "declined"):
        task = registry.update_task(task, state="queued")
    return task


def _abstained(event: Event) -> bool:
    """The call was forwarded because a student of its task abstained (see LLMCallPayload)."""
    data = event.payload.model_dump()
    while "abstained" not in data and isinstance(data.get("data"), dict):
        data = data["data"]  # a GenericPayload keeps the stored JSON under `data`
    return bool(data.get("abstained"))


def _observed(store: Store, detail: dict[str, Any]) -> list[tuple[Event, Observation]]:
    """The candidate's events that still exist and have an outcome, with what they say."""
    found = []
    for event_id in detail.get("event_ids", []):
        event = store.event(int(event_id))
        seen = observe(event) if event is not None else None
        if event is not None and seen is not None and seen.outcome is not None:
            found.append((event, seen))
    return found


def prompt_spec(
    signature: str, detail: dict[str, Any], seen: Sequence[tuple[Event, Observation]]
) -> dict[str, Any]:
    """What matching a call to a prompt task needs: its templates (by hash), where its
    instruction sits, the instructions as written, the models called, whether the calls
    carried a conversation, and each label as the teacher wrote it most often."""
    written: dict[str, Counter[str]] = defaultdict(Counter)
    for _, obs in seen:
        if obs.outcome is not None:
            written[label_key(obs.outcome)][obs.outcome.strip()] += 1
    templates = [str(t["signature"]) for t in detail.get("templates", [])] or [signature]
    where = Counter(o.instruction_at for _, o in seen if o.instruction_at)
    said = Counter(o.instruction for _, o in seen if o.instruction)
    template = str(detail.get("template") or signature)
    return {
        "template": template,
        "template_hash": template_hash(template),
        "templates": {template_hash(t): t for t in templates},
        "instruction_at": where.most_common(1)[0][0] if where else "user",
        "instructions": [text for text, _ in said.most_common(MAX_INSTRUCTIONS)],
        "models": sorted({o.model for _, o in seen if o.model}),
        "history": any(_has_history(event) for event, _ in seen),
        "labels": {key: forms.most_common(1)[0][0] for key, forms in sorted(written.items())},
    }


def _has_history(event: Event) -> bool:
    """Whether a call carried earlier turns (assistant or tool messages): few-shot, or a chat."""
    messages = event.payload.model_dump().get("messages") or []
    return any(isinstance(m, dict) and m.get("role") in ("assistant", "tool") for m in messages)


def existing_examples(roots: list[Path]) -> list[tuple[str, str, str, int | None]]:
    """Files already filed in the destinations, each labelled with its folder (capped)."""
    found: list[tuple[str, str, str, int | None]] = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if len(found) >= MAX_EXISTING:
                return found
            # A link is filed nowhere: its target may lie outside every root.
            if path.name.startswith(".") or path.is_symlink() or not path.is_file():
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
