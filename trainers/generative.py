"""Distil an extraction or free-text task: a LoRA adapter over the shared base, trained with
Unsloth, exported as GGUF, then judged and calibrated through llama.cpp as it will serve.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.config import RuntimeConfig
from stillroom.errors import TaskError
from stillroom.manifest import write_manifest
from stillroom.paths import Paths
from stillroom.registry import Registry, Task, first_status, why_test_failed
from stillroom.service.engine import Engine
from stillroom.service.generator import ADAPTER_FILE, STUDENT, GenerativeStudent, StudentSpec
from stillroom.service.guard import SCOPE_FILE
from stillroom.service.judge import (
    Thresholds,
    copied_from_input,
    in_schema_order,
    json_schema,
    judge,
)
from stillroom.service.scope import nearest_distance as distances
from stillroom.service.tagger import STUDENT as TAGGER
from stillroom.service.tagger_student import TaggerStudent
from stillroom.trainers.budget import task_delta
from stillroom.trainers.calibration import check_on_test, fit_guarantee, fit_radius
from stillroom.trainers.dataset import (
    Item,
    Split,
    apart_from_train,
    cap_held_out,
    dedupe,
    stored_split,
)
from stillroom.trainers.distill import (
    DEFAULT_MIN_COVERAGE,
    Distilled,
    Progress,
    committing,
    fresh_version_folder,
)
from stillroom.trainers.spans import align, fields_of
from stillroom.trainers.tagger import train_tagger

if TYPE_CHECKING:
    from stillroom.trainers.lora import LoraSettings

MIN_EXAMPLES = 8
MIN_ALIGNED = 0.9  # of a copying teacher's outputs that align, for a tagger student
GENERATIVE_KINDS = ("extract", "generate")
# A few hundred held-out answers already bound the error tightly (zero errors in 300 bound it
# below 1%); past these sizes every further example trains the student instead.
MAX_CALIBRATION, MAX_TEST = 300, 200


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
    """Train, calibrate, test and register a new version of an extract or generate task:
    a CRF tagger where the teacher only copies into fields it can write (`choose_tagger`),
    else a LoRA adapter over the shared base."""
    if task.kind not in GENERATIVE_KINDS:
        raise TaskError(f"{task.name} is a {task.kind} task; this student generates text")
    runtime = runtime or RuntimeConfig()
    examples = registry.examples(task)
    items = dedupe(examples)
    if len(items) < MIN_EXAMPLES:
        raise TaskError(
            f"{task.name} has {len(items)} distinct examples; a generative student needs at"
            f" least {MIN_EXAMPLES}"
        )
    split = cap_held_out(stored_split(examples), MAX_CALIBRATION, MAX_TEST)
    if not split.train:  # each input's split is fixed when it arrives: none of these train
        raise TaskError(f"{task.name} has no training example yet; add more examples")
    # Every choice below (schema, key order, student kind, fields, lengths, the copy flag)
    # sees the train split alone: held-out answers only ever judge the student.
    schema = json_schema([i.output for i in split.train]) if task.kind == "extract" else None
    fields = choose_tagger(task, split.train, schema)
    number = registry.next_version(task)
    folder = paths.models_dir / task.name / f"v{number}"
    engine = Engine(paths, runtime)
    try:
        fresh_version_folder(folder)
        started = time.perf_counter()
        if fields is not None:
            progress(f"training a CRF tagger on {len(split.train)} examples")
            tagger = train_tagger([(i.input, i.output) for i in split.train], fields)
            tagger.save(folder)
            student, base = TAGGER, None
            trained: dict[str, Any] = {
                "train_iterations": tagger.iterations,
                "features": len(tagger.vocabulary),
                "copy": True,
            }
        else:
            adapter = _train_adapter(
                task, split, schema, folder, runtime, paths, progress, settings
            )
            student, base, trained = STUDENT, adapter.base, adapter.trained
        trained = {
            "train_seconds": round(time.perf_counter() - started, 1),
            **trained,
            "schema": schema is not None,
        }
        _save_scope(folder, engine.embed([i.input for i in split.train]))
        return _calibrate(
            registry, task, folder, number, split, engine, student, base, trained, progress
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        engine.close()


def choose_tagger(
    task: Task, items: Sequence[Item], schema: dict[str, Any] | None
) -> dict[str, bool] | None:
    """The fields a tagger would write for this task, or None for a LoRA adapter.

    The cheapest student that can pass: where the teacher only copies runs of the input into
    string fields (`copied_from_input`, `fields_of`) and nearly every output aligns back to
    its input, a CRF over the input's pieces learns in seconds what a LoRA needs an hour and
    ten times the examples for. The task's `student` ("auto", "tagger" or "lora") overrides.
    """
    choice = task.spec.get("student", "auto")
    if task.kind != "extract" or choice == "lora":
        return None
    pairs = [(i.input, i.output) for i in items]
    fields = fields_of(schema) if copied_from_input(pairs, schema) else None
    why = "its outputs are not JSON strings copied from the inputs"
    if fields is not None:
        aligned = sum(align(text, output, fields) is not None for text, output in pairs)
        if aligned >= MIN_ALIGNED * len(pairs):
            return fields
        why = f"only {aligned} of {len(pairs)} outputs align with their inputs"
    if choice == "tagger":
        raise TaskError(f"{task.name} cannot have a tagger student: {why}")
    return None


@dataclass(frozen=True)
class _Adapter:
    base: str
    trained: dict[str, Any]  # its training metrics


def _train_adapter(
    task: Task,
    split: Split,
    schema: dict[str, Any] | None,
    folder: Path,
    runtime: RuntimeConfig,
    paths: Paths,
    progress: Progress,
    settings: LoraSettings | None,
) -> _Adapter:
    """Train the LoRA adapter with Unsloth, export it to GGUF and write its student.json."""
    from stillroom.service.bases import base_gguf
    from stillroom.trainers.base_model import chat_template, hf_folder
    from stillroom.trainers.gguf_lora import export_lora_gguf
    from stillroom.trainers.lora import LoraSettings, train_lora

    instruction = instruction_of(task)
    base = base_gguf(runtime.base)
    template = chat_template(base)
    progress("preparing the base model for training")
    hf = hf_folder(base, paths.cache_dir / "bases")
    with tempfile.TemporaryDirectory(prefix=".lora-", dir=folder.parent) as scratch:
        progress(f"training a LoRA adapter on {len(split.train)} examples (Unsloth)")
        result = train_lora(
            hf,
            [(instruction, i.input, in_schema_order(i.output, schema)) for i in split.train],
            Path(scratch) / "adapter",
            settings or LoraSettings(),
            template,
            progress,
        )
        export_lora_gguf(Path(scratch) / "adapter", base, folder / ADAPTER_FILE)
    longest = max(len(i.output) for i in split.train)
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
        copy=copied_from_input([(i.input, i.output) for i in split.train], schema),
    )
    spec.save(folder)
    trained = {
        "train_steps": result.steps,
        "train_loss": round(result.final_loss, 4),
        "train_device": result.device,
        "copy": spec.copy,
    }
    return _Adapter(spec.base, trained)


def _calibrate(
    registry: Registry,
    task: Task,
    folder: Path,
    number: int,
    split: Split,
    engine: Engine,
    student_kind: str,
    base: str | None,
    trained: dict[str, Any],
    progress: Progress,
) -> Distilled:
    """Answer calibration and test as it will serve, judge, fit the guarantee, register."""
    from stillroom.registry import ModelVersion

    draft = ModelVersion(0, task.id, number, student_kind, str(folder), "candidate", {}, {}, 0, 0)
    write_manifest(folder, task=task.name, kind=task.kind, version=number, student=student_kind)
    student: GenerativeStudent | TaggerStudent
    if student_kind == TAGGER:
        student = TaggerStudent(draft, engine)
    else:
        student = GenerativeStudent(draft, engine)
    thresholds = Thresholds.of(task.spec)
    scores: dict[str, dict[str, Any]] = {}
    judged: dict[str, tuple[Any, Any, Any]] = {}
    answer_seconds: list[float] = []
    near_copies: dict[str, int] = {}
    where = "numpy" if student_kind == TAGGER else "llama.cpp"
    for name, part in (("calibration", split.calibration), ("test", split.test)):
        progress(f"answering the {name} split ({len(part)} examples) through {where}")
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
        kept = apart_from_train(distance)  # near-copies of a training input judge nothing
        near_copies[name] = int((~kept).sum())
        correct = np.array(verdict.correct, dtype=bool)
        judged[name] = (confidence[kept], correct[kept], distance[kept])
        scores[name] = {k: _mean(v) for k, v in verdict.scores.items()}
        if name == "calibration":
            radius = fit_radius(student.train_vectors, vectors) if len(part) else None
    progress("calibrating the guarantee")
    conf, correct, distance = judged["calibration"]
    guarantee = fit_guarantee(
        conf,
        correct,
        target=task.target,
        delta=task_delta(number),  # the task's budget, shared by all its versions
        distance=distance,
        radius=radius,
        calibration_share=len(split.calibration) / max(1, sum(split.sizes().values())),
    )
    guarantee = check_on_test(guarantee, *judged["test"])
    min_coverage = float(task.spec.get("min_coverage", DEFAULT_MIN_COVERAGE))
    passed = guarantee.passed(min_coverage) and why_test_failed(guarantee.to_dict()) is None
    metrics = {
        "examples": sum(split.sizes().values()),
        "split": split.sizes(),
        "accuracy_calibration": _mean(judged["calibration"][1]),
        "accuracy_test": _mean(judged["test"][1]),
        "scores": scores,
        "near_copies": near_copies,
        "thresholds": thresholds.__dict__ if task.kind == "generate" else None,
        **trained,
        "answer_ms_p50": round(float(np.median(answer_seconds)) * 1000, 1)
        if answer_seconds
        else None,
        "min_coverage": min_coverage,
    }
    write_manifest(
        folder,
        task=task.name,
        kind=task.kind,
        version=number,
        student=student_kind,
        base=base,
        metrics=metrics,
        guarantee=guarantee.to_dict(),
    )
    status = first_status(task, passed, guarantee.to_dict())
    committing()  # a SIGTERM from here waits until the version and the task's state are set
    version = registry.add_version(
        task,
        number,
        student=student_kind,
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
