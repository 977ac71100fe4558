"""Candidates become tasks with examples from their events (and, with consent, from files
already filed in the destinations)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from prompt_calls import INSTRUCTIONS, SYSTEM, record_calls, tickets
from upstream import MODEL

from stillroom.config import Config, DetectorConfig
from stillroom.daemon.candidates import promote_candidates, task_name
from stillroom.daemon.detector import find_candidates, observations_from_store, save_candidates
from stillroom.events import Event, FilePayload
from stillroom.monitors.features import file_features
from stillroom.prompts import template_hash
from stillroom.registry import Registry
from stillroom.service.encoder import Encoder
from stillroom.store import Store


def moved(store: Store, home: Path, name: str, folder: str, text: str) -> int:
    target = home / folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    payload = FilePayload(
        path=str(target),
        root=str(home / "Downloads"),
        src_path=str(home / "Downloads" / name),
        features=file_features(target),
    )
    return store.add_event(Event(source="filesystem", kind="file.moved", payload=payload))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "Downloads").mkdir()
    return tmp_path


def candidate(store: Store, event_ids: list[int]) -> None:
    detail = {"family": "file", "event_ids": event_ids}
    with store.transaction() as db:
        db.execute(
            "INSERT INTO candidates (signature, kind, support, days, score, detail, state,"
            " first_at, last_at, updated) VALUES (?, 'classify', ?, 2, 0.9, ?, 'new', 0, 0, ?)",
            (
                "a file arrived in ~/Downloads and the user moved it into a folder",
                len(event_ids),
                json.dumps(detail),
                time.time(),
            ),
        )


def test_candidate_becomes_a_queued_file_task(store: Store, home: Path) -> None:
    ids = [
        moved(store, home, f"inv{i}.txt", "Documents/Invoices", f"invoice {i}") for i in range(3)
    ]
    ids.append(moved(store, home, "cat.txt", "Pictures", "a cat"))
    candidate(store, ids)
    (task,) = promote_candidates(store)
    assert task.name == "sort-downloads" and task.origin == "detector"
    assert task.state == "queued" and task.input_kind == "file"
    assert task.spec["folder"] == str(home / "Downloads")
    examples = Registry(store).examples(task)
    assert sorted(e.output for e in examples) == ["Documents/Invoices"] * 3 + ["Pictures"]
    assert all(e.source == "user" and e.input.startswith("name: ") for e in examples)
    # A second run adds nothing new and keeps the task; the candidate points at it.
    registry = Registry(store)
    registry.update_task(task, state="ready")
    (again,) = promote_candidates(store)
    assert again.id == task.id and again.state == "ready"
    assert store.query("SELECT task_id, state FROM candidates")[0][:] == (task.id, "queued")


def test_existing_files_join_only_with_consent(store: Store, home: Path) -> None:
    ids = [
        moved(store, home, f"inv{i}.txt", "Documents/Invoices", f"invoice {i}") for i in range(2)
    ]
    (home / "Documents" / "Taxes").mkdir(parents=True)
    (home / "Documents" / "Taxes" / "2023.txt").write_text("tax return 2023")
    (home / "Documents" / ".hidden").write_text("no")
    candidate(store, ids)
    config = Config.from_data({"destinations": [str(home / "Documents")]})
    (task,) = promote_candidates(store, config)
    assert Registry(store).count_examples(task) == 2
    consent = Config.from_data(
        {"destinations": [str(home / "Documents")], "detector": {"learn_from_existing": True}}
    )
    (task,) = promote_candidates(store, consent)
    outputs = sorted(e.output for e in Registry(store).examples(task))
    assert outputs == ["Documents/Invoices", "Documents/Invoices", "Documents/Taxes"]


def test_task_names() -> None:
    assert task_name("a file arrived in ~/Downloads and the user moved it", "file") == (
        "sort-downloads"
    )
    assert task_name("Classify the sentiment of this review: <input>", "prompt") == (
        "classify-the-sentiment-of"
    )


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    model = Encoder()
    model.encode(["warm up"])  # loading starts tqdm's monitor thread: before any leak check
    return model


def prompt_candidate(store: Store, encoder: Encoder, kind: str = "classify") -> None:
    """A prompt candidate over 40 recorded ticket calls, as the detector saves it."""
    record_calls(store, tickets(40, seed=2), system_every=5)
    config = DetectorConfig(min_days=1)
    (found,) = find_candidates(observations_from_store(store), encoder, config)
    found = [replace(found, kind=kind)]
    save_candidates(store, found)


def test_a_prompt_candidate_keeps_what_matching_needs(store: Store, encoder: Encoder) -> None:
    prompt_candidate(store, encoder)
    (row,) = store.query("SELECT detail FROM candidates")
    detail = json.loads(row[0])
    assert detail["family"] == "prompt" and detail["models"] == {MODEL: 40}
    assert detail["template_hash"] == template_hash(detail["template"])
    assert all(t["hash"] == template_hash(t["signature"]) for t in detail["templates"])
    assert set(detail["instructions"]) == {SYSTEM, *INSTRUCTIONS}
    (task,) = promote_candidates(store)
    spec = task.spec
    assert spec["family"] == "prompt" and spec["models"] == [MODEL] and not spec["history"]
    assert spec["labels"] == {
        "billing": "Billing.",
        "other": "Other.",
        "shipping": "Shipping.",
        "technical": "Technical.",
    }
    assert set(spec["templates"].values()) == {f"{SYSTEM}\n<input>"} | {
        f"{i} <input>" for i in INSTRUCTIONS
    }
    assert spec["template_hash"] in spec["templates"]
    examples = Registry(store).examples(task)
    assert len(examples) == 40 and {e.source for e in examples} == {"teacher"}
    assert {e.output for e in examples} == set(spec["labels"])
    assert not any(e.input.startswith(("Which", "Tell")) for e in examples)


@pytest.mark.parametrize("kind", ["extract", "generate"])
def test_extract_and_generate_candidates_wait_as_candidates(
    store: Store, encoder: Encoder, kind: str
) -> None:
    prompt_candidate(store, encoder, kind)
    assert promote_candidates(store) == []
    assert store.query("SELECT kind, state, task_id FROM candidates")[0][:] == (kind, "new", None)
