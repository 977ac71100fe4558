"""What situation an event is, without its outcome: the signature the detector groups by.

A signature says what the user or the model was asked to do; the outcome is what they chose.
File moves form one coarse family per opt-in folder; an LLM call's signature is its
instruction with the variable parts masked, so the same task with other inputs matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

from stillroom.events import Event, FilePayload
from stillroom.inputs import destination_label, file_input_text

Family = Literal["file", "prompt"]
INPUT = "<input>"
LONG_BLOCK = 40  # a bracketed block longer than this is data, not instruction
MAX_INSTRUCTION_WORDS = 40

_MONTH = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november"
    r"|december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)\b\.?"
)
_EXTENSIONS = (
    "pdf|txt|md|csv|tsv|json|jsonl|xml|yaml|yml|html?|docx?|xlsx?|pptx?|odt|ods|rtf|"
    "png|jpe?g|gif|webp|svg|heic|tiff?|bmp|mp3|mp4|wav|flac|mov|mkv|avi|zip|tar|gz|tgz|"
    "7z|rar|exe|dmg|deb|rpm|iso|py|js|ts|java|c|cpp|h|go|rs|rb|sh|log|ini|toml|cfg|sql"
)

# Order matters: wider shapes go first so their pieces are not masked one by one.
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"```.*?(?:```|\Z)", re.S), "<code>"),
    (re.compile(r"(?:https?://|\bwww\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]]", re.I), "<url>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (
        re.compile(
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
            r"|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{12,}\b",
            re.I,
        ),
        "<id>",
    ),
    (
        re.compile(
            r"\b\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?\b"
            r"|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
            rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+\d{{4}})?\b"
            rf"|\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b",
            re.I,
        ),
        "<date>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]\.?m\.?)?(?!\w)", re.I), "<time>"),
    (
        re.compile(
            r"(?<![\w/])(?:~|\.{1,2})?/(?:[\w.-]+/)*[\w.-]*[\w-]/?"
            r"|\b[a-z]:\\(?:[\w.-]+\\)*(?:[\w.-]*[\w-])?"
            rf"|\b[\w-]+\.(?:{_EXTENSIONS})\b",
            re.I,
        ),
        "<path>",
    ),
    (
        re.compile(
            r"(?<!\w)'(?:[^'\n]|'(?=\w))+'(?!\w)|\"[^\"\n]+\"|`[^`\n]+`|\u201c[^\u201d\n]+\u201d"
            r"|\u2018[^\u2019\n]+\u2019"
        ),
        "<quoted>",
    ),
    (re.compile(r"(?<![\w.])[-+]?\d+(?:[.,_]\d+)*(?:\s?%)?(?![\w])"), "<num>"),
]


@dataclass(frozen=True)
class Observation:
    """One instance of a situation: its signature, what a student reads, what was chosen."""

    signature: str
    input: str
    outcome: str | None
    at: float
    event_id: int | None
    family: Family


def mask(text: str) -> str:
    """Replace the variable parts of a text (numbers, dates, paths, quotes...) with placeholders."""
    text = _mask_blocks(text)
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return " ".join(text.split())


def _mask_blocks(text: str) -> str:
    """Long bracketed blocks ({...}, [...]) are data: JSON, lists, code."""
    closing = _bracket_pairs(text)
    out: list[str] = []
    i = 0
    while i < len(text):
        end = closing.get(i, -1)
        if end > i and (end - i + 1 > LONG_BLOCK or "\n" in text[i:end]):
            out.append("<json>")
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _bracket_pairs(text: str) -> dict[int, int]:
    """Where each bracket closes, skipping the strings inside brackets; one pass."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    in_string = escaped = False
    for j, ch in enumerate(text):
        if in_string:
            in_string = escaped or ch != '"'
            escaped = not escaped and ch == "\\"
        elif ch == '"' and stack:
            in_string = True
        elif ch in "{[":
            stack.append(j)
        elif ch in "}]" and stack and text[stack[-1]] == ("{" if ch == "}" else "["):
            pairs[stack.pop()] = j
    return pairs


def split_instruction(message: str) -> tuple[str, str | None]:
    """A user message as (instruction, variable input), or (message, None) when it has no
    clear input. The instruction is a short first (or last) paragraph or line, or the words
    before the first ": " or "? " ("Classify this ticket: <text>")."""
    text = message.strip()
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    if len(blocks) > 1:
        first, last = blocks[0], blocks[-1]
        if _instruction_like(first) and (first.endswith((":", "?")) or not _asks(last)):
            return first, text[len(first) :].strip()
        if _instruction_like(last):
            return last, text[: len(text) - len(last)].strip()
    lines = text.splitlines()
    if len(lines) > 1 and _instruction_like(lines[0]):
        return lines[0].strip(), "\n".join(lines[1:]).strip()
    head = re.match(r"(.+?[:?])\s+(\S.*)", text, re.S)
    if head and len(head[1].split()) >= 2 and _instruction_like(head[1]):
        return head[1], head[2]
    return text, None


def variable_part(message: str) -> str:
    """The part of a user message that changes between calls (the whole message if none)."""
    return split_instruction(message)[1] or message.strip()


def _instruction_like(text: str) -> bool:
    return 0 < len(text.split()) <= MAX_INSTRUCTION_WORDS and "\n" not in text.strip()


def _asks(text: str) -> bool:
    """A block that reads as the request itself (a question, or one about the text above)."""
    return _instruction_like(text) and (text.endswith("?") or " above" in text.lower())


def prompt_signature(messages: list[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(masked instruction, the user message) of a chat request: its system messages and its
    last user message, with the user message's input replaced by a placeholder."""
    system = [_content(m) for m in messages if m.get("role") in ("system", "developer")]
    users = [_content(m) for m in messages if m.get("role") == "user"]
    if not users or not users[-1].strip():
        return None
    instruction, variable = split_instruction(users[-1])
    parts = [mask(s) for s in system if s.strip()]
    parts.append(mask(instruction) + (f" {INPUT}" if variable else ""))
    return "\n".join(parts), users[-1]


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


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
    if not isinstance(messages, list):
        return None
    found = prompt_signature([m for m in messages if isinstance(m, dict)])
    if found is None:
        return None
    signature, user = found
    return Observation(
        signature=signature,
        input=user,
        outcome=_response_text(data.get("response")),
        at=event.at,
        event_id=event.id,
        family="prompt",
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
