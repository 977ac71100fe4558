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
