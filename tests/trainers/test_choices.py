"""Every choice in distillation sees the train split alone: answers held out for calibration
and test only ever judge the student. Relabelling every held-out example, even into a shape
no student could write, leaves the next student byte-identical."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from stillroom.paths import Paths
from stillroom.registry import Registry
from stillroom.service.encoder import Encoder
from stillroom.store import Store
from stillroom.trainers.distill import distill_classifier
from stillroom.trainers.generative import distill_generative

STREETS = ["Court St", "Main Street", "Elm Ave", "Lake Shore Dr", "Oak Hill Road", "5th Ave"]
CITIES = ["Brooklyn", "Chicago", "San Jose", "Saint Paul", "Memphis", "Reno", "Fargo"]
TOPICS = {
    "fruit": ["apples", "ripe peaches", "a bunch of bananas", "fresh cherries", "plums", "mangos"],
    "weather": ["heavy rain", "a thunderstorm", "thick fog", "snow and hail", "a heatwave", "wind"],
    "vehicle": ["the bus", "a red bicycle", "the night train", "a delivery truck", "the tram"],
}
FRAMES = ["I keep thinking about {}", "Yesterday we talked about {}", "There was a story on {}"]


@pytest.fixture(scope="module", autouse=True)
def warm_encoder() -> None:
    Encoder().encode(["warm up"])  # loading starts tqdm's monitor thread: before any leak check


def relabel_held_out(registry: Registry, name: str, output: Callable[[str], str]) -> int:
    """Give every calibration and test example a new answer (a newer row wins); returns how many."""
    task = registry.task(name)
    held = [e for e in registry.examples(task) if e.split != "train"]
    registry.add_examples(task, [(e.input, output(e.output), "user", None) for e in held])
    return len(held)


def student_files(folder: Path, names: list[str]) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


def test_held_out_answers_never_shape_a_tagger(stillroom_home: Path, store: Store) -> None:
    paths = Paths.resolve().ensure()
    registry = Registry(store)
    task = registry.create_task(
        "addresses",
        "extract",
        instruction="Split the address into number, street and city as JSON.",
        spec={"target": 0.1, "student": "tagger"},
    )
    rng = random.Random(3)
    rows = []
    for _ in range(60):
        parts = {
            "number": str(rng.randint(1, 999)),
            "street": rng.choice(STREETS),
            "city": rng.choice(CITIES),
        }
        text = f"{parts['number']} {parts['street']}, {parts['city']}"
        rows.append((text, json.dumps(parts), "user", None))
    registry.add_examples(task, rows)
    first = distill_generative(registry, task, paths)
    assert first.version.student == "crf-tagger"

    # A key the teacher never copied and a new key order, only where nothing trains: computed
    # from every example, the schema, the key order and the tagger-or-LoRA choice all change
    # (and a tagger is refused, since "country" is no run of the input).
    def reshaped(output: str) -> str:
        parts = json.loads(output)
        return json.dumps({"country": "USA", **dict(reversed(list(parts.items())))})

    assert relabel_held_out(registry, "addresses", reshaped) >= 20
    second = distill_generative(registry, registry.task("addresses"), paths)
    assert second.version.student == "crf-tagger"
    names = ["tagger.safetensors", "tagger.json", "scope.safetensors"]
    before = student_files(Path(first.version.path), names)
    assert student_files(Path(second.version.path), names) == before
    # The held-out answers still judge it: now every one of them is wrong.
    assert second.version.metrics["accuracy_calibration"] == 0.0
    assert second.guarantee.threshold is None and not second.passed


def test_held_out_labels_never_shape_a_classifier(stillroom_home: Path, store: Store) -> None:
    paths = Paths.resolve().ensure()
    registry = Registry(store)
    task = registry.create_task("topics", "classify", spec={"target": 0.1, "setfit_pairs": 0})
    rows = [
        (frame.format(thing), label, "user", None)
        for label, things in TOPICS.items()
        for frame in FRAMES
        for thing in things
    ]
    registry.add_examples(task, rows)
    encoder = Encoder(store=store)
    first = distill_classifier(registry, task, encoder, paths)
    # A label no training example has, on every held-out example.
    assert relabel_held_out(registry, "topics", lambda _: "sport") >= 10
    second = distill_classifier(registry, registry.task("topics"), encoder, paths)
    names = ["head.safetensors", "head.json"]
    assert student_files(Path(second.version.path), names) == student_files(
        Path(first.version.path), names
    )
    assert second.version.metrics["unlearned_labels"] == ["sport"]
    assert second.version.metrics["accuracy_calibration"] == 0.0
