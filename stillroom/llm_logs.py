"""Calls recorded by the `llm` CLI (simonw/llm) as llm.call events: `stillroom import-llm-logs`.

llm keeps every prompt and response in a SQLite logs.db. Versions before 0.36 wrote one row
per call to `responses`; 0.36 writes `turns` over a content-addressed message store
(`messages`, `parts`, `fragments`) and only reads the old table. Both are read here, with
the database opened read-only. Each imported event's origin is `llm-logs:<id>` (the row's
id, a ULID), which is how a second import knows what it has already brought in.
"""

from __future__ import annotations

import heapq
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from stillroom.config import Config, Price
from stillroom.errors import LogsError
from stillroom.events import Event, LLMCallPayload
from stillroom.pricing import cost_usd, estimate_tokens
from stillroom.redact import redact
from stillroom.store import Store

ORIGIN = "llm-logs"
BATCH = 500


@dataclass(frozen=True)
class Entry:
    """One logged call before its text is read: enough to decide whether to import it."""

    id: str
    at: float
    table: str  # "responses" (before llm 0.36) or "turns"


@dataclass(frozen=True)
class LoggedCall:
    """One call as llm logged it: the messages sent (system first) and the answer's text."""

    id: str
    at: float
    model: str
    messages: list[dict[str, str]]
    response: str
    options: dict[str, Any] = field(default_factory=dict)
    duration_ms: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    resolved_model: str | None = None


@dataclass
class ImportReport:
    """What an import did: calls stored, and why the others were not."""

    path: Path
    imported: int = 0
    already: int = 0
    too_old: int = 0
    empty: int = 0


def default_path() -> Path:
    """Where llm keeps its logs (`llm logs path`): $LLM_USER_PATH, else its app folder."""
    import click  # typer's dependency; llm uses the same function, so the paths agree

    user = os.environ.get("LLM_USER_PATH")
    return Path(user or click.get_app_dir("io.datasette.llm")) / "logs.db"


def open_logs(path: Path) -> sqlite3.Connection:
    """The logs database, read-only; LogsError names the path when it is not llm's."""
    if not path.is_file():
        raise LogsError(f"no llm logs database at {path} (`llm logs path` says where it is)")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        db.row_factory = sqlite3.Row
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        raise LogsError(f"{path} is not a readable SQLite database: {exc}") from exc
    if "_llm_migrations" not in tables or not tables & {"responses", "turns"}:
        db.close()
        raise LogsError(f"{path} is not an llm logs database (it has no llm tables)")
    return db


def entries(db: sqlite3.Connection) -> Iterator[Entry]:
    """Every logged call, oldest first, from both the old and the new tables."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    sources: list[list[Entry]] = []
    if "turns" in tables:
        sources.append(_entries(db, "turns", ""))
    if "responses" in tables:
        # llm 0.36 reads a responses row only when no turn has its id; so do we.
        newer = " WHERE id NOT IN (SELECT id FROM turns)" if "turns" in tables else ""
        sources.append(_entries(db, "responses", newer))
    return heapq.merge(*sources, key=lambda e: (e.at, e.id))


def _entries(db: sqlite3.Connection, table: str, where: str) -> list[Entry]:
    rows = db.execute(f"SELECT id, datetime_utc FROM {table}{where}")
    found = [Entry(str(r["id"]), _timestamp(r["datetime_utc"]), table) for r in rows]
    return sorted(found, key=lambda e: (e.at, e.id))


def _timestamp(value: str | None) -> float:
    """llm writes ISO times in UTC, with or without an offset. An unreadable time reads as
    the epoch, so the retention check skips the row."""
    try:
        moment = datetime.fromisoformat(str(value or "").replace(" ", "T"))
    except ValueError:
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def load_call(db: sqlite3.Connection, entry: Entry) -> LoggedCall | None:
    """The call's messages and answer, or None when it has no prompt or no answer text
    (a tool-call round trip, a failed call)."""
    found = db.execute(f"SELECT * FROM {entry.table} WHERE id = ?", (entry.id,)).fetchone()
    if found is None:
        return None
    row = dict(found)
    if entry.table == "turns":
        messages = _chain(db, row.get("parent_message_hash"))
        answer = "\n".join(
            m["content"]
            for m in _chain(db, row.get("tip_message_hash"), row.get("parent_message_hash"))
            if m["role"] == "assistant"
        )
    else:
        messages = _legacy_messages(db, row)
        answer = row.get("response") or ""
    if (
        not any(m["role"] == "user" and m["content"].strip() for m in messages)
        or not answer.strip()
    ):
        return None
    return LoggedCall(
        id=entry.id,
        at=entry.at,
        model=row.get("model") or "",
        messages=messages,
        response=answer,
        options=_json_object(row.get("options_json")),
        duration_ms=row.get("duration_ms"),
        input_tokens=row.get("input_tokens"),
        output_tokens=row.get("output_tokens"),
        resolved_model=row.get("resolved_model"),
    )


def _chain(
    db: sqlite3.Connection, tip: str | None, stop: str | None = None
) -> list[dict[str, str]]:
    """The text messages from the root (or just below `stop`) down to `tip`, oldest first."""
    found: list[dict[str, str]] = []
    while tip is not None and tip != stop:
        message = db.execute(
            "SELECT role, parent_hash FROM messages WHERE hash = ?", (tip,)
        ).fetchone()
        if message is None:
            break
        text = _message_text(db, tip)
        if text:
            found.append({"role": message["role"], "content": text})
        tip = message["parent_hash"]
    return found[::-1]


def _message_text(db: sqlite3.Connection, message_hash: str) -> str:
    """A message's text parts joined; text borrowed from fragments is put back."""
    texts = []
    parts = db.execute(
        "SELECT text, payload FROM parts WHERE message_hash = ? AND type = 'text'"
        " ORDER BY position",
        (message_hash,),
    )
    for part in parts:
        if part["text"] is not None:
            texts.append(part["text"])
            continue
        pieces = _json_object(part["payload"]).get("text_ref") or []
        texts.append("".join(_piece(db, p) for p in pieces if isinstance(p, dict)))
    return "\n".join(t for t in texts if t)


