"""Proposals: a shadow student whose live agreement supports its bound offers to take over.

Accepted, the version goes active and its task starts acting; "later" asks again in a few
days; "never" declines the task for good. A task already accepted promotes its new versions
without asking again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom.binomial import breaks_bound
from stillroom.daemon.notify import Notice, Notifier
from stillroom.errors import TaskError
from stillroom.predictions import live_stats
from stillroom.registry import ModelVersion, Registry, Task, why_test_failed
from stillroom.store import Store

log = logging.getLogger("stillroom.daemon")
MIN_SHADOW = 10  # live judgements before a shadow version can be proposed
LATER_SECONDS = 3 * 86400
ANSWERS = {"accept": "accepted", "later": "later", "never": "never"}


@dataclass(frozen=True)
class Proposal:
    id: int
    task: str
    version_id: int
    evidence: dict[str, Any]
    state: str
    at: float

    @property
    def text(self) -> str:
        return str(self.evidence.get("text", ""))


def review(store: Store, notifier: Notifier) -> list[Proposal]:
    """Look at every shadow version; propose, promote or reject it. Returns new proposals."""
    registry = Registry(store)
    made = []
    for task in registry.tasks():
        if task.state == "declined":
            continue
        for version in registry.versions(task):
            if version.status == "shadow":
                proposal = _review_one(store, registry, task, version, notifier)
                if proposal is not None:
                    made.append(proposal)
    return made


def _review_one(
    store: Store, registry: Registry, task: Task, version: ModelVersion, notifier: Notifier
) -> Proposal | None:
    if float(version.guarantee.get("bound", 1.0)) >= 1.0:
        return None  # no bound yet: it only watches real calls until it has the examples
    failure = why_test_failed(version.guarantee)
    if failure is not None:  # it could never go active: stop watching it
        registry.set_status(version.id, "rejected")
        log.warning("%s v%d: %s; rejected", task.name, version.version, failure)
        return None
    stats = live_stats(store, version.id, "shadow")
    bound = float(version.guarantee.get("bound", 1.0))
    if stats.judged < MIN_SHADOW:
        return None
    if breaks_bound(stats.errors, stats.judged, bound):
        registry.set_status(version.id, "rejected")
        log.warning("%s v%d: live agreement breaks its bound; rejected", task.name, version.version)
        return None
    if stats.errors / stats.judged > bound:
        return None  # not yet convincing: keep watching
    if registry.active_version(task) is not None:
        registry.set_status(version.id, "active")
        log.info(
            "%s v%d: live agreement supports its bound; now active", task.name, version.version
        )
        return None
    if _pending(store, task):
        return None
    evidence = _evidence(task, version, stats.judged, stats.errors, stats.coverage)
    with store.transaction() as db:
        cursor = db.execute(
            "INSERT INTO proposals (task_id, version_id, evidence, state, at)"
            " VALUES (?, ?, ?, 'open', ?)",
            (task.id, version.id, json.dumps(evidence), time.time()),
        )
        proposal_id = int(cursor.lastrowid or 0)
    registry.update_task(task, state="proposed")
    notifier.notify(Notice("proposal", task.name, evidence["text"], proposal_id))
    return get(store, proposal_id)


def _pending(store: Store, task: Task) -> bool:
    """An open proposal, a recent "later", or a "never" stops a new proposal."""
    rows = store.query(
        "SELECT state, COALESCE(answered, at) FROM proposals WHERE task_id = ?", [task.id]
    )
    now = time.time()
    return any(
        state == "open" or state == "never" or (state == "later" and now - when < LATER_SECONDS)
        for state, when in rows
    )


def _evidence(
    task: Task, version: ModelVersion, judged: int, errors: int, coverage: float | None
) -> dict[str, Any]:
    agreement = 1 - errors / judged
    unsure = 1 - (coverage if coverage is not None else version.guarantee.get("coverage", 0))
    if task.spec.get("family") == "prompt":
        # A prompt task's truth is the model's own answer to each forwarded call.
        rest = (
            f"I'll forward the {unsure:.0%} I'm unsure of"
            if unsure >= 0.005
            else "I was sure of every one, and will still forward any I'm unsure of"
        )
        text = (
            f"I can answer {task.name} calls: {agreement:.0%} agreement with the model's last"
            f" {judged} answers; {rest}"
        )
    else:
        folder = task.spec.get("folder")
        where = _tilde(str(folder)) if folder else "these files"
        alone = (
            f"I'll leave the {unsure:.0%} I'm unsure of alone"
            if unsure >= 0.005
            else "I was sure of every one, and will still leave alone any I'm unsure of"
        )
        text = (
            f"I can sort {where}: {agreement:.0%} agreement with your last {judged} moves; {alone}"
        )
    return {
        "text": text,
        "agreement": agreement,
        "judged": judged,
        "errors": errors,
        "unsure": unsure,
        "bound": version.guarantee.get("bound"),
        "test_accuracy": version.metrics.get("accuracy_test"),
        "version": version.version,
    }


def _tilde(path: str) -> str:
    """~/Downloads rather than /home/ada/Downloads: shorter, and no user name in a popup."""
    home = str(Path.home())
    if path == home or path.startswith(home + os.sep):
        return "~" + path[len(home) :]
    return path


def get(store: Store, proposal_id: int) -> Proposal:
    rows = store.query(
        "SELECT p.id, t.name, p.version_id, p.evidence, p.state, p.at FROM proposals p"
        " JOIN tasks t ON t.id = p.task_id WHERE p.id = ?",
        [proposal_id],
    )
    if not rows:
        raise TaskError(f"there is no proposal #{proposal_id} (`stillroom proposals` lists them)")
    r = rows[0]
    return Proposal(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5])


def listing(store: Store, states: tuple[str, ...] = ("open", "later")) -> list[Proposal]:
    rows = store.query(
        f"SELECT id FROM proposals WHERE state IN ({', '.join('?' * len(states))}) ORDER BY id",
        states,
    )
    return [get(store, r[0]) for r in rows]


def answer(store: Store, proposal_id: int, reply: str) -> Proposal:
    """accept: the version goes active; later: ask again in a few days; never: decline."""
    if reply not in ANSWERS:
        raise TaskError(f"answer {reply!r}: one of accept, later, never")
    proposal = get(store, proposal_id)
    if proposal.state not in ("open", "later"):
        raise TaskError(f"proposal #{proposal_id} was already answered ({proposal.state})")
    registry = Registry(store)
    task = registry.task(proposal.task)
    if reply == "accept":  # first, so a refused version leaves the proposal open
        registry.set_status(proposal.version_id, "active")
    with store.transaction() as db:
        db.execute(
            "UPDATE proposals SET state = ?, answered = ? WHERE id = ?",
            (ANSWERS[reply], time.time(), proposal_id),
        )
    if reply == "accept":
        registry.update_task(task, state="active")
    elif reply == "never":
        registry.update_task(task, state="declined")
    else:
        registry.update_task(task, state="ready")
    return get(store, proposal_id)
