"""A registered generative version (a LoRA adapter over a shared base), loaded to answer.

It answers greedily through llama.cpp with its adapter swapped onto the resident base (a JSON
grammar when its outputs are JSON), and abstains below its calibrated confidence or when the
input is unlike anything it was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom.errors import ModelError
from stillroom.registry import ModelVersion
from stillroom.service.bases import base_gguf, render_prompt
from stillroom.service.engine import Engine
from stillroom.service.generation import Generated, copy_grammar, schema_grammar
from stillroom.service.guard import Prediction, guard_of, guarded

STUDENT = "smollm2-lora"
ADAPTER_FILE = "adapter.gguf"
CONFIG_FILE = "student.json"


@dataclass(frozen=True)
class StudentSpec:
    """What a generative version needs besides its adapter: the base, the prompt, the form."""

    kind: str
    base: str  # the config's base name or a .gguf path
    base_file: str  # the base GGUF's file name, checked at load
    base_size: int
    instruction: str
    template: str  # the base's chat template, as trained
    schema: dict[str, Any] | None
    max_tokens: int
    thresholds: dict[str, float]
    copy: bool = False  # its strings are held to runs of its input's pieces (`copy_grammar`)

    def save(self, folder: Path) -> None:
        (folder / CONFIG_FILE).write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> StudentSpec:
        try:
            return cls(**json.loads((folder / CONFIG_FILE).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{folder}: cannot read {CONFIG_FILE} ({exc})") from exc


class GenerativeStudent:
    """Applies the version's guarantee to greedy answers from base + adapter."""

    def __init__(self, version: ModelVersion, engine: Engine) -> None:
        self.version = version
        self.engine = engine
        self.guarantee, self.train_vectors = guard_of(version)
        folder = Path(version.path)
        self.spec = StudentSpec.load(folder)
        self.adapter = folder / ADAPTER_FILE
        self.base = base_file(self.spec)
        self.grammar = schema_grammar(self.spec.schema) if self.spec.schema else None

    def warm(self, engine: Engine) -> list[Path]:
        """Load its base, adapter and the encoder now; returns their files (to pin them)."""
        encoder = engine.encoder_file()
        engine.cache.encoder(encoder)
        engine.cache.generator(self.base, self.adapter)
        return [encoder, self.base, self.adapter]

    def prompt(self, text: str) -> str:
        return render_prompt(self.spec.template, self.spec.instruction, text)

    def grammar_for(self, text: str) -> str | None:
        if self.grammar is not None and self.spec.copy:
            return copy_grammar(self.grammar, text)
        return self.grammar

    def forced(self, texts: Sequence[str]) -> list[Generated]:
        """Greedy answers, never abstaining (for evaluation)."""
        return [
            self.engine.generate(
                self.base,
                self.adapter,
                self.prompt(text),
                max_tokens=self.spec.max_tokens,
                grammar=self.grammar_for(text),
            )
            for text in texts
        ]

    def answer(self, texts: Sequence[str], *_: Any, **__: Any) -> list[Prediction]:
        """Answers where the guarantee allows, abstentions (with the reason) elsewhere (the
        classifier's signature; its own engine embeds and generates)."""
        return guarded(self, texts)


def base_file(spec: StudentSpec) -> Path:
    """The base GGUF the adapter was trained on; another file would silently misbehave."""
    path = base_gguf(spec.base)
    size = path.stat().st_size if path.is_file() else -1
    if path.name != spec.base_file or size != spec.base_size:
        raise ModelError(
            f"the adapter was trained on {spec.base_file} ({spec.base_size} bytes), but the"
            f" base is now {path} ({size} bytes): retrain with `stillroom distill --now`"
        )
    return path
