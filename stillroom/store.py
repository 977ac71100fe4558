"""The one SQLite database: events, the action journal, settings. WAL, numbered migrations."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom.claims import claim_file, process_alive, process_started
from stillroom.errors import ConflictError, StoreError
from stillroom.events import Event
from stillroom.migrations import MIGRATIONS
from stillroom.paths import private_dir, private_file

UNFINISHED = ("planned", "undoing")


@dataclass(frozen=True)
class ActionRecord:
    """One journaled file action. `plan` holds everything needed to finish or undo it."""

    id: int
    at: float
    updated: float
    kind: str
    state: str
    plan: dict[str, Any]
    automation: str | None
    event_id: int | None
    confidence: float | None
    error: str | None


class Store:
    """Thread-safe access to the database (one connection, one lock)."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        """`busy_timeout`: seconds a statement waits for another connection's lock before
        it raises sqlite3.OperationalError ("database is locked")."""
        self.path = Path(path)
        private_dir(self.path.parent)
        private_file(self.path)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process; only power loss can drop a commit.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.migrate()
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                side.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the migrations this database has not seen; return the schema version."""
        with self.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
            )
            done = {r[0] for r in db.execute("SELECT version FROM schema_migrations")}
            known = {number for number, _, _ in MIGRATIONS}
            if done - known:
                raise StoreError(
                    f"{self.path} was written by a newer stillroom (schema {max(done)})"
                )
            for number, name, sql in MIGRATIONS:
                if number in done:
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?)", (number, name, time.time())
                )
        return max(known)

    # -- events ---------------------------------------------------------------------------

    def add_events(self, events: Iterable[Event]) -> list[int]:
        """Store events in one transaction; return their ids in order."""
        ids: list[int] = []
        with self.transaction() as db:
            for event in events:
                payload = event.payload_json()
                path = getattr(event.payload, "path", None)
                cursor = db.execute(
                    "INSERT INTO events (at, source, kind, path, payload, bytes)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (event.at, event.source, event.kind, path, payload, len(payload)),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def add_event(self, event: Event) -> int:
        return self.add_events([event])[0]

    def events(
        self, kind: str | None = None, limit: int = 100, since: float | None = None
    ) -> list[Event]:
        """Most recent first."""
        sql, args = "SELECT id, source, kind, at, payload FROM events WHERE 1=1", list[Any]()
        if kind:
            sql, args = sql + " AND kind = ?", [*args, kind]
        if since is not None:
            sql, args = sql + " AND at >= ?", [*args, since]
        rows = self.query(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        return [Event.from_row(*row) for row in rows]

    def event(self, event_id: int) -> Event | None:
        rows = self.query(
            "SELECT id, source, kind, at, payload FROM events WHERE id = ?", [event_id]
        )
        return Event.from_row(*rows[0]) if rows else None

    def count_events(self) -> dict[str, int]:
        rows = self.query("SELECT kind, COUNT(*) FROM events GROUP BY kind ORDER BY kind")
        return {r[0]: r[1] for r in rows}

    def forget(self, older_than_days: float | None = None) -> int:
        """Delete raw events (all, or those older than N days); the action journal stays."""
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
        with self.transaction() as db:
            if cutoff is None:
                deleted = db.execute("DELETE FROM events").rowcount
            else:
                deleted = db.execute("DELETE FROM events WHERE at < ?", (cutoff,)).rowcount
        self._checkpoint()
        return deleted

    def apply_retention(self, days: float, max_bytes: int) -> int:
        """Drop events older than `days`, then the oldest until their size fits `max_bytes`."""
        deleted = self.forget(older_than_days=days)
        with self.transaction() as db:
            total = db.execute("SELECT COALESCE(SUM(bytes), 0) FROM events").fetchone()[0]
            if total > max_bytes:
                # Walk from the oldest, keeping a running sum, and cut where the rest fits.
                excess, cut = total - max_bytes, None
                for row in db.execute("SELECT id, bytes FROM events ORDER BY id"):
                    excess -= row[1]
                    if excess <= 0:
                        cut = row[0]
                        break
                if cut is not None:
                    deleted += db.execute("DELETE FROM events WHERE id <= ?", (cut,)).rowcount
        self._checkpoint()
        return deleted

    def _checkpoint(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- action journal -------------------------------------------------------------------

    def journal(
        self,
        kind: str,
        plan: dict[str, Any],
        *,
        automation: str | None = None,
        event_id: int | None = None,
        confidence: float | None = None,
        claim: Sequence[int] | None = None,
    ) -> ActionRecord:
        """Write a planned action before any of its effects happen; with `claim` (device,
        inode), claim that file for it in the same transaction (ConflictError if taken)."""
        now = time.time()
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO actions (at, updated, kind, state, plan, automation, event_id,"
                " confidence) VALUES (?, ?, ?, 'planned', ?, ?, ?, ?)",
                (now, now, kind, json.dumps(plan), automation, event_id, confidence),
            )
            action_id = int(cursor.lastrowid or 0)
            if claim is not None:
                claim_file(db, claim, action_id)
        record = self.action(action_id)
        assert record is not None
        return record

    def update_action(
        self,
        action_id: int,
        *,
        state: str | None = None,
        plan: dict[str, Any] | None = None,
        error: str | None = None,
        expect: str | None = None,
        claim: Sequence[int] | None = None,
    ) -> ActionRecord:
        """Change an action; with `expect`, only while its state is still that one
        (compare-and-set: ConflictError when another process changed it). With `claim`,
        claim that file for it in the same transaction; a settled state releases its claims."""
        sets, args = ["updated = ?"], list[Any]([time.time()])
        if state is not None:
            sets, args = [*sets, "state = ?"], [*args, state]
        if plan is not None:
            sets, args = [*sets, "plan = ?"], [*args, json.dumps(plan)]
        if error is not None:
            sets, args = [*sets, "error = ?"], [*args, error]
        where, keys = "id = ?", list[Any]([action_id])
        if expect is not None:
            where, keys = where + " AND state = ?", [action_id, expect]
        with self.transaction() as db:
            changed = db.execute(
                f"UPDATE actions SET {', '.join(sets)} WHERE {where}", (*args, *keys)
            ).rowcount
            if not changed and expect is not None:
                row = db.execute("SELECT state FROM actions WHERE id = ?", (action_id,)).fetchone()
                if row is not None:
                    raise ConflictError(
                        f"action #{action_id} is {row[0]} now, not {expect}:"
                        " another process got there first",
                        holder=action_id,
                    )
            if changed and claim is not None:
                claim_file(db, claim, action_id)
            if changed and state is not None and state not in UNFINISHED:
                db.execute("DELETE FROM claims WHERE action_id = ?", (action_id,))
        record = self.action(action_id)
        if record is None:
            raise StoreError(f"no action {action_id}")
        return record

    def action(self, action_id: int) -> ActionRecord | None:
        rows = self.query("SELECT * FROM actions WHERE id = ?", [action_id])
        return _action(rows[0]) if rows else None

    def actions(self, limit: int = 50, states: Iterable[str] | None = None) -> list[ActionRecord]:
        """Most recent first."""
        sql, args = "SELECT * FROM actions", list[Any]()
        if states is not None:
            wanted = list(states)
            sql += f" WHERE state IN ({', '.join('?' * len(wanted))})"
            args = wanted
        rows = self.query(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        return [_action(r) for r in rows]

    def actions_to(
        self, dst: str, since: float, states: Iterable[str] | None = None
    ) -> list[ActionRecord]:
        """Actions made since then that put a file at `dst`, most recent first (an indexed
        lookup, however long the journal)."""
        sql = "SELECT * FROM actions WHERE json_extract(plan, '$.dst') = ? AND at >= ?"
        args = list[Any]([dst, since])
        if states is not None:
            wanted = list(states)
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            args += wanted
        return [_action(r) for r in self.query(sql + " ORDER BY at DESC, id DESC", args)]

    def unfinished_actions(self) -> list[ActionRecord]:
        """Actions a crash left between journal and completion, oldest first."""
        return list(reversed(self.actions(limit=1_000_000, states=UNFINISHED)))

    def action_moves(
        self, since: float, states: Iterable[str] | None = None
    ) -> set[tuple[str | None, str]]:
        """(from, to) of every file placement made by actions updated since then: the move
        itself, the file it created, and its undo. Events matching one are stillroom's own."""
        sql, args = "SELECT plan FROM actions WHERE updated >= ?", list[Any]([since])
        if states is not None:
            wanted = list(states)
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            args += wanted
        moves: set[tuple[str | None, str]] = set()
        for row in self.query(sql, args):
            plan = json.loads(row[0])
            src, dst, back = plan.get("src"), plan.get("dst"), plan.get("undo_dst")
            if dst:
                moves |= {(src, dst), (None, dst)}
            if dst and back:
                moves |= {(dst, back), (None, back)}
        return moves

    # -- claims: one action at a time on a file, across processes ---------------------------

    def take_over_claims(self, action_id: int) -> bool:
        """Make this process the holder of an unfinished action's claims, unless a live
        process (this one included) holds them: it is still acting, so False."""
        started = process_started(os.getpid()) or time.time()
        with self.transaction() as db:
            rows = db.execute(
                "SELECT pid, started FROM claims WHERE action_id = ?", (action_id,)
            ).fetchall()
            if any(process_alive(row["pid"], row["started"]) for row in rows):
                return False
            db.execute(
                "UPDATE claims SET pid = ?, started = ?, at = ? WHERE action_id = ?",
                (os.getpid(), started, time.time(), action_id),
            )
        return True

    def clear_stale_claims(self) -> int:
        """Drop claims left by settled actions (a claim outlives its action only by a bug or
        a hand-edited database); those of unfinished actions go when they are settled."""
        unfinished = ", ".join("?" * len(UNFINISHED))
        with self.transaction() as db:
            return db.execute(
                "DELETE FROM claims WHERE action_id NOT IN"
                f" (SELECT id FROM actions WHERE state IN ({unfinished}))",
                UNFINISHED,
            ).rowcount

    def count_actions(self) -> dict[str, int]:
        rows = self.query("SELECT state, COUNT(*) FROM actions GROUP BY state ORDER BY state")
        return {r[0]: r[1] for r in rows}

    # -- settings -------------------------------------------------------------------------

    def setting(self, key: str, default: str | None = None) -> str | None:
        rows = self.query("SELECT value FROM settings WHERE key = ?", [key])
        return str(rows[0][0]) if rows else default

    def set_setting(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    @property
    def paused(self) -> bool:
        """`stillroom pause` stops every automation at once, daemon or not."""
        return self.setting("paused", "0") == "1"

    @paused.setter
    def paused(self, value: bool) -> None:
        self.set_setting("paused", "1" if value else "0")


def _action(row: sqlite3.Row) -> ActionRecord:
    return ActionRecord(
        id=row["id"],
        at=row["at"],
        updated=row["updated"],
        kind=row["kind"],
        state=row["state"],
        plan=json.loads(row["plan"]),
        automation=row["automation"],
        event_id=row["event_id"],
        confidence=row["confidence"],
        error=row["error"],
    )