def _piece(db: sqlite3.Connection, piece: dict[str, Any]) -> str:
    if "literal" in piece:
        return str(piece["literal"])
    found = db.execute("SELECT content FROM fragments WHERE id = ?", (piece.get("fragment"),))
    row = found.fetchone()
    return str(row[0]) if row else ""


def _legacy_messages(db: sqlite3.Connection, row: Mapping[str, Any]) -> list[dict[str, str]]:
    """[system?, user] of a `responses` row, fragments joined as llm joined them."""
    prompt = "\n".join([*_fragments(db, "prompt_fragments", row["id"]), row.get("prompt") or ""])
    system_bits = [*_fragments(db, "system_fragments", row["id"]), row.get("system") or ""]
    system = "\n\n".join(b.strip() for b in system_bits if b.strip())
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt.strip("\n")}]


def _fragments(db: sqlite3.Connection, table: str, response_id: str) -> list[str]:
    try:
        rows = db.execute(
            f"SELECT f.content FROM {table} t JOIN fragments f ON f.id = t.fragment_id"
            f' WHERE t.response_id = ? ORDER BY t."order"',
            (response_id,),
        )
        return [str(r[0]) for r in rows]
    except sqlite3.OperationalError:  # a database from before fragments existed
        return []


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def call_event(call: LoggedCall, prices: Mapping[str, Price]) -> Event:
    """The llm.call event of a logged call: redacted, priced, dated when it was made."""
    prompt = call.input_tokens
    if prompt is None:
        prompt = sum(estimate_tokens(m["content"]) for m in call.messages)
    completion = call.output_tokens
    if completion is None:
        completion = estimate_tokens(call.response)
    names = [call.model, *([call.resolved_model] if call.resolved_model else [])]
    costs = (cost_usd(prices, name, prompt, completion) for name in names)
    payload = LLMCallPayload(
        provider="anthropic" if "claude" in call.model.lower() else "openai",
        endpoint="llm",
        model=call.model,
        messages=redact(call.messages),
        params=redact(call.options),
        response=redact(call.response),
        latency_ms=call.duration_ms,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=next((c for c in costs if c is not None), None),
        origin=f"{ORIGIN}:{call.id}",
    )
    return Event(source="llm", kind="llm.call", at=call.at, payload=payload)


def imported_ids(store: Store) -> set[str]:
    """Ids of the llm log rows already imported into this store."""
    rows = store.query(
        "SELECT json_extract(payload, '$.origin') FROM events WHERE kind = 'llm.call'"
        " AND json_extract(payload, '$.origin') LIKE ?",
        [f"{ORIGIN}:%"],
    )
    return {str(r[0]).removeprefix(f"{ORIGIN}:") for r in rows}


def import_logs(path: Path, store: Store, config: Config, now: float | None = None) -> ImportReport:
    """Store every call in llm's logs not yet imported and within the retention period."""
    report = ImportReport(path=path)
    cutoff = (now or time.time()) - config.retention.days * 86400
    seen = imported_ids(store)
    batch: list[Event] = []
    db = open_logs(path)
    try:
        for entry in entries(db):
            if entry.id in seen:
                report.already += 1
            elif entry.at < cutoff:
                report.too_old += 1
            elif (call := load_call(db, entry)) is None:
                report.empty += 1
            else:
                batch.append(call_event(call, config.gateway.prices))
                seen.add(entry.id)
            if len(batch) >= BATCH:
                report.imported += len(store.add_events(batch))
                batch = []
        report.imported += len(store.add_events(batch))
    except sqlite3.Error as exc:
        raise LogsError(f"cannot read {path}: {exc}") from exc
    finally:
        db.close()
    return report
