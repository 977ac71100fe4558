"""SetFit-style tuning on the real MiniLM: tried only when the frozen head misses the bar on
held-out training examples, kept only where it does better, verified like every model file."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from stillroom.errors import ModelError
from stillroom.paths import Paths
from stillroom.registry import ModelVersion, Registry
from stillroom.service.classifier import ClassifierStudent
from stillroom.service.encoder import Encoder
from stillroom.service.engine import Engine
from stillroom.store import Store
from stillroom.trainers.dataset import Item, stored_split
from stillroom.trainers.distill import distill_classifier, score_as_served
from stillroom.trainers.setfit import hold_out_dev, make_pairs

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# Paraphrase-similar sentences that differ only in the weekday; the label is its parity
# (Monday, Wednesday, Friday, Sunday: odd). MiniLM's similarity barely sees the weekday, so a
# frozen head scores 50-80% here; contrastive pairs teach the encoder to separate it.
TEMPLATES = [
    "the parcel arrived on {d}",
    "my dentist appointment is on {d}",
    "we are meeting the landlord on {d}",
    "the invoice was paid on {d}",
    "she flies back to Lisbon on {d}",
    "the gym is closed on {d}",
    "our team standup moved to {d}",
    "the plumber comes on {d}",
    "I will call grandma on {d}",
    "the library book is due on {d}",
    "rent is collected every {d}",
    "the market opens early on {d}",
    "the kids have swimming on {d}",
    "the report must be sent by {d}",
    "we walk the dog at the park on {d}",
    "the train tickets are for {d}",
    "the concert takes place on {d}",
    "trash pickup happens on {d}",
    "he starts the new job on {d}",
    "the cinema has cheap tickets on {d}",
    "the car goes to the garage on {d}",
    "the exam was rescheduled to {d}",
    "the bakery sells fresh rye on {d}",
    "the server backup runs on {d}",
    "the piano lesson is on {d}",
    "our neighbours throw a party on {d}",
    "the dentist sends reminders on {d}",
    "the ferry leaves the harbour on {d}",
    "my brother moves house on {d}",
    "the painters arrive on {d}",
    "the recycling centre is open on {d}",
    "the school trip is planned for {d}",
    "we bake bread together on {d}",
    "the payroll goes out on {d}",
    "the window cleaner comes by on {d}",
    "the chess club plays on {d}",
]
UNSEEN = [
    "the museum is free on {d}",
    "our book club meets on {d}",
    "the farmers deliver eggs on {d}",
    "the office closes early on {d}",
    "the band plays downtown on {d}",
    "the nurse checks in on {d}",
    "the delivery van came by on {d}",
    "my sister visits us on {d}",
    "the pool is cleaned on {d}",
    "the vote is held on {d}",
    "the choir rehearses on {d}",
    "the boiler gets serviced on {d}",
]


def weekday_rows(templates: list[str]) -> list[tuple[str, str]]:
    return [
        (t.format(d=d).capitalize(), "odd" if i % 2 == 0 else "even")
        for t in templates
        for i, d in enumerate(DAYS)
    ]


TOPICS = {
    "fruit": ["apples", "ripe peaches", "a bunch of bananas", "fresh cherries", "plums", "mangos"],
    "weather": ["heavy rain", "a thunderstorm", "thick fog", "snow and hail", "a heatwave", "wind"],
    "vehicle": ["the bus", "a red bicycle", "the night train", "a delivery truck", "the tram"],
}
FRAMES = ["I keep thinking about {}", "Yesterday we talked about {}", "There was a story on {}"]


def topic_rows() -> list[tuple[str, str]]:
    return [
        (frame.format(thing), label)
        for label, things in TOPICS.items()
        for frame in FRAMES
        for thing in things
    ]


@pytest.fixture(scope="module", autouse=True)
def warm_encoder() -> None:
    Encoder().encode(["warm up"])  # loading starts tqdm's monitor thread: before any leak check


def open_home(root: Path) -> tuple[Paths, Store]:
    paths = Paths(*(root / n for n in ("config", "data", "models", "logs", "run"))).ensure()
    return paths, Store(paths.database)


# -- pairs and the dev part ----------------------------------------------------------------


def test_pairs_are_balanced_capped_and_seeded() -> None:
    texts = [f"text {i}" for i in range(30)]
    labels = ["a"] * 10 + ["b"] * 12 + ["c"] * 8
    pairs = make_pairs(texts, labels, max_pairs=200, seed=1)
    assert len(pairs) == 200
    assert Counter(score for _, _, score in pairs) == {1.0: 100, 0.0: 100}
    label = dict(zip(texts, labels, strict=True))
    for left, right, score in pairs:
        assert (label[left] == label[right]) == (score == 1.0)
        assert score == 0.0 or left != right
    assert make_pairs(texts, labels, max_pairs=200, seed=1) == pairs
    assert make_pairs(texts, labels, max_pairs=200, seed=2) != pairs
    assert len(make_pairs(texts, labels, max_pairs=7)) == 7
    assert make_pairs(texts, ["a"] * 30, max_pairs=50) == []


def test_dev_part_is_stratified_and_leaves_every_label_in_fit() -> None:
    items = [Item(f"x{i}", "a") for i in range(20)] + [Item(f"y{i}", "b") for i in range(6)]
    items += [Item("lonely", "c"), Item("pair 1", "d"), Item("pair 2", "d")]
    fit, dev = hold_out_dev(items)
    assert Counter(i.output for i in dev) == {"a": 4, "b": 1, "d": 1}
    assert {i.output for i in fit} == {"a", "b", "c", "d"}
    assert sorted(fit + dev, key=lambda i: i.input) == sorted(items, key=lambda i: i.input)
    assert hold_out_dev(items) == (fit, dev)


# -- the decision ----------------------------------------------------------------------------


def test_a_task_the_frozen_head_separates_keeps_the_shared_encoder(store: Store) -> None:
    paths = Paths.resolve().ensure()
    registry = Registry(store)
    task = registry.create_task("topics", "classify", spec={"target": 0.1})
    registry.add_examples(task, [(text, label, "user", None) for text, label in topic_rows()])
    version = distill_classifier(registry, task, Encoder(store=store), paths).version
    metrics = version.metrics
    assert metrics["encoder"] == "shared"
    assert metrics["bar"]["dev_accuracy"] >= metrics["bar"]["needed"] == 0.9
    assert "setfit" not in metrics
    folder = Path(version.path)
    assert not (folder / "encoder").exists()
    assert json.loads((folder / "manifest.json").read_text())["encoder"] == "shared"
    assert ClassifierStudent(version).encoder_path is None
    assert [p.name for p in (paths.models_dir / "topics").iterdir()] == ["v1"]  # no scratch left


@dataclass(frozen=True)
class Tuned:
    version: ModelVersion
    passed: bool
    frozen: ModelVersion  # the same data with tuning turned off
    frozen_passed: bool
    store: Store
    rows: list[tuple[str, str]]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuned]:
    """One weekday-parity task distilled with and without tuning (tuning is the slow part)."""
    paths, store = open_home(tmp_path_factory.mktemp("setfit") / "home")
    registry = Registry(store)
    rows = weekday_rows(TEMPLATES)
    random.Random(0).shuffle(rows)
    out = []
    for name, pairs in (("weekday", 160), ("weekday-frozen", 0)):
        # target 0.1: the bar is 90% and 50 calibration items can support a guarantee.
        spec = {"target": 0.1, "setfit_pairs": pairs}
        task = registry.create_task(name, "classify", spec=spec)
        registry.add_examples(task, [(text, label, "user", None) for text, label in rows])
        messages: list[str] = []
        out.append(distill_classifier(registry, task, Encoder(store=store), paths, messages.append))
        assert any("fine-tuning the encoder: step 10/10" in m for m in messages) == (pairs > 0)
    (own, frozen) = out
    yield Tuned(own.version, own.passed, frozen.version, frozen.passed, store, rows)
    store.close()


def test_tuning_is_kept_when_it_does_better_and_recorded(tuned: Tuned) -> None:
    metrics = tuned.version.metrics
    assert metrics["encoder"] == "own"
    setfit = metrics["setfit"]
    assert setfit["pairs"] == 160 and setfit["kept"] and setfit["seconds"] > 0
    assert setfit["dev_accuracy_before"] == metrics["bar"]["dev_accuracy"] < 0.9
    assert setfit["dev_accuracy_after"] >= setfit["dev_accuracy_before"] + 0.02
    assert setfit["verdict"].startswith("kept: ")
    folder = Path(tuned.version.path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encoder"] == "own" and manifest["metrics"]["setfit"] == setfit
    listed = set(manifest["files"])
    assert {"head.safetensors", "head.json", "encoder/model.safetensors"} <= listed
    assert "encoder/tokenizer.json" in listed and "encoder/1_Pooling/config.json" in listed
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert on_disk - listed == {"manifest.json"}
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pkl"))
    assert {p.stat().st_mode & 0o777 for p in (folder / "encoder").rglob("*")} <= {0o600, 0o700}
    assert [p.name for p in folder.parent.iterdir()] == ["v1"]  # the scratch folder is gone


def test_the_student_answers_with_its_own_encoder(tuned: Tuned) -> None:
    student = ClassifierStudent(tuned.version)
    assert student.encoder_path == Path(tuned.version.path) / "encoder"
    frozen = ClassifierStudent(tuned.frozen)
    assert frozen.encoder_path is None
    assert tuned.frozen.metrics["setfit"] == {"skipped": "turned off (setfit_pairs: 0)"}
    # With the shared encoder no guarantee holds on this data; with its own encoder it does.
    assert tuned.passed and not tuned.frozen_passed
    registry = Registry(tuned.store)
    test = stored_split(registry.examples(registry.task_by_id(tuned.version.task_id))).test
    texts, gold = [i.input for i in test], [i.output for i in test]
    own = student.predict(student.encode(texts, tuned.store))
    answered = [(p.answer, g) for p, g in zip(own, gold, strict=True) if not p.abstained]
    wrong = sum(a != g for a, g in answered)
    assert len(answered) >= len(test) // 2
    assert wrong / len(answered) <= tuned.version.guarantee["bound"]  # as the test check found
    assert all(p.abstained for p in frozen.predict(frozen.encode(texts, tuned.store)))
    # Forced to guess on sentences unlike any it was trained on, it is still more often right.
    unseen = weekday_rows(UNSEEN)
    texts, gold = [t for t, _ in unseen], [label for _, label in unseen]
    assert accuracy(student, texts, gold, tuned.store) >= 0.95
    assert accuracy(student, texts, gold, tuned.store) > accuracy(frozen, texts, gold, None)
    # Cached embeddings are keyed by encoder, so the two never mix.
    assert not np.allclose(student.encode(texts[:1], tuned.store), frozen.encode(texts[:1]))


def accuracy(
    student: ClassifierStudent, texts: list[str], gold: list[str], store: Store | None
) -> float:
    best = [p.best for p in student.predict(student.encode(texts, store))]
    return float(np.mean([b == g for b, g in zip(best, gold, strict=True)]))


def test_a_tampered_or_padded_own_encoder_is_refused(tuned: Tuned, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "v1"
    shutil.copytree(tuned.version.path, copy)
    moved = replace(tuned.version, path=str(copy))
    ClassifierStudent(moved)  # an intact copy loads
    config = copy / "encoder" / "config.json"
    original = config.read_text()
    config.write_text(original + " ")
    with pytest.raises(ModelError, match=r"encoder/config\.json changed since it was trained"):
        ClassifierStudent(moved)
    config.write_text(original)
    (copy / "encoder" / "added_tokens.json").write_text('{"monday": 1}')
    with pytest.raises(ModelError, match=r"encoder/added_tokens\.json was not part of this"):
        ClassifierStudent(moved)


def test_its_own_encoder_is_calibrated_as_served_through_llama_cpp(tuned: Tuned) -> None:
    """Distillation converted the tuned encoder to GGUF and calibrated with it, as the worker
    serves: the served answers on calibration reproduce the guarantee's counts."""
    version = tuned.version
    assert version.metrics["embedded_by"] == "llama.cpp"
    paths = Paths(
        *(tuned.store.path.parent.parent / n for n in ("config", "data", "models", "logs", "run"))
    )
    converted = sorted((paths.cache_dir / "encoders").iterdir())
    assert len(converted) == 2  # the shared MiniLM and this version's own, both at distillation
    registry = Registry(tuned.store)
    known = registry.examples(registry.task_by_id(version.task_id))
    items = stored_split([e for e in known if e.at <= version.created]).calibration
    student = ClassifierStudent(version)
    engine = Engine(paths)
    try:
        assert engine.encoder_file(student.encoder_path) in converted
        served = student.answer([i.input for i in items], tuned.store, engine)
        scored = score_as_served(student, items, tuned.store, engine)
    finally:
        engine.close()
    assert [p.confidence for p in served] == pytest.approx(scored.scores.confidence, abs=1e-6)
    answered = [(p.answer, i.output) for p, i in zip(served, items, strict=True) if p.answer]
    assert len(answered) == version.guarantee["answered"] > 0
    assert sum(a != g for a, g in answered) == version.guarantee["errors"]
