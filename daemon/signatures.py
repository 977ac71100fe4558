"""What situation an event is, without its outcome: the signature the detector groups by.

A signature says what the user or the model was asked to do; the outcome is what they chose.
File moves form one coarse family per opt-in folder; an LLM call's signature is its
instruction with the variable parts masked (stillroom.prompts, which the gateway shares),
so the same task with other inputs matches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

from stillroom.events import Event, FilePayload
from stillroom.inputs import destination_label, file_input_text
from stillroom.prompts import (
    INPUT,
    mask,
    prompt_shape,
    prompt_signature,
    split_instruction,
    variable_part,
)

__all__ = [
    "INPUT",
    "Observation",
    "mask",
    "observe",
    "prompt_signature",
    "split_instruction",
    "variable_part",
]

Family = Literal["file", "prompt"]


@dataclass(frozen=True)
class Observation:
    """One instance of a situation: its signature, what a student reads, what was chosen."""

    signature: str
    input: str
    outcome: str | None
    at: float
    event_id: int | None
    family: Family
    instruction: str | None = None  # prompts: the instruction as written
    instruction_at: str | None = None  # prompts: "user" or "system" (see PromptShape)
    model: str | None = None  # prompts: the model the call was made to


def observe(event: Event, home: Path | None = None) -> Observation | None:
    """The observation an event makes, or None when it says nothing the detector uses."""
    handler = _HANDLERS.get(event.kind)
    return handler(event, home or Path.home()) if handler else None


def _observe_move(event: Event, home: Path) -> Observation | None:
    payload = event.payload
    if not isinstance(payload, FilePayload) or payload.by_stillroom or not payload.src_path:
        return None
    root = PurePath(payload.root)
    if not _inside(PurePath(payload.src_path), root) or _inside(PurePath(payload.path), root):
        return None
    if payload.features is not None:
        text = file_input_text(payload.features)
    else:
        name = PurePath(payload.path).name
        suffix = PurePath(name).suffix.lower().lstrip(".")
        text = f"name: {name}" + (f"\ntype: .{suffix}" if suffix else "")
    return Observation(
        signature=f"a file arrived in {_tilde(root, home)} and the user moved it into a folder",
        input=text,
        outcome=destination_label(payload.path, home),
        at=event.at,
        event_id=event.id,
        family="file",
    )


def _observe_call(event: Event, home: Path) -> Observation | None:
    data = event.payload.model_dump()
    while "messages" not in data and isinstance(data.get("data"), dict):
        data = data["data"]  # a GenericPayload keeps the stored JSON under `data`
    messages = data.get("messages")
    if not isinstance(messages, list) or data.get("answered_by") == "local":
        return None  # a student's own answer is no teacher's outcome to learn from
    shape = prompt_shape([m for m in messages if isinstance(m, dict)])
    if shape is None:
        return None
    model = data.get("model")
    return Observation(
        signature=shape.template,
        input=shape.user,
        outcome=_response_text(data.get("response")),
        at=event.at,
        event_id=event.id,
        family="prompt",
        instruction=shape.instruction,
        instruction_at=shape.instruction_at,
        model=model if isinstance(model, str) else None,
    )


def _response_text(response: Any) -> str | None:
    """The answer's text, from a plain string or an OpenAI chat completion body."""
    if isinstance(response, str):
        return response
    if isinstance(response, dict):
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            content = message.get("content") if isinstance(message, dict) else None
            return content if isinstance(content, str) else None
    return None


def _inside(path: PurePath, folder: PurePath) -> bool:
    return path == folder or folder in path.parents


def _tilde(folder: PurePath, home: Path) -> str:
    try:
        relative = folder.relative_to(home)
    except ValueError:
        return folder.as_posix()
    return "~" if not relative.parts else f"~/{relative.as_posix()}"


_HANDLERS: dict[str, Callable[[Event, Path], Observation | None]] = {
    "file.moved": _observe_move,
    "llm.call": _observe_call,
}
