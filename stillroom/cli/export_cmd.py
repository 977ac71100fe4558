"""`stillroom export TASK --format gguf`: a task's serving version as files other tools run.

A generative task gives its base GGUF, its LoRA adapter GGUF, an Ollama Modelfile that joins
them and the evaluation card; a classifier gives the encoder GGUF, its head and the card; a
tagger (no LLM at all) its CRF weights, features and the card. Files learnt from the user's
data stay private: 0600 in a 0700 folder whatever the umask, and the command names them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from stillroom.cli.options import console, open_store
from stillroom.errors import TaskError
from stillroom.manifest import read_manifest
from stillroom.paths import Paths
from stillroom.registry import ModelVersion, Registry, Task

CHATML_TEMPLATE = """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""


def export(
    name: str,
    format: Annotated[str, typer.Option("--format", help="gguf (the only format yet).")] = "gguf",
    to: Annotated[
        Path | None, typer.Option(help="Folder to create (default: ./TASK-vN-gguf).")
    ] = None,
) -> None:
    """Write a task's serving version as GGUF files, with an Ollama Modelfile and its card."""
    from stillroom.cli.task_card import card

    if format != "gguf":
        raise TaskError(f"--format {format}: only gguf is supported")
    with open_store() as store:
        registry = Registry(store)
        task = registry.task(name)
        version = registry.serving_version(task)
        if version is None:
            raise TaskError(f"{name} has no trained version to export")
        text = card(task, registry.count_examples(task), version, registry.versions(task))
    target = (to or Path(f"{task.name}-v{version.version}-gguf")).expanduser()
    if target.exists() and any(target.iterdir()):
        raise TaskError(f"{target} exists and is not empty: name another folder with --to")
    read_manifest(Path(version.path))  # export only what was trained, unchanged
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.chmod(0o700)  # mkdir's mode passes through the umask, and the folder may exist
    if _is_generative(version):
        written, learnt = _generative(task, version, target)
    elif _is_tagger(version):
        written, learnt = _tagger(version, target)
    else:
        written, learnt = _classifier(version, target)
    _write(target / "CARD.md", f"# {task.name} v{version.version}\n\n```\n{text}\n```\n")
    console.print(f"wrote {target}: " + ", ".join([*written, "CARD.md"]))
    if version.metrics.get("labels"):
        learnt.append("CARD.md")  # it lists the labels, with how often each was seen
    console.print(
        "learnt from your training data (they can give away examples it was trained on;"
        " share them with care): " + ", ".join(learnt)
    )


def _is_generative(version: ModelVersion) -> bool:
    from stillroom.service.generator import STUDENT

    return version.student == STUDENT


def _is_tagger(version: ModelVersion) -> bool:
    from stillroom.service.tagger import STUDENT

    return version.student == STUDENT


def _tagger(version: ModelVersion, target: Path) -> tuple[list[str], list[str]]:
    """The files written, and those learnt from training data (the features are its words)."""
    from stillroom.service.tagger import TAGGER_CONFIG, TAGGER_WEIGHTS

    _copy(version, target, TAGGER_WEIGHTS, TAGGER_CONFIG)
    _write(
        target / "README.txt",
        "A span tagger (linear-chain CRF) that copies fields out of its input; no LLM.\n"
        "Split the input into pieces (regex \\w+|[^\\w\\s]), give each piece the features of"
        " stillroom's service/tagger.py (listed in tagger.json), sum their rows of"
        " `emissions`, decode with `transitions`, `start` and `end` (Viterbi), and write each"
        " field's runs of pieces as tagger.json's `fields` say. Ollama cannot run it.\n",
    )
    return [TAGGER_WEIGHTS, TAGGER_CONFIG, "README.txt"], [TAGGER_WEIGHTS, TAGGER_CONFIG]


def _generative(task: Task, version: ModelVersion, target: Path) -> tuple[list[str], list[str]]:
    """The files written, and those learnt from training data (the adapter)."""
    from stillroom.service.generator import ADAPTER_FILE, StudentSpec, base_file

    folder = Path(version.path)
    spec = StudentSpec.load(folder)
    base = base_file(spec)
    _copy_file(base, target / base.name)
    adapter = f"{task.name}.lora.gguf"
    _copy_file(folder / ADAPTER_FILE, target / adapter)
    lines = [
        f"# {task.name} v{version.version}: `ollama create {task.name} -f Modelfile`",
        f"FROM ./{base.name}",
        f"ADAPTER ./{task.name}.lora.gguf",
    ]
    if "<|im_start|>" in spec.template:
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        lines.append('PARAMETER stop "<|im_end|>"')
    lines += [
        "PARAMETER temperature 0",
        f"SYSTEM {json.dumps(spec.instruction)}",
    ]
    _write(target / "Modelfile", "\n".join(lines) + "\n")
    if spec.schema is not None:
        _write(target / "schema.json", json.dumps(spec.schema, indent=2) + "\n")
    names = [base.name, adapter, "Modelfile"]
    return names + (["schema.json"] if spec.schema is not None else []), [adapter]


def _classifier(version: ModelVersion, target: Path) -> tuple[list[str], list[str]]:
    """The files written, and those learnt from training data: the head (it keeps the
    embeddings of its training inputs), its labels, and an encoder tuned on them."""
    from stillroom.service.classifier import HEAD_CONFIG, HEAD_WEIGHTS, ClassifierStudent
    from stillroom.service.engine import Engine

    student = ClassifierStudent(version)
    encoder = Engine(Paths.resolve()).encoder_file(student.encoder_path)
    _copy_file(encoder, target / "encoder.gguf")
    _copy(version, target, HEAD_WEIGHTS, HEAD_CONFIG)
    _write(
        target / "README.txt",
        "A classifier: embed the input with encoder.gguf (llama.cpp, embedding mode, mean"
        " pooling, unit length), then softmax(weights @ v + bias) over head.json's labels.\n"
        "Ollama runs generative models only; this one needs llama.cpp's embedding API.\n",
    )
    tuned = ["encoder.gguf"] if student.encoder_path is not None else []
    written = ["encoder.gguf", HEAD_WEIGHTS, HEAD_CONFIG, "README.txt"]
    return written, [*tuned, HEAD_WEIGHTS, HEAD_CONFIG]


def _copy(version: ModelVersion, target: Path, *names: str) -> None:
    for name in names:
        _copy_file(Path(version.path) / name, target / name)


def _copy_file(source: Path, path: Path) -> None:
    with source.open("rb") as src, _private(path) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _write(path: Path, text: str) -> None:
    with _private(path) as out:
        out.write(text.encode("utf-8"))


def _private(path: Path) -> BinaryIO:
    """A new file, 0600 from its creation (never readable by others, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    if hasattr(os, "fchmod"):  # the umask may have taken more than others' bits
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")
