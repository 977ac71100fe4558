"""Distil an extraction or free-text task: a LoRA adapter over the shared base, trained with
Unsloth, exported as GGUF, then judged and calibrated through llama.cpp as it will serve.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.config import RuntimeConfig
from stillroom.errors import TaskError
from stillroom.manifest import write_manifest
from stillroom.paths import Paths
from stillroom.registry import Registry, Task
from stillroom.service.engine import Engine
from stillroom.trainers.calibration import check_on_test, fit_guarantee, fit_radius
from stillroom.trainers.calibration import nearest_distance as distances
from stillroom.trainers.dataset import SHARES, Item, Split, dedupe
from stillroom.trainers.distill import (
    DEFAULT_MIN_COVERAGE,
    Distilled,
    Progress,
    committing,
    fresh_version_folder,
)
from stillroom.trainers.generator import (
    ADAPTER_FILE,
    SCOPE_FILE,
    STUDENT,
    GenerativeStudent,
    StudentSpec,
)
from stillroom.trainers.judge import (
    Thresholds,
    copied_from_input,
    in_schema_order,
    json_schema,
    judge,
)

if TYPE_CHECKING:
    from stillroom.trainers.lora import LoraResult, LoraSettings

MIN_EXAMPLES = 8
GENERATIVE_KINDS = ("extract", "generate")


def random_split(items: Sequence[Item], shares: tuple[float, float, float] = SHARES) -> Split:
    """Train / calibration / test by shares, shuffled with a fixed seed (outputs are mostly
    unique, so there are no labels to stratify by)."""
    order = list(items)
    random.Random(0).shuffle(order)
    n_cal, n_test = round(len(order) * shares[1]), round(len(order) * shares[2])
    calibration, test = order[:n_cal], order[n_cal : n_cal + n_test]
    return Split(order[n_cal + n_test :], calibration, test)


def instruction_of(task: Task) -> str:
    """What the student is told: the instruction as the user wrote it."""
    said = task.spec.get("instructions")
    if isinstance(said, list) and said:
        return str(said[0])
    if task.instruction:
        return task.instruction
    raise TaskError(f"{task.name} has no instruction to train a generative student on")


def distill_generative(
    registry: Registry,
    task: Task,
    paths: Paths,
    runtime: RuntimeConfig | None = None,
    progress: Progress = lambda _: None,
    settings: LoraSettings | None = None,
) -> Distilled:
    """Train, calibrate, test and register a new version of an extract or generate task."""
    from stillroom.trainers.base_model import base_gguf, chat_template, hf_folder
    from stillroom.trainers.gguf_lora import export_lora_gguf
    from stillroom.trainers.lora import LoraSettings, train_lora

    if task.kind not in GENERATIVE_KINDS:
        raise TaskError(f"{task.name} is a {task.kind} task; this student generates text")
    runtime = runtime or RuntimeConfig()
    items = dedupe(registry.examples(task))
    if len(items) < MIN_EXAMPLES:
        raise TaskError(
            f"{task.name} has {len(items)} distinct examples; a generative student needs at"
            f" least {MIN_EXAMPLES}"
        )
    split = random_split(items)
    instruction = instruction_of(task)
    base = base_gguf(runtime.base)
    template = chat_template(base)
    schema = json_schema([i.output for i in items]) if task.kind == "extract" else None
    progress("preparing the base model for training")
    hf = hf_folder(base, paths.cache_dir / "bases")
    started = time.perf_counter()
    number = registry.next_version(task)
    folder = paths.models_dir / task.name / f"v{number}"
    engine = Engine(paths, runtime)
    try:
        fresh_version_folder(folder)
        with tempfile.TemporaryDirectory(prefix=".lora-", dir=folder.parent) as scratch:
            progress(f"training a LoRA adapter on {len(split.train)} examples (Unsloth)")
            trained = train_lora(
                hf,
                [(instruction, i.input, in_schema_order(i.output, schema)) for i in split.train],
                Path(scratch) / "adapter",
                settings or LoraSettings(),
                template,
                progress,
            )
            export_lora_gguf(Path(scratch) / "adapter", base, folder / ADAPTER_FILE)
        train_seconds = time.perf_counter() - started
        longest = max(len(i.output) for i in items)
        spec = StudentSpec(
            kind=task.kind,
            base=runtime.base,
            base_file=base.name,
            base_size=base.stat().st_size,
            instruction=instruction,
            template=template,
            schema=schema,
            max_tokens=min(512, max(32, longest)),  # a token is at least a character
            thresholds=Thresholds.of(task.spec).__dict__,
            copy=copied_from_input([(i.input, i.output) for i in items], schema),
        )
        spec.save(folder)
        train_vectors = engine.embed([i.input for i in split.train])
        _save_scope(folder, train_vectors)
        return _calibrate(
            registry, task, folder, number, split, engine, spec, trained, train_seconds, progress
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        engine.close()


def _calibrate(
    registry: Registry,
    task: Task,
    folder: Path,
    number: int,
    split: Split,
    engine: Engine,
    spec: StudentSpec,
    trained: LoraResult,
    train_seconds: float,
    progress: Progress,
) -> Distilled:
    """Answer calibration and test through llama.cpp, judge, fit the guarantee, register."""
    from stillroom.registry import ModelVersion

    draft = ModelVersion(0, task.id, number, STUDENT, str(folder), "candidate", {}, {}, 0, 0)
    write_manifest(folder, task=task.name, kind=task.kind, version=number, student=STUDENT)
    student = GenerativeStudent(draft, engine)
    thresholds = Thresholds(**spec.thresholds)
    scores: dict[str, dict[str, Any]] = {}
    judged: dict[str, tuple[Any, Any, Any]] = {}
    answer_seconds: list[float] = []
    for name, part in (("calibration", split.calibration), ("test", split.test)):
        progress(f"answering the {name} split ({len(part)} examples) through llama.cpp")
        answers = student.forced([i.input for i in part])
        answer_seconds += [a.seconds for a in answers]
        verdict = judge(
            task.kind,
            [a.text for a in answers],
            [i.output for i in part],
            engine.embed,
            thresholds,
        )
        vectors = engine.embed([i.input for i in part])
        distance = distances(student.train_vectors, vectors)
        confidence = np.array([a.confidence for a in answers], dtype=np.float64)
        judged[name] = (confidence, np.array(verdict.correct, dtype=bool), distance)
        scores[name] = {k: _mean(v) for k, v in verdict.scores.items()}
        if name == "calibration":
            radius = fit_radius(student.train_vectors, vectors) if len(part) else None
    progress("calibrating the guarantee")
    conf, correct, distance = judged["calibration"]
    guarantee = fit_guarantee(
        conf,
        correct,
        target=task.target,
        distance=distance,
        radius=radius,
        calibration_share=SHARES[1],
    )
    guarantee = check_on_test(guarantee, *judged["test"])
    min_coverage = float(task.spec.get("min_coverage", DEFAULT_MIN_COVERAGE))
    passed = guarantee.passed(min_coverage)
    metrics = {
        "examples": sum(split.sizes().values()),
        "split": split.sizes(),
        "accuracy_calibration": _mean(judged["calibration"][1]),
        "accuracy_test": _mean(judged["test"][1]),
        "scores": scores,
        "thresholds": spec.thresholds if task.kind == "generate" else None,
        "train_seconds": round(train_seconds, 1),
        "train_steps": trained.steps,
        "train_loss": round(trained.final_loss, 4),
        "train_device": trained.device,
        "answer_ms_p50": round(float(np.median(answer_seconds)) * 1000, 1)
        if answer_seconds
        else None,
        "min_coverage": min_coverage,
        "schema": spec.schema is not None,
        "copy": spec.copy,
    }
    write_manifest(
        folder,
        task=task.name,
        kind=task.kind,
        version=number,
        student=STUDENT,
        base=spec.base,
        metrics=metrics,
        guarantee=guarantee.to_dict(),
    )
    status = ("active" if task.origin == "user" else "shadow") if passed else "candidate"
    committing()  # a SIGTERM from here waits until the version and the task's state are set
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
    return Distilled(version, guarantee, passed)


def _save_scope(folder: Path, vectors: Any) -> None:
    from safetensors.numpy import save_file

    save_file(
        {"train_vectors": np.ascontiguousarray(vectors, dtype=np.float16)}, str(folder / SCOPE_FILE)
    )


def _mean(values: Any) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None
