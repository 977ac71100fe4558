"""What students said on live events, and what the user did: the live evidence of a version."""

from __future__ import annotations

import time
from dataclasses import dataclass

from stillroom.store import Store


@dataclass(frozen=True)
class LiveStats:
    """A version's live record: answered and abstained, how many of the answered got a truth,
    and how many of those disagreed with it."""

    answered: int
    abstained: int
    judged: int
    errors: int

    @property
    def agreement(self) -> float | None:
        return None if not self.judged else 1 - self.errors / self.judged

    @property
    def coverage(self) -> float | None:
        total = self.answered + self.abstained
        return None if not total else self.answered / total


@dataclass(frozen=True)
class MoveOutcomes:
    """An active version's automated moves at one moment. A move is wrong once corrected or
    undone, right once it settled (nobody did either in time) or the user confirmed it, and
    open until then. `settled` counts the moves old enough that every outcome among them is
    in, and `settled_wrong` the wrong ones among those."""

    moves: int
    wrong: int
    right: int
    settled: int
    settled_wrong: int

    @property
    def open(self) -> int:
        return self.moves - self.wrong - self.right

    @property
    def judged(self) -> int:
        return self.wrong + self.right


def record(
    store: Store,
    version_id: int,
    mode: str,
    text: str,
    answer: str | None,
    confidence: float,
    abstained: bool,
    event_id: int | None,
    truth: str | None = None,
) -> int:
    """Keep what a student said; `truth` when it is known already (an audited call)."""
    with store.transaction() as db:
        cursor = db.execute(
            "INSERT INTO predictions (version_id, event_id, mode, input, answer, confidence,"
            " abstained, truth, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                version_id,
                event_id,
                mode,
                text,
                answer,
                confidence,
                int(abstained),
                truth,
                time.time(),
            ),
        )
        return int(cursor.lastrowid or 0)


def set_truth(store: Store, path: str, truth: str) -> list[int]:
    """The user filed the file at `path` as `truth`: settle the open predictions about it.
    Returns the ids of the version whose predictions were settled."""
    with store.transaction() as db:
        rows = db.execute(
            "SELECT p.id, p.version_id FROM predictions p JOIN events e ON p.event_id = e.id"
            " WHERE e.path = ? AND p.truth IS NULL",
            (path,),
        ).fetchall()
        for row in rows:
            db.execute("UPDATE predictions SET truth = ? WHERE id = ?", (truth, row[0]))
    return sorted({int(r[1]) for r in rows})


def set_truth_for_event(store: Store, event_id: int, truth: str) -> None:
    with store.transaction() as db:
        db.execute(
            "UPDATE predictions SET truth = ? WHERE event_id = ? AND truth IS NULL",
            (truth, event_id),
        )


def live_stats(
    store: Store, version_id: int, mode: str, *, assume_right: bool = False
) -> LiveStats:
    """Counts for one version in one mode. With `assume_right`, an answer nobody corrected
    counts as judged right (an automated move the user left where it was)."""
    rows = store.query(
        "SELECT abstained, answer, truth FROM predictions WHERE version_id = ? AND mode = ?",
        [version_id, mode],
    )
    answered = [r for r in rows if not r[0]]
    judged = [r for r in answered if r[2] is not None or assume_right]
    errors = sum(1 for r in judged if r[2] is not None and r[2] != r[1])
    return LiveStats(len(answered), len(rows) - len(answered), len(judged), errors)


def move_outcomes(store: Store, version_id: int, settled_before: float) -> MoveOutcomes:
    """Outcomes of a version's active answers (its automated moves); those made at or before
    `settled_before` have settled."""
    wrong = "truth IS NOT NULL AND truth IS NOT answer"
    row = store.query(
        "SELECT COUNT(*),"
        f" COALESCE(SUM({wrong}), 0),"
        " COALESCE(SUM(truth = answer OR (truth IS NULL AND at <= ?)), 0),"
        " COALESCE(SUM(at <= ?), 0),"
        f" COALESCE(SUM(at <= ? AND {wrong}), 0)"
        " FROM predictions WHERE version_id = ? AND mode = 'active' AND NOT abstained",
        [settled_before, settled_before, settled_before, version_id],
    )[0]
    return MoveOutcomes(*(int(value) for value in row))
