"""Distil one task: data set -> student -> guarantee on held-out data -> a registered version."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from stillroom.errors import TaskError
from stillroom.manifest import write_manifest
from stillroom.paths import PRIVATE_DIR, PRIVATE_FILE, Paths, private_dir
from stillroom.registry import ModelVersion, Registry, Task, why_test_failed
from stillroom.trainers.calibration import (
    Guarantee,
    check_on_test,
    fit_guarantee,
    fit_radius,
    min_answered,
    nearest_distance,
)
from stillroom.trainers.classifier import STUDENT, train_head
from stillroom.trainers.dataset import SHARES, Split, stored_split
from stillroom.trainers.encoder import ENCODER_ID, Encoder
from stillroom.trainers.setfit import ENCODER_DIR, EncoderChoice, choose_encoder

DEFAULT_MIN_COVERAGE = 0.25
STOPPED_EXIT = 128 + signal.SIGTERM  # 143, as a shell reports a process SIGTERM ended
Progress = Callable[[str], None]


class Stopped(BaseException):
    """SIGTERM asked the run to stop. Not an Exception, so training code's `except Exception`
    cannot swallow it; every `finally` on the way out removes what was half-written."""


class _Stop:
    committing = False  # a version is being written and registered: SIGTERM waits
    asked = False  # a SIGTERM came while committing


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Inside, SIGTERM raises `Stopped` in the main thread (by default it would end the
    process at once, skipping the clean-ups), except while a version is being committed."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if _Stop.committing:
            _Stop.asked = True
        else:
            raise Stopped

    _Stop.committing = _Stop.asked = False
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _Stop.committing = _Stop.asked = False


def committing() -> None:
    """From here the version is written and registered in one go: a SIGTERM waits for
    `task_done()` rather than leaving a folder without its row (or a row without its files)."""
    _Stop.committing = True


def task_done() -> None:
    """Between tasks: raise `Stopped` now if a SIGTERM waited for the last commit."""
    _Stop.committing = False
    if _Stop.asked:
        _Stop.asked = False
        raise Stopped


def fresh_version_folder(folder: Path) -> Path:
    """An empty private folder for a new version. Files found there were left by a killed
    run (no registered version has this number yet), so they go first."""
    shutil.rmtree(folder, ignore_errors=True)
    return private_dir(folder)


@dataclass(frozen=True)
class Distilled:
    version: ModelVersion
    guarantee: Guarantee
    passed: bool


def distill_classifier(
    registry: Registry,
    task: Task,
    encoder: Encoder,
    paths: Paths,
    progress: Progress = lambda _: None,
) -> Distilled:
    """Train, calibrate, test and register a new version of a classify task."""
    if task.kind != "classify":
        raise TaskError(f"{task.name} is a {task.kind} task; this student classifies")
    split = stored_split(registry.examples(task))
    items = split.train + split.calibration + split.test
    labels = Counter(item.output for item in items)
    if len(items) < 4 or len(labels) < 2:
        raise TaskError(
            f"{task.name} has {len(items)} distinct examples and {len(labels)} label(s);"
            " a classifier needs at least 4 examples and 2 labels"
        )
    # Splits are fixed when examples arrive (nothing moves to train to help a label), so a
    # label with no training example cannot be predicted yet, and a head needs two labels.
    learned = Counter(item.output for item in split.train)
    if len(learned) < 2:
        raise TaskError(
            f"{task.name} has {len(split.train)} training example(s) with {len(learned)}"
            " label(s) (each input's split is fixed when it arrives; about half train);"
            " a classifier needs training examples of at least 2 labels: add more examples"
        )
    started = time.perf_counter()
    progress(f"embedding {len(split.train)} training examples")
    scratch_in = private_dir(paths.models_dir / task.name)
    with tempfile.TemporaryDirectory(prefix=".setfit-", dir=scratch_in) as scratch:
        choice = choose_encoder(
            task,
            split.train,
            encoder,
            Path(scratch),
            progress,
            can_guarantee=len(split.calibration) >= min_answered(task.target),
        )
        try:
            return _finish(registry, task, split, choice, paths, started, progress)
        finally:
            choice.release()


def _finish(
    registry: Registry,
    task: Task,
    split: Split,
    choice: EncoderChoice,
    paths: Paths,
    started: float,
    progress: Progress,
) -> Distilled:
    """Train the final head on the whole train split with the chosen encoder, calibrate,
    test, and write and register the version (moving a tuned encoder into it)."""
    encoder = choice.encoder
    vectors = {name: encoder.encode([i.input for i in part]) for name, part in _parts(split)}
    progress(f"training the head on {len(split.train)} examples")
    head = train_head(vectors["train"], [i.output for i in split.train])
    trained_in = time.perf_counter() - started

    def score(name: str) -> tuple[Any, Any, Any]:
        part = dict(_parts(split))[name]
        probs = head.probabilities(vectors[name])
        answers = [head.labels[j] for j in probs.argmax(axis=1)] if len(part) else []
        correct = np.array([a == i.output for a, i in zip(answers, part, strict=True)], dtype=bool)
        distance = nearest_distance(head.train_vectors, vectors[name])
        return probs.max(axis=1) if len(part) else np.zeros(0), correct, distance

    progress("calibrating the guarantee")
    cal_conf, cal_correct, cal_distance = score("calibration")
    radius = fit_radius(head.train_vectors, vectors["calibration"])
    guarantee = fit_guarantee(
        cal_conf,
        cal_correct,
        target=task.target,
        distance=cal_distance,
        radius=radius,
        calibration_share=SHARES[1],
    )
    test_conf, test_correct, test_distance = score("test")
    guarantee = check_on_test(guarantee, test_conf, test_correct, test_distance)
    min_coverage = float(task.spec.get("min_coverage", DEFAULT_MIN_COVERAGE))
    # A version its own test split contradicts never acts (the registry refuses it too).
    passed = guarantee.passed(min_coverage) and why_test_failed(guarantee.to_dict()) is None
    labels = Counter(i.output for _, part in _parts(split) for i in part)
    own = choice.tuned is not None
    metrics = {
        "examples": sum(labels.values()),
        "split": split.sizes(),
        "labels": dict(labels.most_common()),
        "unlearned_labels": sorted(set(labels) - {i.output for i in split.train}),
        "accuracy_calibration": _mean(cal_correct),
        "accuracy_test": _mean(test_correct),
        "train_seconds": round(trained_in, 3),
        "min_coverage": min_coverage,
        **choice.metrics,
    }
    number = registry.next_version(task)
    committing()  # writing and registering take well under a second: a SIGTERM waits
    folder = fresh_version_folder(paths.models_dir / task.name / f"v{number}")
    try:
        if choice.tuned is not None:
            _move_private(choice.tuned, folder / ENCODER_DIR)
        head.save(folder, {"encoder": ENCODER_DIR if own else ENCODER_ID, "base": ENCODER_ID})
        write_manifest(
            folder,
            task=task.name,
            kind=task.kind,
            version=number,
            student=STUDENT,
            base=ENCODER_ID,
            encoder="own" if own else "shared",
            metrics=metrics,
            guarantee=guarantee.to_dict(),
        )
        # A task made by hand is the user's own request: it goes live once its guarantee holds.
        # Tasks stillroom found itself answer silently (shadow) until the user accepts.
        status = ("active" if task.origin == "user" else "shadow") if passed else "candidate"
        version = registry.add_version(
            task,
            number,
            student=STUDENT,
            path=str(folder),
            metrics=metrics,
            guarantee=guarantee.to_dict(),
            status=status,
            task_state="ready" if passed else "needs-data",
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Distilled(version, guarantee, passed)


def _move_private(source: Path, target: Path) -> None:
    """Move a folder into place, user-only like the rest of the models folder."""
    shutil.move(str(source), str(target))
    for path in [target, *target.rglob("*")]:
        os.chmod(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)


def _parts(split: Split) -> list[tuple[str, Any]]:
    return [("train", split.train), ("calibration", split.calibration), ("test", split.test)]


def _mean(values: Any) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None
