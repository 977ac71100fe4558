"""The database schema, as numbered migrations. Never edit one that has landed: add the next."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "events, action journal, settings",
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            source TEXT NOT NULL,
            kind TEXT NOT NULL,
            path TEXT,
            payload TEXT NOT NULL,
            bytes INTEGER NOT NULL
        );
        CREATE INDEX events_at ON events(at);
        CREATE INDEX events_kind ON events(kind, at);
        CREATE INDEX events_path ON events(path);

        CREATE TABLE actions (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            updated REAL NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('planned', 'done', 'failed', 'undoing', 'undone')),
            plan TEXT NOT NULL,
            automation TEXT,
            event_id INTEGER,
            confidence REAL,
            error TEXT
        );
        CREATE INDEX actions_state ON actions(state);

        CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        """,
    ),
]
