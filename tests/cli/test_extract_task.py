"""An extraction task made by hand, end to end: `tasks new --kind extract --student lora` ->
`distill --now` (Unsloth LoRA on SmolLM2, exported to GGUF, judged through llama.cpp) -> `run`
-> `export`. Left to choose, this task would get a tagger (test_tagger_task.py)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import run_cli
from upstream import MODEL, Upstream

from stillroom.service.generation import is_copied

# Training a LoRA on CPU takes minutes; the module shares one trained home.
pytestmark = pytest.mark.timeout(1500)

FIRST = ["Ada", "Bo", "Cyril", "Dana", "Emil", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kim", "Lars"]
LAST = ["Lovelace", "Berg", "Novak", "Okafor", "Silva", "Tanaka", "Weber", "Young"]
CITIES = ["Oslo", "Lima", "Pune", "Kyoto", "Accra", "Quito"]
INSTRUCTION = "Return the first names as a JSON list."


def people(rng: random.Random) -> tuple[str, str]:
    chosen = rng.sample(FIRST, rng.randint(1, 3))
    rows = [
        {
            "name": f"{first} {rng.choice(LAST)}",
            "age": rng.randint(18, 90),
            "city": rng.choice(CITIES),
        }
        for first in chosen
    ]
    return json.dumps(rows), json.dumps(chosen)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("extract") / "home"
    rng = random.Random(0)
    examples = home.parent / "people.jsonl"
    rows = [people(rng) for _ in range(64)]
    examples.write_text("".join(json.dumps({"input": i, "output": o}) + "\n" for i, o in rows))
    made = run_cli(
        "tasks", "new", "first-names", "--kind", "extract", "--instruction", INSTRUCTION,
        "--examples", str(examples), "--target", "0.2", "--student", "lora", home=home,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    distilled = run_cli("distill", "first-names", "--now", home=home, timeout=900)
    assert distilled.returncode == 0, distilled.stderr
    return home


def test_distill_makes_a_gguf_adapter_version_with_a_card(trained: Path) -> None:
    card = run_cli("tasks", "show", "first-names", home=trained).stdout
    assert "task first-names (extract" in card
    assert "on test when forced: exact match" in card
    folder = trained / "models" / "first-names" / "v1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"adapter.gguf", "student.json", "scope.safetensors"} <= set(manifest["files"])
    assert manifest["student"] == "smollm2-lora"
    assert manifest["metrics"]["schema"] is True  # outputs are JSON lists: a grammar holds it
    spec = json.loads((folder / "student.json").read_text())
    assert spec["schema"] == {"type": "array", "items": {"type": "string"}}
    assert spec["instruction"] == INSTRUCTION
    # The teacher only ever copies names out of the input: so may the student, no more.
    assert spec["copy"] is True and manifest["metrics"]["copy"] is True
    # It learned: most held-out people lists get exactly their first names back.
    assert manifest["metrics"]["accuracy_test"] >= 0.6, manifest["metrics"]
    assert not list(trained.rglob("*.pkl")) and not list(trained.rglob("*.bin"))


def test_run_answers_through_llama_cpp(trained: Path) -> None:
    rng = random.Random(99)
    lines = [people(rng) for _ in range(6)]
    result = subprocess.run(
        [sys.executable, "-m", "stillroom", "run", "first-names"],
        input="".join(json.dumps({"input": i, "id": n}) + "\n" for n, (i, _) in enumerate(lines)),
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "STILLROOM_HOME": str(trained)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in out] == list(range(6))
    answered = [(o, want) for o, (_, want) in zip(out, lines, strict=True) if not o["abstained"]]
    for reply, (text, _) in zip(out, lines, strict=True):
        if reply["abstained"]:
            continue
        names = json.loads(reply["answer"])
        assert isinstance(names, list), "the grammar keeps answers JSON"
        assert all(is_copied(n, text) for n in names), "names are copied, never made up"
    right = sum(json.loads(o["answer"]) == json.loads(w) for o, w in answered)
    assert right >= len(answered) - 1, (out, lines)
    torch_free = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, stillroom.service.worker; print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert torch_free.stdout.strip() == "False"


def test_export_writes_base_adapter_modelfile_and_card(trained: Path, tmp_path: Path) -> None:
    target = tmp_path / "out"
    result = run_cli("export", "first-names", "--format", "gguf", "--to", str(target), home=trained)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in target.iterdir()}
    assert {"first-names.lora.gguf", "Modelfile", "CARD.md", "schema.json"} <= names
    modelfile = (target / "Modelfile").read_text()
    base = next(line.split("./")[1] for line in modelfile.splitlines() if line.startswith("FROM"))
    assert (target / base).stat().st_size > 50_000_000
    assert "ADAPTER ./first-names.lora.gguf" in modelfile
    assert json.dumps(INSTRUCTION) in modelfile
    # The exported pair runs in plain llama.cpp as it does in stillroom.
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(target / base),
        lora_path=str(target / "first-names.lora.gguf"),
        n_ctx=512,
        verbose=False,
    )
    reply = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": json.dumps([{"name": "Ada Berg", "age": 40}])},
        ],
        temperature=0,
        max_tokens=20,
    )
    assert "Ada" in reply["choices"][0]["message"]["content"]
    again = run_cli("export", "first-names", "--to", str(target), home=trained)
    assert again.returncode == 1 and "not empty" in again.stderr


def first_names(messages: list[dict[str, Any]]) -> str:
    """The teacher: the first names of the people in the last user message."""
    text = str(messages[-1]["content"])
    return json.dumps([p["name"].split()[0] for p in json.loads(text)])


def test_the_gateway_answers_calls_it_is_sure_of(
    trained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An openai client's calls with the task's instruction reach the student through the
    gateway; confident answers come back locally, the rest from the model."""
    from gateway_client import gateway

    from stillroom.config import Config
    from stillroom.registry import Registry
    from stillroom.service.local import TaskAnswerer
    from stillroom.service.students import StudentClient
    from stillroom.store import Store

    monkeypatch.setenv("STILLROOM_HOME", str(trained))  # the worker child reads this home
    rng = random.Random(7)
    calls = [people(rng) for _ in range(8)]
    with Upstream(first_names) as up, Store(trained / "data" / "stillroom.db") as store:
        task = Registry(store).task("first-names")
        assert Registry(store).active_version(task) is not None, "its guarantee should hold"
        data = {"gateway": {"audit_share": 0.0, "openai": {"base_url": up.url}}}
        students = StudentClient()
        answerer = TaskAnswerer(store, students, Config.from_data(data))
        try:
            with gateway(Config.from_data(data), store, answerer) as client:
                replies = []
                for text, want in calls:
                    raw = client.chat.completions.with_raw_response.create(
                        model=MODEL,
                        messages=[
                            {"role": "system", "content": INSTRUCTION},
                            {"role": "user", "content": text},
                        ],
                    )
                    reply = raw.parse()
                    by = raw.headers.get("x-stillroom-answered-by")
                    replies.append((reply.choices[0].message.content, reply.model, by, want))
        finally:
            students.close()
    local = [r for r in replies if r[2] == "local"]
    assert local, replies
    for content, model, _, want in local:
        assert model == "stillroom/first-names"
        assert json.loads(content or "") == json.loads(want)
    assert len(up.chat_calls()) == len(replies) - len(local)


def test_a_pinned_task_is_loaded_at_start_and_stays(trained: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("runtime:\n  pinned: [first-names]\n  keep_alive_seconds: 0.001\n")
    env = {
        **__import__("os").environ,
        "STILLROOM_HOME": str(trained),
        "STILLROOM_CONFIG": str(config),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "stillroom.service.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert worker.stdin is not None and worker.stdout is not None
    try:
        assert "ready" in worker.stdout.readline()
        worker.stdin.write(json.dumps({"embed": ["hello"]}) + "\n")  # expires what is idle
        worker.stdin.flush()
        assert "vectors" in worker.stdout.readline()
        worker.stdin.write(json.dumps({"stats": True}) + "\n")
        worker.stdin.flush()
        stats = json.loads(worker.stdout.readline())
    finally:
        worker.stdin.close()
        worker.wait(timeout=30)
    kinds = sorted(m["kind"] for m in stats["models"] if m["pinned"])
    assert kinds == ["adapter", "base", "encoder"], stats
    assert stats["loads"] == 3 and stats["expirations"] == 0
