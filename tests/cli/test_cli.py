"""The command line as a user meets it: help, config checks, apply, events, forget."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from daemon_harness import run_cli

COMMANDS = [
    "daemon",
    "status",
    "apply",
    "log",
    "undo",
    "pause",
    "resume",
    "events",
    "forget",
    "service",
]


@pytest.mark.parametrize("command", [[], ["config"], *[[c] for c in COMMANDS]])
def test_help_everywhere(command: list[str], stillroom_home: Path) -> None:
    result = run_cli(*command, "--help", home=stillroom_home)
    assert result.returncode == 0
    assert "Usage:" in result.stdout


def test_config_check_good_and_bad(tmp_path: Path, stillroom_home: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(f"folders: [{{path: {tmp_path}}}, {{path: {tmp_path}/gone}}]\n")
    result = run_cli("config", "check", str(good), home=stillroom_home)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        f"{good}: ok (2 folders, 0 destinations, 0 automations)",
        f"warning: opt-in folder {tmp_path}/gone does not exist; it will be skipped",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("retention: {days: soon}\n")
    result = run_cli("config", "check", str(bad), home=stillroom_home)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {bad}: retention.days: Input should be a valid integer, unable to parse "
        "string as an integer (got 'soon')\n"
    )


def test_config_option_everywhere_and_env(tmp_path: Path, stillroom_home: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense: 1\n")
    for args in (["--config", str(bad), "apply"], ["apply", "--config", str(bad)]):
        result = run_cli(*args, home=stillroom_home)
        assert result.returncode == 2 and "nonsense: unknown key" in result.stderr
    result = run_cli("config", "path", home=stillroom_home, STILLROOM_CONFIG=str(bad))
    assert result.stdout.strip() == str(bad)


def test_config_schema_is_json(stillroom_home: Path) -> None:
    result = run_cli("config", "schema", home=stillroom_home)
    schema = json.loads(result.stdout)
    assert {"folders", "destinations", "automations", "retention"} <= set(schema["properties"])


def test_first_run_copies_default_and_path_says_where(stillroom_home: Path) -> None:
    result = run_cli("config", "path", home=stillroom_home)
    assert result.stdout.strip() == str(stillroom_home / "config" / "config.yaml")
    assert (stillroom_home / "config" / "config.yaml").exists()


def test_apply_dry_run_changes_nothing_then_apply_and_undo(
    tmp_path: Path, stillroom_home: Path
) -> None:
    downloads, pictures = tmp_path / "Downloads", tmp_path / "Pictures"
    downloads.mkdir()
    (downloads / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n fake")
    (downloads / "notes.txt").write_text("keep me")
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "folders": [{"path": str(downloads)}],
                "automations": [
                    {
                        "name": "pngs",
                        "match": {"extensions": ["png"]},
                        "action": {"kind": "move", "to": str(pictures)},
                    }
                ],
            }
        )
    )
    plan = run_cli("apply", "--dry-run", "--config", str(config), home=stillroom_home)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("would move")
    assert "cat.png" in plan.stdout and "notes.txt" not in plan.stdout
    assert (downloads / "cat.png").exists() and not pictures.exists()

    done = run_cli("apply", "--config", str(config), home=stillroom_home)
    assert done.returncode == 0, done.stderr
    assert (pictures / "cat.png").exists() and not (downloads / "cat.png").exists()
    assert "#1" in done.stdout and "done" in done.stdout

    preview = run_cli("undo", "--dry-run", home=stillroom_home)
    assert preview.returncode == 0 and "cat.png" in preview.stdout
    assert (pictures / "cat.png").exists()
    assert run_cli("undo", home=stillroom_home).returncode == 0
    assert (downloads / "cat.png").read_bytes() == b"\x89PNG\r\n\x1a\n fake"
    again = run_cli("undo", "1", home=stillroom_home)
    assert again.returncode == 1 and again.stderr.startswith("error: ")
    assert len(again.stderr.strip().splitlines()) == 1


def test_paused_apply_refuses(tmp_path: Path, stillroom_home: Path) -> None:
    assert run_cli("pause", home=stillroom_home).stdout.strip() == "automations paused"
    result = run_cli("apply", home=stillroom_home)
    assert result.returncode == 1 and "paused" in result.stdout
    assert run_cli("resume", home=stillroom_home).stdout.strip() == "automations resumed"


def test_forget_needs_a_choice_and_deletes(stillroom_home: Path) -> None:
    from stillroom.events import Event, FilePayload
    from stillroom.store import Store

    with Store(stillroom_home / "data" / "stillroom.db") as store:
        store.add_event(
            Event(
                source="filesystem",
                kind="file.created",
                payload=FilePayload(path="/d/x", root="/d"),
            )
        )
    assert "1" in run_cli("events", home=stillroom_home).stdout
    bare = run_cli("forget", home=stillroom_home)
    assert bare.returncode == 1 and "--older-than DAYS or --all" in bare.stderr
    refused = run_cli("forget", "--all", home=stillroom_home)  # no stdin: no consent
    assert refused.returncode != 0
    assert run_cli("forget", "--older-than", "1", home=stillroom_home).stdout.strip() == (
        "deleted 0 events"
    )
    assert run_cli("forget", "--all", "--yes", home=stillroom_home).stdout.strip() == (
        "deleted 1 events"
    )
    assert run_cli("events", home=stillroom_home).stdout.strip() == "no events recorded"


def test_config_show_masks_keys_and_url_secrets(tmp_path: Path, stillroom_home: Path) -> None:
    key, env_key = "sk-proj-" + "Q7xR2m" * 8, "sk-env-" + "Zz9Yy8Xx" * 5
    config = tmp_path / "c.yaml"
    url = "https://bob:hunter2pass@llm.example.com/v1?key=qwerty123"
    openai = {"base_url": url, "api_key": key}
    anthropic = {"base_url": "https://api.anthropic.com", "api_key": "sh0rtk3y"}
    config.write_text(json.dumps({"gateway": {"openai": openai, "anthropic": anthropic}}))
    result = run_cli(
        "config", "show", "--config", str(config), home=stillroom_home,
        STILLROOM_UPSTREAM_API_KEY=env_key, ANTHROPIC_API_KEY=env_key,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)["gateway"]
    assert shown["openai"]["api_key"] == "sk-…xR2m"
    assert shown["openai"]["base_url"] == "https://****@llm.example.com/v1?****"
    assert shown["anthropic"] == {**anthropic, "api_key": "****", "timeout_seconds": 120.0}
    for secret in (key[3:], env_key[3:], "hunter2pass", "bob", "qwerty123", "sh0rtk3y"):
        assert secret not in result.stdout + result.stderr


def test_export_is_private_and_names_what_was_learnt(tmp_path: Path, stillroom_home: Path) -> None:
    cities = ["Reno", "Fargo", "Chicago", "Memphis"] * 10
    rows = [(f"{n} Main St, {c}", {"number": str(n), "city": c}) for n, c in enumerate(cities, 100)]
    examples = tmp_path / "addresses.jsonl"
    examples.write_text(
        "".join(json.dumps({"input": i, "output": json.dumps(o)}) + "\n" for i, o in rows)
    )
    made = run_cli(
        "tasks", "new", "addr", "--kind", "extract", "--instruction", "Number and city as JSON.",
        "--examples", str(examples), "--student", "tagger", home=stillroom_home,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    distilled = run_cli("distill", "addr", "--now", home=stillroom_home, timeout=300)
    assert distilled.returncode == 0, distilled.stderr
    target = tmp_path / "out"
    target.mkdir(mode=0o755)  # an empty folder that others could read
    before = os.umask(0o022)  # the usual umask: new files readable by everyone
    try:
        result = run_cli("export", "addr", "--to", str(target), home=stillroom_home)
    finally:
        os.umask(before)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    files = sorted(target.iterdir())
    assert {f.name for f in files} == {"tagger.safetensors", "tagger.json", "README.txt", "CARD.md"}
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    learnt = [line for line in result.stdout.splitlines() if "training data" in line]
    assert learnt == [
        "learnt from your training data (they can give away examples it was trained on;"
        " share them with care): tagger.safetensors, tagger.json"
    ]
