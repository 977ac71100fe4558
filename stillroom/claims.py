"""Claims: while an action runs, its file's (device, inode) is claimed in the store, so two
processes (the daemon, `stillroom apply`, `stillroom undo`) never act on one file at once.

A claim records the process that took it by pid and start time: a pid reused after a crash
does not keep a dead claim alive. The Store takes and releases claims (migration 3).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence

from stillroom.errors import ConflictError

# Two readings of one process's start time differ by less than this; a reused pid by more.
START_SLACK = 0.5


def process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when it is gone."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_alive(pid: int, started: float) -> bool:
    """Whether the process that took a claim still runs (a reused pid does not count)."""
    now = process_started(pid)
    return now is not None and abs(now - started) < START_SLACK


def file_key(file: Sequence[int]) -> str:
    """A claim's key: a file's device and inode (as text: an inode may not fit in int64)."""
    return f"{int(file[0])}:{int(file[1])}"


def claim_file(db: sqlite3.Connection, file: Sequence[int], action_id: int) -> None:
    """Claim `file` for an action inside the caller's transaction, or raise ConflictError."""
    started = process_started(os.getpid()) or time.time()
    try:
        db.execute(
            "INSERT INTO claims (file, action_id, pid, started, at) VALUES (?, ?, ?, ?, ?)",
            (file_key(file), action_id, os.getpid(), started, time.time()),
        )
    except sqlite3.IntegrityError:
        row = db.execute(
            "SELECT action_id, pid, started FROM claims WHERE file = ?", (file_key(file),)
        ).fetchone()
        if row is None:  # released in between: the caller may simply try again
            raise ConflictError("the file's claim changed hands; try again") from None
        action, pid, when = int(row[0]), int(row[1]), float(row[2])
        alive = process_alive(pid, when)
        whose = f"process {pid}" if alive else f"process {pid}, now gone,"
        raise ConflictError(
            f"{whose} is acting on this file (action #{action})", holder=action, alive=alive
        ) from None
