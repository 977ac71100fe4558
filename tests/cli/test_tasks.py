"""A task made by hand, end to end on the real MiniLM: new -> distill --now -> tasks -> run."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import run_cli

TOPICS = {
    "fruit": [
        "apples",
        "bananas",
        "ripe mangoes",
        "strawberries",
        "pears",
        "a pineapple",
        "cherries",
        "blueberries",
        "plums",
        "a watermelon",
    ],
    "vehicle": [
        "my car",
        "the bus",
        "a motorbike",
        "the train",
        "my bicycle",
        "the truck",
        "a taxi",
        "the tram",
        "a scooter",
        "the ferry",
    ],
    "weather": [
        "heavy rain",
        "a thunderstorm",
        "thick fog",
        "strong wind",
        "snowfall",
        "a heatwave",
        "hail",
        "a drizzle",
        "frost",
        "a blizzard",
    ],
}
FRAMES = {
    "fruit": [
        "I bought {} at the market",
        "We ate {} for dessert",
        "The shop sold {} cheaply",
        "She picked {} in the orchard",
        "He made juice from {}",
        "Grandma baked {} into a pie",
        "They peeled {} for breakfast",
        "The recipe needs {}",
    ],
    "vehicle": [
        "{} broke down on the highway",
        "I took {} to work",
        "{} needs new tyres",
        "We waited an hour for {}",
        "{} was parked outside",
        "He repaired {} himself",
        "The mechanic inspected {}",
        "{} was late again",
    ],
    "weather": [
        "We expect {} tomorrow",
        "{} closed the mountain pass",
        "The forecast warns of {}",
        "{} ruined our picnic",
        "There was {} all night",
        "Pilots were warned about {}",
        "The farmers feared {}",
        "{} hit the coast",
    ],
}


def topic_examples(per_label: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label in TOPICS:
        pairs = [(f, t) for f in FRAMES[label] for t in TOPICS[label]]
        for frame, thing in rng.sample(pairs, per_label):
            rows.append({"input": frame.format(thing).capitalize(), "output": label})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home with a trained topics task (distilling once keeps the module fast)."""
    home = tmp_path_factory.mktemp("tasks") / "home"
    examples = home.parent / "topics.jsonl"
    examples.write_text("\n".join(json.dumps(r) for r in topic_examples(75)) + "\n")
    made = run_cli(
        "tasks",
        "new",
        "topics",
        "--examples",
        str(examples),
        "--instruction",
        "Which topic is this sentence about?",
        # 225 examples hold out about 65 for calibration: a 5% bound at the first version's
        # share of the task's 95% (97%) needs 69 answered; a 10% bound needs 33.
        "--target",
        "0.1",
        home=home,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "task topics created with 225 examples"
    distilled = run_cli("distill", "topics", "--now", home=home)
    assert distilled.returncode == 0, distilled.stderr
    assert "guarantee: answers when confidence >=" in distilled.stdout
    return home


def test_tasks_table_and_card(trained: Path) -> None:
    table = run_cli("tasks", home=trained).stdout
    row = next(line for line in table.splitlines() if "topics" in line)
    assert "classify" in row and "225" in row and "v1" in row and "active" in row
    card = run_cli("tasks", "show", "topics", home=trained).stdout
    assert "instruction: Which topic is this sentence about?" in card
    assert "on test:" in card and "the bound holds" in card
    manifest = json.loads((trained / "models" / "topics" / "v1" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"head.safetensors", "head.json"}
    assert manifest["guarantee"]["bound"] <= 0.1
    assert not list((trained / "models").rglob("*.pkl"))


def test_run_answers_or_abstains(trained: Path) -> None:
    answer = run_cli("run", "topics", "We bought some fresh peaches and apples", home=trained)
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("fruit  (confidence ")
    odd = run_cli("run", "topics", "0x7f 0x00 0x3c 0xff", home=trained)
    assert odd.stdout.startswith("abstained: ")


def test_run_json_lines_keep_order_and_ids(trained: Path) -> None:
    lines = [
        {"input": "The bus was late again this morning", "id": "a"},
        {"input": "A storm with hail is coming tonight"},
        {"input": "0x7f 0x00 0x3c 0xff", "id": 7},
    ]
    result = subprocess.run(
        [sys.executable, "-m", "stillroom", "run", "topics"],
        input="".join(json.dumps(x) + "\n" for x in lines),
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "STILLROOM_HOME": str(trained)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o.get("id") for o in out] == ["a", None, 7]
    assert out[0]["answer"] == "vehicle" and not out[0]["abstained"]
    assert out[1]["answer"] == "weather"
    assert out[2]["abstained"] and out[2]["answer"] is None
    bad = subprocess.run(
        [sys.executable, "-m", "stillroom", "run", "topics"],
        input="not json\n",
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "STILLROOM_HOME": str(trained)},
        timeout=120,
    )
    assert bad.returncode == 1 and "stdin line 1: not JSON" in bad.stderr


def test_tampered_model_is_refused(trained: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "home"
    shutil.copytree(trained, copy)
    head = copy / "models" / "topics" / "v1" / "head.json"
    head.write_text(head.read_text().replace("fruit", "fruits"))
    # The registry points at the original path; rewrite it to the copy.
    import sqlite3

    con = sqlite3.connect(copy / "data" / "stillroom.db")
    con.execute("UPDATE model_versions SET path = replace(path, ?, ?)", (str(trained), str(copy)))
    con.commit()
    con.close()
    result = run_cli("run", "topics", "I ate a banana", home=copy)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("head.json changed since it was trained")


def test_small_task_never_answers_and_says_how_many_more(tmp_path: Path) -> None:
    home = tmp_path / "home"
    examples = tmp_path / "few.jsonl"
    examples.write_text("\n".join(json.dumps(r) for r in topic_examples(8, seed=1)) + "\n")
    assert run_cli("tasks", "new", "few", "--examples", str(examples), home=home).returncode == 0
    distilled = run_cli("distill", "few", "--now", home=home)
    assert distilled.returncode == 0, distilled.stderr
    assert "guarantee: none holds yet; it always abstains. It needs about" in distilled.stdout
    answer = run_cli("run", "few", "I bought apples at the market", home=home)
    assert answer.stdout.startswith("abstained: no guarantee holds yet")


def test_bad_examples_file_names_the_line(tmp_path: Path) -> None:
    examples = tmp_path / "bad.jsonl"
    examples.write_text('{"input": "a", "output": "b"}\n{"input": "c"}\n')
    result = run_cli("tasks", "new", "bad", "--examples", str(examples), home=tmp_path / "h")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'error: {examples}, line 2: expected {{"input": ..., "output": ...}}'
    )


def test_a_version_its_test_split_contradicts_is_never_activated(tmp_path: Path) -> None:
    from stillroom.registry import Registry
    from stillroom.store import Store

    home = tmp_path / "home"
    examples = tmp_path / "few.jsonl"
    examples.write_text("\n".join(json.dumps(r) for r in topic_examples(4)) + "\n")
    assert run_cli("tasks", "new", "mine", "--examples", str(examples), home=home).returncode == 0
    failed = {
        "target": 0.05,
        "threshold": 0.9,
        "bound": 0.05,
        "coverage": 0.6,
        "answered": 80,
        "errors": 0,
        "test": {"test_size": 60, "answered": 44, "errors": 4, "error_rate": 4 / 44,
                 "coverage": 44 / 60, "holds": False},
    }  # fmt: skip
    with Store(home / "data" / "stillroom.db") as store:
        registry = Registry(store)
        task = registry.task("mine")
        version = registry.add_version(
            task, 1, student="s", path=str(tmp_path), metrics={}, guarantee=failed
        )
        with store.transaction() as db:
            db.execute(
                "INSERT INTO proposals (task_id, version_id, evidence, state, at)"
                " VALUES (?, ?, '{}', 'open', 0)",
                (task.id, version.id),
            )
    why = (
        "its test split proves its bound wrong (error 9.1% in 44 test answers, more than a"
        " 5.0% bound allows at 95% confidence); more examples or a new version would fix it"
    )
    accepted = run_cli("proposals", "accept", "1", home=home)
    assert accepted.returncode == 1
    assert accepted.stderr.strip() == f"error: mine v1 cannot go active: {why}"
    resumed = run_cli("tasks", "resume", "mine", home=home)
    assert resumed.returncode == 1 and why in resumed.stderr
    card = run_cli("tasks", "show", "mine", home=home).stdout
    assert f"not active: {why}" in " ".join(card.split())
    with Store(home / "data" / "stillroom.db") as store:
        assert Registry(store).version(version.id).status == "candidate"
        assert store.query("SELECT state FROM proposals")[0][0] == "open"
