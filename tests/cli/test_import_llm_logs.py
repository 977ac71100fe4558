"""`stillroom import-llm-logs` on a logs.db the real `llm` package wrote: its own migrations,
its own Response.log_to_db, and a row in the table llm versions before 0.36 wrote."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import llm
import pytest
import sqlite_utils
from daemon_harness import run_cli
from llm.migrations import migrate
from prompt_calls import INSTRUCTIONS, SYSTEM, answer, tickets

from stillroom.events import Event
from stillroom.store import Store

MODEL = "gpt-4o-mini"  # priced in the default config: 0.15 / 0.60 USD per million tokens
SECRET = "sk-proj-" + "Vb7Kq2" * 8
DAY = 86400.0
NOW = time.time()
TICKETS = tickets(24, seed=7)
SILENT = "Reply with nothing at all."


class TicketModel(llm.Model):
    """A model that answers from the prompt's words, as tests/upstream.py's oracle does."""

    model_id = MODEL
    can_stream = False

    def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.Response,
        conversation: llm.Conversation | None,
    ) -> Iterator[str]:
        text = prompt.prompt or ""
        response.set_usage(input=len(text.split()), output=1)
        yield "" if SILENT in text else answer([{"role": "user", "content": text}])


@dataclass
class Logged:
    """What the test wrote into logs.db, to compare with what was imported."""

    path: Path
    prompts: list[str]
    at: list[float]


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def log(db: sqlite_utils.Database, response: llm.Response, at: float) -> None:
    response.text()
    response.log_to_db(db)
    db.execute("UPDATE turns SET datetime_utc = ? WHERE id = ?", [iso(at), response.id])


def prompt_at(n: int) -> float:
    """The calls spread over three days, so they pass the detector's min_days."""
    return NOW - DAY * (n % 3) - 3600 - n


@pytest.fixture
def logs_db(tmp_path: Path) -> Logged:
    path = tmp_path / "llm" / "logs.db"
    path.parent.mkdir()
    db = sqlite_utils.Database(path)
    migrate(db)
    model = TicketModel()
    prompts, times = [], []
    for n, ticket in enumerate(TICKETS):
        extra = f" I pasted my key {SECRET} by mistake." if n == 0 else ""
        prompts.append(f"{INSTRUCTIONS[n % len(INSTRUCTIONS)]}\n\n{ticket}{extra}")
        times.append(prompt_at(n))
        log(db, model.prompt(prompts[-1]), times[-1])
    chat = model.conversation()
    log(db, chat.prompt("Hello, who are you?"), NOW - 600)
    log(db, chat.prompt("And what can you do for me?"), NOW - 590)
    log(db, model.prompt("What is this handbook about?", fragments=[HANDBOOK]), NOW - 500)
    log(db, model.prompt(SILENT), NOW - 400)
    log(db, model.prompt("Which team handles refunds?"), NOW - 200 * DAY)  # past retention
    write_legacy_row(db)
    db.close()
    return Logged(path, prompts, times)


HANDBOOK = "The staff handbook covers holidays, expenses and the office dog rota."
LEGACY_TICKET = "The parcel with my yoga mat never arrived."


def write_legacy_row(db: sqlite_utils.Database) -> None:
    """A call as llm 0.35 and earlier logged it: one `responses` row, fragments aside."""
    db["conversations"].insert({"id": "01old0conversation", "name": "route", "model": MODEL})
    db["responses"].insert(
        {
            "id": "01old0response",
            "model": MODEL,
            "prompt": LEGACY_TICKET,
            "system": SYSTEM,
            "response": "Shipping.",
            "conversation_id": "01old0conversation",
            "duration_ms": 812,
            "datetime_utc": datetime.fromtimestamp(NOW - 2 * DAY, UTC)
            .replace(tzinfo=None)
            .isoformat(),
            "input_tokens": 30,
            "output_tokens": 2,
            "options_json": json.dumps({"temperature": 0.2, "api_key": "not-for-logs"}),
        }
    )
    fragment = db["fragments"].insert({"hash": "h1", "content": "Customer since 2019."}).last_pk
    db["prompt_fragments"].insert({"response_id": "01old0response", "fragment_id": fragment})


def calls(home: Path) -> list[Event]:
    with Store(home / "data" / "stillroom.db") as store:
        return sorted(store.events(kind="llm.call", limit=1000), key=lambda e: e.at)


