"""Distil one task: data set -> student -> guarantee on held-out data -> a registered version."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.config import RuntimeConfig
from stillroom.errors import TaskError
from stillroom.manifest import write_manifest
from stillroom.paths import PRIVATE_DIR, PRIVATE_FILE, Paths, private_dir
from stillroom.registry import ModelVersion, Registry, Task, first_status, why_test_failed
from stillroom.service.classifier import (
    ENCODER_DIR,
    STUDENT,
    ClassifierStudent,
    Scores,
    embedding_engine,
)
from stillroom.service.encoder import ENCODER_ID, Encoder
from stillroom.service.engine import Engine
from stillroom.store import Store
from stillroom.trainers.budget import task_delta
from stillroom.trainers.calibration import (
    Guarantee,
    check_on_test,
    fit_guarantee,
    fit_radius,
    min_answered,
)
from stillroom.trainers.classifier import train_head
from stillroom.trainers.dataset import SHARES, Item, Split, apart_from_train, stored_split
from stillroom.trainers.setfit import EncoderChoice, choose_encoder

if TYPE_CHECKING:
    from numpy.typing import NDArray

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
    runtime: RuntimeConfig | None = None,
) -> Distilled:
    """Train, calibrate, test and register a new version of a classify task; calibrated as
    `runtime` (default: the default config's) will serve it."""
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
            can_guarantee=len(split.calibration)
            >= min_answered(task.target, task_delta(registry.next_version(task))),
        )
        try:
            runtime = runtime or RuntimeConfig()
            return _finish(registry, task, split, choice, paths, started, progress, runtime)
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
    runtime: RuntimeConfig,
) -> Distilled:
    """Train the final head on the whole train split with the chosen encoder, write it into
    the version's folder (moving a tuned encoder there), then calibrate, test and register
    the student that folder serves, as it will serve."""
    progress(f"training the head on {len(split.train)} examples")
    train = choice.encoder.encode([i.input for i in split.train])
    head = train_head(train, [i.output for i in split.train])
    trained_in = time.perf_counter() - started
    own = choice.tuned is not None
    number = registry.next_version(task)
    folder = fresh_version_folder(paths.models_dir / task.name / f"v{number}")
    written = {
        "task": task.name,
        "kind": task.kind,
        "version": number,
        "student": STUDENT,
        "base": ENCODER_ID,
        "encoder": "own" if own else "shared",
    }
    engine = Engine(paths, runtime)
    student: ClassifierStudent | None = None
    try:
        if choice.tuned is not None:
            _move_private(choice.tuned, folder / ENCODER_DIR)
        head.save(folder, {"encoder": ENCODER_DIR if own else ENCODER_ID, "base": ENCODER_ID})
        write_manifest(folder, **written)
        # Calibrated as served: the worker's class reads the head back (its training inputs'
        # embeddings in float16) and embeds with the backend `runtime` serves with.
        draft = ModelVersion(
            id=0,
            task_id=task.id,
            version=number,
            student=STUDENT,
            path=str(folder),
            status="candidate",
            metrics={},
            guarantee={},  # none yet: the draft is only scored, never asked to answer
            created=0,
            updated=0,
        )
        student = ClassifierStudent(draft)
        embed = embedding_engine(engine, runtime)
        progress("calibrating the guarantee")
        cal = score_as_served(student, split.calibration, registry.store, embed)
        test = score_as_served(student, split.test, registry.store, embed)
        # Held-out inputs the encoder cannot tell from a training input judge nothing.
        cal_kept = apart_from_train(cal.scores.distance)
        test_kept = apart_from_train(test.scores.distance)
        guarantee = fit_guarantee(
            cal.scores.confidence[cal_kept],
            cal.correct[cal_kept],
            target=task.target,
            delta=task_delta(number),  # the task's budget, shared by all its versions
            distance=cal.scores.distance[cal_kept],
            radius=fit_radius(student.head.train_vectors, cal.vectors),
            calibration_share=SHARES[1],
        )
        guarantee = check_on_test(
            guarantee,
            test.scores.confidence[test_kept],
            test.correct[test_kept],
            test.scores.distance[test_kept],
        )
        min_coverage = float(task.spec.get("min_coverage", DEFAULT_MIN_COVERAGE))
        # A version its own test split contradicts never acts (the registry refuses it too).
        passed = guarantee.passed(min_coverage) and why_test_failed(guarantee.to_dict()) is None
        labels = Counter(i.output for _, part in _parts(split) for i in part)
        metrics = {
            "examples": sum(labels.values()),
            "split": split.sizes(),
            "labels": dict(labels.most_common()),
            "unlearned_labels": sorted(set(labels) - {i.output for i in split.train}),
            "accuracy_calibration": _mean(cal.correct),
            "accuracy_test": _mean(test.correct),
            "near_copies": {
                "calibration": int((~cal_kept).sum()),
                "test": int((~test_kept).sum()),
            },
            "train_seconds": round(trained_in, 3),
            "min_coverage": min_coverage,
            "embedded_by": runtime.encoder,
            **choice.metrics,
        }
        committing()  # writing and registering take well under a second: a SIGTERM waits
        write_manifest(folder, **written, metrics=metrics, guarantee=guarantee.to_dict())
        status = first_status(task, passed, guarantee.to_dict())
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
    finally:
        engine.close()
        if student is not None and student.encoder_path is not None:
            Encoder.unload(student.encoder_path)  # loaded only where sentence-transformers serve
    return Distilled(version, guarantee, passed)


@dataclass(frozen=True)
class Scored:
    """A split as the served student answers it, and whether each best label is right."""

    scores: Scores
    correct: NDArray[np.bool_]
    vectors: NDArray[np.float32]  # the inputs' embeddings, as serving embeds them


def score_as_served(
    student: ClassifierStudent, items: Sequence[Item], store: Store, engine: Engine | None
) -> Scored:
    """Embed and score the items exactly as the student worker does (`engine` None: with
    sentence-transformers, as the worker's fallback), and judge each best label."""
    vectors = student.encode([i.input for i in items], store, engine)
    scores = student.scores(vectors)
    correct = np.array([b == i.output for b, i in zip(scores.best, items, strict=True)], bool)
    return Scored(scores, correct, vectors)


def _move_private(source: Path, target: Path) -> None:
    """Move a folder into place, user-only like the rest of the models folder."""
    shutil.move(str(source), str(target))
    for path in [target, *target.rglob("*")]:
        os.chmod(path, PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)


def _parts(split: Split) -> list[tuple[str, Any]]:
    return [("train", split.train), ("calibration", split.calibration), ("test", split.test)]


def _mean(values: Any) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None
