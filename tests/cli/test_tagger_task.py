"""An extraction task whose teacher only copies gets the cheapest student that passes, a CRF
tagger: `tasks new --kind extract` -> `distill --now` (seconds, no LLM) -> `run` -> `export`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import run_cli

INSTRUCTION = "Split the address into number, street, city, state and zip as JSON."
STREETS = ["Court St", "Main Street", "Elm Ave", "Lake Shore Dr", "Oak Hill Road", "5th Ave"]
CITIES = ["Brooklyn", "Chicago", "San Jose", "Saint Paul", "Memphis", "Reno", "Fargo"]
STATES = ["NY", "IL", "CA", "MN", "TN", "NV", "ND"]


def address(rng: random.Random) -> tuple[str, dict[str, str]]:
    parts = {
        "number": str(rng.randint(1, 9999)),
        "street": rng.choice(STREETS),
        "city": rng.choice(CITIES),
        "state": rng.choice(STATES),
        "zip": str(rng.randint(10000, 99999)),
    }
    sep = rng.choice([", ", "\n"])
    text = (
        f"{parts['number']} {parts['street']}{sep}{parts['city']}, {parts['state']} {parts['zip']}"
    )
    return text, parts


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("tagger") / "home"
    rng = random.Random(0)
    examples = home.parent / "addresses.jsonl"
    rows = [address(rng) for _ in range(200)]
    examples.write_text(
        "".join(json.dumps({"input": i, "output": json.dumps(o)}) + "\n" for i, o in rows)
    )
    made = run_cli(
        "tasks", "new", "addresses", "--kind", "extract", "--instruction", INSTRUCTION,
        "--examples", str(examples), "--target", "0.1", home=home,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    distilled = run_cli("distill", "addresses", "--now", home=home, timeout=600)
    assert distilled.returncode == 0, distilled.stderr
    return home


def test_a_copying_teacher_gets_a_tagger_that_passes(home: Path) -> None:
    folder = home / "models" / "addresses" / "v1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["student"] == "crf-tagger"
    assert {"tagger.safetensors", "tagger.json", "scope.safetensors"} <= set(manifest["files"])
    assert not any(name.endswith(".gguf") for name in manifest["files"])
    metrics = manifest["metrics"]
    assert metrics["copy"] is True and metrics["accuracy_test"] >= 0.95, metrics
    assert manifest["guarantee"]["threshold"] is not None, manifest["guarantee"]
    card = run_cli("tasks", "show", "addresses", home=home).stdout
    assert "crf-tagger" in card and "on test when forced: exact match" in card


def test_run_answers_new_addresses(home: Path) -> None:
    rng = random.Random(99)
    lines = [address(rng) for _ in range(8)]
    result = subprocess.run(
        [sys.executable, "-m", "stillroom", "run", "addresses"],
        input="".join(json.dumps({"input": i}) + "\n" for i, _ in lines),
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "STILLROOM_HOME": str(home)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    answered = [(o, want) for o, (_, want) in zip(out, lines, strict=True) if not o["abstained"]]
    assert len(answered) >= 6, out
    assert all(json.loads(o["answer"]) == want for o, want in answered), answered
    # Out of scope: a sentence is no address, and the student says so instead of guessing.
    one = run_cli("run", "addresses", "what a lovely day for a picnic", home=home)
    assert one.returncode == 0 and "abstained" in one.stdout, one.stdout
    # Serving it needs no torch.
    light = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, stillroom.service.worker, stillroom.service.tagger_student;"
            " print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert light.stdout.strip() == "False", light.stderr


def test_the_gateway_answers_with_the_tagger(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """openai client calls with the task's instruction are answered by the tagger in the
    student worker; what it is unsure of goes to the model."""
    from gateway_client import gateway
    from upstream import MODEL, Upstream

    from stillroom.config import Config
    from stillroom.service.local import TaskAnswerer
    from stillroom.service.students import StudentClient
    from stillroom.store import Store

    monkeypatch.setenv("STILLROOM_HOME", str(home))  # the worker child reads this home
    rng = random.Random(5)
    truth = dict(address(rng) for _ in range(6))
    with Upstream(lambda m: json.dumps(truth[str(m[-1]["content"])])) as up:
        data = {"gateway": {"audit_share": 0.0, "openai": {"base_url": up.url}}}
        students = StudentClient()
        with Store(home / "data" / "stillroom.db") as store:
            answerer = TaskAnswerer(store, students, Config.from_data(data))
            try:
                with gateway(Config.from_data(data), store, answerer) as client:
                    replies = []
                    for text, want in truth.items():
                        raw = client.chat.completions.with_raw_response.create(
                            model=MODEL,
                            messages=[
                                {"role": "system", "content": INSTRUCTION},
                                {"role": "user", "content": text},
                            ],
                        )
                        content = raw.parse().choices[0].message.content or ""
                        by = raw.headers.get("x-stillroom-answered-by")
                        replies.append((json.loads(content), by, want))
            finally:
                students.close()
        forwarded = len(up.chat_calls())
    assert all(got == want for got, _, want in replies), replies
    local = sum(by == "local" for _, by, _ in replies)
    assert local >= 4 and forwarded == len(replies) - local, replies


def test_export_writes_the_crf_and_its_card(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "out"
    result = run_cli("export", "addresses", "--to", str(target), home=home)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in target.iterdir()} == {
        "tagger.safetensors",
        "tagger.json",
        "README.txt",
        "CARD.md",
    }
    config = json.loads((target / "tagger.json").read_text())
    assert set(config["fields"]) == {"number", "street", "city", "state", "zip"}


def test_the_student_choice_is_checked(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rows = [(f"{n} apples", json.dumps({"count": f"{n} pieces"})) for n in range(20)]
    examples = tmp_path / "rewritten.jsonl"
    examples.write_text("".join(json.dumps({"input": i, "output": o}) + "\n" for i, o in rows))
    bad = run_cli(
        "tasks", "new", "count", "--kind", "extract", "--instruction", "Count.",
        "--examples", str(examples), "--student", "crf", home=home,
    )  # fmt: skip
    assert bad.returncode != 0 and "--student crf" in bad.stderr
    made = run_cli(
        "tasks", "new", "count", "--kind", "extract", "--instruction", "Count.",
        "--examples", str(examples), "--student", "tagger", home=home,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    # "pieces" is not in the input: a tagger cannot write it, and distill says why.
    refused = run_cli("distill", "count", "--now", home=home, timeout=300)
    assert refused.returncode != 0
    assert "cannot have a tagger student" in refused.stderr + refused.stdout
