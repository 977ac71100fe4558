"""`stillroom tasks new` with an instruction and no examples: the teacher (a real HTTP server)
labels the given inputs and synthesizes more, then the usual loop trains and answers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import run_cli
from ticket_writer import writer_oracle
from upstream import Upstream

ROUTE = "Route this support ticket to billing, shipping, technical or other."
TICKETS = [
    "I was charged twice for my order this month",
    "Please send me a refund for the broken lamp",
    "The invoice you sent has the wrong company name",
    "My payment failed but the money left my account",
    "Where is my parcel? It has been ten days",
    "The courier never came and the tracking page is empty",
    "My package arrived open and half empty",
    "The delivery date keeps moving, when will it come",
    "The app shows an error every time I open settings",
    "I cannot login since the last update",
    "The program freezes when I export a report",
    "I reset my password but the new one is refused",
    "Do you have this jacket in a larger size",
    "Can I visit your shop on Sunday",
    "I would like to praise the friendly staff",
    "Is the red kettle available in blue",
]


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream(writer_oracle) as server:
        yield server


def teacher_env(up: Upstream) -> dict[str, str]:
    return {"STILLROOM_UPSTREAM_BASE_URL": up.url, "STILLROOM_UPSTREAM_API_KEY": "sk-test"}


def inputs_file(tmp_path: Path, lines: list[str] = TICKETS) -> Path:
    path = tmp_path / "tickets.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def sources(home: Path, task: str) -> dict[str, int]:
    con = sqlite3.connect(home / "data" / "stillroom.db")
    rows = con.execute(
        "SELECT source, COUNT(*) FROM examples JOIN tasks ON tasks.id = task_id"
        " WHERE tasks.name = ? GROUP BY source",
        (task,),
    ).fetchall()
    con.close()
    return dict(rows)


def cli(
    *args: str, home: Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Like run_cli, with room for distillation on the real MiniLM."""
    return subprocess.run(
        [sys.executable, "-m", "stillroom", *args],
        env={**os.environ, "STILLROOM_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_made_up_inputs_train_but_only_real_ones_calibrate(up: Upstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = cli(
        "tasks",
        "new",
        "tickets",
        "--kind",
        "classify",
        "--instruction",
        ROUTE,
        "--inputs",
        str(inputs_file(tmp_path)),
        home=home,
        **teacher_env(up),
    )
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0].startswith("estimate: gpt-4o-mini, 300 labels and 29 synthesis requests:")
    assert "about $0.0" in lines[0]
    assert lines[1].startswith("teacher: labelled 16 given input(s), synthesized 284 more (")
    assert "; spent " in lines[1] and " calls, " in lines[1]
    assert lines[2] == "task tickets created with 300 examples"
    assert sources(home, "tickets") == {"teacher": 16, "synthetic": 284}
    assert len(up.chat_calls()) >= 300 + 29

    distilled = cli("distill", "tickets", "--now", home=home)
    assert distilled.returncode == 0, distilled.stderr
    # The 284 synthesized inputs all train; only the 16 real ones may be held out, far too
    # few for a bound: the task states none, and waits in shadow for real calls.
    said = distilled.stdout
    assert "trained on 295 / calibrated on 4 / tested on 1" in said, said
    assert "guarantee: none holds yet; it always abstains. It needs about" in said
    assert "more real examples" in said and "versions: v1 shadow" in said
    held_out = sqlite3.connect(home / "data" / "stillroom.db").execute(
        "SELECT DISTINCT source FROM examples WHERE split != 'train'"
    )
    assert {row[0] for row in held_out} == {"teacher"}
    card = cli("tasks", "show", "tickets", home=home).stdout
    assert f"instruction: {ROUTE}" in card
    assert "teacher: gpt-4o-mini labelled 16 and synthesized 284 in " in card
    assert "labels: " in card and "billing (" in card and "other (" in card
    answer = cli("run", "tickets", "I was charged twice for my subscription", home=home)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("abstained: no guarantee holds yet"), answer.stdout
    spec = json.loads(
        sqlite3.connect(home / "data" / "stillroom.db")
        .execute("SELECT spec FROM tasks WHERE name = 'tickets'")
        .fetchone()[0]
    )
    spend = spec["teacher_spend"]
    assert spend["calls"] == len(up.chat_calls()) and spend["cost_usd"] > 0
    assert spend["estimate"]["cost_usd"] >= spend["cost_usd"]


