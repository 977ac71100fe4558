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
    (
        2,
        "tasks, examples, model versions, candidates, predictions, proposals, embeddings",
        """
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL CHECK (kind IN ('classify', 'extract', 'generate')),
            instruction TEXT,
            origin TEXT NOT NULL,
            spec TEXT NOT NULL,
            state TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );

        CREATE TABLE examples (
            id INTEGER PRIMARY KEY,
            task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
            input TEXT NOT NULL,
            output TEXT NOT NULL,
            source TEXT NOT NULL
                CHECK (source IN ('user', 'teacher', 'synthetic', 'correction')),
            event_id INTEGER,
            at REAL NOT NULL,
            input_hash TEXT NOT NULL,
            UNIQUE (task_id, input_hash, output)
        );
        CREATE INDEX examples_task ON examples(task_id);

        CREATE TABLE model_versions (
            id INTEGER PRIMARY KEY,
            task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            student TEXT NOT NULL,
            path TEXT NOT NULL,
            status TEXT NOT NULL
                CHECK (status IN ('candidate', 'shadow', 'active', 'retired', 'rejected')),
            metrics TEXT NOT NULL,
            guarantee TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            UNIQUE (task_id, version)
        );

        CREATE TABLE candidates (
            id INTEGER PRIMARY KEY,
            signature TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            support INTEGER NOT NULL,
            days INTEGER NOT NULL,
            score REAL NOT NULL,
            detail TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('new', 'queued', 'distilled', 'dismissed')),
            task_id INTEGER REFERENCES tasks(id) ON DELETE SET NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            updated REAL NOT NULL
        );

        CREATE TABLE predictions (
            id INTEGER PRIMARY KEY,
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            event_id INTEGER,
            mode TEXT NOT NULL CHECK (mode IN ('shadow', 'active', 'audit')),
            input TEXT NOT NULL,
            answer TEXT,
            confidence REAL,
            abstained INTEGER NOT NULL,
            truth TEXT,
            at REAL NOT NULL
        );
        CREATE INDEX predictions_version ON predictions(version_id, at);

        CREATE TABLE proposals (
            id INTEGER PRIMARY KEY,
            task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
            version_id INTEGER NOT NULL REFERENCES model_versions(id) ON DELETE CASCADE,
            evidence TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'accepted', 'later', 'never')),
            at REAL NOT NULL,
            answered REAL
        );

        CREATE TABLE embeddings (
            key TEXT PRIMARY KEY,
            vector BLOB NOT NULL,
            at REAL NOT NULL
        );
        """,
    ),
    (
        3,
        "claims: one process at a time acts on a file",
        """
        CREATE TABLE claims (
            file TEXT PRIMARY KEY,
            action_id INTEGER NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
            pid INTEGER NOT NULL,
            started REAL NOT NULL,
            at REAL NOT NULL
        );
        CREATE INDEX claims_action ON claims(action_id);
        """,
    ),
    (
        4,
        "examples: each keeps the split it was given when it arrived",
        # The split follows the normalised input's hash (registry.split_of): hex prefixes
        # below '8000' train (50%), below 'cccd' calibrate (30%), the rest test (20%). Rows of
        # one input share their hash, so they share a split too.
        """
        ALTER TABLE examples ADD COLUMN split TEXT NOT NULL DEFAULT 'train'
            CHECK (split IN ('train', 'calibration', 'test'));
        UPDATE examples SET split = CASE
            WHEN substr(input_hash, 1, 4) < '8000' THEN 'train'
            WHEN substr(input_hash, 1, 4) < 'cccd' THEN 'calibration'
            ELSE 'test'
        END;
        CREATE INDEX examples_split ON examples(task_id, split);
        """,
    ),
    (
        5,
        "actions: found by the file they put in place",
        # A user's move of a file a task filed is a correction of that move (Store.actions_to);
        # the index holds the same expression the query uses, so the lookup never scans.
        """
        CREATE INDEX actions_dst ON actions(json_extract(plan, '$.dst'), at);
        """,
    ),
]