def by_user_text(events: list[Event]) -> dict[str, Event]:
    return {e.llm_call().messages[-1]["content"]: e for e in events}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_turns_each_logged_call_into_an_event(logs_db: Logged, stillroom_home: Path) -> None:
    before = digest(logs_db.path)
    result = run_cli("import-llm-logs", str(logs_db.path), home=stillroom_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"imported 28 calls from {logs_db.path}",
        "skipped 0 already imported, 1 older than the 90-day retention,"
        " 1 without a prompt or an answer",
        "next: `stillroom detect` finds the tasks you repeat",
    ]
    assert digest(logs_db.path) == before  # read-only: llm's database is untouched

    events = calls(stillroom_home)
    assert len(events) == 28 and all(e.source == "llm" for e in events)
    users = by_user_text(events)
    first = users[logs_db.prompts[0].replace(SECRET, "[REDACTED:openai-key]")].llm_call()
    assert first.messages == [
        {"role": "user", "content": logs_db.prompts[0].replace(SECRET, "[REDACTED:openai-key]")}
    ]
    for prompt, at in zip(logs_db.prompts[1:], logs_db.at[1:], strict=True):
        event = users[prompt]
        call = event.llm_call()
        assert call.messages == [{"role": "user", "content": prompt}]
        assert call.response == answer(call.messages) and call.model == MODEL
        words = len(prompt.split())
        assert (call.prompt_tokens, call.completion_tokens) == (words, 1)
        assert call.cost_usd == pytest.approx((words * 0.15 + 0.6) / 1e6)
        assert call.latency_ms is not None and call.origin.startswith("llm-logs:01")
        assert event.at == pytest.approx(at, abs=1e-3)

    follow_up = users["And what can you do for me?"].llm_call()
    assert [m["role"] for m in follow_up.messages] == ["user", "assistant", "user"]
    assert follow_up.messages[0]["content"] == "Hello, who are you?"
    handbook = users[f"{HANDBOOK}\nWhat is this handbook about?"].llm_call()
    assert handbook.response == "Other."

    legacy = users[f"Customer since 2019.\n{LEGACY_TICKET}"]
    old = legacy.llm_call()
    assert old.messages[0] == {"role": "system", "content": SYSTEM}
    assert (old.response, old.latency_ms, old.prompt_tokens, old.completion_tokens) == (
        "Shipping.",
        812,
        30,
        2,
    )
    assert old.params == {"temperature": 0.2, "api_key": "[REDACTED:api-key]"}
    assert old.origin == "llm-logs:01old0response"
    assert legacy.at == pytest.approx(NOW - 2 * DAY, abs=1e-3)


def test_a_second_import_adds_nothing_and_secrets_never_reach_the_store(
    logs_db: Logged, stillroom_home: Path
) -> None:
    assert run_cli("import-llm-logs", str(logs_db.path), home=stillroom_home).returncode == 0
    again = run_cli("import-llm-logs", str(logs_db.path), home=stillroom_home)
    assert again.returncode == 0
    assert again.stdout.splitlines() == [
        f"imported 0 calls from {logs_db.path}",
        "skipped 28 already imported, 1 older than the 90-day retention,"
        " 1 without a prompt or an answer",
    ]
    assert len(calls(stillroom_home)) == 28
    data = stillroom_home / "data"
    raw = b"".join(p.read_bytes() for p in data.iterdir() if p.name.startswith("stillroom.db"))
    assert SECRET.encode() not in raw and b"not-for-logs" not in raw
    assert b"[REDACTED:openai-key]" in raw


def test_the_default_path_and_retention_come_from_llm_and_the_config(
    logs_db: Logged, stillroom_home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "short.yaml"
    config.write_text("retention: {days: 1}\n")
    result = run_cli(
        "import-llm-logs",
        "--config",
        str(config),
        home=stillroom_home,
        LLM_USER_PATH=str(logs_db.path.parent),
    )
    assert result.returncode == 0, result.stderr
    # Only today's third of the tickets and the four recent one-offs are within a day.
    recent = sum(1 for at in logs_db.at if at > NOW - DAY)
    assert result.stdout.splitlines()[:2] == [
        f"imported {recent + 3} calls from {logs_db.path}",
        f"skipped 0 already imported, {24 - recent + 2} older than the 1-day retention,"
        " 1 without a prompt or an answer",
    ]


@pytest.mark.parametrize("what", ["missing", "not sqlite", "not llm"])
def test_a_wrong_path_is_one_line_that_names_it(
    what: str, tmp_path: Path, stillroom_home: Path
) -> None:
    path = tmp_path / "logs.db"
    if what == "not sqlite":
        path.write_text("these are not the logs you are looking for\n" * 100)
    elif what == "not llm":
        Store(path).close()
    result = run_cli("import-llm-logs", str(path), home=stillroom_home)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: {path}" if what != "missing" else "error: no llm")
    assert str(path) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_imported_calls_become_a_candidate_task(
    logs_db: Logged, stillroom_home: Path, tmp_path: Path
) -> None:
    assert run_cli("import-llm-logs", str(logs_db.path), home=stillroom_home).returncode == 0
    config = tmp_path / "detect.yaml"
    config.write_text("detector: {min_support: 12, min_days: 2}\n")
    result = run_cli("detect", "--config", str(config), home=stillroom_home, HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    with Store(stillroom_home / "data" / "stillroom.db") as store:
        rows: list[Any] = store.query("SELECT kind, support, days, signature FROM candidates")
    (row,) = [r for r in rows if "support ticket" in r["signature"]]
    assert row["kind"] == "classify" and row["support"] >= 24 and row["days"] == 3
    assert "classify" in result.stdout