def test_label_only_and_spend_in_the_spec(up: Upstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    jsonl = tmp_path / "tickets.jsonl"
    jsonl.write_text("".join(json.dumps({"input": t}) + "\n" for t in TICKETS[:8]))
    made = run_cli(
        "tasks",
        "new",
        "few",
        "--instruction",
        ROUTE,
        "--inputs",
        str(jsonl),
        "--synthesize",
        "0",
        home=home,
        **teacher_env(up),
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[0].startswith("estimate: gpt-4o-mini, 8 labels: ~")
    assert made.stdout.strip().endswith("task few created with 8 examples")
    assert sources(home, "few") == {"teacher": 8}
    assert len(up.chat_calls()) == 8
    assert not any("JSON list" in json.dumps(c.body) for c in up.chat_calls())


def test_anthropic_teacher_from_the_config(up: Upstream, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("teacher:\n  provider: anthropic\n  model: claude-3-5-haiku-latest\n")
    made = run_cli(
        "tasks",
        "new",
        "claude",
        "--instruction",
        ROUTE,
        "--inputs",
        str(inputs_file(tmp_path, TICKETS[:4])),
        "--synthesize",
        "0",
        home=tmp_path / "home",
        STILLROOM_CONFIG=str(config),
        ANTHROPIC_BASE_URL=up.root,
        ANTHROPIC_API_KEY="sk-ant-test",
    )
    assert made.returncode == 0, made.stderr
    assert [r.path for r in up.received] == ["/v1/messages"] * 4
    assert all(r.headers["x-api-key"] == "sk-ant-test" for r in up.received)


def test_max_cost_too_low_aborts_before_spending(up: Upstream, tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = run_cli(
        "tasks",
        "new",
        "tickets",
        "--instruction",
        ROUTE,
        "--inputs",
        str(inputs_file(tmp_path)),
        "--synthesize",
        "5000",
        "--max-cost",
        "0.01",
        home=home,
        **teacher_env(up),
    )
    assert made.returncode == 1
    assert made.stdout.startswith("estimate: gpt-4o-mini, 5016 labels and 500 synthesis requests")
    assert "is above the limit of $0.0100; nothing was sent" in made.stderr
    assert up.received == []
    gone = run_cli("tasks", "show", "tickets", home=home)
    assert gone.returncode == 1 and "no task named 'tickets'" in gone.stderr


def test_teacher_refusal_is_one_line_and_leaves_no_task(up: Upstream, tmp_path: Path) -> None:
    up.fail_next(401, "Incorrect API key provided: sk-test")
    made = run_cli(
        "tasks",
        "new",
        "tickets",
        "--instruction",
        ROUTE,
        "--inputs",
        str(inputs_file(tmp_path, TICKETS[:1])),
        "--synthesize",
        "0",
        home=tmp_path / "home",
        **teacher_env(up),
    )
    assert made.returncode == 1
    (line,) = made.stderr.strip().splitlines()
    assert "refused the request: HTTP 401: Incorrect API key provided" in line
    assert "spent before it stopped: 0 calls" in line
    assert run_cli("tasks", home=tmp_path / "home").stdout.startswith("no tasks yet")


def test_no_key_for_a_remote_teacher_says_which_variable(tmp_path: Path) -> None:
    made = run_cli(
        "tasks",
        "new",
        "tickets",
        "--instruction",
        ROUTE,
        home=tmp_path / "home",
        STILLROOM_UPSTREAM_BASE_URL="https://api.example.com/v1",
        STILLROOM_UPSTREAM_API_KEY="",
    )
    assert made.returncode == 1
    assert made.stderr.strip() == (
        "error: the openai teacher at https://api.example.com/v1 needs an API key:"
        " set STILLROOM_UPSTREAM_API_KEY (or gateway.openai.api_key in the config)"
    )


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("bad.jsonl", '{"input": "fine"}\n{"text": "no input key"}\n', 'line 2: expected {"input"'),
        ("bad2.jsonl", '{"input": "fine"}\nnot json\n', "line 2: not JSON"),
        ("latin.txt", b"fine\nalso fine\ncaf\xe9\n", "line 3: not UTF-8 text"),
        ("empty.txt", "\n\n", "no inputs in it"),
    ],
)
def test_bad_inputs_file_is_named_with_its_line(
    tmp_path: Path, name: str, content: str | bytes, problem: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    made = run_cli(
        "tasks", "new", "t", "--instruction", ROUTE, "--inputs", str(path), home=tmp_path / "h"
    )
    assert made.returncode == 1
    assert made.stderr.strip().startswith(f"error: {path}")
    assert problem in made.stderr


def test_teacher_needs_an_instruction(tmp_path: Path) -> None:
    made = run_cli("tasks", "new", "t", "--inputs", str(inputs_file(tmp_path)), home=tmp_path / "h")
    assert made.returncode == 1
    assert "the teacher needs --instruction" in made.stderr
