"""Tasks from the command line: list, show, create by hand, distil, run, detect."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from stillroom.cli.options import ConfigOption, console, get_config, open_store
from stillroom.cli.task_card import card, pct
from stillroom.cli.task_files import read_examples, read_inputs
from stillroom.config import Config
from stillroom.errors import TaskError
from stillroom.paths import Paths
from stillroom.predictions import live_stats
from stillroom.prompts import instruction_templates
from stillroom.registry import (
    KINDS,
    TASK_NAME,
    TEST_FIX,
    ModelVersion,
    Registry,
    Task,
    why_test_failed,
)
from stillroom.store import Store

# Teaching aims this high by default: 30% of it calibrates, and a 5% bound needs at least
# 59 answered calibration items with no error; 300 leaves room for a few.
TEACH_TO = 300
STUDENTS = ("auto", "tagger", "lora")  # for an extract task (trainers/generative.py)

app = typer.Typer(help="The tasks stillroom learned or was given.", invoke_without_command=True)


@app.callback()
def tasks(ctx: typer.Context) -> None:
    """List tasks: kind, examples, version, agreement, coverage, bound, status."""
    if ctx.invoked_subcommand is not None:
        return
    with open_store() as store:
        registry = Registry(store)
        rows = [
            (t, registry.count_examples(t), registry.serving_version(t)) for t in registry.tasks()
        ]
    if not rows:
        console.print("no tasks yet (`stillroom tasks new` makes one by hand)")
        return
    table = Table("task", "kind", "examples", "version", "agreement", "coverage", "bound", "status")
    with open_store() as store:
        for task, count, version in rows:
            g = version.guarantee if version else {}
            guaranteed = g.get("threshold") is not None
            table.add_row(
                task.name,
                task.kind,
                str(count),
                f"v{version.version}" if version else "-",
                _agreement(store, task, version),
                pct(g.get("coverage")) if guaranteed else "-",
                pct(g.get("bound")) if guaranteed else "-",
                task.state
                if task.state in ("paused", "declined") or not version
                else version.status,
            )
    console.print(table)


def _agreement(store: Store, task: Task, version: ModelVersion | None) -> str:
    """Live agreement with the user when there is some, else agreement on the test split.
    An automated move the user left in place counts as agreed, as the pause check counts it."""
    if version is None:
        return "-"
    if version.status == "active" and task.spec.get("family") == "prompt":
        # A local answer is checked only when audited: the audits are its live record.
        audited = live_stats(store, version.id, "audit")
        if audited.judged and audited.agreement is not None:
            return f"{audited.agreement:.1%} audited ({audited.judged})"
    elif version.status in ("shadow", "active"):
        active = version.status == "active"
        live = live_stats(store, version.id, version.status, assume_right=active)
        if live.judged and live.agreement is not None:
            return f"{live.agreement:.1%} live ({live.judged})"
    return pct(version.metrics.get("accuracy_test")) + " test"


@app.command()
def show(name: str) -> None:
    """Print a task's evaluation card."""
    with open_store() as store:
        registry = Registry(store)
        task = registry.task(name)
        versions = registry.versions(task)
        count = registry.count_examples(task)
    console.print(card(task, count, versions[0] if versions else None, versions))


@app.command()
def pause(name: str) -> None:
    """Stop a task from acting (its student still learns)."""
    _set_state(name, "paused", "paused: it will not act until `stillroom tasks resume`")


@app.command()
def resume(name: str) -> None:
    """Let a paused task act again."""
    _set_state(name, "active", "resumed")


def _set_state(name: str, state: str, said: str) -> None:
    from stillroom.cli.proposals_cmd import wake_daemon

    with open_store() as store:
        registry = Registry(store)
        task = registry.task(name)
        if state == "active" and registry.active_version(task) is None:
            versions = registry.versions(task)
            failure = why_test_failed(versions[0].guarantee) if versions else None
            if failure is not None:
                raise TaskError(
                    f"{name} has no accepted version to resume: v{versions[0].version} may not"
                    f" act, {failure}; {TEST_FIX}"
                )
            raise TaskError(f"{name} has no accepted version to resume")
        registry.update_task(task, state=state)
    wake_daemon()
    console.print(f"{name} {said}")


@app.command("new")
def new(
    name: str,
    kind: Annotated[str, typer.Option(help="classify, extract or generate.")] = "classify",
    examples: Annotated[
        Path | None, typer.Option(help='JSON lines: {"input": ..., "output": ...}.')
    ] = None,
    instruction: Annotated[str | None, typer.Option(help="What the task does.")] = None,
    target: Annotated[float, typer.Option(help="Largest error rate allowed.")] = 0.05,
    student: Annotated[
        str,
        typer.Option(
            help="extract: auto (a tagger where the teacher only copies, else a LoRA),"
            " tagger or lora."
        ),
    ] = "auto",
    files: Annotated[bool, typer.Option("--files", help="Inputs are file paths.")] = False,
    inputs: Annotated[
        Path | None,
        typer.Option(
            help='Unlabelled inputs for the teacher: one a line, or {"input": ...} lines.'
        ),
    ] = None,
    synthesize: Annotated[
        int | None,
        typer.Option(
            min=0,
            help=f"New inputs the teacher writes (default: up to {TEACH_TO} examples; 0: none).",
            show_default=False,
        ),
    ] = None,
    max_cost: Annotated[
        float, typer.Option(min=0, help="Refuse if the teacher is estimated to cost more (USD).")
    ] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Create a task from your own examples, or from an instruction the teacher learns from
    (it labels --inputs and synthesizes more)."""
    if not 0 < target < 1:
        raise TaskError(f"--target {target}: must be between 0 and 1")
    rows = read_examples(examples) if examples else []
    given = read_inputs(inputs) if inputs else []
    # No examples but an instruction, or inputs to label: the teacher makes the examples.
    taught = inputs is not None or synthesize is not None or (bool(instruction) and not examples)
    if taught and not instruction:
        raise TaskError("the teacher needs --instruction to know what the task is")
    if kind in ("extract", "generate") and not instruction:
        raise TaskError(f"a {kind} task needs --instruction: its student is told what to do")
    if student not in STUDENTS:
        raise TaskError(f"--student {student}: must be one of {', '.join(STUDENTS)}")
    if student != "auto" and kind != "extract":
        raise TaskError(f"--student {student}: only an extract task has a choice of student")
    if taught and files:
        raise TaskError("the teacher labels text; a --files task learns from your own examples")
    spec: dict[str, Any] = {"target": target, "input_kind": "file" if files else "text"}
    if student != "auto":
        spec["student"] = student
    with open_store() as store:
        _check_new(Registry(store), name, kind)
    sources = [(i, o, "user") for i, o in rows]
    if taught and instruction:
        count = synthesize if synthesize is not None else max(0, TEACH_TO - len(rows) - len(given))
        made, spec["teacher_spend"] = _teach(
            get_config(config)[0], instruction, kind, given, count, rows, max_cost
        )
        sources += made
    if instruction and not files and sources:
        # Calls to the gateway that ask this instruction are this task's to answer.
        spec["templates"] = instruction_templates(instruction, sources[0][0])
    with open_store() as store:
        registry = Registry(store)
        task = registry.create_task(name, kind, instruction=instruction, spec=spec)
        added = registry.add_examples(task, [(i, o, s, None) for i, o, s in sources])
    console.print(f"task {name} created with {added} examples")


def _check_new(registry: Registry, name: str, kind: str) -> None:
    """Refuse a bad or taken name before any money is spent on the teacher."""
    if not TASK_NAME.match(name):
        raise TaskError(
            f"task name {name!r}: use lower-case letters, digits, '.', '_' or '-' (max 64)"
        )
    if kind not in KINDS:
        raise TaskError(f"task kind {kind!r}: must be one of {', '.join(KINDS)}")
    if any(t.name == name for t in registry.tasks()):
        raise TaskError(f"a task named {name!r} exists already")


def _teach(
    config: Config,
    instruction: str,
    kind: str,
    given: list[str],
    count: int,
    examples: list[tuple[str, str]],
    max_cost: float,
) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """Estimate, refuse above max_cost, then label and synthesize; say what it cost.
    Returns the (input, output, source) rows and the spend record kept in the task spec."""
    from stillroom.teachers import teacher_from_config
    from stillroom.teaching import plan_teaching, teach

    with teacher_from_config(config) as teacher:
        plan = plan_teaching(teacher, instruction, kind, given, count, examples=examples)
        console.print(plan.describe())
        plan.check(max_cost)
        with console.status("asking the teacher") as status:
            taught = teach(
                teacher,
                instruction,
                kind,
                given,
                count,
                examples=examples,
                plan=plan,
                max_cost=max_cost,
                progress=status.update,
            )
    console.print(taught.describe())
    record = {
        "model": plan.model,
        **taught.spend.to_dict(),
        "estimate": plan.to_dict(),
        "labelled": taught.labelled,
        "synthesized": taught.synthesized,
    }
    return taught.rows, record


def run(
    name: str,
    text: Annotated[
        str | None,
        typer.Argument(metavar="INPUT", help="Text or file (default: JSON lines on stdin)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Answer one input with a task's student, or abstain."""
    with open_store() as store:
        registry = Registry(store)
        task = registry.task(name)
        version = registry.serving_version(task)
        if version is None:
            raise TaskError(f"{name} has no trained version yet (`stillroom distill {name} --now`)")
        from stillroom.service.classifier import embedding_engine
        from stillroom.service.engine import Engine
        from stillroom.service.student_models import load_student

        cfg = get_config(config)[0]
        engine = Engine(Paths.resolve(), cfg.runtime)
        encoder = embedding_engine(engine, cfg.runtime)
        try:
            student = load_student(version, engine)
            snippet = cfg.filesystem.snippet_chars if task.input_kind == "file" else 0
            if text is not None:
                (prediction,) = student.answer([_input(task, text, snippet)], store, encoder)
                if prediction.abstained:
                    console.print(
                        f"abstained: {prediction.reason} (would say {prediction.best},"
                        f" confidence {prediction.confidence:.2f})",
                        markup=False,
                    )
                else:
                    console.print(
                        f"{prediction.answer}  (confidence {prediction.confidence:.2f})",
                        markup=False,
                    )
                return
            requests = _read_requests()
            inputs = [_input(task, r["input"], snippet) for r in requests]
            for request, prediction in zip(
                requests, student.answer(inputs, store, encoder), strict=True
            ):
                out: dict[str, Any] = {"id": request["id"]} if "id" in request else {}
                out |= {
                    "answer": prediction.answer,
                    "confidence": round(prediction.confidence, 4),
                    "abstained": prediction.abstained,
                }
                sys.stdout.write(json.dumps(out) + "\n")
        finally:
            engine.close()


def _input(task: Task, text: str, snippet_chars: int) -> str:
    if task.input_kind != "file":
        return text
    from stillroom.inputs import file_input_text
    from stillroom.monitors.features import file_features

    path = Path(text).expanduser()
    features = file_features(path, snippet_chars) if path.is_file() else None
    if features is None:
        raise TaskError(f"{text}: not a readable file ({task.name} answers about files)")
    return file_input_text(features)


def _read_requests() -> list[dict[str, Any]]:
    requests = []
    for number, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise TaskError(f'stdin line {number}: not JSON (expected {{"input": ...}})') from None
        if not isinstance(data, dict) or not isinstance(data.get("input"), str):
            raise TaskError(f'stdin line {number}: expected {{"input": "...", "id": ...}}')
        requests.append(data)
    return requests
